"""Windowed aggregations, online vs offline: events materialized from files and then pushed in
random order, random batch sizes and with retries; each online read, taken right after a push
at that moment's clock, must equal the training set built afterwards at the same times, bit
for bit, and a read as of before the latest write is refused rather than answered. And the
same events in two arrival orders leave byte-identical tiles."""

from __future__ import annotations

import math
import struct
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_kit import both_backends, online_of, redis_client

from featurestore import FeatureStore, materialization
from featurestore.definitions.types import Int64
from featurestore.errors import PastReadRefused, RegistryMoved
from featurestore.online.keys import PUSH_SUFFIX, push_key
from featurestore.online.lookup import Lookup
from featurestore.online.tiles import compacted, groups, stored_values
from featurestore.push import push
from featurestore.values.columns import from_arrow, to_arrow

FUNCTIONS = ["sum", "count", "mean", "min", "max", "var", "stddev", "first", "last",
             "count_distinct"]
DEFS = """
from featurestore import Aggregate, Entity, FeatureService, FeatureView, Source
from featurestore.types import Int64, String
user = Entity("user", join_keys={"user_id": Int64})
tx = Source("tx", path="data/tx.parquet", timestamp="event_ts")
spend = FeatureView("spend", entity=user, source=tx, aggregates=[
    *[Aggregate("amount", f, window="2h", hop="30m") for f in FUNCTIONS],
    Aggregate("amount", "sum", window="10m", hop="5m", name="sum_10m"),
    Aggregate("amount", "count", window="1d", hop="1h", name="count_1d"),
    Aggregate("qty", "sum", window="1h", hop="15m", dtype=Int64, name="qty_1h"),
    Aggregate("qty", "max", window="1h", hop="15m", dtype=Int64, name="qty_max_1h"),
    Aggregate("shop", "count_distinct", window="2h", hop="30m", dtype=String, name="shops")])
week = FeatureView("week", entity=user, source=tx, aggregates=[
    Aggregate("amount", f, window="7d", hop="1h", name=f"week_{f}") for f in FUNCTIONS])
service = FeatureService("s", features=[spend])
weekly = FeatureService("w", features=[week, spend])
""".replace("FUNCTIONS", repr(FUNCTIONS))
MINUTE = 60_000_000
# Against one Redis and a 3-master Redis Cluster alike (redis_kit.both_backends).
online_url = pytest.fixture(scope="module", params=["redis", "cluster"])(both_backends)
DAY = 24 * 60 * MINUTE
CHUNK = materialization.TILE_CHUNK
SPECIALS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, 1e308, -1e308, 1.5]


def micros(when: datetime) -> int:
    return int((when - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def write_repo(root: Path, project: str, events: pl.DataFrame, online_url: str) -> FeatureStore:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "featurestore.yaml").write_text(f"project: {project}\nonline_store: {online_url}\n")
    (root / "defs.py").write_text(DEFS)
    events.write_parquet(root / "data" / "tx.parquet")
    store = FeatureStore(root)
    store.apply()
    return store


def frame(rows: list[dict[str, Any]], clock: int = 0) -> pl.DataFrame:
    """Rows whose "ts" is relative to `clock`."""
    return pl.DataFrame(
        {"user_id": [r["user"] for r in rows], "amount": [r["amount"] for r in rows],
         "qty": [r["qty"] for r in rows],
         "shop": [None if r["qty"] is None else f"s{r['qty'] % 5}" for r in rows],
         "event_ts": [datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=clock + r["ts"])
                      for r in rows]},
        schema={"user_id": pl.Int64, "amount": pl.Float64, "qty": pl.Int64, "shop": pl.String,
                "event_ts": pl.Datetime("us", "UTC")})


def online_values(store: FeatureStore, client: redis.Redis, users: list[int], as_of: int,
                  service: str = "s") -> dict[str, list[Any]]:
    plan = store.plan
    selection = plan.select(service=service)
    with online_of(client, plan.project) as online:
        for attempt in range(3):  # as the server does: a racing flip means prepare again
            lookup = Lookup(plan.project, plan, selection, online.served())
            try:
                result = online.read(
                    lookup, {"user_id": from_arrow(pa.array(users, pa.int64()), Int64)}, {}, as_of)
                break
            except RegistryMoved:
                if attempt == 2:
                    raise
    return {f.name: to_arrow(f.column, f.dtype).to_pylist() for f in result.features}


def bits(value: Any) -> Any:
    """Floats compared by their bits (all NaNs alike), so -0.0 != 0.0."""
    if isinstance(value, float):
        return "nan" if value != value else struct.pack("<d", value)
    return value


def event_rows(draw: st.DrawFn, n: int, start: int, spread: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        amount = draw(st.one_of(st.sampled_from(SPECIALS), st.floats(-1e6, 1e6),
                                st.none(), st.integers(-3, 3).map(float)))
        out.append({"user": draw(st.integers(1, 3)), "amount": amount,
                    "qty": draw(st.one_of(st.none(), st.integers(-2**62, 2**62))),
                    "ts": start + draw(st.integers(0, spread // MINUTE)) * MINUTE
                    + draw(st.sampled_from([0, 0, 1, -1]))})
    return out


def next_day() -> int:
    """The clock of a scenario: the next day boundary after the wall clock (keys expire by
    the wall clock, so the scenario must be current). Scenarios hold times relative to it and
    a day is a multiple of every hop and tile block, so a failing example replays exactly."""
    return (time.time_ns() // 1000 // DAY + 1) * DAY


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    # the files hold events up to a minute before materialization (times relative to it)
    history = event_rows(draw, draw(st.integers(0, 12)), -26 * 60 * MINUTE,
                         26 * 60 * MINUTE - MINUTE)
    pushes = []
    for _ in range(draw(st.integers(1, 5))):
        step = draw(st.sampled_from([1, MINUTE, 7 * MINUTE, 30 * MINUTE]))
        # late, on time and slightly-future events, in any order
        batch = event_rows(draw, draw(st.integers(1, 6)), -3 * 60 * MINUTE,
                           3 * 60 * MINUTE + 4 * MINUTE)
        pushes.append({"step": step, "rows": batch, "retry": draw(st.booleans()),
                       "read_at": draw(AS_OF_OFFSETS)})
    return {"history": history, "pushes": pushes, "read_at": draw(AS_OF_OFFSETS)}


# where a read is taken, relative to the latest write (materialization END, then each push):
# before it (refused: the tiles hold later events) or at it (a later as_of would be a guess
# about events still to come)
AS_OF_OFFSETS = st.sampled_from([-30 * MINUTE, -1, 0])


# One Redis only, for the suite's time: a windowed view's keys all live in the project's slot,
# so on a cluster they take the same scripts; the two tests below run on both.
ONE_REDIS = pytest.mark.parametrize("online_url", ["redis"], indirect=True)


@ONE_REDIS
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sc=scenarios())
def test_pushed_windows_match_training_sets(tmp_path_factory: pytest.TempPathFactory,
                                            online_url: str, sc: dict[str, Any]) -> None:
    materialization.TILE_CHUNK = 2  # several chunks of entities (restored below)
    root = tmp_path_factory.mktemp("windows")
    clock = start = next_day()
    store = write_repo(root, f"w{root.name.replace('-', '')}", frame(sc["history"], start),
                       online_url)
    client = redis_client(online_url)
    online = store.online()
    try:
        store.materialize(end=datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=clock))
        users = [1, 2, 3, 4]
        reads: list[tuple[int, dict[str, list[Any]]]] = []

        def read_at(offset: int) -> None:
            """A read `offset` after the latest write: exact, or refused naming that write."""
            if offset < 0:
                with pytest.raises(PastReadRefused, match=f"answers exactly is {clock}"):
                    online_values(store, client, users, clock + offset)
            else:
                reads.append((clock + offset, online_values(store, client, users, clock + offset)))
        read_at(sc["read_at"])
        for i, p in enumerate(sc["pushes"]):
            clock += p["step"]
            batch = frame(p["rows"], start).to_arrow()
            first = push(store.plan, root, online, "tx", batch, f"b{i}", now=clock)
            assert not first.duplicate
            if p["retry"]:
                assert push(store.plan, root, online, "tx", batch, f"b{i}", now=clock + 5).duplicate
            reads.append((clock, online_values(store, client, users, clock)))
            read_at(p["read_at"])
        labels = pl.DataFrame({
            "user_id": [u for _, _ in reads for u in users],
            "event_timestamp": [datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t)
                                for t, _ in reads for _ in users]})
        offline = store.training_set(labels, service="s")
        materialization.TILE_CHUNK = CHUNK
        for j, (t, served) in enumerate(reads):
            for name, values in served.items():
                expected = offline[name].to_list()[j * len(users):(j + 1) * len(users)]
                assert [bits(v) for v in values] == [bits(v) for v in expected], \
                    f"{name} at clock {t} (read {j}): online {values} vs offline {expected}"
    finally:
        materialization.TILE_CHUNK = CHUNK
        online.close()
        client.close()


def test_a_pushed_event_tying_a_stored_one_is_the_later_on_both_paths(
        tmp_path: Path, online_url: str) -> None:
    """Same event time, one event from the files and one pushed later: the pushed one is
    visible from its arrival, so `last` takes it (and `first` the stored one) online and in
    the training set alike, whatever their values."""
    clock = next_day()
    tie = -20 * MINUTE
    history = [{"user": 1, "amount": 5.0, "qty": 1, "ts": tie}]
    store = write_repo(tmp_path, "tie", frame(history, clock), online_url)
    client = redis_client(online_url)
    try:
        store.materialize(end=datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=clock))
        with store.online() as online:
            push(store.plan, tmp_path, online, "tx",
                 frame([{"user": 1, "amount": 1.0, "qty": 2, "ts": tie}], clock).to_arrow(),
                 "tie", now=clock + MINUTE)
        served = online_values(store, client, [1], clock + 2 * MINUTE)
        labels = pl.DataFrame({"user_id": [1], "event_timestamp": [
            datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=clock + 2 * MINUTE)]})
        offline = store.training_set(labels, service="s")
        assert served["amount_last_2h"] == offline["amount_last_2h"].to_list() == [1.0]
        assert served["amount_first_2h"] == offline["amount_first_2h"].to_list() == [5.0]
    finally:
        client.close()


def tile_dump(client: redis.Redis, store: FeatureStore, clock: int) -> dict[bytes, bytes]:
    """The view's window keys, each rewritten with its push key as a push's compaction would
    (pushes append records in arrival order; the merged tiles are what must not depend on
    it)."""
    prefix = f"{store.config.project}:spend:".encode()
    by_hop = {g.hop_us: g for g in groups(store.plan.views["spend"].aggregates)}
    out = {}
    for key in client.scan_iter(match=prefix + b"*:w*"):
        window = key.removesuffix(PUSH_SUFFIX.encode())
        g = by_hop[int(window.rsplit(b":w", 1)[1])]
        entity = window.split(b":", 4)[4]  # after project, view, storage and the project's tag
        value = stored_values([client.get(window)], [client.get(push_key(window.decode()))])
        out[entity] = compacted(g, value, clock, clock)[0]
    return out


@ONE_REDIS
def test_arrival_order_gives_byte_identical_tiles(tmp_path: Path, online_url: str) -> None:
    clock = (time.time_ns() // 1000 // (30 * MINUTE) + 1) * 30 * MINUTE
    rng = np.random.default_rng(7)
    values = [*SPECIALS, *rng.normal(0, 1e3, 120).tolist()]
    rows = [{"user": int(rng.integers(1, 4)), "amount": values[i % len(values)],
             "qty": int(rng.integers(-100, 100)),
             "ts": clock - int(rng.integers(0, 120)) * MINUTE} for i in range(300)]
    client = redis_client(online_url)
    dumps = []
    try:
        for run, seed in enumerate([1, 2]):
            order = np.random.default_rng(seed).permutation(len(rows))
            sizes = np.random.default_rng(seed + 10).integers(1, 40, 50)
            store = write_repo(tmp_path / f"r{run}", f"order{run}", frame([]), online_url)
            online = store.online()
            store.materialize(end=datetime(1970, 1, 1, tzinfo=UTC)
                              + timedelta(microseconds=clock))
            at, b = 0, 0
            while at < len(order):
                chunk = [rows[i] for i in order[at:at + sizes[b]]]
                push(store.plan, store.config.root, online, "tx", frame(chunk).to_arrow(),
                     f"b{b}", now=clock)
                at, b = at + sizes[b], b + 1
            dumps.append(tile_dump(client, store, clock))
    finally:
        client.close()
    assert dumps[0] and dumps[0] == dumps[1]


def test_many_pushes_with_rewrites_a_racing_materialization_and_early_events_match_training_sets(
        tmp_path: Path, online_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eighty pushes into two users' window keys (a 7-day window with coarse tiles of a day,
    and the 2-hour ones): the keys double and pushes rewrite them; events arrive late, on time
    and ahead of the clock (held apart, counted from their event time); retries after a
    rewrite count once; a materialization runs while pushes go on. Every read, at each push
    and minutes after the last one (when the early events have become visible), equals the
    training set bit for bit."""
    from featurestore.online import store as online_store
    from featurestore.online.store import OnlineStore

    small = online_store.WRITE_PUSH.replace(f"size > {online_store.REWRITE_BYTES} and",
                                            "size > 256 and")
    assert small != online_store.WRITE_PUSH
    monkeypatch.setattr(online_store, "WRITE_PUSH", small)  # rewrites come sooner
    rewrites: list[int] = []
    original = OnlineStore._rewrite

    def counted(self: OnlineStore, writes: list, grown: list[int], *args: Any) -> None:
        rewrites.append(len(grown))
        original(self, writes, grown, *args)
    monkeypatch.setattr(OnlineStore, "_rewrite", counted)
    rng = np.random.default_rng(11)

    def rows(n: int, lo: int, hi: int, ahead: int = 0) -> list[dict[str, Any]]:
        """n events in [lo, hi), and `ahead` more in the 4 minutes after hi."""
        return [{"user": 1 + j % 2, "amount": float(rng.choice([*SPECIALS, *rng.normal(0, 1e3, 8)])),
                 "qty": int(rng.integers(-50, 50)),
                 "ts": int(rng.integers(lo, hi) if j < n else rng.integers(hi, hi + 4 * MINUTE))}
                for j in range(n + ahead)]
    clock = next_day()
    store = write_repo(tmp_path, "rewrites", frame(rows(200, -8 * DAY, -MINUTE), clock), online_url)
    start = clock
    client = redis_client(online_url)
    online = store.online()
    reads: list[tuple[int, dict[str, list[Any]]]] = []
    racing: threading.Thread | None = None
    try:
        store.materialize(end=datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=clock))
        for i in range(80):
            clock += 3 * MINUTE
            batch = frame(rows(4, clock - start - 3 * 60 * MINUTE, clock - start + 1, 2),
                          start).to_arrow()
            assert not push(store.plan, tmp_path, online, "tx", batch, f"b{i}", now=clock).duplicate
            if i % 10 == 9:
                assert push(store.plan, tmp_path, online, "tx", batch, f"b{i}",
                            now=clock + 1).duplicate
            if i == 40:
                end = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=clock)
                racing = threading.Thread(target=store.materialize, kwargs={"end": end})
                racing.start()
            if racing is not None and i == 60:
                racing.join(60)
            if i % 4 == 3:
                reads.append((clock, online_values(store, client, [1, 2, 3], clock, "w")))
        for later in (MINUTE, 3 * MINUTE, 5 * MINUTE):
            reads.append((clock + later,
                          online_values(store, client, [1, 2, 3], clock + later, "w")))
        assert rewrites, "no window key grew enough to be rewritten"
        labels = pl.DataFrame({
            "user_id": [u for _ in reads for u in [1, 2, 3]],
            "event_timestamp": [datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t)
                                for t, _ in reads for _ in range(3)]})
        offline = store.training_set(labels, service="w")
        for j, (t, served) in enumerate(reads):
            for name, values in served.items():
                expected = offline[name].to_list()[3 * j:3 * j + 3]
                assert [bits(v) for v in values] == [bits(v) for v in expected], \
                    f"{name} at {t - start} (read {j}): online {values} vs offline {expected}"
    finally:
        if racing is not None:
            racing.join(60)
        online.close()
        client.close()
