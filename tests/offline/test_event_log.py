"""The pushed-event log: one entry per batch id whatever retries and concurrent senders do,
and training sets that count every logged event exactly once, before and after an ingest
copies the log into the source's table."""

from __future__ import annotations

import os
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from featurestore import FeatureStore
from featurestore.offline import event_log
from featurestore.values.timestamps import to_micros

T0 = datetime(2025, 3, 1, tzinfo=UTC)
DEFS = """
from featurestore import Aggregate, Entity, FeatureService, FeatureView, Source
from featurestore.types import Int64

user = Entity("user", join_keys={"user_id": Int64})
tx = Source("tx", path="data/tx.parquet", timestamp="event_ts")
spend = FeatureView("spend", entity=user, source=tx, aggregates=[
    Aggregate("amount", "sum", window="1d", hop="1h", name="sum_1d"),
    Aggregate("amount", "count", window="1d", hop="1h", name="count_1d")])
"""


def events(rows: list[tuple[int, float, datetime]]) -> pa.Table:
    return pl.DataFrame({"user_id": [r[0] for r in rows], "amount": [r[1] for r in rows],
                         "event_ts": [r[2] for r in rows]},
                        schema={"user_id": pl.Int64, "amount": pl.Float64,
                                "event_ts": pl.Datetime("us", "UTC")}).to_arrow()


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    (tmp_path / "data").mkdir()
    (tmp_path / "featurestore.yaml").write_text("project: log\n")
    (tmp_path / "features.py").write_text(textwrap.dedent(DEFS))
    pl.from_arrow(events([(1, 1.0, T0), (2, 2.0, T0)])).write_parquet(tmp_path / "data" / "tx.parquet")
    fs = FeatureStore(tmp_path)
    fs.apply()
    return fs


def append(fs: FeatureStore, batch_id: str, rows: list[tuple[int, float, datetime]],
           now: datetime) -> int:
    table = event_log.check_batch(fs.plan, "tx", events(rows), to_micros(now), 0)
    return event_log.append(fs.config.root, "tx", batch_id, table, to_micros(now))


def test_a_batch_id_is_logged_once_with_its_first_ingest_time(store: FeatureStore) -> None:
    first = append(store, "b1", [(1, 5.0, T0)], T0 + timedelta(minutes=1))
    again = append(store, "b1", [(1, 5.0, T0)], T0 + timedelta(minutes=9))
    assert again == first == to_micros(T0 + timedelta(minutes=1))
    assert [p.name.split("-", 1)[1] for p in event_log.files(store.config.root, "tx")] == \
        ["b1.parquet"]


def test_concurrent_senders_of_one_batch_id_log_it_once(store: FeatureStore) -> None:
    times: list[int] = []
    senders = [threading.Thread(target=lambda k=k: times.append(
        append(store, "same", [(1, 5.0, T0)], T0 + timedelta(seconds=k)))) for k in range(8)]
    for s in senders:
        s.start()
    for s in senders:
        s.join()
    assert len(set(times)) == 1
    assert len(event_log.files(store.config.root, "tx")) == 1


def test_leftovers_of_killed_pushes_are_removed_once_old(store: FeatureStore) -> None:
    """A push killed mid-write leaves a .partial file or a staged claim; they are removed
    once older than any live push, while logged batches and fresh leftovers stay."""
    append(store, "kept", [(1, 5.0, T0)], T0)
    directory = store.config.root / event_log.LOG_DIR / "tx"
    old = [directory / ".x-dead.parquet.1.partial", directory / ".ids" / ".dead.2"]
    fresh = directory / ".y-live.parquet.3.partial"
    for path in [*old, fresh]:
        path.write_bytes(b"half")
    for path in old:
        os.utime(path, (time.time() - 2 * event_log.LEFTOVER_AGE_S,) * 2)
    assert event_log.remove_leftovers(store.config.root, "tx") == 2
    assert not any(p.exists() for p in old) and fresh.exists()
    assert [p.name.split("-", 1)[1] for p in event_log.files(store.config.root, "tx")] == \
        ["kept.parquet"]
    assert (directory / ".ids" / "kept").exists()


def test_training_sets_count_logged_events_once_before_and_after_ingest(
        store: FeatureStore) -> None:
    append(store, "b1", [(1, 10.0, T0 + timedelta(hours=1)), (3, 4.0, T0)],
           T0 + timedelta(hours=1))
    labels = pl.DataFrame({"user_id": [1, 2, 3],
                           "event_timestamp": [T0 + timedelta(hours=2)] * 3})
    expected = {"sum_1d": [11.0, 2.0, 4.0], "count_1d": [2, 1, 1]}
    before = store.training_set(labels, features=["spend"])
    assert before.select("sum_1d", "count_1d").to_dict(as_series=False) == expected
    store.backfill()  # copies the log into sources.tx
    after = store.training_set(labels, features=["spend"])
    assert after.select("sum_1d", "count_1d").to_dict(as_series=False) == expected
    # Visible from its ingest time: a label before the push does not see it.
    early = store.training_set(labels.with_columns(pl.lit(T0 + timedelta(minutes=30))
                                                   .alias("event_timestamp")), features=["spend"])
    assert early["sum_1d"].to_list() == [1.0, 2.0, 0.0]


def logged_batches(fs: FeatureStore) -> list[str]:
    """Every batch id the log holds, once per holding (a batch in two files appears twice)."""
    return sorted(b for path in event_log.files(fs.config.root, "tx")
                  for b in event_log.batches(path))


def test_compaction_merges_old_batches_and_keeps_each_once(store: FeatureStore) -> None:
    for k in range(5):  # batch k ingested at T0 + k hours, one event of user 1 and k + 1
        append(store, f"b{k}", [(1, 1.0, T0 + timedelta(hours=k)), (k + 1, 10.0 ** k, T0)],
               T0 + timedelta(hours=k))
    labels = pl.DataFrame({"user_id": [1, 2, 3, 4, 5],
                           "event_timestamp": [T0 + timedelta(hours=5)] * 5})
    before = store.training_set(labels, features=["spend"]).to_dict(as_series=False)
    root = store.config.root
    assert event_log.compact(root, "tx", to_micros(T0 + timedelta(hours=3))) == 3
    paths = event_log.files(root, "tx")
    assert [p.parent.name for p in paths] == ["compacted", "tx", "tx"]
    assert event_log.batches(paths[0]) == {f"b{k}": to_micros(T0 + timedelta(hours=k))
                                           for k in range(3)}
    assert event_log.batch_table(paths[0], "b1")["amount"].to_pylist() == [1.0, 10.0]
    assert logged_batches(store) == ["b0", "b1", "b2", "b3", "b4"]
    assert store.training_set(labels, features=["spend"]).to_dict(as_series=False) == before
    # A retry of a compacted batch keeps its first ingest time and writes nothing.
    assert append(store, "b1", [(1, 1.0, T0)], T0 + timedelta(days=3)) == \
        to_micros(T0 + timedelta(hours=1))
    assert logged_batches(store) == ["b0", "b1", "b2", "b3", "b4"]
    assert event_log.compact(root, "tx", to_micros(T0 + timedelta(days=1))) == 2
    assert logged_batches(store) == ["b0", "b1", "b2", "b3", "b4"]
    store.backfill()  # ingest reads compacted files like any other
    assert store.training_set(labels, features=["spend"]).to_dict(as_series=False) == before


def test_retries_racing_a_compaction_log_each_batch_once(store: FeatureStore) -> None:
    """A sender that died after claiming leaves a claim and no file; its retries race a
    compaction of the other batches: every batch ends up in exactly one file."""
    for k in range(20):
        append(store, f"b{k}", [(1, 1.0, T0)], T0 + timedelta(minutes=k))
    ids = store.config.root / event_log.LOG_DIR / "tx" / ".ids"
    (ids / "orphan").write_text(str(to_micros(T0)))  # claimed, never written
    retries = [threading.Thread(target=lambda b=b: append(store, b, [(1, 1.0, T0)],
                                                           T0 + timedelta(days=1)))
               for b in ["orphan", *(f"b{k}" for k in range(20))] * 2]
    compaction = threading.Thread(target=lambda: event_log.compact(
        store.config.root, "tx", to_micros(T0 + timedelta(hours=1))))
    for t in [*retries[:10], compaction, *retries[10:]]:
        t.start()
    for t in [*retries, compaction]:
        t.join()
    assert logged_batches(store) == sorted(["orphan", *(f"b{k}" for k in range(20))])


def test_a_source_with_a_created_column_ingests_its_pushed_batches(tmp_path: Path) -> None:
    """Pushed batches carry no created column (a pushed event's created time is its ingest
    time): ingest gives them that time, windows stay the same, and a plain view sees them."""
    (tmp_path / "data").mkdir()
    (tmp_path / "featurestore.yaml").write_text("project: log\n")
    (tmp_path / "features.py").write_text(textwrap.dedent("""
        from featurestore import Aggregate, Entity, FeatureView, Field, Source
        from featurestore.types import Float64, Int64

        user = Entity("user", join_keys={"user_id": Int64})
        tx = Source("tx", path="data/tx.parquet", timestamp="event_ts", created="created_ts")
        last = FeatureView("last", entity=user, source=tx, fields=[Field("amount", Float64)])
        spend = FeatureView("spend", entity=user, source=tx, aggregates=[
            Aggregate("amount", "sum", window="1d", hop="1h", name="sum_1d")])
        """))
    pl.from_arrow(events([(1, 1.0, T0), (2, 2.0, T0)])).with_columns(
        pl.col("event_ts").alias("created_ts")).write_parquet(tmp_path / "data" / "tx.parquet")
    fs = FeatureStore(tmp_path)
    fs.apply()
    pushed_at = T0 + timedelta(hours=1)
    table = event_log.check_batch(fs.plan, "tx", events([(1, 5.0, T0 + timedelta(minutes=30))]),
                                  to_micros(pushed_at), 0)
    event_log.append(fs.config.root, "tx", "b1", table, to_micros(pushed_at))
    labels = pl.DataFrame({"user_id": [1, 1, 2], "event_timestamp": [
        T0 + timedelta(minutes=45), T0 + timedelta(hours=2), T0 + timedelta(hours=2)]})
    before = fs.training_set(labels, features=["spend"])
    assert before["sum_1d"].to_list() == [1.0, 6.0, 2.0]  # visible from its ingest time
    fs.backfill()  # copies the log into sources.tx, created_ts = the batch's ingest time
    after = fs.training_set(labels, features=["last", "spend"])
    assert after.select("amount", "sum_1d").to_dict(as_series=False) == {
        "amount": [1.0, 5.0, 2.0], "sum_1d": [1.0, 6.0, 2.0]}
    created = fs.sql("SELECT created_ts FROM sources.tx WHERE amount = 5.0")
    assert created["created_ts"].to_list() == [pushed_at]
