"""Card-fraud scoring: who the cardholder is, who the merchant is, how this cardholder has used
this merchant before, and how the transaction being scored compares with all of that.

Every top-level .py file of this folder is loaded by `featurestore apply`; the data generator
and the label builder live in datagen/. Request inputs (amount, txn_country, txn_ts) are what
the payment switch sends with each authorization; in training sets they are label columns."""

from datetime import timedelta

from featurestore import (
    Aggregate,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    Request,
    Source,
    transform,
)
from featurestore.types import Bool, Float64, Int64, String, Timestamp

MICROS_PER_SECOND = 1_000_000  # Timestamp values reach transforms as UTC epoch microseconds
SECONDS_PER_DAY = 86_400

# --- entities ---------------------------------------------------------------------------

user = Entity("user", join_keys={"user_id": Int64}, description="a cardholder")
merchant = Entity("merchant", join_keys={"merchant_id": String},
                  description="an acceptor, as identified by the acquirer")
user_merchant = Entity("user_merchant", join_keys={"user_id": Int64, "merchant_id": String},
                       description="a cardholder at a merchant")

# --- sources ----------------------------------------------------------------------------

profiles = Source("profiles", path="data/profiles.parquet",
                  timestamp="updated_at", created="ingested_at",
                  description="change feed of the customer database; ingested_at is when a row "
                              "reached the lake, which can be days after the change")
transactions = Source("transactions", path="data/transactions.parquet", timestamp="event_ts",
                      description="card authorizations with their eventual fraud outcome")
merchants = Source("merchants", path="data/merchants.parquet", timestamp="updated_at",
                   description="weekly merchant rescoring by the risk team")
user_merchant_daily = Source(
    "user_merchant_daily", path="data/user_merchant_daily.parquet",
    timestamp="snapshot_ts", created="computed_at",
    description="nightly job: per (user, merchant) counters as of midnight UTC, one row per "
                "pair whose counters changed that day; computed_at is when the job finished")

# --- feature views ----------------------------------------------------------------------

user_profile = FeatureView(
    "user_profile", entity=user, source=profiles, ttl=timedelta(days=90),
    fields=[Field("age", Int64), Field("country", String),
            Field("credit_limit", Float64), Field("is_premium", Bool),
            Field("account_opened_at", Timestamp)],
    description="profiles not refreshed for 90 days (closed or dormant accounts) are not used")

merchant_profile = FeatureView(
    "merchant_profile", entity=merchant, source=merchants, ttl=timedelta(days=30),
    fields=[Field("category", String), Field("avg_ticket", Float64),
            Field("risk_score", Float64), Field("is_online", Bool)],
    description="a risk score older than a month is stale: treat it as unknown")

# Cumulative counters never go stale, and the nightly job only writes pairs that changed, so
# this view has no ttl.
user_merchant_history = FeatureView(
    "user_merchant_history", entity=user_merchant, source=user_merchant_daily,
    fields=[Field("n_prior_txns", Int64), Field("last_txn_at", Timestamp),
            Field("chargebacks", Int64)])

# How the card has been used lately: windows over the authorizations themselves, computed
# from the files for training and kept fresh online by `featurestore push transactions ...`.
user_spend = FeatureView(
    "user_spend", entity=user, source=transactions,
    aggregates=[Aggregate("amount", "sum", window="7d", hop="1h"),
                Aggregate("amount", "count", window="1d", hop="1h"),
                Aggregate("amount", "max", window="1h", hop="5m"),
                Aggregate("amount", "stddev", window="7d", hop="1h"),
                Aggregate("merchant_id", "count_distinct", window="1d", hop="1h",
                          dtype=String)],
    description="spend velocity: a stolen card is used fast, for more, at more merchants")

# --- transforms -------------------------------------------------------------------------


@transform(inputs={"amount": Request("amount", Float64),
                   "limit": user_profile["credit_limit"]},
           output=Float64)
def amount_to_limit(amount, limit):             # plain Python, compiled once by Numba
    return amount / limit if limit > 0.0 else 0.0


@transform(inputs={"amount": Request("amount", Float64),
                   "avg_ticket": merchant_profile["avg_ticket"]},
           output=Float64)
def amount_vs_merchant_avg(amount: float, avg_ticket: float) -> float:
    """How unusual the amount is for this merchant (1.0 is a typical ticket)."""
    return amount / avg_ticket if avg_ticket > 0.0 else 0.0


@transform(inputs={"txn_country": Request("txn_country", String),
                   "home_country": user_profile["country"]},
           output=Bool)
def is_foreign(txn_country: str, home_country: str) -> bool:
    """The card is used outside the cardholder's home country."""
    return txn_country != home_country


@transform(inputs={"txn_ts": Request("txn_ts", Timestamp),
                   "last_txn_at": user_merchant_history["last_txn_at"]},
           output=Int64)
def seconds_since_last_visit(txn_ts: int, last_txn_at: int) -> int:
    """Seconds since this cardholder last paid this merchant, as of the last nightly run."""
    return (txn_ts - last_txn_at) // MICROS_PER_SECOND


@transform(inputs={"txn_ts": Request("txn_ts", Timestamp),
                   "opened_at": user_profile["account_opened_at"]},
           output=Int64)
def account_age_days(txn_ts: int, opened_at: int) -> int:
    return (txn_ts - opened_at) // (SECONDS_PER_DAY * MICROS_PER_SECOND)


@transform(inputs={"amount": Request("amount", Float64),
                   "total": user_spend["amount_sum_7d"]},
           output=Float64)
def amount_share_of_week(amount: float, total: float) -> float:
    """This amount against the card's whole spend of the past week."""
    return amount / total if total > 0.0 else 1.0


@transform(inputs={"chargebacks": user_merchant_history["chargebacks"],
                   "n_prior_txns": user_merchant_history["n_prior_txns"]},
           output=Float64)
def pair_chargeback_rate(chargebacks: int, n_prior_txns: int) -> float:
    return chargebacks / n_prior_txns if n_prior_txns > 0 else 0.0


# --- what the model consumes ------------------------------------------------------------

fraud = FeatureService(
    "fraud_v1",
    features=[user_profile, merchant_profile, user_merchant_history, user_spend,
              amount_to_limit, amount_share_of_week, amount_vs_merchant_avg, is_foreign,
              seconds_since_last_visit,
              account_age_days, pair_chargeback_rate],
    description="features of the card-fraud model, version 1")
