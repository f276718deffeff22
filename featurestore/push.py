"""Streaming push, a coordinator: check the batch, log it offline once per batch id, append it
to the online window keys of every windowed view reading the source, in one Redis script.

Visibility is the same rule as offline: a pushed event is visible from the later of its event
time and its ingest time, so a training set built later replays what serving returned. An
event older than every window at arrival (event time < floor(now, hop) - window) can never be
counted by a read at or after its arrival, on either path: it is logged but writes no tile."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.aggregation.events import Events
from featurestore.definitions.types import Timestamp
from featurestore.errors import DeadlineExceeded, FeatureStoreError, NotAppliedError
from featurestore.offline import event_log
from featurestore.online.push_command import pack_eval
from featurestore.online.store import APPLIED_RETENTION_US, OnlineStore
from featurestore.online.tiles import WindowWrites, view_window_writes
from featurestore.plan import Plan, ViewPlan
from featurestore.values.columns import from_arrow
from featurestore.values.timestamps import now_us

DEFAULT_MAX_FUTURE_US = 5 * 60 * 1_000_000  # events may be up to 5 minutes ahead of the clock
# Writes pushed batches to the log while their records are built (concurrent pushes each
# take a thread; the log's claims keep one batch id to one file whatever the order).
_LOG_WRITER = ThreadPoolExecutor(8, thread_name_prefix="featurestore-push-log")


@dataclass(frozen=True)
class PushResult:
    source: str
    batch_id: str
    rows: int
    ingested_at_us: int
    duplicate: bool  # the batch had been applied already; nothing changed
    tiles: int  # window keys written
    too_late: int  # events older than every window: logged, never counted


def push(plan: Plan, root: Path, online: OnlineStore, source: str, batch: pa.Table,
         batch_id: str, max_future_us: int = DEFAULT_MAX_FUTURE_US,
         now: int | None = None, deadline: float | None = None) -> PushResult:
    """Logging the batch is the point of no return: a `deadline` (time.monotonic()) that has
    passed before it refuses the push with nothing kept; after it, the push completes, and a
    retry with the same batch id reports the batch as a duplicate."""
    now = now if now is not None else now_us()
    views = _views(plan, source)
    event_log.check_id(batch_id)
    table = event_log.check_batch(plan, source, batch, now, max_future_us)
    served = online.served()
    for view in views:
        if view.name not in served or served[view.name].view.version != view.version:
            raise NotAppliedError(
                f"feature view {view.name!r} version {view.version} is not served online; "
                "run `featurestore materialize` before pushing (nothing of the batch was kept)")
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceeded(
            f"push of batch {batch_id!r} to source {source!r}: the deadline passed before the "
            "batch was logged; nothing was kept, retry with the same batch_id")
    build = _builder(plan, table, now, now)
    logging = _LOG_WRITER.submit(event_log.append, root, source, batch_id, table, now)
    try:  # the records are built while the log is written and synced (the fsync waits)
        for view in views:
            build(view, served[view.name].storage)
        too_late = _too_late(views, table.column(plan.sources[source].timestamp), now)
    finally:
        ingested = logging.result()
    if ingested != now:  # a batch id logged before keeps its first ingest time
        build = _builder(plan, table, ingested, now)
    keys = None
    if ingested >= now - APPLIED_RETENTION_US:  # older batch ids are no longer remembered
        keys = online.push_tiles(batch_id, ingested, views, build, now, served=served)
    return PushResult(source, batch_id, table.num_rows, ingested, keys is None, keys or 0,
                      too_late)


def warm_up(plan: Plan) -> None:
    """Builds and packs the records of a one-event batch for every windowed view, writing
    nothing anywhere, so that a server's first push does not pay for loading compiled
    functions from Numba's caches and Arrow's lazy imports."""
    now = now_us()
    for view in plan.views.values():
        if view.windowed and view.online:
            ts = plan.sources[view.source].timestamp
            columns = {**dict(view.join_keys), **{a.column: a.dtype for a in view.aggregates}}
            table = pa.table({**{c: pa.array([0], pa.int64()).cast(t.arrow)
                                 for c, t in columns.items()},
                              ts: pa.array([now], pa.int64()).cast(Timestamp.arrow)})
            writes = _builder(plan, table, now, now)(view, "warm-up")
            pack_eval("0" * 40, [], [], writes)
            _too_late([view], table.column(ts), now)


def replay(plan: Plan, online: OnlineStore, view: ViewPlan, storage: str, path: Path,
           batch_id: str, ingested: int) -> bool:
    """Merges one logged batch into a storage being built, unless it holds it already;
    whether it did."""
    now = now_us()
    keys = online.push_tiles(batch_id, ingested, [view],
                             _builder(plan, event_log.batch_table(path, batch_id), ingested,
                                      now), now, into={view.name: storage})
    return keys is not None


def _builder(plan: Plan, table: pa.Table, ingested: int, now: int
             ) -> Callable[[ViewPlan, str], list[WindowWrites]]:
    """The records of a batch for one view and storage, built once per storage: tiles of
    the events visible at ingest, and each event ahead of it on its own (counted by reads
    from its event time on)."""
    built: dict[tuple[str, str], list[WindowWrites]] = {}

    def build(view: ViewPlan, storage: str) -> list[WindowWrites]:
        if (view.name, storage) not in built:
            events = _events(view, table, ingested, plan.sources[view.source].timestamp)
            built[view.name, storage] = view_window_writes(
                plan.project, view, storage, events, now, int(events.ts.max()), ingested, now,
                whole=False)
        return built[view.name, storage]
    return build


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


def _events(view: ViewPlan, table: pa.Table, ingested: int, ts_column: str) -> Events:
    keys = [k for k, _ in view.join_keys]
    table = table.take(pc.sort_indices(
        table, [(k, "ascending") for k in keys] + [(ts_column, "ascending")]))
    ts = table.column(ts_column).cast(pa.int64()).to_numpy().astype(np.int64)
    dtypes = {a.column: a.dtype for a in view.aggregates}
    return Events.from_sorted(
        table, keys, ts=ts,
        created=np.maximum(ts, ingested),  # visible from the later of event and ingest time
        columns={c: from_arrow(table.column(c), t) for c, t in dtypes.items()})


def _too_late(views: list[ViewPlan], ts: pa.ChunkedArray, now: int) -> int:
    """Events older than the tail of every window a read at or after now can have."""
    oldest_tail = min((now // a.hop_us) * a.hop_us - a.window_us
                      for v in views for a in v.aggregates)
    return int(pc.sum(pc.less(ts.cast(pa.int64()), oldest_tail)).as_py() or 0)
