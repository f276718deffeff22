"""The online store's one face for writers and synchronous readers: the only code besides the
serving reader (online/reader.py) that speaks to Redis. Materialization, pushes, parity and
tests go through these methods:

    served()                                  the registry: which version of each view is read
    write_rows(view, batch) / flush()         rows, write-if-newer, pipelined on a thread
    write_tiles(writes)                       tile blocks and head events, replaced
    push_tiles(source, batch_id, writes, now) a pushed batch's tiles merged in, exactly once
    mark_pushed(source, batch_ids)            batches a rebuild already holds
    activate(view, end_us, rows)              make a version the served one
    read(lookup, entities, requests, as_of)   one lookup, two round trips at most
    versions() / drop_version(view, version)  what is stored, and reclaiming a version

Redis errors leave as OnlineUnavailable or OnlineStoreError, with the URL's password removed."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import redis

from featurestore.errors import OnlineStoreError, OnlineUnavailable
from featurestore.online import registry
from featurestore.online.codec import RowSchema, encode
from featurestore.online.keys import (
    bases_of_table,
    batch_mark,
    registry_key,
    version_pattern,
)
from featurestore.online.lookup import Lookup, OnlineResult
from featurestore.online.tiles import TileWrites
from featurestore.online.urls import redacted, scrub
from featurestore.plan import ViewPlan
from featurestore.values.columns import Column, from_arrow
from featurestore.values.timestamps import now_us

BATCH_MARK_TTL_S = 7 * 86_400  # how long a pushed batch id is remembered online
HEADER_COLUMNS = ("__event_ts", "__created", "__seq")  # a row's point-in-time order
T = TypeVar("T")

# Writes a batch of rows, each only if it is not older, in the point-in-time order
# (event_ts, created_ts, seq) held in the row's first 24 bytes, also against a row of the
# same key earlier in the batch. ARGV holds row, expiry pairs;
# an expiry of 0 means none. Returns how many rows were written.
WRITE_IF_NEWER = """
local olds = redis.call('MGET', unpack(KEYS))
local current = {}
for i = 1, #KEYS do
  if olds[i] then current[KEYS[i]] = olds[i] end
end
local written = 0
for i = 1, #KEYS do
  local row = ARGV[2 * i - 1]
  local old = current[KEYS[i]]
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
    current[KEYS[i]] = row
    written = written + 1
  end
end
return written
"""

# Writes a push in one command: KEYS are the blocks then the head event keys, ARGV the
# number of blocks, then value/expiry pairs (blocks replaced, events appended), then the
# batch mark and its ttl in seconds.
WRITE_PUSH = """
local blocks = tonumber(ARGV[1])
for i = 1, #KEYS do
  local value, expire_at = ARGV[2 * i], ARGV[2 * i + 1]
  if i <= blocks then
    redis.call('SET', KEYS[i], value, 'PXAT', expire_at)
  else
    redis.call('APPEND', KEYS[i], value)
    redis.call('PEXPIREAT', KEYS[i], expire_at)
  end
end
redis.call('SET', ARGV[2 * #KEYS + 2], '1', 'EX', ARGV[2 * #KEYS + 3])
return blocks
"""


class OnlineStore:
    """One project's online store over redis-py. Writes are queued and run on a background
    thread (socket waits release the GIL) while the caller encodes the next batch; `flush()`
    waits for them."""

    def __init__(self, url: str, project: str, timeout: float | None = None,
                 batch_rows: int = 2000, in_flight: int = 2):
        self.url, self.project, self.batch_rows = url, project, batch_rows
        self._client = redis.Redis.from_url(url, socket_timeout=timeout)
        self._rows_script = self._client.register_script(WRITE_IF_NEWER)
        self._push_script = self._client.register_script(WRITE_PUSH)
        self._io: ThreadPoolExecutor | None = None
        self._pending: deque[Future[list[Any]]] = deque()
        self._in_flight, self._written = in_flight, 0

    def close(self) -> None:
        if self._io is not None:
            self._io.shutdown(wait=True)
        self._client.close()

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- registry ------------------------------------------------------------------------

    def served(self) -> dict[str, ViewPlan]:
        return self._call(lambda: registry.parse(self._client.hgetall(registry_key(self.project))))

    def activate(self, view: ViewPlan, end_us: int, rows: int) -> None:
        """Make the version the served one, recording what was materialized."""
        self._call(lambda: self._client.hset(registry_key(self.project),
                                             mapping=registry.activation(view, end_us, rows)))

    # -- materialization -----------------------------------------------------------------

    def write_rows(self, view: ViewPlan, batch: pa.RecordBatch) -> None:
        """Queue one batch of (keys, header columns, features) rows under the view's
        version; each row replaces the stored one only if it is not older."""
        n = batch.num_rows
        if n == 0:
            return
        keys = bases_of_table(self.project, view.name, view.version, view.entity,
                              view.join_keys, batch)
        header = np.column_stack([batch.column(c).cast(pa.int64()).to_numpy(zero_copy_only=False)
                                  for c in HEADER_COLUMNS])
        columns = [from_arrow(batch.column(f), t) for f, t in view.features]
        buffer, offsets = encode(RowSchema(view.features), header, columns)
        raw = buffer.tobytes()
        rows = [raw[offsets[i]:offsets[i + 1]] for i in range(n)]
        expire = _expiry(view, header[:, 0])
        pipe = self._client.pipeline(transaction=False)
        for start in range(0, n, self.batch_rows):
            stop = min(start + self.batch_rows, n)
            args: list[Any] = [None] * (2 * (stop - start))
            args[0::2] = rows[start:stop]
            args[1::2] = expire[start:stop]
            self._rows_script(keys=keys[start:stop], args=args, client=pipe)
        self._queue(pipe.execute)

    def write_tiles(self, writes: TileWrites, now: int) -> int:
        """Queue a hop group's tile blocks and head events, replacing what Redis holds for
        them; returns the number of blocks."""
        pipe = self._client.pipeline(transaction=False)
        keys = writes.block_keys()
        blobs, expiry = writes.blocks([None] * len(keys), now)
        for key, blob, when in zip(keys, blobs, expiry, strict=True):
            pipe.set(key, blob, pxat=when)
        for key, blob, when in zip(writes.event_keys, writes.events, writes.event_expiry_ms,
                                   strict=True):
            pipe.set(key, blob, pxat=when)
        self._queue(pipe.execute)
        return len(keys)

    def flush(self) -> int:
        """Waits for every queued write; returns how many rows were newer and written."""
        while self._pending:
            self._collect()
        written, self._written = self._written, 0
        return written

    def mark_pushed(self, source: str, batch_ids: list[str]) -> None:
        """Remembers batches as applied (a rebuild from the log holds them), so a retry of
        one is not added again."""
        def run() -> None:
            pipe = self._client.pipeline(transaction=False)
            for batch_id in batch_ids:
                pipe.set(batch_mark(self.project, source, batch_id), b"1", ex=BATCH_MARK_TTL_S)
            pipe.execute()
        self._call(run)

    # -- pushes --------------------------------------------------------------------------

    def push_tiles(self, source: str, batch_id: str, writes: list[TileWrites],
                   now: int) -> int | None:
        """Merges a pushed batch's tiles into the stored blocks in one optimistic
        transaction (retried when a concurrent push touches the same blocks). Returns the
        number of blocks written, or None when the batch id was applied before."""
        mark = batch_mark(self.project, source, batch_id)
        block_keys = [w.block_keys() for w in writes]
        keys = [k for ks in block_keys for k in ks]
        events = [k for w in writes for k in w.event_keys]

        def attempt() -> int | None:
            while True:
                with self._client.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(mark, *keys)
                        if pipe.exists(mark):
                            return None
                        old = pipe.mget(keys) if keys else []
                        values: list[Any] = []
                        at = 0
                        for w, ks in zip(writes, block_keys, strict=True):
                            blobs, expiry = w.blocks(old[at:at + len(ks)], now)
                            at += len(ks)
                            for pair in zip(blobs, expiry, strict=True):
                                values += pair
                        for w in writes:
                            for pair in zip(w.events, w.event_expiry_ms, strict=True):
                                values += pair
                        pipe.multi()
                        self._push_script(keys=keys + events,
                                          args=[len(keys), *values, mark, BATCH_MARK_TTL_S],
                                          client=pipe)
                        pipe.execute()
                        return len(keys)
                    except redis.WatchError:
                        continue
        return self._call(attempt)

    # -- reads ---------------------------------------------------------------------------

    def read(self, lookup: Lookup, entities: dict[str, Column], requests: dict[str, Column],
             as_of_us: int) -> OnlineResult:
        """One lookup (scripts, tests, parity); the server does the same over asyncio."""
        pending = lookup.start(entities, as_of_us)
        values = self._call(lambda: self._client.mget(pending.keys)) if pending.keys else []
        extra = pending.head_keys(values)
        heads = self._call(lambda: self._client.mget(extra)) if extra else []
        return pending.finish(values, requests, heads)

    # -- versions ------------------------------------------------------------------------

    def versions(self) -> dict[str, set[str]]:
        """View -> the versions that have keys stored (one SCAN of the project's keys)."""
        found: dict[str, set[str]] = {}

        def run() -> None:
            for key in self._client.scan_iter(match=f"{self.project}:*", count=10_000):
                parts = key.decode().split(":", 3)
                if len(parts) == 4 and not parts[1].startswith("__"):
                    found.setdefault(parts[1], set()).add(parts[2])
        self._call(run)
        return found

    def drop_version(self, view: str, version: str) -> int:
        """Deletes every key of one version of a view (never the served one); returns how
        many."""
        served = self.served().get(view)
        if served is not None and served.version == version:
            raise OnlineStoreError(
                f"feature view {view!r} version {version} is the served one; materialize "
                "another version before dropping it")

        def run() -> int:
            dropped, batch = 0, []
            for key in self._client.scan_iter(match=version_pattern(self.project, view, version),
                                              count=10_000):
                batch.append(key)
                if len(batch) >= 10_000:
                    dropped += self._client.unlink(*batch)
                    batch = []
            if batch:
                dropped += self._client.unlink(*batch)
            return dropped
        return self._call(run)

    # -- plumbing ------------------------------------------------------------------------

    def _queue(self, execute: Callable[[], list[Any]]) -> None:
        if self._io is None:
            self._io = ThreadPoolExecutor(1, thread_name_prefix="featurestore-online-writes")
        while len(self._pending) >= self._in_flight:
            self._collect()
        self._pending.append(self._io.submit(execute))

    def _collect(self) -> None:
        future = self._pending.popleft()
        results = self._call(future.result)
        self._written += sum(int(count) for count in results if isinstance(count, int))

    def _call(self, fn: Callable[[], T]) -> T:
        with self._errors():
            return fn()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise OnlineUnavailable(
                f"online store {redacted(self.url)} unavailable: {scrub(str(exc), self.url)}") from None
        except redis.RedisError as exc:
            raise OnlineStoreError(
                f"online store {redacted(self.url)} failed: {scrub(str(exc), self.url)}") from None


def _expiry(view: ViewPlan, event_ts: np.ndarray) -> list[int | str]:
    """Keys expire ttl after the later of their event time and now, so a value goes on
    reporting OUTSIDE_TTL for a while before Redis reclaims it (then it is NOT_FOUND)."""
    if view.ttl_us is None:
        return ["0"] * len(event_ts)
    return ((np.maximum(event_ts, now_us()) + view.ttl_us) // 1000 + 1).tolist()
