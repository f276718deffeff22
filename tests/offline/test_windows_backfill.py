"""The backfilled feature table of a windowed view (`features.<view>`): at every hop boundary
where it has a row it holds the training set's values at that time, and at every other hop
boundary the values of its latest earlier row (nothing changes between rows)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from featurestore import FeatureStore
from featurestore.offline import windowed

T0 = datetime(2025, 3, 1, tzinfo=UTC)
DEFS = """
from featurestore import Aggregate, Entity, FeatureView, Source
from featurestore.types import Int64
user = Entity("user", join_keys={"user_id": Int64})
tx = Source("tx", path="data/tx.parquet", timestamp="event_ts", created="created_ts")
spend = FeatureView("spend", entity=user, source=tx, aggregates=[
    Aggregate("amount", f, window=w, hop=h)
    for f in ("sum", "count", "mean", "min", "max", "stddev", "first", "last", "count_distinct")
    for w, h in (("3h", "1h"), ("1h", "15m"))])
"""


def bits(v: object) -> object:
    return ("nan" if v != v else struct.pack("<d", v)) if isinstance(v, float) else v


@pytest.mark.parametrize("part_events", [windowed.PART_EVENTS, 50])
def test_backfilled_values_equal_training_sets_at_every_boundary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, part_events: int) -> None:
    """Also when the backfill computes and writes its rows in parts of a few entities."""
    monkeypatch.setattr(windowed, "PART_EVENTS", part_events)
    rng = np.random.default_rng(3)
    n = 400
    users = rng.integers(1, 6, n)  # user 1 only gets created-late rows: the direct path
    ts = T0 + pl.Series(rng.integers(0, 48 * 60, n) * 60_000_000).cast(pl.Duration("us"))
    late = np.where((users == 1) | (rng.random(n) < 0.05), rng.integers(0, 90, n), 0)
    (tmp_path / "data").mkdir()
    pl.DataFrame({"user_id": users, "amount": rng.choice([1.0, 2.5, -0.0, 1e300, 7.25], n),
                  "event_ts": ts,
                  "created_ts": ts + pl.Series(late * 60_000_000).cast(pl.Duration("us"))}
                 ).write_parquet(tmp_path / "data" / "tx.parquet")
    (tmp_path / "featurestore.yaml").write_text("project: backfill\n")
    (tmp_path / "defs.py").write_text(DEFS)
    store = FeatureStore(tmp_path)
    store.apply()
    table = store.sql("SELECT * FROM features.spend ORDER BY user_id, window_end")
    assert table.height > 100
    features = [c for c in table.columns if c not in ("user_id", "window_end")]
    labels = table.select("user_id", pl.col("window_end").alias("event_timestamp"))
    offline = store.training_set(labels, features=["spend"])
    for name in features:
        assert [bits(v) for v in table[name]] == [bits(v) for v in offline[name]], name
    # Between rows nothing changes: every 15-minute boundary equals the latest row before it.
    grid = pl.DataFrame({"user_id": np.repeat(np.arange(1, 6), 60),
                         "event_timestamp": [T0 + timedelta(hours=10, minutes=15 * i)
                                             for _ in range(5) for i in range(60)]})
    at_grid = store.training_set(grid, features=["spend"])
    latest = grid.sort("event_timestamp").join_asof(
        table.rename({"window_end": "event_timestamp"}).sort("event_timestamp"),
        on="event_timestamp", by="user_id", check_sortedness=False).sort("user_id", "event_timestamp")
    expected = at_grid.sort("user_id", "event_timestamp")
    for name in features:
        assert [bits(v) for v in latest[name]] == [bits(v) for v in expected[name]], name


def test_views_of_one_source_built_in_turn_each_read_their_own_columns(tmp_path: Path) -> None:
    """apply reads a source's events once for consecutive views reading the same columns; a
    view reading other columns (or the same ones after it) gets its own: each feature table
    equals its training set."""
    rng = np.random.default_rng(5)
    n = 200
    ts = T0 + pl.Series(rng.integers(0, 24 * 60, n) * 60_000_000).cast(pl.Duration("us"))
    (tmp_path / "data").mkdir()
    pl.DataFrame({"user_id": rng.integers(1, 4, n), "amount": rng.choice([1.0, 2.5, 7.25], n),
                  "fee": rng.choice([0.5, 3.0], n), "event_ts": ts}
                 ).write_parquet(tmp_path / "data" / "tx.parquet")
    (tmp_path / "featurestore.yaml").write_text("project: turns\n")
    (tmp_path / "defs.py").write_text('''
from featurestore import Aggregate, Entity, FeatureView, Source
from featurestore.types import Int64
user = Entity("user", join_keys={"user_id": Int64})
tx = Source("tx", path="data/tx.parquet", timestamp="event_ts")
a = FeatureView("a", entity=user, source=tx, aggregates=[Aggregate("amount", "sum", window="2h", hop="1h")])
b = FeatureView("b", entity=user, source=tx, aggregates=[Aggregate("amount", "max", window="1h", hop="1h")])
c = FeatureView("c", entity=user, source=tx, aggregates=[Aggregate("fee", "sum", window="2h", hop="1h")])
d = FeatureView("d", entity=user, source=tx, aggregates=[Aggregate("amount", "count", window="2h", hop="1h")])
''')
    store = FeatureStore(tmp_path)
    store.apply()
    for view in "abcd":
        table = store.sql(f"SELECT * FROM features.{view} ORDER BY user_id, window_end")
        assert table.height > 20, view
        name = next(c for c in table.columns if c not in ("user_id", "window_end"))
        labels = table.select("user_id", pl.col("window_end").alias("event_timestamp"))
        offline = store.training_set(labels, features=[view])
        assert [bits(v) for v in table[name]] == [bits(v) for v in offline[name]], view
