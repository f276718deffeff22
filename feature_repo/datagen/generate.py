"""Writes the example repo's source data: synthetic card transactions and what a fraud team
would have around them (customer profiles, merchant risk scores, nightly per-pair counters).

Why synthetic: the example has to run anywhere in seconds with nothing to download, and its
data has to exercise what the feature store promises, which real exports show only by
accident: profile changes that reach the lake days late, same-time corrections and exact
ties, accounts and merchants whose data goes stale (ttl), cardholders without a profile,
nulls, NaN and -0.0 values, rows without a key, and a composite (user, merchant) key.
Transactions cover the half year before --end (default now, so that a freshly generated
example serves present values rather than values past their ttl); the same --seed and --end
write the same files, bit for bit.

    python feature_repo/datagen/generate.py --out feature_repo/data [--end 2025-07-01T00:00:00Z
        --users N --merchants M --transactions T --seed S]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

US_PER_SECOND = 1_000_000
US_PER_HOUR = 3_600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR
US_PER_YEAR = int(365.2425 * US_PER_DAY)


TRANSACTION_DAYS = 181  # transactions cover the half year before the end
FEED_LEAD_DAYS = 92  # the profile and merchant feeds start a quarter earlier
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

COUNTRIES = np.array(["US", "GB", "DE", "FR", "ES", "IT", "NL", "CA", "BR", "IN"])
COUNTRY_WEIGHTS = np.array([0.34, 0.12, 0.12, 0.10, 0.07, 0.06, 0.05, 0.07, 0.04, 0.03])
CREDIT_LIMITS = np.array([500.0, 1000.0, 2000.0, 3000.0, 5000.0, 7500.0, 10000.0, 15000.0])
LIMIT_WEIGHTS = np.array([0.08, 0.17, 0.22, 0.18, 0.17, 0.09, 0.06, 0.03])

# category -> (mean ticket, share of online merchants, base risk score)
CATEGORIES: dict[str, tuple[float, float, float]] = {
    "grocery": (48.0, 0.10, 0.05),
    "restaurant": (36.0, 0.05, 0.06),
    "fuel": (55.0, 0.00, 0.08),
    "pharmacy": (27.0, 0.15, 0.05),
    "fashion": (85.0, 0.45, 0.12),
    "electronics": (240.0, 0.55, 0.30),
    "travel": (420.0, 0.70, 0.25),
    "gaming": (30.0, 0.95, 0.40),
    "jewelry": (650.0, 0.30, 0.45),
    "digital_goods": (18.0, 1.00, 0.55),
}
CATEGORY_WEIGHTS = np.array([0.22, 0.20, 0.12, 0.08, 0.12, 0.07, 0.05, 0.05, 0.03, 0.06])

UTC_US = pl.Datetime("us", "UTC")
FRAUD_RATE = 0.012
MAX_FAVORITES = 8


@dataclass(frozen=True)
class Users:
    ids: np.ndarray  # int64, 1..n
    home: np.ndarray  # index into COUNTRIES
    birth: np.ndarray  # epoch micros
    age_known: np.ndarray  # False: the bank never recorded a birth date
    opened: np.ndarray  # epoch micros
    credit_limit: np.ndarray
    premium: np.ndarray
    has_profile: np.ndarray  # False: the cardholder never appears in the profile feed
    feed_stops: np.ndarray  # epoch micros after which the feed has no rows for the user
    activity: np.ndarray  # relative rate of transactions
    favorites: np.ndarray  # (n, MAX_FAVORITES) merchant indices
    n_favorites: np.ndarray


@dataclass(frozen=True)
class Merchants:
    ids: np.ndarray  # "M00001", ...
    category: np.ndarray
    is_online: np.ndarray
    mean_ticket: np.ndarray
    risk: np.ndarray  # the risk team's base score in [0, 1]
    popularity: np.ndarray  # probabilities summing to 1
    onboarded: np.ndarray  # epoch micros
    rescoring_stops: np.ndarray  # epoch micros; stale merchants stop before the end
    zero_ticket: np.ndarray  # True: the acquirer reports 0 for the average ticket


@dataclass(frozen=True)
class Span:
    """The generated period, in epoch micros: transactions cover [start, end), the profile and
    merchant feeds start at feed_start, merchants are rescored on Mondays at 03:00 UTC from
    first_monday on. With end 2025-07-01 it is the period the example was written for."""
    feed_start: int
    start: int
    end: int
    first_monday: int


def span_ending(end: int) -> Span:
    midnight = end - end % US_PER_DAY
    start = midnight - TRANSACTION_DAYS * US_PER_DAY
    feed_start = start - FEED_LEAD_DAYS * US_PER_DAY
    days = feed_start // US_PER_DAY
    monday = days - (days + 3) % 7  # 1970-01-01 was a Thursday
    return Span(feed_start, start, end, monday * US_PER_DAY)


def timestamps(micros: np.ndarray | pl.Series) -> pl.Series:
    """Epoch microseconds -> UTC-zoned microsecond timestamps."""
    return pl.Series(micros, dtype=pl.Int64).cast(UTC_US)


def make_merchants(rng: np.random.Generator, n: int, span: Span) -> Merchants:
    names = list(CATEGORIES)
    category = rng.choice(len(names), n, p=CATEGORY_WEIGHTS)
    mean_ticket = np.array([CATEGORIES[names[c]][0] for c in category])
    online_share = np.array([CATEGORIES[names[c]][1] for c in category])
    base_risk = np.array([CATEGORIES[names[c]][2] for c in category])
    popularity = 1.0 / np.arange(1, n + 1) ** 0.9
    rng.shuffle(popularity)
    onboarded = np.where(rng.random(n) < 0.9,
                         span.feed_start - rng.integers(0, 4 * US_PER_YEAR, n),
                         rng.integers(span.feed_start, span.end - 60 * US_PER_DAY, n))
    stale = rng.random(n) < 0.05
    return Merchants(
        ids=np.array([f"M{i:05d}" for i in range(1, n + 1)]),
        category=np.array(names)[category],
        is_online=rng.random(n) < online_share,
        mean_ticket=mean_ticket * rng.lognormal(0.0, 0.35, n),
        risk=np.clip(base_risk + rng.normal(0.0, 0.08, n), 0.01, 0.99),
        popularity=popularity / popularity.sum(),
        onboarded=onboarded,
        rescoring_stops=np.where(stale, rng.integers(span.start, span.end - 45 * US_PER_DAY, n),
                                 span.end),
        zero_ticket=rng.random(n) < 0.01,
    )


def make_users(rng: np.random.Generator, n: int, merchants: Merchants, span: Span) -> Users:
    age = np.clip(rng.normal(41.0, 13.0, n), 18.0, 88.0)
    birth = span.start - (age * US_PER_YEAR).astype(np.int64)
    late_opener = rng.random(n) < 0.08  # accounts opened while transactions are recorded
    opened = np.where(late_opener, rng.integers(span.start, span.end - 30 * US_PER_DAY, n),
                      np.maximum(span.start - (rng.exponential(2.5, n) * US_PER_YEAR).astype(np.int64),
                                 birth + 18 * US_PER_YEAR) - US_PER_DAY)
    premium = rng.random(n) < 0.12
    credit_limit = rng.choice(CREDIT_LIMITS, n, p=LIMIT_WEIGHTS) * np.where(premium, 3.0, 1.0)
    dormant = rng.random(n) < 0.05  # the core system stopped exporting these accounts
    n_favorites = rng.integers(2, MAX_FAVORITES + 1, n)
    return Users(
        ids=np.arange(1, n + 1, dtype=np.int64),
        home=rng.choice(len(COUNTRIES), n, p=COUNTRY_WEIGHTS),
        birth=birth,
        age_known=rng.random(n) >= 0.025,
        opened=opened,
        credit_limit=credit_limit,
        premium=premium,
        has_profile=rng.random(n) >= 0.07,
        feed_stops=np.where(dormant, rng.integers(span.feed_start, span.start + 30 * US_PER_DAY, n),
                            span.end),
        activity=rng.lognormal(0.0, 1.0, n),
        favorites=rng.choice(len(merchants.ids), (n, MAX_FAVORITES), p=merchants.popularity),
        n_favorites=n_favorites,
    )


def profile_rows(rng: np.random.Generator, users: Users, span: Span) -> pl.DataFrame:
    """The customer database's change feed: a row when an account opens, then a refresh every
    few weeks, with occasional limit increases, premium upgrades and moves abroad."""
    cols: dict[str, list[object]] = {k: [] for k in ("user_id", "updated_at", "ingested_at", "age",
                                             "country", "credit_limit", "is_premium",
                                             "account_opened_at")}
    for u in np.flatnonzero(users.has_profile):
        limit, premium, home = float(users.credit_limit[u]), bool(users.premium[u]), users.home[u]
        times = [int(users.opened[u])]
        t = max(int(users.opened[u]), span.feed_start) + \
            int(rng.integers(US_PER_DAY, 30 * US_PER_DAY))
        while t < users.feed_stops[u]:
            times.append(t)
            t += int(rng.integers(20 * US_PER_DAY, 40 * US_PER_DAY))
        for t in times:
            r = rng.random(4)
            if r[0] < 0.10:
                limit = round(limit * 1.5, -2)
            if r[1] < 0.02 and not premium:
                premium, limit = True, limit * 2.0
            if r[2] < 0.005:
                home = rng.integers(len(COUNTRIES))
            late = r[3] < 0.08  # a batch that reached the lake days after the change
            delay = rng.integers(US_PER_DAY, 6 * US_PER_DAY) if late else \
                rng.integers(30 * US_PER_SECOND, US_PER_HOUR)
            cols["user_id"].append(int(users.ids[u]))
            cols["updated_at"].append(t)
            cols["ingested_at"].append(t + int(delay))
            cols["age"].append(int((t - users.birth[u]) // US_PER_YEAR)
                               if users.age_known[u] else None)
            cols["country"].append(str(COUNTRIES[home]))
            cols["credit_limit"].append(limit)
            cols["is_premium"].append(premium)
            cols["account_opened_at"].append(int(users.opened[u]))
    frame = pl.DataFrame(cols, schema_overrides={"user_id": pl.Int64, "age": pl.Int64})
    n = frame.height
    # Corrections: the same change re-sent later with a fixed limit (same updated_at).
    fixed = rng.choice(n, max(3, n // 70), replace=False)
    fixes = frame[fixed].with_columns(
        pl.col("ingested_at") + rng.integers(US_PER_HOUR, 3 * US_PER_DAY, len(fixed)),
        pl.col("credit_limit") + 250.0)
    # Exact duplicates in both timestamps with another limit: the later file row wins.
    ties = frame[rng.choice(n, max(3, n // 2000), replace=False)].with_columns(
        pl.col("credit_limit") - 100.0)
    # Rows a broken upstream join left without a key: ingest skips them.
    orphans = frame[rng.choice(n, 3, replace=False)].with_columns(
        pl.lit(None, pl.Int64).alias("user_id"))
    frame = pl.concat([frame, fixes, ties, orphans])
    n, k = frame.height, max(2, frame.height // 4000)
    nan_rows, neg_zero_rows, zero_rows, no_country, no_limit = np.split(
        rng.choice(n, 4 * k + max(3, n // 100), replace=False), [k, 2 * k, 3 * k, 4 * k])
    limits = frame["credit_limit"].to_numpy().copy()
    limits[nan_rows] = np.nan  # a failed currency conversion
    limits[neg_zero_rows] = -0.0  # a frozen card, written by a system that negates zero
    limits[zero_rows] = 0.0
    frame = frame.with_columns(
        pl.Series("credit_limit", limits).scatter(no_limit, None),  # no credit decision yet
        frame["country"].scatter(no_country, None))
    # The lake compacts the feed in updated_at order; rows with the same updated_at come out in
    # no particular order, so file order says nothing about which arrived last.
    return (frame.with_columns(timestamps(frame["updated_at"]).alias("updated_at"),
                               timestamps(frame["ingested_at"]).alias("ingested_at"),
                               timestamps(frame["account_opened_at"]).alias("account_opened_at"),
                               __shuffle=rng.permutation(n))
            .sort("updated_at", "__shuffle")
            .drop("__shuffle"))


def merchant_rows(rng: np.random.Generator, merchants: Merchants, span: Span) -> pl.DataFrame:
    """Weekly rescoring by the risk team, Mondays 03:00 UTC, from onboarding on. A merchant's
    first week inside the feed has no average ticket yet; stale merchants stop being rescored."""
    weeks = span.first_monday + 3 * US_PER_HOUR + 7 * US_PER_DAY * np.arange(
        (span.end - span.first_monday) // (7 * US_PER_DAY) + 1)
    weeks = weeks[weeks < span.end]
    live = (weeks[None, :] >= merchants.onboarded[:, None]) & \
        (weeks[None, :] < merchants.rescoring_stops[:, None])
    week, m = np.nonzero(live.T)  # week-major: the file grows week by week
    n = len(m)
    avg_ticket = np.round(merchants.mean_ticket[m] * rng.lognormal(0.0, 0.05, n), 2)
    avg_ticket[merchants.zero_ticket[m]] = 0.0
    first_week = np.zeros(n, np.bool_)
    first_week[np.unique(m, return_index=True)[1]] = True
    no_history = first_week & (merchants.onboarded[m] >= span.feed_start)
    return pl.DataFrame({
        "merchant_id": merchants.ids[m],
        "updated_at": timestamps(weeks[week]),
        "category": merchants.category[m],
        "avg_ticket": pl.Series(avg_ticket).scatter(np.flatnonzero(no_history), None),
        "risk_score": np.round(np.clip(merchants.risk[m] + rng.normal(0.0, 0.03, n), 0.0, 1.0), 4),
        "is_online": merchants.is_online[m],
    })


def transaction_rows(rng: np.random.Generator, users: Users, merchants: Merchants,
                     n: int, span: Span) -> pl.DataFrame:
    """Card payments. Cardholders mostly pay their favourite merchants at home; fraud goes to
    risky merchants, for larger amounts, often from abroad. A few payments are split in two
    at the same instant (same card, merchant and timestamp)."""
    n_split = max(2, n // 1000)
    base = n - n_split
    u = rng.choice(len(users.ids), base, p=users.activity / users.activity.sum())
    fraud = rng.random(base) < FRAUD_RATE
    favorite = users.favorites[u, (rng.random(base) * users.n_favorites[u]).astype(np.int64)]
    anywhere = rng.choice(len(merchants.ids), base, p=merchants.popularity)
    risky = rng.choice(len(merchants.ids), base, p=merchants.risk**2 / (merchants.risk**2).sum())
    m = np.where(fraud, np.where(rng.random(base) < 0.7, risky, anywhere),
                 np.where(rng.random(base) < 0.85, favorite, anywhere))
    opens = np.maximum(np.maximum(users.opened[u], merchants.onboarded[m]), span.start)
    t = opens + (rng.random(base) * (span.end - opens)).astype(np.int64)
    amount = merchants.mean_ticket[m] * rng.lognormal(0.0, 0.6, base) * \
        np.where(fraud, rng.uniform(2.0, 8.0, base), 1.0)
    abroad = (users.home[u] + rng.integers(1, len(COUNTRIES), base)) % len(COUNTRIES)
    country = np.where(rng.random(base) < np.where(fraud, 0.6, 0.04), abroad, users.home[u])
    split = rng.choice(base, n_split, replace=False)
    u, m, t = (np.concatenate([a, a[split]]) for a in (u, m, t))
    amount = np.concatenate([amount, amount[split] * rng.uniform(0.2, 1.0, n_split)])
    country, fraud = (np.concatenate([a, a[split]]) for a in (country, fraud))
    order = np.argsort(t, kind="stable")
    return pl.DataFrame({
        "txn_id": np.arange(1, n + 1, dtype=np.int64),
        "user_id": users.ids[u][order],
        "merchant_id": merchants.ids[m][order],
        "event_ts": timestamps(t[order]),
        "amount": np.maximum(np.round(amount[order], 2), 0.5),
        "country": COUNTRIES[country[order]],
        "is_fraud": fraud[order],
    })


def pair_rows(rng: np.random.Generator, transactions: pl.DataFrame, span: Span) -> pl.DataFrame:
    """The nightly job: for each (user, merchant) whose counters changed during a UTC day, one
    row with the counters as of the following midnight (snapshot_ts). Chargebacks arrive 3 to
    45 days after a fraudulent payment. The job finishes after 02:00, some nights a day late."""
    keys = ["user_id", "merchant_id"]
    at = transactions["event_ts"].cast(pl.Int64)
    payments = transactions.select(*keys, at=at, txn=pl.lit(1, pl.Int64),
                                   cb=pl.lit(0, pl.Int64), txn_at=at)
    chargebacks = transactions.select(
        *keys, at=at + rng.integers(3 * US_PER_DAY, 45 * US_PER_DAY, transactions.height),
        txn=pl.lit(0, pl.Int64), cb=pl.lit(1, pl.Int64), txn_at=pl.lit(None, pl.Int64),
        is_fraud="is_fraud").filter("is_fraud").drop("is_fraud")
    daily = (pl.concat([payments, chargebacks])
             .with_columns(snapshot_ts=(pl.col("at") // US_PER_DAY + 1) * US_PER_DAY)
             .filter(pl.col("snapshot_ts") <= span.end)
             .group_by(*keys, "snapshot_ts")
             .agg(pl.col("txn").sum(), pl.col("cb").sum(), pl.col("txn_at").max())
             .sort(*keys, "snapshot_ts")
             .with_columns(n_prior_txns=pl.col("txn").cum_sum().over(keys),
                           chargebacks=pl.col("cb").cum_sum().over(keys),
                           last_txn_at=pl.col("txn_at").forward_fill().over(keys)))
    nights = daily["snapshot_ts"].unique().sort()
    finished = nights + 2 * US_PER_HOUR + rng.integers(5, 50, len(nights)) * 60 * US_PER_SECOND \
        + np.where(rng.random(len(nights)) < 0.04, US_PER_DAY, 0)
    runs = pl.DataFrame({"snapshot_ts": nights, "computed_at": finished})
    return (daily.join(runs, on="snapshot_ts")
            .sort("snapshot_ts", *keys)
            .select(pl.col("snapshot_ts", "computed_at").cast(UTC_US), *keys, "n_prior_txns",
                    pl.col("last_txn_at").cast(UTC_US), "chargebacks"))


def summary(name: str, frame: pl.DataFrame, users: Users) -> str:
    if name == "profiles":
        keyed = frame.filter(pl.col("user_id").is_not_null())
        late = (keyed["ingested_at"] - keyed["updated_at"]).dt.total_hours() >= 24
        return (f"{keyed['user_id'].n_unique():,} of {len(users.ids):,} users have a profile, "
                f"{late.sum():,} rows reached the lake a day or more late, "
                f"{frame.height - keyed.height} rows have no user_id")
    if name == "merchants":
        return f"{frame['merchant_id'].n_unique():,} merchants rescored weekly"
    if name == "transactions":
        fraud = int(frame["is_fraud"].sum())
        return f"{fraud:,} fraudulent ({fraud / frame.height:.2%}), {frame['user_id'].n_unique():,} cards"
    keys = frame.select("user_id", "merchant_id").n_unique()
    return f"{keys:,} (user, merchant) pairs, nightly from {frame['snapshot_ts'].min():%Y-%m-%d}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the Parquet files")
    parser.add_argument("--users", type=int, default=2_000, help="cardholders")
    parser.add_argument("--merchants", type=int, default=300)
    parser.add_argument("--transactions", type=int, default=50_000, help="card payments")
    parser.add_argument("--seed", type=int, default=7, help="same seed and end, same files")
    parser.add_argument("--end", default=None,
                        help="when the data ends, an ISO time with zone such as "
                             "2025-07-01T00:00:00Z (default: now)")
    args = parser.parse_args()
    if min(args.users, args.merchants) < 1 or args.transactions < 100:
        parser.error("need at least 1 user, 1 merchant and 100 transactions")
    try:
        args.end = datetime.now(UTC) if args.end is None else datetime.fromisoformat(args.end)
    except ValueError:
        parser.error(f"--end {args.end!r} is not an ISO time such as 2025-07-01T00:00:00Z")
    if args.end.tzinfo is None:
        parser.error(f"--end {args.end.isoformat()!r} has no time zone; add one, e.g. Z for UTC")
    return args


def main() -> None:
    args = parse_args()
    span = span_ending((args.end - EPOCH) // timedelta(microseconds=1))
    rng = np.random.default_rng(args.seed)
    merchants = make_merchants(rng, args.merchants, span)
    users = make_users(rng, args.users, merchants, span)
    transactions = transaction_rows(rng, users, merchants, args.transactions, span)
    frames = {
        "profiles": profile_rows(rng, users, span),
        "merchants": merchant_rows(rng, merchants, span),
        "transactions": transactions,
        "user_merchant_daily": pair_rows(rng, transactions, span),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"data ends {args.end.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC")
    for name, frame in frames.items():
        path = args.out / f"{name}.parquet"
        frame.write_parquet(path)
        print(f"wrote {path}: {frame.height:,} rows; {summary(name, frame, users)}")


if __name__ == "__main__":
    main()
