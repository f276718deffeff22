"""The online store's one face for writers and synchronous readers: the only code besides the
serving reader (online/reader.py) that speaks to Redis. Materialization, pushes, parity and
tests go through these methods:

    served()                                  the registry: which storage of each view is read
    last_pushes(served)                       when each served storage last took a push
    lock(view)                                one materialization of a view at a time
    new_storage(view)                         a generation nothing reads yet
    write_rows(view, storage, batch) / flush() rows, write-if-newer, pipelined on a thread
    write_windows(writes)                     window keys, replaced
    push_tiles(batch_id, ingested, views, build, now, into)
                                              a pushed batch appended, once per storage
    mark_applied(view, storage, batches) / applied(view, storage)
                                              the pushed batches a storage holds
    activate(view, storage, end_us, rows, expected)
                                              flip to a storage, atomically, if it misses no
                                              pushed batch the served one holds
    reclaim(view, grace_ms)                   expire every storage of a view but the served one
    read(lookup, entities, requests, as_of)   one lookup, two round trips at most
    storages()                                what is stored

Redis errors leave as OnlineUnavailable or OnlineStoreError, with the URL's password removed.

On a Redis Cluster (a redis+cluster:// URL) every multi-key step stays atomic because its keys
share one slot (online/keys.py): the flip (ACTIVATE), locks, a push and its compaction
(WRITE_PUSH, REWRITE), a new generation and reclaim's registry fields all live in the
project's slot; the write-if-newer script is called per slot (each row is compared on its
own); plain SETs go to each key's node, packed per node; SCANs run on every master; reads are
one call per node (online/cluster.py), the slot markers read with the rows (keys.py)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from functools import partial
from typing import Any, TypeVar

import hiredis
import numpy as np
import pyarrow as pa
import redis
from redis.backoff import ExponentialBackoff
from redis.commands.core import Script
from redis.exceptions import ClusterDownError, RedisClusterException
from redis.retry import Retry

from featurestore.errors import NotAppliedError, OnlineStoreError, OnlineUnavailable
from featurestore.online import registry
from featurestore.online.cluster import (
    ClusterReads,
    KeysLost,
    connect_cluster,
    grouped,
    key_slot,
    node_groups,
    project_markers,
)
from featurestore.online.keys import (
    PUSH_SUFFIX,
    SLOTS,
    active_key,
    applied_key,
    fresh_key,
    lock_key,
    previous_layout_keys,
    push_lock_key,
    registry_key,
    storage_in,
    storage_of,
    view_pattern,
)
from featurestore.online.lookup import Lookup, OnlineResult
from featurestore.online.push_command import pack_eval
from featurestore.online.registry import Served
from featurestore.online.resp import read_ok_replies
from featurestore.online.row_writes import RowBatch
from featurestore.online.tiles import WindowWrites, compacted, stored_values
from featurestore.online.urls import parse
from featurestore.plan import ViewPlan
from featurestore.values.columns import Column
from featurestore.values.timestamps import now_us

APPLIED_RETENTION_US = 7 * 86_400 * 1_000_000  # how long a pushed batch id is remembered online
LOCK_TTL_MS = 30_000  # a dead materialization's lock frees itself after this
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

# Appends a pushed batch's records to the push keys of its views' storages (keys.py
# push_key: beside each window key, read with it) in one atomic step, fenced: only while this
# pusher holds every storage's push lock (so no other push rewrites those keys meanwhile),
# while each storage is still the served one (or is the one a materialization replays into),
# and while none holds the batch yet. A push key's expiry only moves later (a new key has
# none: GT would keep it so). KEYS: the registry, then per view its push lock, applied set
# and fresh key, then the push keys. ARGV: views, lock token, batch id, ingest time,
# applied-set floor, then per view the registry field and storage that must be served (''
# when replaying), then value/expiry pairs. Returns the (0-based) push keys that outgrew
# their window key (and REWRITE_BYTES): the locks stay held for their rewrite (with none,
# they are released); or PUSH_RETRY.
WRITE_PUSH = """
local views, token, batch, ingested, floor = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5]
for v = 1, views do
  local lock, applied = KEYS[3 * v - 1], KEYS[3 * v]
  local field, storage = ARGV[4 + 2 * v], ARGV[5 + 2 * v]
  if redis.call('GET', lock) ~= token then return -1 end
  if field ~= '' and redis.call('HGET', KEYS[1], field) ~= storage then return -1 end
  if redis.call('ZSCORE', applied, batch) then return -1 end
end
local first = 2 + 3 * views
local at = 6 + 2 * views
local grown = {}
for i = first, #KEYS do
  local key, value = KEYS[i], ARGV[at]
  local size = redis.call('APPEND', key, value)
  if size == #value then
    redis.call('PEXPIREAT', key, ARGV[at + 1])
  else
    redis.call('PEXPIREAT', key, ARGV[at + 1], 'GT')
  end
  at = at + 2
  if size > REWRITE_BYTES and size > redis.call('STRLEN', string.sub(key, 1, -SUFFIX)) then
    grown[#grown + 1] = i - first
  end
end
for v = 1, views do
  local applied, fresh = KEYS[3 * v], KEYS[3 * v + 1]
  redis.call('ZADD', applied, ingested, batch)
  redis.call('ZREMRANGEBYSCORE', applied, '-inf', floor)
  if tonumber(redis.call('GET', fresh) or '0') < tonumber(ingested) then
    redis.call('SET', fresh, ingested)
  end
  if #grown == 0 then redis.call('DEL', KEYS[3 * v - 1]) end
end
return grown
"""
REWRITE_BYTES = 4096  # a window key is rewritten once its push key holds this much, and more
WRITE_PUSH = WRITE_PUSH.replace("REWRITE_BYTES", str(REWRITE_BYTES)).replace(
    "-SUFFIX", str(-1 - len(PUSH_SUFFIX)))  # the window key of a push key (same slot)
# Rewrites window keys with their push keys' records merged in, while this pusher holds every
# push lock (KEYS[1..ARGV[2]]), and releases them. Then KEYS: window key, push key pairs;
# ARGV[1]: the token, then one value per pair. A pair whose push key is gone (expired: its
# records are of no use any more) is left as it is; else the window key is written, expiring
# no earlier than it did nor than its push key, which is deleted.
REWRITE = """
local locks = tonumber(ARGV[2])
for i = 1, locks do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then return 0 end
end
for i = locks + 1, #KEYS, 2 do
  local window, pushed = KEYS[i], KEYS[i + 1]
  local at = redis.call('PEXPIRETIME', pushed)
  if at > 0 then
    local value = ARGV[2 + (i - locks + 1) / 2]
    if redis.call('EXISTS', window) == 1 then
      redis.call('SET', window, value, 'KEEPTTL')
      redis.call('PEXPIREAT', window, at, 'GT')
    else
      redis.call('SET', window, value, 'PXAT', at)
    end
    redis.call('DEL', pushed)
  end
end
for i = 1, locks do redis.call('DEL', KEYS[i]) end
return 1
"""
PUSH_RETRY = -1
PUSH_LOCK_MS = 30_000  # a pusher that dies holding it delays that view's pushes this long
PUSH_ATTEMPTS = 100

# Makes a storage the served one, atomically: only while the served storage is still the
# expected one (ARGV[2], '' for none; field ARGV[1]) and the new storage holds every pushed
# batch the served one holds. KEYS: the registry, the served and the new storage's applied
# sets, the view's active key, then the previous layout's registry and active key of the view
# (deleted: keys.previous_layout_keys); ARGV[3]: the new storage, ARGV[4..]: registry
# field/value pairs. Returns -1 when the served storage changed, else how many batches the new
# one misses (0: flipped).
ACTIVATE = """
local current = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if current ~= ARGV[2] then return -1 end
local missing = redis.call('ZDIFF', 2, KEYS[2], KEYS[3])
if #missing > 0 then return #missing end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('SET', KEYS[4], ARGV[3])
redis.call('DEL', KEYS[5], KEYS[6])
return 0
"""

# Expires, within ARGV[1] ms (0: now), the keys ARGV[2..] this node holds, of any slots
# (reclaim: the keys one SCAN of this node found). Returns how many.
EXPIRE = """#!lua flags=allow-cross-slot-keys
local grace = ARGV[1]
for i = 2, #ARGV do
  if grace == '0' then redis.call('UNLINK', ARGV[i])
  else redis.call('PEXPIRE', ARGV[i], grace, 'LT') end
end
return #ARGV - 1
"""

# How many of the keys ARGV[2..] (of any slots this node serves) do not hold ARGV[1].
MARKERS_DIFFER = """#!lua flags=no-writes,allow-cross-slot-keys
local differ = 0
for i = 2, #ARGV do
  if redis.call('GET', ARGV[i]) ~= ARGV[1] then differ = differ + 1 end
end
return differ
"""

# Extends (ARGV[2] ms) or releases (ARGV[2] = 0) a lock, only if it still holds token ARGV[1].
LOCK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""


class OnlineStore:
    """One project's online store over redis-py. Writes are queued and run on a background
    thread (socket waits release the GIL) while the caller encodes the next batch; `flush()`
    waits for them."""

    def __init__(self, url: str, project: str, timeout: float | None = None,
                 batch_rows: int = 2000, in_flight: int = 2):
        self.project, self.batch_rows = project, batch_rows
        self.url, self.settings = url, parse(url)  # the URL: for Spark's executors
        # Three retries within 0.7 s: a blip is absorbed, while a stopped Redis, a wrong
        # password or an untrusted certificate is reported at once (redis-py 6+'s default
        # backoff took 3 to 8 s to say so; redis-py 5 did not retry at all).
        retry = Retry(ExponentialBackoff(cap=0.4, base=0.05), 3)
        self._client: redis.Redis | redis.RedisCluster
        self._cluster_reads: ClusterReads | None = None
        if self.settings.cluster:
            self._client = self._call(lambda: connect_cluster(self.settings, timeout, retry))
            self._cluster_reads = ClusterReads(self._client)
        else:
            self._client = redis.Redis(**self.settings.redis_py(), socket_timeout=timeout,
                                       retry=retry)
        self._rows_script = self._client.register_script(WRITE_IF_NEWER)
        self._push_script = self._client.register_script(WRITE_PUSH)
        self._rewrite_script = self._client.register_script(REWRITE)
        self._activate_script = self._client.register_script(ACTIVATE)
        self._lock_script = self._client.register_script(LOCK)
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

    def served(self) -> dict[str, Served]:
        return self._call(lambda: registry.parse(self._client.hgetall(registry_key(self.project))))

    def last_pushes(self, served: dict[str, Served]) -> dict[str, int | None]:
        """The ingest time of the latest pushed batch each served storage holds (None: no
        push since it was materialized)."""
        if not served:
            return {}
        reply = self._call(lambda: self._client.mget(
            [fresh_key(self.project, v, s.storage) for v, s in served.items()]))
        return {v: int(r) if r else None for v, r in zip(served, reply, strict=True)}

    def new_storage(self, view: ViewPlan) -> str:
        """A new generation of the view's version: keys nothing reads until `activate`.
        Generations count from the time the registry handed out its first (keys.py)."""
        registry_name, counter = registry_key(self.project), f"generation:{view.name}"

        def next_generation() -> int:
            with self._client.pipeline(transaction=False) as pipe:
                pipe.hsetnx(registry_name, counter, now_us() // 1000)
                pipe.hincrby(registry_name, counter, 1)
                return int(pipe.execute()[1])
        generation = self._call(next_generation)
        storage = storage_of(view.version, int(generation))
        self._call(lambda: self._client.hset(registry_name, f"created:{view.name}:{storage}",
                                             now_us()))
        if self.settings.cluster and not view.windowed:  # before any row: keys.py
            token = self._call(self._marker_token)
            self._call(lambda: self._client.hset(registry_name, f"token:{view.name}:{storage}",
                                                 token))
        return storage

    def _marker_token(self) -> str:
        """The token every slot's marker holds (keys.py), after writing them all with a new
        one when one is missing or differs (a node lost its data, or the registry did)."""
        name, markers = registry_key(self.project), project_markers(self.project)
        token = self._client.hget(name, "markers")
        nodes = self._key_nodes(markers, np.arange(SLOTS))
        if token is not None and not any(
                node.register_script(MARKERS_DIFFER)(args=[token, *(markers[i] for i in at)])
                for node, at in nodes if node is not None):
            return str(token.decode())
        token = uuid.uuid4().hex[:12]
        for node, at in nodes:
            self._send(b"".join(hiredis.pack_command(("SET", markers[i], token)) for i in at),
                       len(at), node)
        self._client.hset(name, "markers", token)
        return token

    def activate(self, view: ViewPlan, storage: str, end_us: int, rows: int,
                 expected: str | None) -> int:
        """Makes `storage` the served one in one atomic step, if the served storage is still
        `expected` and `storage` holds every pushed batch it holds. Returns how many batches
        it misses (0: done); replay them and call again."""
        current = applied_key(self.project, view.name, expected or "")
        fields = registry.activation(view, storage, end_us, rows)
        missing = self._call(lambda: self._activate_script(
            keys=[registry_key(self.project), current,
                  applied_key(self.project, view.name, storage),
                  active_key(self.project, view.name),
                  *previous_layout_keys(self.project, view.name)],
            args=[f"active:{view.name}", expected or "", storage,
                  *[x for pair in fields.items() for x in pair]]))
        if missing < 0:
            raise OnlineStoreError(
                f"feature view {view.name!r}: the served storage changed during this "
                "materialization (another materializer ran without the lock); run it again")
        return int(missing)

    @contextmanager
    def lock(self, view: str) -> Iterator[None]:
        """Holds the view's materialization lock, refreshed while held; a process that dies
        holding it frees it within LOCK_TTL_MS."""
        key, token = lock_key(self.project, view), uuid.uuid4().hex
        if not self._call(lambda: self._client.set(key, token, nx=True, px=LOCK_TTL_MS)):
            raise OnlineStoreError(
                f"another materialization of feature view {view!r} is running (it holds "
                f"{key}); wait for it, or, if it died, for {LOCK_TTL_MS // 1000} s (or delete "
                "that key)")
        stop = threading.Event()

        def refresh() -> None:
            while not stop.wait(LOCK_TTL_MS / 3000):
                with suppress(redis.RedisError):
                    self._lock_script(keys=[key], args=[token, LOCK_TTL_MS])
        beat = threading.Thread(target=refresh, name="featurestore-lock", daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()
            with suppress(redis.RedisError):
                self._lock_script(keys=[key], args=[token, 0])

    # -- materialization -----------------------------------------------------------------

    def write_rows(self, view: ViewPlan, storage: str, batch: pa.RecordBatch,
                   fresh: bool = False) -> None:
        """Queue one batch of (keys, header columns, features) rows into `storage`; each row
        replaces the stored one only if it is not older. `fresh`: the storage is new and
        gets each entity once, so rows are plain SETs, packed natively into one buffer
        (Redis spends about half the time of the comparing script on them)."""
        n = batch.num_rows
        if n == 0:
            return
        rows = RowBatch.of(view, storage, self.project, batch)
        if fresh:
            for node, part in self._row_nodes(rows):
                self._queue(partial(self._send, part.set_commands(), len(part), node))
            return
        keys, values = rows.keys_and_rows()
        expire = rows.expire_ms.tolist()
        for node, positions in self._key_nodes(keys):
            pipe = (node or self._client).pipeline(transaction=False)
            for chunk in self._script_chunks(keys, positions.tolist()):
                args: list[Any] = [None] * (2 * len(chunk))
                args[0::2] = [values[i] for i in chunk]
                args[1::2] = [expire[i] for i in chunk]
                self._rows_script(keys=[keys[i] for i in chunk], args=args, client=pipe)
            self._queue(pipe.execute)

    def _script_chunks(self, keys: list[bytes], positions: list[int]) -> list[list[int]]:
        """The positions one script call takes: batch_rows at a time, and on a cluster only
        keys of one slot (rows are written each on its own, so nothing needs more)."""
        groups = [positions]
        if self.settings.cluster:
            groups = [[positions[i] for i in g] for g in
                      grouped([keys[p] for p in positions]).values()]
        return [group[start:start + self.batch_rows] for group in groups
                for start in range(0, len(group), self.batch_rows)]

    def _row_nodes(self, rows: RowBatch) -> list[tuple[redis.Redis | None, RowBatch]]:
        """The rows each node takes: all of them for one Redis (None: the client's own)."""
        if not isinstance(self._client, redis.RedisCluster):
            return [(None, rows)]
        return [(node, rows.take(positions)) for node, positions
                in self._call(lambda: node_groups(self._client, rows.slots()))]

    def write_windows(self, writes: WindowWrites) -> int:
        """Queue a hop group's window keys (whole values), replacing what Redis holds for
        them, packed natively and sent as one buffer; returns the number of keys."""
        pack = hiredis.pack_command
        for node, positions in self._key_nodes(writes.keys):
            commands = b"".join(pack(("SET", writes.keys[i], writes.values[i], "PXAT",
                                      writes.expiry_ms[i])) for i in positions)
            self._queue(partial(self._send, commands, len(positions), node))
        return len(writes.keys)


    def _key_nodes(self, keys: list[str], slots: np.ndarray | None = None
                   ) -> list[tuple[redis.Redis | None, np.ndarray]]:
        """The positions of the keys each node takes (None: the client's own Redis);
        `slots`: the keys' slots, when known."""
        if not isinstance(self._client, redis.RedisCluster):
            return [(None, np.arange(len(keys)))] if keys else []
        if slots is None:
            slots = np.array([key_slot(k) for k in keys], np.int64)
        return self._call(lambda: node_groups(self._client, slots))

    def flush(self) -> int:
        """Waits for every queued write; returns how many rows were newer and written."""
        while self._pending:
            self._collect()
        written, self._written = self._written, 0
        return written

    def mark_applied(self, view: str, storage: str, batches: dict[str, int]) -> None:
        """Records batches (id -> ingest time) as held by a storage (a rebuild from the log
        holds them), so neither a retry nor a replay adds them again."""
        if batches:
            self._call(lambda: self._client.zadd(applied_key(self.project, view, storage),
                                                 batches))

    def applied(self, view: str, storage: str) -> set[str]:
        members = self._call(lambda: self._client.zrange(
            applied_key(self.project, view, storage), 0, -1))
        return {m.decode() for m in members}

    # -- pushes --------------------------------------------------------------------------

    def push_tiles(self, batch_id: str, ingested: int, views: list[ViewPlan],
                   build: Callable[[ViewPlan, str], list[WindowWrites]], now: int,
                   into: dict[str, str] | None = None,
                   served: dict[str, Served] | None = None) -> int | None:
        """Appends a pushed batch to the push keys of each view whose storage does not hold
        it yet, and records it there, atomically. The storages are the served ones, or `into`
        (view -> storage: a materialization replaying the log). Each storage's push lock is
        held while its keys are written, and the write is fenced by the lock, the registry
        and the applied set (WRITE_PUSH): a flip, a concurrent push of the same batch or a
        lost lock makes it start over. Window keys whose push keys outgrew them are then
        rewritten under the same locks. `build(view, storage)` makes the records.
        `served`: the registry as the caller just read it, for the first attempt (the fence
        catches a flip since). Returns the number of window keys written, or None when every
        storage held the batch."""
        registry_name = registry_key(self.project)
        token = uuid.uuid4().hex
        known = [served] if served is not None else []

        def attempt() -> int | None:
            for _ in range(PUSH_ATTEMPTS):
                storages = into or self._pushable(known.pop() if known else registry.parse(
                    self._client.hgetall(registry_name)), views)
                sets = {v.name: applied_key(self.project, v.name, storages[v.name])
                        for v in views}
                locks = {v.name: push_lock_key(self.project, v.name, storages[v.name])
                         for v in views}
                held = self._take(list(locks.values()), token, list(sets.values()), batch_id)
                todo = [v for v, score in zip(views, held, strict=True) if score is None]
                if len(todo) < len(views):
                    self._release([locks[v.name] for v in views if v not in todo], token)
                if not todo:
                    return None
                mine, released = [locks[v.name] for v in todo], False
                try:
                    written, released = self._write_push(
                        batch_id, ingested, todo, storages, sets, mine, token, build, now,
                        check_served=into is None)
                finally:
                    if not released:
                        self._release(mine, token)
                if written != PUSH_RETRY:
                    return written
            raise OnlineStoreError(
                f"push of batch {batch_id!r}: {PUSH_ATTEMPTS} attempts met a flip, a "
                "concurrent push of the same batch or a lost push lock; retry with the same "
                "batch_id")
        return self._call(attempt)

    def _write_push(self, batch_id: str, ingested: int, views: list[ViewPlan],
                    storages: dict[str, str], sets: dict[str, str], locks: list[str],
                    token: str, build: Callable[[ViewPlan, str], list[WindowWrites]], now: int,
                    check_served: bool) -> tuple[int, bool]:
        """(keys written or PUSH_RETRY, whether the locks were released)."""
        writes = [w for v in views for w in build(v, storages[v.name])]
        fenced = [registry_key(self.project)]
        served: list[str] = []
        for v, lock in zip(views, locks, strict=True):
            fenced += [lock, sets[v.name], fresh_key(self.project, v.name, storages[v.name])]
            served += [f"active:{v.name}", storages[v.name]] if check_served else ["", ""]
        grown = self._eval_packed(self._push_script, pack_eval(
            self._push_script.sha, fenced,
            [len(views), token, batch_id, ingested, now - APPLIED_RETENTION_US, *served], writes),
            fenced[0])  # every key of the push is in the project's slot (keys.py)
        if not isinstance(grown, list):
            return PUSH_RETRY, False
        if grown:
            self._rewrite(writes, [int(i) for i in grown], locks, token, ingested)
        return sum(len(w.owners) for w in writes), True

    def _rewrite(self, writes: list[WindowWrites], grown: list[int], locks: list[str],
                 token: str, ingested: int) -> None:
        """Compacts the window keys whose push keys grew (indices into the writes' keys, in
        order) and releases the locks: a read after this push is as of `ingested` or later, so the keys
        keep what it needs."""
        keys, values, at, wanted = [], [], 0, set(grown)
        for w in writes:
            mine = [i - at for i in range(at, at + len(w.owners)) if i in wanted]
            at += len(w.owners)
            if mine:
                names = [w.key(i) for i in mine]
                pushed = [w.push_key(i) for i in mine]
                old = self._client.mget(names + pushed)
                new = compacted(w.group, stored_values(old[:len(mine)], old[len(mine):]),
                                ingested, ingested)
                for pair, v in zip(zip(names, pushed, strict=True), new, strict=True):
                    if v is not None:
                        keys += pair
                        values.append(v)
        self._rewrite_script(keys=locks + keys, args=[token, len(locks), *values])

    def _take(self, locks: list[str], token: str, applied: list[str], batch_id: str
              ) -> list[Any]:
        """Takes every lock, all at once (never some while waiting for others, so pushes of
        several views cannot deadlock), waiting while other pushes hold them; in the same
        round trip, reads the batch's score in each applied set (None: not held)."""
        deadline = time.monotonic() + PUSH_LOCK_MS / 1000 + 1
        while True:
            with self._client.pipeline(transaction=False) as pipe:
                for lock, name in zip(locks, applied, strict=True):
                    pipe.set(lock, token, nx=True, px=PUSH_LOCK_MS)
                    pipe.zscore(name, batch_id)
                replies = pipe.execute()
            taken = replies[0::2]
            if all(taken):
                return replies[1::2]
            self._release([lock for lock, ok in zip(locks, taken, strict=True) if ok], token)
            if time.monotonic() > deadline:
                raise OnlineUnavailable(f"the push locks {', '.join(locks)} stayed held for "
                                        f"{PUSH_LOCK_MS // 1000} s; retry with the same batch_id")
            time.sleep(0.001 + 0.004 * random.random())

    def _release(self, locks: list[str], token: str) -> None:
        if not locks:
            return
        with self._pipeline(locks[0]) as pipe:
            for lock in locks:
                self._lock_script(keys=[lock], args=[token, 0], client=pipe)
            pipe.execute()

    @staticmethod
    def _pushable(served: dict[str, Served], views: list[ViewPlan]) -> dict[str, str]:
        for v in views:
            if v.name not in served or served[v.name].view.version != v.version:
                raise NotAppliedError(
                    f"feature view {v.name!r} version {v.version} is not served online; run "
                    "`featurestore materialize` before pushing")
        return {v.name: served[v.name].storage for v in views}

    # -- reads ---------------------------------------------------------------------------

    def read(self, lookup: Lookup, entities: dict[str, Column], requests: dict[str, Column],
             as_of_us: int) -> OnlineResult:
        """One lookup (scripts, tests, parity); the server does the same over asyncio. Raises
        RegistryMoved when a flip happened since `lookup` was prepared."""
        pending = lookup.start(entities, as_of_us)
        if self._cluster_reads is not None:
            reads = self._cluster_reads
            try:
                values = self._call(lambda: reads.read(pending.keys,
                                                       (self.project, pending.row_ranges())))
            except KeysLost as lost:
                pending.check_fence(lost.values)  # a flip first: the old storage may be gone
                raise
            return pending.finish(values, requests)
        return pending.finish(self._call(lambda: self._client.mget(pending.keys)), requests)

    # -- versions ------------------------------------------------------------------------

    def storages(self) -> dict[str, set[str]]:
        """View -> the storages that have keys (one SCAN of the project's keys on every
        master)."""
        found: dict[str, set[str]] = {}

        def run() -> None:
            for node in self._masters():
                for key in node.scan_iter(match=f"{self.project}:*", count=10_000):
                    parts = key.decode().split(":", 3)
                    if len(parts) == 4 and not parts[1].startswith("__"):
                        found.setdefault(parts[1], set()).add(parts[2])
        self._call(run)
        return found

    def reclaim(self, view: str, grace_ms: int) -> int:
        """Expires, within grace_ms (0: now), every key of every storage of the view but the
        served one: superseded generations and what killed materializations left. The grace
        lets reads that started before a flip finish. Returns how many keys. The registry
        lists every storage that may have keys (`new_storage` records it before any), so the
        keyspace is scanned only while one of them may hold keys past the grace: a first
        materialization, or one whose predecessor is reclaimed already, scans nothing."""
        name = registry_key(self.project)

        def run() -> int:
            raw = self._client.hgetall(name)
            served = registry.parse(raw).get(view)
            keep = served.storage if served else None
            now_ms = now_us() // 1000
            listed = {s: at for s, at in registry.created(raw, view).items() if s != keep}
            todo = {s for s, at in listed.items() if at is None or at > now_ms + grace_ms}
            expiring = {keep, *(set(listed) - todo)}  # kept, or expiring within the grace
            count = self._expire_storages(view, expiring, grace_ms) if todo else 0
            at = now_us() // 1000 + grace_ms
            pipe = self._pipeline(name)  # the registry, applied and fresh keys share a slot
            for storage in todo:
                pipe.delete(applied_key(self.project, view, storage),
                            fresh_key(self.project, view, storage))
                pipe.hset(name, f"reclaimed:{view}:{storage}", at)
            forget = [s for s, gone in listed.items()
                      if (grace_ms == 0 and s in todo) or (gone is not None and gone <= now_ms)]
            for storage in forget:  # its keys are gone
                pipe.hdel(name, *(f"{f}:{view}:{storage}"
                                  for f in ("materialized", "created", "reclaimed", "token")))
            pipe.execute()
            return count
        return self._call(run)

    def _expire_storages(self, view: str, skip: set[str | None], grace_ms: int) -> int:
        """One SCAN of the view's keys on every master, expiring every key of a storage
        not in `skip` by one script call per node and 10,000 keys (a cluster's row storages
        may hold many keys: a command per key costs a round trip of Python there)."""
        count = 0
        for node in self._masters():
            expire = node.register_script(EXPIRE)
            todo: list[bytes] = []
            for key in node.scan_iter(match=view_pattern(self.project, view), count=10_000):
                if storage_in(key.decode()) not in skip:
                    todo.append(key)
                if len(todo) >= 10_000:
                    count += int(expire(args=[grace_ms, *todo]))
                    todo = []
            if todo:
                count += int(expire(args=[grace_ms, *todo]))
        return count

    def _masters(self) -> list[redis.Redis]:
        """A client of each master: the one Redis, or every master of the cluster."""
        if isinstance(self._client, redis.RedisCluster):
            return [self._client.get_redis_connection(n) for n in self._client.get_primaries()]
        return [self._client]

    # -- plumbing ------------------------------------------------------------------------

    def _serving(self, key: str) -> redis.Redis:
        """A client of the Redis serving `key`: the one Redis, or its cluster node."""
        if isinstance(self._client, redis.RedisCluster):
            return self._client.get_redis_connection(self._client.get_node_from_key(key))
        return self._client

    def _pipeline(self, key: str) -> redis.client.Pipeline:
        """A pipeline to the Redis serving `key` (on a cluster a plain pipeline to its node:
        redis-py's cluster pipeline refuses scripts), for commands on keys of its slot."""
        return self._serving(key).pipeline(transaction=False)

    def _send(self, commands: bytes | np.ndarray, count: int, node: redis.Redis | None = None
              ) -> list[Any]:
        """Sends `count` packed commands that answer +OK at once and reads their replies:
        [count] when all succeeded (redis-py costs microseconds of Python per reply). `node`:
        the cluster node that serves every key of them (None: the one Redis)."""
        pool = (node or self._client).connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command([commands])
            read_ok_replies(connection._sock, count)  # the socket redis-py connected
        except redis.ResponseError:
            pool.release(connection)  # every reply was read
            raise
        except BaseException:
            connection.disconnect()  # replies may still be in flight: never reuse it
            pool.release(connection)
            raise
        pool.release(connection)
        return [count]

    def _eval_packed(self, script: Script, command: np.ndarray, key: str) -> Any:
        """The reply of a script call packed as RESP bytes (EVALSHA) whose keys share `key`'s
        slot, loading the script first where Redis does not have it (a restarted Redis)."""
        node = self._serving(key)
        try:
            return self._send_one(node, command)
        except redis.exceptions.NoScriptError:
            node.script_load(script.script)
            return self._send_one(node, command)

    @staticmethod
    def _send_one(node: redis.Redis, command: np.ndarray) -> Any:
        """Sends one packed command and reads its reply, with the client's retries."""
        def run(connection: redis.Connection) -> Any:
            connection.send_packed_command([command])
            return connection.read_response()

        pool = node.connection_pool
        connection = pool.get_connection()
        try:
            return connection.retry.call_with_retry(lambda: run(connection),
                                                    lambda _: connection.disconnect())
        except redis.ResponseError:
            raise  # the reply was read whole: the connection stays usable
        except BaseException:
            connection.disconnect()  # a reply may still be in flight: never reuse it
            raise
        finally:
            pool.release(connection)

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
        except (redis.ConnectionError, redis.TimeoutError, ClusterDownError,
                RedisClusterException) as exc:
            raise OnlineUnavailable(f"online store {self.settings.where} unavailable: "
                                    f"{self.settings.scrub(str(exc))}") from None
        except redis.RedisError as exc:
            raise OnlineStoreError(f"online store {self.settings.where} failed: "
                                   f"{self.settings.scrub(str(exc))}") from None

