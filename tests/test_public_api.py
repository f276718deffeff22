"""The public face: the names outside code is written against (DESIGN.md's contract)."""

from __future__ import annotations

import textwrap
from importlib import util
from pathlib import Path

import pytest

import featurestore
from featurestore.errors import NotSupportedError

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


def test_the_contract_example_loads_and_names_what_is_not_computed_yet(tmp_path: Path) -> None:
    (tmp_path / "featurestore.yaml").write_text("project: contract\n")
    (tmp_path / "features.py").write_text(textwrap.dedent(CONTRACT))
    store = featurestore.FeatureStore(tmp_path)
    # Definitions, including the aggregates and their default names, are accepted...
    with pytest.raises(NotSupportedError, match=r"FeatureView 'user_spend' .*amount_sum_7d, "
                                                r"amount_count_1d, amount_max_1h"):
        store.apply()
    # ...and the transform stays a plain function.
    spec = util.spec_from_file_location("contract_features", tmp_path / "features.py")
    assert spec is not None and spec.loader is not None
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.amount_to_limit(50.0, 200.0) == 0.25
