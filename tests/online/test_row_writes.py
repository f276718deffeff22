"""Rows written online, natively packed, against a reference written here from the layouts the
modules document (keys: online/keys.py, rows: online/codec.py): every key and value Redis holds
after `write_rows` must be byte for byte the reference's, on both write paths (plain SETs into
a fresh storage, the write-if-newer script into a served one), with the expiry of ttl views."""

from __future__ import annotations

import itertools
import math
import socket
import struct
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import redis
from redis_kit import RedisServer

from featurestore import Entity, FeatureView, Field, Source
from featurestore.definitions import Definitions
from featurestore.definitions.types import Bool, Float64, Int64, String, Timestamp
from featurestore.errors import OnlineStoreError
from featurestore.online.codec import RowSchema, encode
from featurestore.online.keys import EXPIRY_MARGIN_US
from featurestore.online.resp import read_ok_replies
from featurestore.online.store import OnlineStore
from featurestore.plan import Plan, ViewPlan, build_plan
from featurestore.values.columns import from_arrow
from featurestore.values.timestamps import now_us

projects = itertools.count()
DAY = 86_400_000_000
I64 = (-(2 ** 63), 2 ** 63 - 1)
STRANGE = ["", "a|b", "%7C", "{x}", "é€😀", "100%", "}{|%", "plain"]
FLOATS = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e-310, -1.5, 2.0 ** 60]


def plan_of(ttl: timedelta | None, composite: bool) -> Plan:
    keys = {"shop": String, "user_id": Int64} if composite else {"user_id": Int64}
    entity = Entity("who", join_keys=keys)
    src = Source("src", path="unused.parquet", timestamp="ts")
    fields = [Field("f", Float64), Field("s1", String), Field("i", Int64), Field("b", Bool),
              Field("t", Timestamp), Field("s2", String)]
    fields += [Field(f"g{k}", Float64) for k in range(4)]  # 10 features: a 2-byte bitmap
    view = FeatureView("mixed", entity=entity, source=src, fields=fields, ttl=ttl)
    defs = Definitions(entities={"who": entity}, sources={"src": src}, views={"mixed": view})
    return build_plan(f"rowwrites{next(projects)}", defs, kernel_cache=None)


def batch_of(view: ViewPlan, n: int, seed: int) -> pa.RecordBatch:
    """n rows of every type with nulls, special floats, strange strings and extreme keys;
    sliced so the Arrow arrays start at an offset."""
    rng = np.random.default_rng(seed)
    m = n + 3

    def maybe(values: list[Any]) -> list[Any]:
        return [None if rng.random() < 0.2 else v for v in values]

    floats = pa.array(maybe([FLOATS[k] for k in rng.integers(0, len(FLOATS), m)]), pa.float64())
    nan_payload = struct.unpack("<d", struct.pack("<q", 0x7FF0_0000_0000_0ABC))[0]
    floats = pa.concat_arrays([floats, pa.array([nan_payload], pa.float64())])
    now = now_us()
    columns: dict[str, pa.Array] = {
        "user_id": pa.array(list(I64) + rng.integers(-10 ** 12, 10 ** 12, m - 1).tolist(),
                            pa.int64()),
        "shop": pa.array([STRANGE[k] for k in rng.integers(0, len(STRANGE), m + 1)]),
        "__event_ts": pa.array(now + rng.integers(-3 * DAY, DAY, m + 1), pa.int64()).cast(
            pa.timestamp("us", tz="UTC")),
        "__created": pa.array(rng.integers(0, now, m + 1), pa.int64()).cast(
            pa.timestamp("us", tz="UTC")),
        "__seq": pa.array(rng.integers(0, 2 ** 40, m + 1), pa.int64()),
        "f": floats,
        # nulls over values: a null is encoded as 0 or "" whatever its slot holds
        "i": pa.array(rng.integers(-2 ** 62, 2 ** 62, m + 1), pa.int64(),
                      mask=rng.random(m + 1) < 0.2),
        "s1": strings_over_nulls([STRANGE[k] * 3 for k in rng.integers(0, len(STRANGE), m + 1)],
                                 rng.random(m + 1) < 0.2),
        "b": pa.array(maybe((rng.random(m + 1) < 0.5).tolist()), pa.bool_()),
        "t": pa.array(maybe(rng.integers(0, now, m + 1).tolist()), pa.int64()).cast(
            pa.timestamp("us", tz="UTC")),
        "s2": pa.array([None] * (m + 1), pa.string()),
        **{f"g{k}": pa.array(maybe(rng.normal(size=m + 1).tolist()), pa.float64())
           for k in range(4)},
    }
    names = [k for k, _ in view.join_keys] + ["__event_ts", "__created", "__seq"] \
        + [f for f, _ in view.features]
    return pa.RecordBatch.from_arrays([columns[c] for c in names], names).slice(3, n)


def strings_over_nulls(values: list[str], null: np.ndarray) -> pa.Array:
    full = pa.array(values, pa.string())
    validity = pa.array(~null).buffers()[1]
    return pa.Array.from_buffers(pa.string(), len(values), [validity, *full.buffers()[1:]])


def reference_key(project: str, view: ViewPlan, storage: str, row: dict[str, Any]) -> bytes:
    def text(value: Any) -> str:
        if isinstance(value, str):
            return "".join({"%": "%25", "|": "%7C", "{": "%7B", "}": "%7D"}.get(c, c)
                           for c in value)
        return str(value)
    tag = "|".join(text(row[k]) for k, _ in view.join_keys)
    return f"{project}:{view.name}:{storage}:{{{view.entity}|{tag}}}".encode()


def reference_row(view: ViewPlan, row: dict[str, Any]) -> bytes:
    micros = {"__event_ts", "__created", "t"}
    value = row
    out = struct.pack("<qqq", *(as_int(value[c], c in micros) for c in
                                ("__event_ts", "__created", "__seq")))
    features = view.features
    bits = sum(1 << i for i, (f, _) in enumerate(features) if value[f] is not None)
    out += bits.to_bytes((len(features) + 7) // 8, "little")
    for f, t in features:
        v = value[f]
        if t is Float64:
            out += struct.pack("<d", v) if v is not None else bytes(8)
        elif t is not String:
            out += struct.pack("<q", as_int(v, t is Timestamp) if v is not None else 0)
    for f, t in features:
        if t is String:
            data = (value[f] or "").encode()
            out += struct.pack("<I", len(data)) + data
    return out


def as_int(value: Any, micros: bool) -> int:
    if micros:
        return int(pa.scalar(value, pa.timestamp("us", tz="UTC")).cast(pa.int64()).as_py())
    return int(value)


def rows_of(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """Python values per row; floats keep their exact bits (NaN payloads included)."""
    out = batch.to_pylist()
    raw = {c: batch.column(c) for c in batch.schema.names
           if pa.types.is_floating(batch.schema.field(c).type)}
    for c, array in raw.items():
        bits = from_arrow(array, Float64).values.view(np.int64)
        for r, row in enumerate(out):
            if row[c] is not None:
                row[c] = struct.unpack("<d", struct.pack("<q", int(bits[r])))[0]
    return out


@pytest.mark.parametrize(("ttl", "composite", "fresh"), [
    (None, False, True), (None, True, True), (timedelta(days=2), True, True),
    (timedelta(days=2), False, False), (None, True, False)])
def test_redis_holds_the_reference_bytes(store_for: Callable[[Plan], OnlineStore],
                                         redis_url: str, ttl: timedelta | None,
                                         composite: bool, fresh: bool) -> None:
    plan = plan_of(ttl, composite)
    online, view = store_for(plan), plan.views["mixed"]
    storage = online.new_storage(view)
    batch = batch_of(view, 500, seed=len(str(ttl)) + 2 * composite + fresh)
    before = now_us()
    online.write_rows(view, storage, batch, fresh=fresh)
    online.flush()
    after = now_us()
    client = redis.Redis.from_url(redis_url)
    expected: dict[bytes, dict[str, Any]] = {}
    for row in rows_of(batch):
        key = reference_key(plan.project, view, storage, row)
        old = expected.get(key)
        order = (row["__event_ts"], row["__created"], row["__seq"])
        if old is None or order >= (old["__event_ts"], old["__created"], old["__seq"]):
            expected[key] = row  # later duplicates win when newer (the script's rule)
    stored = client.keys(f"{plan.project}:mixed:{storage}:*")
    assert sorted(stored) == sorted(expected)
    keys = list(expected)
    for key, value in zip(keys, client.mget(keys), strict=True):
        assert value == reference_row(view, expected[key]), key
    # the row codec's own encoder (the reference of the read side's tests) agrees
    schema = RowSchema(view.features)
    header = np.array([[as_int(r[c], c != "__seq") for c in ("__event_ts", "__created",
                                                             "__seq")]
                       for r in expected.values()], np.int64)
    table = pa.Table.from_pylist(list(expected.values()), schema=batch.schema)
    buffer, offsets = encode(schema, header, [from_arrow(table.column(f), t)
                                              for f, t in view.features])
    assert [buffer[a:b].tobytes() for a, b in itertools.pairwise(offsets)] == \
        [bytes(v) for v in client.mget(keys)]
    with client.pipeline() as pipe:
        for key in keys:
            pipe.pexpiretime(key)
        expiry = pipe.execute()
    for key, at in zip(keys, expiry, strict=True):
        if ttl is None:
            assert at == -1
            continue
        event = as_int(expected[key]["__event_ts"], True)
        ttl_us = int(ttl.total_seconds() * 1e6)
        low = (max(event, before) + ttl_us + EXPIRY_MARGIN_US) // 1000 + 1
        high = (max(event, after) + ttl_us + EXPIRY_MARGIN_US) // 1000 + 1
        assert low <= at <= high
    client.close()


def test_an_error_reply_is_raised_after_every_reply_is_read() -> None:
    """Replies split anywhere between reads; an error among them is raised once all are read
    (the connection stays in step), and a lost connection is an error, not a success."""
    replies = b"+OK\r\n" * 7 + b"-OOM command not allowed\r\n" + b"+OK\r\n" * 5
    ours, theirs = socket.socketpair()
    sender = threading.Thread(target=lambda: [theirs.sendall(replies[a:a + 3])
                                              for a in range(0, len(replies), 3)])
    sender.start()
    with pytest.raises(redis.ResponseError, match="OOM command not allowed"):
        read_ok_replies(ours, 13)
    sender.join()
    theirs.sendall(b"+OK\r\n" * 1000)
    read_ok_replies(ours, 1000)
    theirs.sendall(b"+OK\r\n" * 2)
    theirs.close()
    with pytest.raises(redis.ConnectionError):
        read_ok_replies(ours, 3)
    ours.close()


def test_rows_redis_refuses_are_a_clear_error_and_nothing_flips(tmp_path: Path) -> None:
    """Redis out of memory in the middle of a fresh storage's writes: the error says so, the
    connection stays in step (the next commands work) and the served storage is unchanged."""
    server = RedisServer(tmp_path)
    server.start()
    plan = plan_of(None, False)
    online, view = OnlineStore(server.url, plan.project), plan.views["mixed"]
    client = redis.Redis.from_url(server.url)
    try:
        served = online.new_storage(view)
        online.write_rows(view, served, batch_of(view, 100, seed=1), fresh=True)
        online.flush()
        online.activate(view, served, now_us(), 100, None)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", client.info("memory")["used_memory"] + 2_000_000)
        storage = online.new_storage(view)
        with pytest.raises(OnlineStoreError, match="failed: OOM"):
            for seed in range(40):
                online.write_rows(view, storage, batch_of(view, 2000, seed), fresh=True)
            online.flush()
        assert online.served()["mixed"].storage == served
        assert len(client.keys(f"{plan.project}:mixed:{served}:*")) == 100
    finally:
        online.close()
        client.close()
        server.stop()
