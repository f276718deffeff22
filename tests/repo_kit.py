"""Writing small feature repos for tests: a config, one definitions file, and data files."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

T0 = datetime(2024, 1, 1, tzinfo=UTC)

PROFILE_DEFS = """
from datetime import timedelta
from featurestore import Entity, FeatureService, FeatureView, Field, Request, Source, transform
from featurestore.types import Bool, Float64, Int64, String

user = Entity("user", join_keys={"user_id": Int64})
profiles = Source("profiles", path="data/profiles.parquet", timestamp="updated_at")
user_profile = FeatureView("user_profile", entity=user, source=profiles, ttl=timedelta(days=10),
    fields=[Field("age", Int64), Field("country", String), Field("credit_limit", Float64),
            Field("is_premium", Bool)])

@transform(inputs={"amount": Request("amount", Float64), "limit": user_profile["credit_limit"]},
           output=Float64)
def amount_to_limit(amount, limit):
    return amount / limit if limit > 0.0 else 0.0

fraud = FeatureService("fraud_v1", features=[user_profile, amount_to_limit])
"""


def profiles_frame() -> pl.DataFrame:
    return pl.DataFrame({
        "user_id": [1, 1, 2],
        "updated_at": [T0, T0 + timedelta(days=2), T0 + timedelta(days=1)],
        "age": [30, 31, 40],
        "country": ["US", "FR", "DE"],
        "credit_limit": [100.0, 200.0, 50.0],
        "is_premium": [True, False, True],
    })


def write_repo(root: Path, definitions: str = PROFILE_DEFS,
               data: dict[str, pl.DataFrame] | None = None, project: str = "test") -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "featurestore.yaml").write_text(f"project: {project}\n")
    (root / "features.py").write_text(textwrap.dedent(definitions))
    for name, frame in (data if data is not None else {"profiles": profiles_frame()}).items():
        frame.write_parquet(root / "data" / f"{name}.parquet")
    return root
