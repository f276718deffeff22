"""A push's natively packed script call (online/push_command.py): its push keys are the ones
online/keys.py spells, its bytes are what redis-py would send for the same call, and a Redis
that lost its scripts (restarted, SCRIPT FLUSH) still takes pushes."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import hiredis
import numpy as np
import pyarrow as pa
import redis

from featurestore import Aggregate, Entity, FeatureView, Source
from featurestore.aggregation.events import Events
from featurestore.definitions import Definitions
from featurestore.definitions.types import Float64, Int64, String
from featurestore.online.keys import entity_bases, key_text, push_key, window_key
from featurestore.online.push_command import pack_eval
from featurestore.online.store import OnlineStore
from featurestore.online.tiles import view_window_writes
from featurestore.plan import Plan, ViewPlan, build_plan
from featurestore.values.columns import from_arrow
from featurestore.values.timestamps import now_us

HOUR = 3_600_000_000
NOW = (now_us() // HOUR + 1) * HOUR
NAMES = ["", "a|b", "%7C", "{x}", "é€😀", "}{|%", "plain", "plain"]
projects = itertools.count()


def plan_of() -> Plan:
    shop = Entity("shop", join_keys={"name": String, "n": Int64})
    src = Source("src", path="unused.parquet", timestamp="ts")
    spend = FeatureView("spend", entity=shop, source=src, aggregates=[
        Aggregate("x", "sum", window="2h", hop="1h", name="x_sum_2h"),
        Aggregate("x", "count", window="3h", hop="30m", name="x_count_3h")])
    defs = Definitions(entities={"shop": shop}, sources={"src": src}, views={"spend": spend})
    return build_plan(f"pushcmd{next(projects)}", defs, kernel_cache=None)


def events() -> Events:
    """One event per shop (NAMES with n = -3 .. 4; the two "plain" differ by n), sorted."""
    table = pa.table({"name": pa.array(NAMES, pa.string()),
                      "n": pa.array(range(-3, len(NAMES) - 3), pa.int64())})
    table = table.sort_by([("name", "ascending"), ("n", "ascending")])
    ts = NOW - 1 - np.arange(len(NAMES), dtype=np.int64) * 60_000_000
    return Events.from_sorted(table, ["name", "n"], ts=ts, created=ts,
                              columns={"x": from_arrow(pa.array(np.arange(8) * 1.5), Float64)})


def writes(plan: Plan, view: ViewPlan, storage: str) -> list:
    return view_window_writes(plan.project, view, storage, events(), NOW, NOW, NOW, NOW,
                              whole=False)


def test_window_keys_are_the_documented_ones() -> None:
    """Bases built in compiled code equal keys.py's text path (escapes, composite keys)."""
    plan = plan_of()
    view = plan.views["spend"]
    ev = events()
    bases = entity_bases(plan.project, "spend", "v.1", view.entity,
                         [key_text(from_arrow(ev.keys.column(k), t)) for k, t in view.join_keys],
                         windowed=True)
    groups = writes(plan, view, "v.1")
    assert [w.group.hop_us for w in groups] == [HOUR // 2, HOUR]
    for w in groups:
        assert len(w.keys) == len(NAMES)
        assert w.keys == [window_key(b, w.group.hop_us) for b in bases]


def test_the_packed_call_is_what_redis_py_sends() -> None:
    plan = plan_of()
    ws = writes(plan, plan.views["spend"], "v.1")
    fenced, args = ["reg", "lock", "applied", "fresh"], [1, "token", "b1", NOW, 0, "", ""]
    pairs = [x for w in ws for value, expiry in zip(w.values, w.expiry_ms, strict=True)
             for x in (value, expiry)]
    keys = [push_key(k) for w in ws for k in w.keys]
    expected = hiredis.pack_command(("EVALSHA", "f" * 40, len(fenced) + len(keys), *fenced,
                                     *keys, *args, *pairs))
    assert pack_eval("f" * 40, fenced, args, ws).tobytes() == expected


def test_a_redis_without_the_script_still_takes_pushes(
        store_for: Callable[[Plan], OnlineStore], redis_url: str) -> None:
    plan = plan_of()
    online, view = store_for(plan), plan.views["spend"]
    storage = online.new_storage(view)
    assert online.activate(view, storage, NOW, 0, None) == 0
    client = redis.Redis.from_url(redis_url)
    client.script_flush()
    assert online.push_tiles("b1", NOW, [view], lambda v, s: writes(plan, v, s), NOW) == 16
    assert online.applied("spend", storage) == {"b1"}
    keys = [k for w in writes(plan, view, storage) for k in w.keys]
    assert all(client.exists(push_key(k)) and not client.exists(k) for k in keys)
    client.close()
