"""Streaming push: a batch of events for one source, checked as a whole, appended to the offline
event log (`<repo>/pushed/<source>/`, one Parquet file per batch, stamped with its ingest
time) and folded into the online tiles of every windowed view reading the source, in one
Redis transaction. A batch id makes retries idempotent: a batch already logged keeps its
first ingest time, and a batch already applied online is not applied again.

Visibility is the same rule as offline: a pushed event is visible from the later of its event
time and its ingest time, so a training set built later replays what serving returned. An
event older than every window at arrival (event time < floor(now, hop) - window) can never be
counted by a read at or after its arrival, on either path: it is logged but writes no tile."""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import redis

from featurestore.aggregation.events import Events
from featurestore.definitions.types import Timestamp
from featurestore.errors import FeatureStoreError, NotAppliedError, SourceDataError
from featurestore.offline.ingest import INGESTED, PUSHED_DIR, declared_columns
from featurestore.online.keys import registry_key, view_prefix
from featurestore.online.redis_store import parse_registry
from featurestore.online.tiles import TileWrites, entity_bases, groups, tile_writes
from featurestore.plan import Plan, ViewPlan
from featurestore.values.columns import from_arrow

BATCH_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
DEFAULT_MAX_FUTURE_US = 5 * 60 * 1_000_000  # events may be up to 5 minutes ahead of the clock
BATCH_MARK_TTL_S = 7 * 86_400  # how long a batch id is remembered online
NO_LIMIT = np.iinfo(np.int64).max


@dataclass(frozen=True)
class PushResult:
    source: str
    batch_id: str
    rows: int
    ingested_at_us: int
    duplicate: bool  # the batch had been applied already; nothing changed
    tiles: int  # tile blocks written
    too_late: int  # events older than every window: logged, never counted


def push(plan: Plan, root: Path, client: redis.Redis, source: str, batch: pa.Table,
         batch_id: str, max_future_us: int = DEFAULT_MAX_FUTURE_US,
         now_us: int | None = None) -> PushResult:
    now = now_us if now_us is not None else time.time_ns() // 1000
    views = _views(plan, source)
    if not BATCH_ID.match(batch_id):
        raise FeatureStoreError(
            f"batch id {batch_id!r}: use 1-128 letters, digits, '_', '.' or '-'")
    table = check_batch(plan, source, batch, now, max_future_us)
    served = parse_registry(client.hgetall(registry_key(plan.project)))
    for view in views:
        if view.name not in served or served[view.name].version != view.version:
            raise NotAppliedError(
                f"feature view {view.name!r} version {view.version} is not served online; "
                "run `featurestore materialize` before pushing (nothing of the batch was kept)")
    log = _logged(root, source, batch_id)
    if log is None:
        ingested = now
        table = table.append_column(INGESTED, pa.array(np.full(table.num_rows, now),
                                                       pa.int64()).cast(Timestamp.arrow))
        _write_log(root, source, batch_id, ingested, table)
    else:
        ingested = _ingest_time(log)
    writes = [w for view in views for w in _writes(plan, view, table, ingested, now)]
    too_late = _too_late(views, table.column(plan.sources[source].timestamp), now)
    blocks = _apply(client, plan.project, source, batch_id, writes, now)
    return PushResult(source, batch_id, table.num_rows, ingested, blocks is None, blocks or 0,
                      too_late)


def read_events_table(events: Any) -> pa.Table:
    """A batch given as a Polars or pandas frame, an Arrow table, or a Parquet or CSV path."""
    if isinstance(events, pa.Table):
        return events
    if isinstance(events, str | Path):
        path = Path(events)
        try:
            return pacsv.read_csv(path) if path.suffix == ".csv" else pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceDataError(f"cannot read events file {path}: {exc}") from exc
    if type(events).__module__.startswith("polars"):
        return events.to_arrow()
    if type(events).__module__.startswith("pandas"):
        return pa.Table.from_pandas(events, preserve_index=False)
    raise FeatureStoreError(f"events must be a table or a Parquet/CSV path, got {type(events)}")


def content_id(table: pa.Table) -> str:
    """A batch id from the batch's content: the same batch pushed twice is applied once."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return "sha256-" + hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:32]


def _views(plan: Plan, source: str) -> list[ViewPlan]:
    if source not in plan.sources:
        raise FeatureStoreError(
            f"unknown source {source!r}; sources: {', '.join(sorted(plan.sources))}")
    views = [v for v in plan.views.values() if v.source == source and v.windowed and v.online]
    if not views:
        raise FeatureStoreError(
            f"source {source!r} feeds no windowed feature view; pushes update windowed "
            "aggregations (other views pick new data up at `featurestore materialize`)")
    return views


def check_batch(plan: Plan, source: str, batch: pa.Table, now_us: int,
                max_future_us: int) -> pa.Table:
    """The batch's declared columns cast to their types; every problem is reported with the
    rows and columns at fault, and nothing is kept of a bad batch."""
    src = plan.sources[source]
    declared = declared_columns(plan, src)
    if src.created:
        declared.pop(src.created)  # a pushed event's created time is its ingest time
    owner = f"push to source {source!r}"
    missing = [c for c in declared if c not in batch.column_names]
    if missing:
        raise SourceDataError(
            f"{owner}: the batch has no column(s) {', '.join(missing)}; it has "
            f"{', '.join(batch.column_names) or 'none'}")
    if batch.num_rows == 0:
        raise SourceDataError(f"{owner}: the batch has no rows")
    columns = {}
    for column, (dtype, reader) in declared.items():
        array = batch.column(column)
        if dtype is Timestamp and pa.types.is_timestamp(array.type) and array.type.tz is None:
            raise SourceDataError(
                f"{owner}: column {column!r} holds timestamps without a time zone; send UTC")
        try:
            columns[column] = array.cast(dtype.arrow, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SourceDataError(
                f"{owner}: column {column!r} is {array.type}, but {reader} reads it as "
                f"{dtype}: {exc}") from exc
    keys = {k for v in plan.views.values() if v.source == source for k, _ in v.join_keys}
    for column in [*sorted(keys), src.timestamp]:
        nulls = _rows(pc.is_null(columns[column]))
        if nulls:
            raise SourceDataError(
                f"{owner}: column {column!r} is null in row(s) {_some(nulls)}; every event "
                "needs its entity key(s) and event time")
    ts = columns[src.timestamp].cast(pa.int64())
    ahead = _rows(pc.greater(ts, now_us + max_future_us))
    if ahead:
        raise SourceDataError(
            f"{owner}: row(s) {_some(ahead)} have an event time more than "
            f"{max_future_us / 1e6:g} s after now; fix the producer's clock or raise the "
            "allowed future skew")
    return pa.table(columns)


def _rows(mask: pa.ChunkedArray | pa.Array) -> list[int]:
    return np.flatnonzero(mask.to_numpy(zero_copy_only=False)).tolist()


def _some(rows: list[int]) -> str:
    shown = ", ".join(map(str, rows[:10]))
    return shown + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")


def _log_dir(root: Path, source: str) -> Path:
    return root / PUSHED_DIR / source


def _logged(root: Path, source: str, batch_id: str) -> Path | None:
    found = [p for p in _log_dir(root, source).glob(f"*-{batch_id}.parquet")
             if batch_of(p) == batch_id]
    return found[0] if found else None


def batch_of(path: Path) -> str:
    """The batch id in a log file's name `<ingest time>-<batch id>.parquet`."""
    return path.name.split("-", 1)[1].removesuffix(".parquet")


def batch_mark(project: str, source: str, batch_id: str) -> str:
    """The Redis key saying a batch is in the online tiles."""
    return f"{project}:__push:{source}:{batch_id}"


def _write_log(root: Path, source: str, batch_id: str, ingested: int, table: pa.Table) -> None:
    """Written under a temporary name and renamed, so the log never holds half a batch. The
    name starts with the ingest time, which orders the log."""
    directory = _log_dir(root, source)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{ingested:020d}-{batch_id}.parquet"
    partial = directory / f".{final.name}.partial"
    pq.write_table(table, partial)
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    partial.rename(final)


def _ingest_time(path: Path) -> int:
    return int(path.name.split("-", 1)[0])


def _events(view: ViewPlan, table: pa.Table, ingested: int, ts_column: str) -> Events:
    """The batch as Events of the view: sorted by entity, then event time."""
    keys = [k for k, _ in view.join_keys]
    order = pc.sort_indices(table, [(k, "ascending") for k in keys] + [(ts_column, "ascending")])
    table = table.take(order)
    n = table.num_rows
    change = np.zeros(n, np.bool_)
    change[0] = True
    for k in keys:
        values = table.column(k).to_numpy(zero_copy_only=False)
        change[1:] |= values[1:] != values[:-1]
    starts = np.flatnonzero(change).astype(np.int64)
    ts = table.column(ts_column).cast(pa.int64()).to_numpy().astype(np.int64)
    dtypes = {a.column: a.dtype for a in view.aggregates}
    return Events(
        keys=table.select(keys).take(pa.array(starts)), ts=ts,
        created=np.maximum(ts, ingested),  # visible from the later of event and ingest time
        columns={c: from_arrow(table.column(c), t) for c, t in dtypes.items()},
        starts=starts, ends=np.append(starts[1:], n).astype(np.int64))


def _writes(plan: Plan, view: ViewPlan, table: pa.Table, ingested: int,
            now: int) -> list[TileWrites]:
    events = _events(view, table, ingested, plan.sources[view.source].timestamp)
    bases = entity_bases(view_prefix(plan.project, view.name, view.version), view.entity,
                         view.join_keys, events.keys)
    out = []
    for g in groups(view.aggregates):
        first = now // g.hop_us - g.span + 1
        last = int(events.ts.max()) // g.hop_us
        if last >= first:
            out.append(tile_writes(g, bases, events, first, last, NO_LIMIT, now))
    return out


def _too_late(views: list[ViewPlan], ts: pa.ChunkedArray, now: int) -> int:
    """Events older than the tail of every window a read at or after now can have."""
    oldest_tail = min((now // a.hop_us) * a.hop_us - a.window_us
                      for v in views for a in v.aggregates)
    return int(pc.sum(pc.less(ts.cast(pa.int64()), oldest_tail)).as_py() or 0)


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


def _apply(client: redis.Redis, project: str, source: str, batch_id: str,
           writes: list[TileWrites], now: int) -> int | None:
    """Merges the batch's tiles into Redis's blocks in one optimistic transaction (retried
    when a concurrent push touches the same blocks). Returns the number of blocks written, or
    None if the batch id was applied before."""
    mark = batch_mark(project, source, batch_id)
    block_keys = [w.block_keys() for w in writes]
    keys = [k for ks in block_keys for k in ks]
    script = client.register_script(WRITE_PUSH)
    while True:
        with client.pipeline(transaction=True) as pipe:
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
                events = [k for w in writes for k in w.event_keys]
                for w in writes:
                    for pair in zip(w.events, w.event_expiry_ms, strict=True):
                        values += pair
                pipe.multi()
                script(keys=keys + events, args=[len(keys), *values, mark, BATCH_MARK_TTL_S],
                       client=pipe)
                pipe.execute()
                return len(keys)
            except redis.WatchError:
                continue
