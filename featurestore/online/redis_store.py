"""Writing rows and the online registry to Redis. Reads happen in the caller's own I/O (one
MGET of `Lookup.keys()`), so this module is only what materialization and activation need.

The registry is one Redis hash per project:
    active:<view>               the version lookups read
    schema:<view>:<version>     JSON: entity, join keys, features and ttl of that version
    materialized:<view>:<version>  JSON: end (micros), rows, finished_at (micros)
A version becomes active only after all of its rows are written."""

from __future__ import annotations

import json
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import redis

from featurestore.definitions.types import dtype_by_name
from featurestore.online.codec import RowSchema, encode
from featurestore.online.keys import entity_tags, key_text, registry_key, view_prefix
from featurestore.online.lookup import ServedView
from featurestore.online.tiles import TileWrites
from featurestore.plan import ViewPlan
from featurestore.plan.plan import AggregatePlan
from featurestore.values.columns import from_arrow

# Writes a batch of rows, each only if it is not older, in the point-in-time order
# (event_ts, created_ts, seq) held in the row's first 24 bytes. ARGV holds row, expiry pairs;
# an expiry of 0 means none. Returns how many rows were written.
WRITE_IF_NEWER = """
local olds = redis.call('MGET', unpack(KEYS))
local written = 0
for i = 1, #KEYS do
  local row = ARGV[2 * i - 1]
  local old = olds[i]
  local newer = true
  if old then
    local oe, oc, os = struct.unpack('<i8<i8<i8', old)
    local ne, nc, ns = struct.unpack('<i8<i8<i8', row)
    newer = ne > oe or (ne == oe and (nc > oc or (nc == oc and ns >= os)))
  end
  if newer then
    local expire_at = ARGV[2 * i]
    if expire_at ~= '0' then
      redis.call('SET', KEYS[i], row, 'PXAT', expire_at)
    else
      redis.call('SET', KEYS[i], row)
    end
    written = written + 1
  end
end
return written
"""

HEADER_COLUMNS = ("__event_ts", "__created", "__seq")


def schema_of(view: ViewPlan) -> dict[str, Any]:
    schema = {"entity": view.entity, "join_keys": [[k, t.name] for k, t in view.join_keys],
              "features": [[f, t.name] for f, t in view.features], "ttl_us": view.ttl_us}
    if view.aggregates:
        schema["aggregates"] = [[a.name, a.column, a.function, a.dtype.name, a.output.name,
                                 a.window_us, a.hop_us] for a in view.aggregates]
    return schema


def served_from(name: str, version: str, schema: dict[str, Any]) -> ServedView:
    aggregates = tuple(
        AggregatePlan(n, c, f, dtype_by_name(d), dtype_by_name(o), w, h)
        for n, c, f, d, o, w, h in schema.get("aggregates", []))
    return ServedView(
        name, version, schema["entity"],
        tuple((k, dtype_by_name(t)) for k, t in schema["join_keys"]),
        tuple((f, dtype_by_name(t)) for f, t in schema["features"]), schema["ttl_us"],
        aggregates)


def parse_registry(raw: dict[bytes, bytes]) -> dict[str, ServedView]:
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    served = {}
    for field, version in fields.items():
        if field.startswith("active:"):
            name = field.removeprefix("active:")
            served[name] = served_from(name, version, json.loads(fields[f"schema:{name}:{version}"]))
    return served


class OnlineWriter:
    """Writes batches while the next one is being prepared: Redis runs one batch's scripts on
    a background thread (socket waits release the GIL) while this thread encodes the next.
    `flush()` waits for all of them and says how many rows were newer and written."""

    def __init__(self, client: redis.Redis, project: str, batch_rows: int = 2000,
                 in_flight: int = 2):
        self.client, self.project, self.batch_rows = client, project, batch_rows
        self._script = client.register_script(WRITE_IF_NEWER)
        self._io = ThreadPoolExecutor(1, thread_name_prefix="featurestore-materialize")
        self._pending: deque[Future[list[Any]]] = deque()
        self._in_flight, self._written = in_flight, 0

    def flush(self) -> int:
        while self._pending:
            self._collect()
        written, self._written = self._written, 0
        return written

    def close(self) -> None:
        self._io.shutdown(wait=True)

    def _collect(self) -> None:
        self._written += sum(int(count) for count in self._pending.popleft().result())

    def served(self) -> dict[str, ServedView]:
        return parse_registry(self.client.hgetall(registry_key(self.project)))

    def write(self, view: ViewPlan, batch: pa.RecordBatch, now_us: int | None = None) -> None:
        """Queue one batch of (keys, header columns, features) rows under the view's version."""
        n = batch.num_rows
        if n == 0:
            return
        keys = [from_arrow(batch.column(k), t) for k, t in view.join_keys]
        prefix = view_prefix(self.project, view.name, view.version)
        row_keys = [prefix + tag for tag in entity_tags(view.entity, [key_text(k) for k in keys])]
        header = np.column_stack([
            batch.column(c).cast(pa.int64()).to_numpy(zero_copy_only=False) for c in HEADER_COLUMNS])
        columns = [from_arrow(batch.column(f), t) for f, t in view.features]
        buffer, offsets = encode(RowSchema(view.features), header, columns)
        raw = buffer.tobytes()
        rows = [raw[offsets[i]:offsets[i + 1]] for i in range(n)]
        expire = self._expiry(view, header[:, 0], now_us)
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, n, self.batch_rows):
            stop = min(start + self.batch_rows, n)
            args: list[Any] = [None] * (2 * (stop - start))
            args[0::2] = rows[start:stop]
            args[1::2] = expire[start:stop]
            self._script(keys=row_keys[start:stop], args=args, client=pipe)
        while len(self._pending) >= self._in_flight:
            self._collect()
        self._pending.append(self._io.submit(pipe.execute))

    @staticmethod
    def _expiry(view: ViewPlan, event_ts: np.ndarray, now_us: int | None) -> list[int | str]:
        """Keys expire ttl after the later of their event time and now, so a value goes on
        reporting OUTSIDE_TTL for a while before Redis reclaims it (then it is NOT_FOUND)."""
        if view.ttl_us is None:
            return ["0"] * len(event_ts)
        now = now_us if now_us is not None else time.time_ns() // 1000
        return ((np.maximum(event_ts, now) + view.ttl_us) // 1000 + 1).tolist()

    def write_tiles(self, writes: TileWrites, now_us: int) -> int:
        """Queue a hop group's tile blocks and head events, replacing what Redis holds for
        them; returns the number of blocks."""
        pipe = self.client.pipeline(transaction=False)
        keys = writes.block_keys()
        blobs, expiry = writes.blocks([None] * len(keys), now_us)
        for key, blob, when in zip(keys, blobs, expiry, strict=True):
            pipe.set(key, blob, pxat=when)
        for key, blob, expiry in zip(writes.event_keys, writes.events, writes.event_expiry_ms,
                                     strict=True):
            pipe.set(key, blob, pxat=expiry)
        while len(self._pending) >= self._in_flight:
            self._collect()
        self._pending.append(self._io.submit(pipe.execute))  # counts keys set
        return len(keys)

    def mark_pushed(self, marks: list[str], ttl_s: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for mark in marks:
            pipe.set(mark, b"1", ex=ttl_s)
        pipe.execute()

    def activate(self, view: ViewPlan, end_us: int, rows: int) -> None:
        """Make the version the served one, recording what was materialized."""
        self.client.hset(registry_key(self.project), mapping={
            f"schema:{view.name}:{view.version}": json.dumps(schema_of(view)),
            f"materialized:{view.name}:{view.version}": json.dumps(
                {"end_us": end_us, "rows": rows, "finished_at_us": time.time_ns() // 1000}),
            f"active:{view.name}": view.version,
        })
