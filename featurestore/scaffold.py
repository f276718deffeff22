"""`featurestore init`: a small repo that applies and builds a training set out of the box."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from featurestore.errors import FeatureStoreError

CONFIG = """project: {project}
offline_store: offline.duckdb   # DuckDB file, relative to this folder
online_store: managed           # or redis://host:6379/0
"""

DEFINITIONS = '''"""Feature definitions. Every top-level .py file of this folder is loaded by
`featurestore apply`; keep scripts in sub-folders."""

from datetime import timedelta

from featurestore import Entity, FeatureService, FeatureView, Field, Request, Source, transform
from featurestore.types import Float64, Int64, String

customer = Entity("customer", join_keys={"customer_id": Int64})

accounts = Source("accounts", path="data/accounts.parquet", timestamp="updated_at")

account = FeatureView(
    "account", entity=customer, source=accounts, ttl=timedelta(days=30),
    fields=[Field("balance", Float64), Field("segment", String)])


@transform(inputs={"amount": Request("amount", Float64), "balance": account["balance"]},
           output=Float64)
def amount_to_balance(amount, balance):
    return amount / balance if balance > 0.0 else 0.0


scoring = FeatureService("scoring_v1", features=[account, amount_to_balance])
'''


def scaffold(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()):
        raise FeatureStoreError(f"{directory} exists and is not empty; choose a new directory")
    (directory / "data").mkdir(parents=True, exist_ok=True)
    project = "".join(c if c.isalnum() else "_" for c in directory.resolve().name).strip("_")
    (directory / "featurestore.yaml").write_text(CONFIG.format(project=project or "features"))
    (directory / "features.py").write_text(DEFINITIONS)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    pl.DataFrame({
        "customer_id": [1, 2, 3, 1],
        "updated_at": [start, start, start + timedelta(days=1), start + timedelta(days=2)],
        "balance": [120.0, 0.0, 75.5, 80.0],
        "segment": ["retail", "retail", "business", "retail"],
    }).write_parquet(directory / "data" / "accounts.parquet")
