"""The public face: the names outside code is written against (DESIGN.md's contract)."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from importlib import util
from pathlib import Path

import polars as pl

import featurestore

CONTRACT = '''
from datetime import timedelta
from featurestore import (Entity, Source, FeatureView, Field, Aggregate,
                          FeatureService, Request, transform)
from featurestore.types import Int64, Float64, String, Bool

user = Entity("user", join_keys={"user_id": Int64})

profiles = Source("profiles", path="data/profiles.parquet",
                  timestamp="updated_at", created="ingested_at")
transactions = Source("transactions", path="data/transactions.parquet",
                      timestamp="event_ts")

user_profile = FeatureView(
    "user_profile", entity=user, source=profiles, ttl=timedelta(days=90),
    fields=[Field("age", Int64), Field("country", String),
            Field("credit_limit", Float64), Field("is_premium", Bool)])

user_spend = FeatureView(
    "user_spend", entity=user, source=transactions,
    aggregates=[Aggregate("amount", "sum", window="7d", hop="1h"),
                Aggregate("amount", "count", window="1d", hop="1h"),
                Aggregate("amount", "max", window="1h", hop="5m")])

@transform(inputs={"amount": Request("amount", Float64),
                   "limit": user_profile["credit_limit"]},
           output=Float64)
def amount_to_limit(amount, limit):
    return amount / limit if limit > 0.0 else 0.0

fraud = FeatureService("fraud_v1", features=[user_profile, user_spend, amount_to_limit])
'''


def test_public_names() -> None:
    assert sorted(featurestore.__all__) == [
        "Aggregate", "Client", "Entity", "FeatureService", "FeatureStore", "FeatureStoreError",
        "FeatureView", "Field", "Request", "Source", "transform"]
    for name in featurestore.__all__:
        assert getattr(featurestore, name) is not None


def test_the_contract_example_applies_and_builds_training_sets(tmp_path: Path) -> None:
    (tmp_path / "featurestore.yaml").write_text("project: contract\n")
    (tmp_path / "features.py").write_text(textwrap.dedent(CONTRACT))
    (tmp_path / "data").mkdir()
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    pl.DataFrame({"user_id": [1], "age": [40], "country": ["NL"], "credit_limit": [200.0],
                  "is_premium": [True], "updated_at": [t0], "ingested_at": [t0]}
                 ).write_parquet(tmp_path / "data" / "profiles.parquet")
    pl.DataFrame({"user_id": [1, 1, 1, 2],
                  "amount": [10.0, 30.0, 5.0, 7.0],
                  "event_ts": [t0 - timedelta(days=3), t0 + timedelta(minutes=20),
                               t0 + timedelta(minutes=50), t0]}
                 ).write_parquet(tmp_path / "data" / "transactions.parquet")
    store = featurestore.FeatureStore(tmp_path)
    store.apply()
    labels = pl.DataFrame({"user_id": [1, 1], "amount": [50.0, 1.0],
                           "event_timestamp": [t0 + timedelta(minutes=55),
                                               t0 + timedelta(hours=2, minutes=1)]})
    frame = store.training_set(labels, service="fraud_v1")
    assert frame["amount_sum_7d"].to_list() == [45.0, 45.0]
    assert frame["amount_count_1d"].to_list() == [2, 2]
    # 1h window, 5m hop: at 00:55 it covers [23:55, 00:55]; at 02:01, [01:00, 02:01]
    assert frame["amount_max_1h"].to_list() == [30.0, None]
    assert frame["amount_to_limit"].to_list() == [0.25, 0.005]
    # The transform stays a plain function.
    spec = util.spec_from_file_location("contract_features", tmp_path / "features.py")
    assert spec is not None and spec.loader is not None
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.amount_to_limit(50.0, 200.0) == 0.25
