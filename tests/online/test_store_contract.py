"""The online store's contract: what every backend behind `OnlineStore` must do, checked
against a real Redis through the store's face only (redis-py appears here only to look at
keys). A scale-out backend (Redis Cluster) runs this same module with its own `online_url`."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_kit import both_backends, free_port, redis_client

from featurestore import Aggregate, Entity, FeatureView, Field, Source
from featurestore.aggregation.events import Events
from featurestore.definitions import Definitions
from featurestore.definitions.types import Float64, Int64
from featurestore.errors import (
    NotAppliedError,
    OnlineDataLost,
    OnlineStoreError,
    OnlineUnavailable,
    PastReadRefused,
    RegistryMoved,
)
from featurestore.online.keys import (
    active_key,
    previous_layout_keys,
    push_key,
    push_lock_key,
    registry_key,
)
from featurestore.online.lookup import Lookup
from featurestore.online.store import OnlineStore
from featurestore.online.tiles import view_window_writes
from featurestore.plan import Plan, ViewPlan, build_plan
from featurestore.values.columns import from_arrow
from featurestore.values.timestamps import now_us

online_url = pytest.fixture(params=["redis", "cluster"])(both_backends)

HOUR = 3_600_000_000
NOW = (now_us() // HOUR + 1) * HOUR  # a hop boundary; expiries count from the real clock
projects = itertools.count()


def plan_with(ttl: timedelta | None = None, extra_field: bool = False) -> Plan:
    user = Entity("user", join_keys={"user_id": Int64})
    src = Source("src", path="unused.parquet", timestamp="ts")
    fields = [Field("x", Float64)] + ([Field("y", Int64)] if extra_field else [])
    rows = FeatureView("rows", entity=user, source=src, fields=fields, ttl=ttl)
    spend = FeatureView("spend", entity=user, source=src, aggregates=[
        Aggregate("x", "sum", window="2h", hop="1h", name="x_sum_2h"),
        Aggregate("x", "count", window="2h", hop="1h", name="x_count_2h")])
    defs = Definitions(entities={"user": user}, sources={"src": src},
                       views={"rows": rows, "spend": spend})
    return build_plan(f"contract{next(projects)}", defs, kernel_cache=None)


def rows_batch(users: list[int], header: list[tuple[int, int, int]], xs: list[float]
               ) -> pa.RecordBatch:
    event, created, seq = (list(c) for c in zip(*header, strict=True))
    ts = pa.timestamp("us", tz="UTC")
    return pa.RecordBatch.from_pydict({
        "user_id": pa.array(users, pa.int64()), "__event_ts": pa.array(event, pa.int64()).cast(ts),
        "__created": pa.array(created, pa.int64()).cast(ts), "__seq": pa.array(seq, pa.int64()),
        "x": pa.array(xs, pa.float64())})


def read(online: OnlineStore, plan: Plan, features: list[str], users: list[int],
         as_of: int) -> dict[str, list[object]]:
    selection = plan.select(features=features)
    lookup = Lookup(online.project, plan, selection, online.served())
    result = online.read(lookup, {"user_id": from_arrow(pa.array(users, pa.int64()), Int64)}, {},
                         as_of)
    return {f.name: [v if s == 0 else None for v, s in
                     zip(np.asarray(f.column.values).tolist(), f.status.tolist(), strict=True)]
            for f in result.features}


def test_the_registry_serves_what_was_activated(store_for: Callable[[Plan], OnlineStore]
                                                ) -> None:
    plan = plan_with(ttl=timedelta(days=3))
    online = store_for(plan)
    assert online.served() == {}
    storages = {}
    for view in plan.views.values():
        storages[view.name] = online.new_storage(view)
        assert online.activate(view, storages[view.name], NOW, 0, None) == 0
    served = online.served()
    assert {n: s.view for n, s in served.items()} == plan.views  # every field round-trips
    assert {n: s.storage for n, s in served.items()} == storages
    assert {s.end_us for s in served.values()} == {NOW}


def test_a_version_the_registry_cannot_read_is_not_served(
        store_for: Callable[[Plan], OnlineStore], online_url: str) -> None:
    """An entry written by an older release (its schema in another shape) is left out, so a
    lookup asks to materialize instead of reading rows through a guessed schema."""
    plan = plan_with()
    online = store_for(plan)
    activate(online, plan.views["spend"])
    client = redis_client(online_url)
    client.hset(registry_key(plan.project), mapping={
        "active:rows": "v0", "schema:rows:v0": '{"entity": "user", "join_keys": [["user_id", "Int64"]]}'})
    client.close()
    assert set(online.served()) == {"spend"}
    with pytest.raises(NotAppliedError, match="'rows' has no materialized version online"):
        Lookup(plan.project, plan, plan.select(features=["rows:x"]), online.served())


def test_the_previous_layout_is_not_served_and_a_flip_retires_it(
        store_for: Callable[[Plan], OnlineStore], online_url: str) -> None:
    """A server of the release before push keys reads window keys without them: the keys it
    finds its served storages by are not this release's, and a flip deletes them, so such a
    server finds nothing to serve and refuses instead of answering without pushed events."""
    plan = plan_with()
    online = store_for(plan)
    old_registry, old_active = previous_layout_keys(plan.project, "spend")
    client = redis_client(online_url)
    client.hset(old_registry, mapping={"active:spend": "v1"})
    client.set(old_active, "v1")
    assert online.served() == {}  # nothing of the old layout is read
    activate(online, plan.views["spend"])
    assert set(online.served()) == {"spend"}
    assert client.exists(old_registry) == 0 and client.exists(old_active) == 0
    assert client.exists(registry_key(plan.project), active_key(plan.project, "spend")) == 2
    client.close()


# Rows of one key written in any order and batching: the stored row is the latest in the
# point-in-time order (event time, then created time, then seq), ties included.
headers = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
                   min_size=1, max_size=8, unique=True)  # __seq makes rows unique


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=headers, batches=st.integers(1, 4), data=st.data())
def test_a_row_replaces_the_stored_one_only_if_not_older(
        store_for: Callable[[Plan], OnlineStore], header: list[tuple[int, int, int]],
        batches: int, data: st.DataObject) -> None:
    plan = plan_with()
    online, view = store_for(plan), plan.views["rows"]
    order = data.draw(st.permutations(range(len(header))))
    rows = [(HOUR * (e + 1), HOUR * (e + 1) + c, s, float(i)) for i, (e, c, s) in enumerate(header)]
    expected = max(rows, key=lambda r: r[:3])[3]  # the brute-force point-in-time winner
    storage = online.new_storage(view)
    for chunk in np.array_split(np.array(order), batches):
        picked = [rows[i] for i in chunk.tolist()]
        if picked:
            online.write_rows(view, storage, rows_batch([7] * len(picked), [r[:3] for r in picked],
                                               [r[3] for r in picked]))
    online.flush()
    online.activate(view, storage, NOW, len(rows), None)
    assert read(online, plan, ["rows:x"], [7], 100 * HOUR) == {"x": [expected]}


def test_a_fresh_storage_takes_each_entitys_row_as_written(
        store_for: Callable[[Plan], OnlineStore], online_url: str) -> None:
    """A full materialization writes each entity once into a storage nobody else writes:
    rows go in without comparison, with the view's ttl expiry, and are counted."""
    plan = plan_with(ttl=timedelta(hours=3))
    online, view = store_for(plan), plan.views["rows"]
    storage = online.new_storage(view)
    users = list(range(1, 5001))
    online.write_rows(view, storage, rows_batch(users, [(NOW - HOUR, NOW - HOUR, 0)] * len(users),
                                                [u / 2 for u in users]), fresh=True)
    assert online.flush() == len(users)
    online.activate(view, storage, NOW, len(users), None)
    assert read(online, plan, ["rows:x"], [1, 2500, 5000, 5001], NOW) == {
        "x": [0.5, 1250.0, 2500.0, None]}
    client = redis_client(online_url)
    key = next(client.scan_iter(match=f"{plan.project}:rows:*", count=10_000))
    assert 0 < client.pttl(key) <= 3 * 3_600_000 + 60_000  # ttl after the event, plus a minute
    client.close()


TIES = {  # the winner's value is 20.0 in both
    "created": [(HOUR, HOUR + 5, 2, 10.0), (HOUR, HOUR + 9, 0, 20.0), (HOUR, HOUR + 7, 1, 30.0)],
    "seq": [(HOUR, HOUR, 5, 10.0), (HOUR, HOUR, 9, 20.0), (HOUR, HOUR, 7, 30.0)],
}


@pytest.mark.parametrize("tie", sorted(TIES))
@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
@pytest.mark.parametrize("one_batch", [True, False])
def test_event_time_ties_go_to_the_later_created_then_the_higher_seq(
        store_for: Callable[[Plan], OnlineStore], tie: str, order: tuple[int, ...],
        one_batch: bool) -> None:
    """Equal event times: the later created row wins, then (created equal too) the row later
    in the source's order (higher __seq), whatever order the rows are written in."""
    plan = plan_with()
    online, view = store_for(plan), plan.views["rows"]
    rows = TIES[tie]
    picked = [rows[i] for i in order]
    storage = online.new_storage(view)
    for part in ([picked] if one_batch else [[r] for r in picked]):
        online.write_rows(view, storage, rows_batch([3] * len(part), [r[:3] for r in part],
                                           [r[3] for r in part]))
    online.flush()
    online.activate(view, storage, NOW, 3, None)
    assert read(online, plan, ["rows:x"], [3], 100 * HOUR) == {"x": [20.0]}


def activate(online: OnlineStore, view: ViewPlan, expected: str | None = None) -> str:
    storage = online.new_storage(view)
    assert online.activate(view, storage, NOW, 0, expected) == 0
    return storage


def spend_events() -> Events:
    table = pa.table({"user_id": pa.array([1, 1, 2], pa.int64())})
    return Events.from_sorted(
        table, ["user_id"], ts=np.array([NOW - 10, NOW - 5, NOW - 1], np.int64),
        created=np.array([NOW - 10, NOW - 5, NOW - 1], np.int64),
        columns={"x": from_arrow(pa.array([1.5, 2.0, 4.0]), Float64)})


def build(plan: Plan) -> Callable[[ViewPlan, str], list]:
    return lambda view, storage: view_window_writes(plan.project, view, storage, spend_events(),
                                                    NOW, NOW, NOW, NOW, whole=False)


def test_a_pushed_batch_is_applied_once_per_storage(store_for: Callable[[Plan], OnlineStore]
                                                    ) -> None:
    plan = plan_with()
    online, view = store_for(plan), plan.views["spend"]
    served = activate(online, view)
    assert online.push_tiles("b1", NOW, [view], build(plan), NOW) == 2  # one window key per user
    assert online.push_tiles("b1", NOW, [view], build(plan), NOW) is None
    assert read(online, plan, ["spend:x_sum_2h", "spend:x_count_2h"], [1, 2, 3], NOW) == {
        "x_sum_2h": [3.5, 4.0, 0.0], "x_count_2h": [2, 1, 0]}
    assert online.applied("spend", served) == {"b1"}
    online.mark_applied("spend", served, {"b2": NOW})  # a rebuild that holds b2 already
    assert online.push_tiles("b2", NOW, [view], build(plan), NOW) is None
    # A storage being built takes the batch once more, then holds it too.
    building = online.new_storage(view)
    into = {"spend": building}
    assert online.push_tiles("b1", NOW, [view], build(plan), NOW, into=into) == 2
    assert online.push_tiles("b1", NOW, [view], build(plan), NOW, into=into) is None


def test_pushes_leave_a_written_window_key_whole_until_its_push_key_outgrows_it(
        store_for: Callable[[Plan], OnlineStore], online_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A push appends to push keys, never to the window key a rewrite wrote (Redis would copy
    it); once a push key outgrew its window key (the 4 kB floor made 0 here), the push folds
    it into the window key, which then expires no earlier than either did. Reads count every
    record throughout, wherever it lies."""
    from featurestore.online import store as online_store
    small = online_store.WRITE_PUSH.replace(f"size > {online_store.REWRITE_BYTES} and",
                                            "size > 0 and")
    assert small != online_store.WRITE_PUSH
    monkeypatch.setattr(online_store, "WRITE_PUSH", small)
    plan = plan_with()
    online, view = store_for(plan), plan.views["spend"]
    storage = activate(online, view)
    early = Events.from_sorted(  # user 1's one event in the hour before, written whole
        pa.table({"user_id": pa.array([1], pa.int64())}), ["user_id"],
        ts=np.array([NOW - HOUR - 10]), created=np.array([NOW - HOUR - 10]),
        columns={"x": from_arrow(pa.array([7.0]), Float64)})
    (whole,) = view_window_writes(plan.project, view, storage, early, NOW - HOUR, NOW - HOUR,
                                  NOW - HOUR, NOW - 2 * HOUR, whole=True)
    online.write_windows(whole)
    online.flush()
    client = redis_client(online_url)
    window, pushed = whole.key(0), whole.push_key(0)
    written, expiry = client.get(window), client.pexpiretime(window)
    (pushes,) = build(plan)(view, storage)
    user_2 = pushes.key(1)
    sizes = []
    for n in range(1, 6):
        assert online.push_tiles(f"b{n}", NOW, [view], build(plan), NOW) == 2
        assert read(online, plan, ["spend:x_sum_2h", "spend:x_count_2h"], [1, 2], NOW) == {
            "x_sum_2h": [7.0 + 3.5 * n, 4.0 * n], "x_count_2h": [1 + 2 * n, n]}
        if n == 1:  # user 2 had no window key: its push key outgrew it at once
            assert not client.exists(push_key(user_2)) and client.exists(user_2)
        if not client.exists(pushed):
            break
        assert client.get(window) == written
        sizes.append(client.strlen(pushed))
        later = client.pexpiretime(pushed)
    assert 0 < len(sizes) < n, "the push key never outgrew its window key"
    assert sizes[-1] <= len(written) and client.get(window) != written
    assert client.pexpiretime(window) == later > expiry
    assert client.pexpiretime(user_2) == later
    client.close()


def test_concurrent_pushes_all_count_and_a_batch_sent_twice_at_once_counts_once(
        store_for: Callable[[Plan], OnlineStore]) -> None:
    """Eight senders push at the same moment into the same window keys: four distinct batches
    and two copies each of two more. Every distinct batch counts, each exactly once."""
    plan = plan_with()
    view = plan.views["spend"]
    served = activate(store_for(plan), view)
    ids = ["a", "b", "c", "d", "e", "e", "f", "f"]
    stores = [store_for(plan) for _ in ids]
    start = threading.Barrier(len(ids))
    outcomes: list[int | None] = []

    def send(online: OnlineStore, batch_id: str) -> None:
        start.wait()
        outcomes.append(online.push_tiles(batch_id, NOW, [view], build(plan), NOW))

    threads = [threading.Thread(target=send, args=pair) for pair in zip(stores, ids, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes, key=str) == [2] * 6 + [None] * 2  # each copy pair: one applies
    batches = len(set(ids))
    assert read(stores[0], plan, ["spend:x_sum_2h", "spend:x_count_2h"], [1, 2], NOW) == {
        "x_sum_2h": [3.5 * batches, 4.0 * batches], "x_count_2h": [2 * batches, batches]}
    assert stores[0].applied("spend", served) == set(ids)


def test_a_push_that_lost_its_lock_writes_nothing_and_starts_over(
        store_for: Callable[[Plan], OnlineStore], online_url: str) -> None:
    """A pusher stalled past its lock's expiry, while another took the lock: its write is
    refused and it merges again from what is stored then."""
    plan = plan_with()
    online, view = store_for(plan), plan.views["spend"]
    served = activate(online, view)
    client = redis_client(online_url)
    lock = push_lock_key(plan.project, "spend", served)
    calls = []

    def stalled(v: ViewPlan, storage: str) -> list:
        calls.append(client.get(lock))
        if len(calls) == 1:  # while the pusher builds, its lock passes to someone else
            client.set(lock, "someone-else", px=50)
        return build(plan)(v, storage)

    assert online.push_tiles("b1", NOW, [view], stalled, NOW) == 2
    assert len(calls) == 2 and calls[0] is not None
    assert read(online, plan, ["spend:x_sum_2h", "spend:x_count_2h"], [1, 2], NOW) == {
        "x_sum_2h": [3.5, 4.0], "x_count_2h": [2, 1]}
    assert client.get(lock) is None  # released
    client.close()


def test_a_push_to_a_view_not_served_at_its_version_is_refused(
        store_for: Callable[[Plan], OnlineStore]) -> None:
    plan = plan_with()
    online = store_for(plan)
    with pytest.raises(NotAppliedError, match=r"'spend' version .* is not served online"):
        online.push_tiles("b1", NOW, [plan.views["spend"]], build(plan), NOW)
    assert online.storages() == {}


def test_a_flip_waits_until_the_new_storage_holds_every_pushed_batch(
        store_for: Callable[[Plan], OnlineStore]) -> None:
    """The atomic flip of a materialization: refused while the served storage holds a
    batch the new one misses (pushed after the rebuild's snapshot), done once it holds it."""
    plan = plan_with()
    online, view = store_for(plan), plan.views["spend"]
    served = activate(online, view)
    building = online.new_storage(view)
    online.push_tiles("late", NOW, [view], build(plan), NOW)  # lands in the served storage
    assert online.activate(view, building, NOW, 0, served) == 1
    assert online.served()["spend"].storage == served
    online.mark_applied("spend", building, {"late": NOW})
    assert online.activate(view, building, NOW, 0, served) == 0
    assert online.served()["spend"].storage == building
    with pytest.raises(OnlineStoreError, match="served storage changed"):
        online.activate(view, online.new_storage(view), NOW, 0, served)


def test_reclaim_removes_every_storage_but_the_served_one(
        store_for: Callable[[Plan], OnlineStore], online_url: str) -> None:
    old, new = plan_with(), plan_with(extra_field=True)
    old.project = new.project
    online = store_for(new)
    v_old, v_new = old.views["rows"], new.views["rows"]
    assert v_old.version != v_new.version
    s_old = online.new_storage(v_old)
    online.write_rows(v_old, s_old, rows_batch([1, 2], [(1, 1, 0), (1, 1, 1)], [1.0, 2.0]))
    online.flush()
    online.activate(v_old, s_old, NOW, 2, None)
    s_new, s_dead = online.new_storage(v_new), online.new_storage(v_new)
    batch = rows_batch([1], [(2, 2, 0)], [3.0]).append_column("y", pa.array([5], pa.int64()))
    online.write_rows(v_new, s_new, batch)
    online.write_rows(v_new, s_dead, batch)  # a killed run's leftovers
    online.flush()
    online.activate(v_new, s_new, NOW, 1, s_old)
    assert online.storages() == {"rows": {s_old, s_new, s_dead}}
    client = redis_client(online_url)
    assert online.reclaim("rows", 5_000) == 3  # within the grace, old reads still work
    assert 0 < client.pttl(f"{new.project}:rows:{s_old}:{{user|1}}") <= 5_000
    assert client.pttl(f"{new.project}:rows:{s_new}:{{user|1}}") == -1
    assert online.reclaim("rows", 0) == 3
    assert online.storages() == {"rows": {s_new}}
    assert read(online, new, ["rows:x", "rows:y"], [1, 2], NOW) == {"x": [3.0, None],
                                                                     "y": [5, None]}
    assert all(f":{s_old}".encode() not in k for k in client.hkeys(registry_key(new.project)))
    client.close()


def test_reclaim_scans_only_while_a_storage_may_still_hold_keys(
        store_for: Callable[[Plan], OnlineStore], online_url: str) -> None:
    """A superseded storage is scanned for once: later reclaims (every materialization
    starts and ends with one) scan nothing, and forget it once its grace has passed."""
    plan = plan_with()
    online, view = store_for(plan), plan.views["rows"]
    client = redis_client(online_url)

    def scans() -> int:
        if isinstance(client, redis.RedisCluster):
            per_node = client.info("commandstats", target_nodes=client.PRIMARIES).values()
        else:
            per_node = [client.info("commandstats")]
        return sum(int(s.get("cmdstat_scan", {}).get("calls", 0)) for s in per_node)

    before = scans()
    assert online.reclaim("rows", 0) == 0  # nothing written yet
    first = online.new_storage(view)
    online.write_rows(view, first, rows_batch([1, 2], [(1, 1, 0), (1, 1, 1)], [1.0, 2.0]))
    online.flush()
    online.activate(view, first, NOW, 2, None)
    assert online.reclaim("rows", 0) == 0
    assert scans() == before
    second = online.new_storage(view)
    online.write_rows(view, second, rows_batch([1], [(2, 2, 0)], [3.0]))
    online.flush()
    online.activate(view, second, NOW, 1, first)
    assert online.reclaim("rows", 200) == 2
    assert scans() > before
    before = scans()
    assert online.reclaim("rows", 200) == 0  # its keys expire within the grace already
    assert scans() == before
    time.sleep(0.3)
    assert client.keys(f"{plan.project}:rows:{first}:*") == []
    assert online.reclaim("rows", 0) == 0
    assert scans() == before
    assert [k for k in client.hkeys(registry_key(plan.project)) if first.encode() in k] == []
    assert read(online, plan, ["rows:x"], [1, 2], NOW) == {"x": [3.0, None]}
    client.close()


def test_a_read_prepared_before_a_flip_or_a_data_loss_is_refused(
        store_for: Callable[[Plan], OnlineStore], online_url: str) -> None:
    """The fence read with the keys: a lookup of a storage that is no longer served raises
    RegistryMoved (a new lookup reads the new storage), and one against a Redis that lost
    the project's keys raises OnlineDataLost, never NOT_FOUND values."""
    plan = plan_with()
    online, view = store_for(plan), plan.views["rows"]
    users = {"user_id": from_arrow(pa.array([1], pa.int64()), Int64)}
    storages = []
    for x in (1.0, 2.0):
        storages.append(online.new_storage(view))
        online.write_rows(view, storages[-1], rows_batch([1], [(1, 1, 0)], [x]))
        online.flush()
        online.activate(view, storages[-1], NOW, 1, storages[0] if x == 2.0 else None)
        if x == 1.0:
            stale = Lookup(plan.project, plan, plan.select(features=["rows:x"]), online.served())
    with pytest.raises(RegistryMoved):
        online.read(stale, users, {}, NOW)
    assert read(online, plan, ["rows:x"], [1], NOW) == {"x": [2.0]}
    fresh = Lookup(plan.project, plan, plan.select(features=["rows:x"]), online.served())
    client = redis_client(online_url)
    client.delete(registry_key(plan.project), active_key(plan.project, "rows"),
                  *client.keys(f"{plan.project}:*"))
    client.close()
    with pytest.raises(OnlineDataLost, match="run `featurestore materialize`"):
        online.read(fresh, users, {}, NOW)


def test_a_windowed_read_before_what_the_tiles_hold_is_refused(
        store_for: Callable[[Plan], OnlineStore]) -> None:
    """The tiles hold every event visible by the materialization's END and by the last push
    they took: an earlier as_of cannot be answered exactly and is refused, naming the view
    and the earliest as_of that can."""
    plan = plan_with()
    online, view = store_for(plan), plan.views["spend"]
    activate(online, view)  # END = NOW
    features = ["spend:x_sum_2h"]
    with pytest.raises(PastReadRefused, match=f"'spend'.*earliest as_of it answers exactly is {NOW}"):
        read(online, plan, features, [1], NOW - 1)
    assert read(online, plan, features, [1], NOW) == {"x_sum_2h": [0.0]}
    online.push_tiles("b1", NOW + 5, [view], build(plan), NOW)  # ingested at NOW + 5
    with pytest.raises(PastReadRefused, match=f"exactly is {NOW + 5}"):
        read(online, plan, features, [1], NOW)
    assert read(online, plan, features, [1], NOW + 5) == {"x_sum_2h": [3.5]}
    online.push_tiles("b0", NOW + 2, [view], build(plan), NOW)  # an older ingest time
    with pytest.raises(PastReadRefused, match=f"exactly is {NOW + 5}"):  # moves no earlier
        read(online, plan, features, [1], NOW + 4)


def test_a_past_read_that_may_meet_an_expired_key_is_refused(
        store_for: Callable[[Plan], OnlineStore], online_url: str) -> None:
    """With a ttl, Redis expires keys: a missing key at a past as_of may be a row that was
    inside the ttl then. Once the storage is older than its ttl, such a read is refused; reads
    as of the last minute, or finding every key, are answered."""
    plan = plan_with(ttl=timedelta(days=1))
    online, view = store_for(plan), plan.views["rows"]
    now = now_us()
    storage = online.new_storage(view)
    online.write_rows(view, storage, rows_batch([1], [(now - 600_000_000, 0, 0)], [7.0]))
    online.flush()
    online.activate(view, storage, now, 1, None)
    past = now - 300_000_000
    assert read(online, plan, ["rows:x"], [1, 2], past) == {"x": [7.0, None]}  # storage new
    client = redis_client(online_url)
    client.hset(registry_key(plan.project), f"created:rows:{storage}",
                now - 2 * 86_400_000_000)  # as if written two days ago
    client.close()
    with pytest.raises(PastReadRefused, match=r"'rows'.*some of these entities have no key"):
        read(online, plan, ["rows:x"], [1, 2], past)
    assert read(online, plan, ["rows:x"], [1], past) == {"x": [7.0]}  # every key found
    assert read(online, plan, ["rows:x"], [1, 2], now_us()) == {"x": [7.0, None]}


def test_one_materialization_of_a_view_at_a_time(store_for: Callable[[Plan], OnlineStore]
                                                 ) -> None:
    online = store_for(plan_with())
    with online.lock("spend"):
        with pytest.raises(OnlineStoreError, match="another materialization of feature view "
                                                   "'spend' is running"), online.lock("spend"):
            pass
        with online.lock("rows"):  # another view is independent
            pass
    with online.lock("spend"):  # released
        pass


def test_an_unreachable_store_names_itself_without_its_password() -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    with OnlineStore(url, "p", timeout=0.5) as online, \
            pytest.raises(OnlineUnavailable, match=r"redis://:\*\*\*@127\.0\.0\.1") as caught:
        online.served()
    assert "s3cret-pw" not in str(caught.value)
