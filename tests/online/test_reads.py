"""Online reads against plain references, on generated data in a real Redis: rows (statuses,
ttl edges, nulls, the row bytes of many features) and windows (the tiles merged at a read
time, and a past read that cannot be answered exactly is refused)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore import Aggregate, Entity, FeatureView, Field, Source
from featurestore.aggregation.events import Events
from featurestore.definitions import Definitions
from featurestore.definitions.types import Float64, Int64, String
from featurestore.errors import OnlineStoreError, PastReadRefused
from featurestore.online.lookup import Lookup
from featurestore.online.store import OnlineStore
from featurestore.online.tiles import view_window_writes
from featurestore.plan import Plan, build_plan
from featurestore.values.columns import from_arrow
from featurestore.values.status import Status
from featurestore.values.timestamps import now_us

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
TTL = 10 * MINUTE
FIELDS = 11  # more than 8: the validity bitmap spans two bytes
projects = itertools.count()


def repo_plan() -> Plan:
    user = Entity("user", join_keys={"user_id": Int64})
    src = Source("src", path="unused.parquet", timestamp="ts")
    fields = [Field(f"f{i}", Float64 if i % 3 else (String if i % 2 else Int64))
              for i in range(FIELDS)]
    rows = FeatureView("rows", entity=user, source=src, fields=fields,
                       ttl=timedelta(microseconds=TTL))
    spend = FeatureView("spend", entity=user, source=src, aggregates=[
        Aggregate("x", "sum", window="1h", hop="10m", name="sum_1h"),
        Aggregate("x", "count", window="30m", hop="10m", name="count_30m")])
    return build_plan(f"reads{next(projects)}_{now_us()}", Definitions(
        entities={"user": user}, sources={"src": src}, views={"rows": rows, "spend": spend}),
        kernel_cache=None)


def read(store: OnlineStore, plan: Plan, features: list[str], users: list[int], as_of: int
         ) -> dict[str, list[tuple[str, Any]]]:
    """Feature -> (status name, value or None) per user."""
    lookup = Lookup(plan.project, plan, plan.select(features=features), store.served())
    result = store.read(lookup, {"user_id": from_arrow(pa.array(users, pa.int64()), Int64)},
                        {}, as_of)
    out = {}
    for f in result.features:
        values = f.column.values
        listed = values.to_list() if hasattr(values, "to_list") else np.asarray(values).tolist()
        out[f.name] = [(Status(s).name, v if s == Status.PRESENT else None)
                       for s, v in zip(f.status.tolist(), listed, strict=True)]
    return out


# One row per user (or none), each field null or not; read at as_of around the ttl edge.
rows_data = st.lists(
    st.tuples(st.integers(0, 20).map(lambda m: m * MINUTE),       # event time
              st.lists(st.booleans(), min_size=FIELDS, max_size=FIELDS),  # nulls
              st.integers(-1000, 1000)),
    min_size=1, max_size=6)
offsets = st.sampled_from([0, 1, -1, TTL, TTL - 1, TTL + 1, 5 * MINUTE, 30 * MINUTE])


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_data, offset=offsets, missing=st.integers(1, 3))
def test_rows_statuses_and_ttl_edges_match_the_reference(
        store_for: Callable[[Plan], OnlineStore], rows: list[tuple[int, list[bool], int]],
        offset: int, missing: int) -> None:
    plan = repo_plan()
    store, view = store_for(plan), plan.views["rows"]
    base = now_us() // MINUTE * MINUTE
    users = list(range(len(rows)))
    columns: dict[str, Any] = {}
    for i, (name, dtype) in enumerate(view.features):
        raw = [r[2] * (i + 1) for r in rows]
        values = [str(v) if dtype is String else float(v) if dtype is Float64 else v for v in raw]
        columns[name] = pa.array([None if r[1][i] else v for v, r in zip(values, rows, strict=True)],
                                 dtype.arrow)
    ts = pa.timestamp("us", tz="UTC")
    event = [base + r[0] for r in rows]
    batch = pa.RecordBatch.from_pydict({
        "user_id": pa.array(users, pa.int64()), "__event_ts": pa.array(event, pa.int64()).cast(ts),
        "__created": pa.array(event, pa.int64()).cast(ts),
        "__seq": pa.array(users, pa.int64()), **columns})
    storage = store.new_storage(view)
    store.write_rows(view, storage, batch)
    store.flush()
    store.activate(view, storage, base, len(rows), None)
    as_of = max(event) + offset
    asked = users + [len(rows) + k for k in range(missing)]  # never written: NOT_FOUND
    if any(e > as_of for e in event):  # a stored row is newer than as_of: refused, not guessed
        with pytest.raises(PastReadRefused, match=f"earliest as_of it answers exactly for "
                                                  f"them is {max(event)}"):
            read(store, plan, ["rows"], asked, as_of)
        as_of = max(event)
    got = read(store, plan, ["rows"], asked, as_of)
    for i, (name, _) in enumerate(view.features):
        expected = []
        for u in asked:
            if u >= len(rows):
                expected.append(("NOT_FOUND", None))
            elif event[u] < as_of - TTL:  # an event exactly ttl old is still inside
                expected.append(("OUTSIDE_TTL", None))
            elif rows[u][1][i]:
                expected.append(("NULL", None))
            else:
                expected.append(("PRESENT", columns[name][u].as_py()))
        assert got[name] == expected, name


# Events of a few users at generated times; read at a time inside or at the edge of a hop.
events_data = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 119),
                                 st.sampled_from([0.1, 1e16, -1e16, 2.5, -0.0, 3.0])),
                       min_size=1, max_size=40)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=events_data, read_minute=st.integers(0, 10))
def test_windows_read_online_match_the_reference(
        store_for: Callable[[Plan], OnlineStore], events: list[tuple[int, int, float]],
        read_minute: int) -> None:
    plan = repo_plan()
    store, view = store_for(plan), plan.views["spend"]
    hop = 10 * MINUTE
    head = now_us() // hop * hop  # reads happen in the head hop, at or after its start
    as_of = head + read_minute * MINUTE - (1 if read_minute == 10 else 0)
    rows = sorted((u, head - m * MINUTE + (SECOND if m == 0 else 0), x) for u, m, x in events)
    storage = store.new_storage(view)
    store.activate(view, storage, head, 0, None)
    for writes in view_window_writes(plan.project, view, storage, _events(rows), as_of, as_of,
                                     as_of, now_us(), whole=True):
        store.write_windows(writes)
    store.flush()
    users = [0, 1, 2, 3]
    got = read(store, plan, ["spend:sum_1h", "spend:count_30m"], users, as_of)
    for name, window, reduce in [("sum_1h", HOUR, math.fsum), ("count_30m", 30 * MINUTE, len)]:
        tail = as_of // hop * hop - window
        expected = [("PRESENT", reduce([x for uu, t, x in rows if uu == u and tail <= t <= as_of]))
                    for u in users]
        assert got[name] == expected, name


def _events(rows: list[tuple[int, int, float]]) -> Events:
    table = pa.table({"user_id": pa.array([u for u, _, _ in rows], pa.int64())})
    ts = np.array([t for _, t, _ in rows], np.int64)
    return Events.from_sorted(table, ["user_id"], ts=ts, created=ts.copy(),
                              columns={"x": from_arrow(pa.array([x for *_, x in rows]), Float64)})


def test_events_ahead_of_a_write_count_from_their_event_time_and_tiles_ahead_are_refused(
        store_for: Callable[[Plan], OnlineStore]) -> None:
    """Events not visible when written are held apart and counted by reads from their event
    time on; a tile holding an event after as_of (which the fence never lets a read reach)
    fails the read instead of answering it."""
    plan = repo_plan()
    store, view = store_for(plan), plan.views["spend"]
    hop = 10 * MINUTE
    head = now_us() // hop * hop
    rows = [(1, head + 2 * SECOND, 5.0), (1, head + 4 * SECOND, 7.0)]
    storage = store.new_storage(view)
    store.activate(view, storage, head, 0, None)

    def write(visible_at: int) -> None:
        for writes in view_window_writes(plan.project, view, storage, _events(rows), head,
                                         head + 4 * SECOND, visible_at, now_us(), whole=True):
            store.write_windows(writes)
        store.flush()

    write(head + SECOND)
    for at, total in [(head + SECOND, 0.0), (head + 3 * SECOND, 5.0), (head + 4 * SECOND, 12.0)]:
        assert read(store, plan, ["spend:sum_1h"], [1], at) == {"sum_1h": [("PRESENT", total)]}
    write(head + 5 * SECOND)
    assert read(store, plan, ["spend:sum_1h"], [1], head + 5 * SECOND) == {
        "sum_1h": [("PRESENT", 12.0)]}
    with pytest.raises(OnlineStoreError, match=r"'spend': 1 stored tiles hold events after as_of"):
        read(store, plan, ["spend:sum_1h"], [1], head + 3 * SECOND)
