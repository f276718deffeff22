"""The Feast repo feast_compare.py measures: generated data, definitions with two feature
services (with and without the on-demand view), and one feature_store.yaml per offline store
Feast ships for local files, both over the same registry, data and Redis database."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import feast
import numpy as np
import pandas as pd

T0 = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 30
WIDTHS = {"profile": 20, "stats": 50}

# Result key -> the feature service of that name in both systems: the 70 features with the
# 3-output on-demand view (3 @transform once imported), and the same 70 features alone.
SERVICES = {"with_transforms": "bench", "without_transforms": "bench_plain"}
# The same features as references ("view:feature"), which Feast's feature server resolves
# faster than a feature service's name.
_PLAIN = [f"{view}:{view}_f{i:02d}" for view, width in WIDTHS.items() for i in range(width)]
FEATURE_REFS = {"with_transforms": _PLAIN + [f"per_txn:{name}" for name in (
    "amount_ratio", "amount_gap", "score")], "without_transforms": _PLAIN}

# Result key -> (feature_store.yaml file, Feast's offline store type). The first is the repo's
# own feature_store.yaml, the one `feast apply`, `feast serve` and import-feast read.
OFFLINE_STORES = {"feast_duckdb": ("feature_store.yaml", "duckdb"),
                  "feast_file": ("feature_store_file.yaml", "dask")}

DEFINITIONS = """
from datetime import timedelta
from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64

user = Entity(name="user", join_keys=["user_id"])
def view(name, n):
    source = FileSource(name=f"{name}_source", path=f"{DATA}/{name}.parquet",
                        timestamp_field="event_timestamp")
    return FeatureView(name=name, entities=[user], ttl=timedelta(days=30), source=source,
                       schema=[Field(name=f"{name}_f{i:02d}", dtype=Float64) for i in range(n)])
profile = view("profile", 20)
stats = view("stats", 50)
request = RequestSource(name="txn", schema=[Field(name="amount", dtype=Float64)])

@on_demand_feature_view(sources=[profile, stats, request], mode="python",
                        schema=[Field(name="amount_ratio", dtype=Float64),
                                Field(name="amount_gap", dtype=Float64),
                                Field(name="score", dtype=Float64)])
def per_txn(inputs):
    return {
        "amount_ratio": [a / (p + 1.0) if p is not None else None
                         for a, p in zip(inputs["amount"], inputs["profile_f00"])],
        "amount_gap": [a - s if s is not None else None
                       for a, s in zip(inputs["amount"], inputs["stats_f00"])],
        "score": [p * 0.5 + s * 0.25 if p is not None and s is not None else None
                  for p, s in zip(inputs["profile_f01"], inputs["stats_f01"])],
    }

service = FeatureService(name="bench", features=[profile, stats, per_txn])
plain = FeatureService(name="bench_plain", features=[profile, stats])
"""


def write_feast_repo(root: Path, users: int, rows: int, redis_host: str, seed: int) -> Path:
    """`rows` events (half per view) of `users` users over DAYS days from T0, every feature a
    uniform float; Feast's online store is database 1 of the Redis at `redis_host`."""
    repo = root / "feast_repo"
    (repo / "data").mkdir(parents=True)
    for filename, offline in OFFLINE_STORES.values():
        (repo / filename).write_text(textwrap.dedent(f"""
            project: bench
            registry: data/registry.db
            provider: local
            offline_store:
                type: {offline}
            online_store:
                type: redis
                connection_string: "{redis_host},db=1"
            entity_key_serialization_version: 3
            """))
    # Absolute data paths: Feast's DuckDB store reads a relative path from the working
    # directory, its file store from the repo.
    (repo / "definitions.py").write_text(f"DATA = {str(repo / 'data')!r}\n{DEFINITIONS}")
    rng = np.random.default_rng(seed)
    for name, width in WIDTHS.items():
        n = rows // 2
        columns: dict[str, Any] = {
            "user_id": rng.integers(0, users, n),
            "event_timestamp": pd.to_datetime(T0 + pd.to_timedelta(
                rng.integers(0, DAYS * 86400, n), unit="s"), utc=True)}
        for i in range(width):
            columns[f"{name}_f{i:02d}"] = rng.random(n)
        pd.DataFrame(columns).to_parquet(repo / "data" / f"{name}.parquet")
    return repo


def feast_store(repo: Path, side: str) -> feast.FeatureStore:
    """Feast's FeatureStore of `repo` with the offline store of `side` (a key of
    OFFLINE_STORES)."""
    return feast.FeatureStore(repo_path=str(repo), fs_yaml_file=repo / OFFLINE_STORES[side][0])


def labels(users: int, n: int, seed: int) -> pd.DataFrame:
    """Label rows: a user, a time after the first day, and the request input `amount`."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user_id": rng.integers(0, users, n),
        "event_timestamp": pd.to_datetime(T0 + pd.to_timedelta(
            rng.integers(86400, DAYS * 86400, n), unit="s"), utc=True),
        "amount": rng.random(n) * 100})
