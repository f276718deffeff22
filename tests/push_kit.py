"""A windowed repo of card transactions for push, parity and chaos tests: its definitions,
typed event frames with wall-clock times, and setting it up against a Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import redis

from featurestore import FeatureStore

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SERVICE = "spending"
FEATURES = ["sum_1h", "count_1h", "sum_1d", "count_1d"]
DEFS = """
from featurestore import Aggregate, Entity, FeatureService, FeatureView, Source
from featurestore.types import Int64

user = Entity("user", join_keys={"user_id": Int64})
tx = Source("tx", path="data/tx.parquet", timestamp="event_ts")
spend = FeatureView("spend", entity=user, source=tx, aggregates=[
    Aggregate("amount", "sum", window="1h", hop="5m", name="sum_1h"),
    Aggregate("amount", "count", window="1h", hop="5m", name="count_1h"),
    Aggregate("amount", "sum", window="1d", hop="1h", name="sum_1d"),
    Aggregate("amount", "count", window="1d", hop="1h", name="count_1d")])
# Never materialized in these tests: pushes to its source must ask for a materialization.
clicks = Source("clicks", path="data/clicks.parquet", timestamp="clicked_at")
activity = FeatureView("activity", entity=user, source=clicks, aggregates=[
    Aggregate("clicks", "sum", window="1h", hop="5m", dtype=Int64, name="clicks_1h")])
spending = FeatureService("spending", features=[spend])
"""


def now_us() -> int:
    return time.time_ns() // 1000


def at(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def tx_events(rows: list[tuple[int | None, Any, int | None]]) -> pl.DataFrame:
    """(user_id, amount, event time in epoch microseconds) rows, typed as the source declares."""
    return pl.DataFrame(
        {"user_id": [r[0] for r in rows], "amount": [r[1] for r in rows],
         "event_ts": [None if r[2] is None else at(r[2]) for r in rows]},
        schema={"user_id": pl.Int64, "amount": pl.Float64, "event_ts": pl.Datetime("us", "UTC")})


def clicks_events(rows: list[tuple[int, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"user_id": [r[0] for r in rows], "clicks": [r[1] for r in rows],
         "clicked_at": [at(r[2]) for r in rows]},
        schema={"user_id": pl.Int64, "clicks": pl.Int64, "clicked_at": pl.Datetime("us", "UTC")})


def write_repo(root: Path, project: str, redis_url: str, tx: pl.DataFrame) -> FeatureStore:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "featurestore.yaml").write_text(f"project: {project}\nonline_store: {redis_url}\n")
    (root / "defs.py").write_text(DEFS)
    tx.write_parquet(root / "data" / "tx.parquet")
    clicks_events([]).write_parquet(root / "data" / "clicks.parquet")
    store = FeatureStore(root)
    store.apply()
    return store


def drop_project(client: redis.Redis, project: str) -> None:
    for pattern in (f"{project}:*", f"{{{project}}}:*"):  # data keys, the project's tag
        for key in client.scan_iter(match=pattern):
            client.delete(key)
