"""Materialization: each online view's values as of END, read from the offline store and
written to Redis. Sits above offline/ and online/, which never import each other.

A full materialization is isolated: it holds the view's lock, writes a new storage (a
generation of the view's version) that nothing reads, replays into it every pushed batch it
does not hold, and flips the registry to it in one atomic step that fails while the served
storage holds a batch the new one misses (then it replays again). A crash at any point
leaves the served storage as it was; the superseded one expires after RECLAIM_GRACE_MS, and
what a killed run left is removed by the next run."""

from __future__ import annotations

import itertools
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from featurestore import push
from featurestore.errors import FeatureStoreError
from featurestore.offline import OfflineStore, event_log
from featurestore.online.store import OnlineStore
from featurestore.online.tiles import WindowWrites, groups, view_window_writes
from featurestore.plan import Plan, ViewPlan
from featurestore.progress import QUIET, Reporter
from featurestore.values.timestamps import now_us

TILE_CHUNK = 2000  # entities whose tiles are built at once
BUILDERS = 2  # chunks built at the same time
RECLAIM_GRACE_MS = 10_000  # reads that started before a flip finish well within this


@dataclass(frozen=True)
class Materialized:
    view: str
    version: str
    start_us: int | None
    end_us: int
    rows: int
    written: int  # rows that were newer than what Redis held


def materialize(plan: Plan, offline: OfflineStore, online: OnlineStore, end_us: int,
                start_us: int | None, views: list[str] | None, incremental: bool,
                reporter: Reporter = QUIET) -> list[Materialized]:
    names = views or [v.name for v in plan.views.values() if v.online]
    unknown = [n for n in names if n not in plan.views]
    if unknown:
        raise FeatureStoreError(f"unknown feature view(s) {unknown}; see `featurestore list`")
    done = []
    for name in names:
        with online.lock(name):
            done.append(_materialize_view(plan, offline, online, plan.views[name], end_us,
                                          start_us, incremental, reporter))
        offline.record_materialization(plan, name, done[-1].start_us, end_us, done[-1].rows)
    return done


def _materialize_view(plan: Plan, offline: OfflineStore, online: OnlineStore, view: ViewPlan,
                      end_us: int, start_us: int | None, incremental: bool,
                      reporter: Reporter) -> Materialized:
    online.reclaim(view.name, RECLAIM_GRACE_MS)  # what killed runs left (reads may be on it)
    served = online.served().get(view.name)
    start = offline.last_materialized_end(plan, view.name) if incremental else start_us
    if not view.windowed and start is not None and served is not None \
            and served.view.version == view.version:
        # An update of the served storage: rows only ever get newer (write-if-newer).
        storage, expected = served.storage, served.storage
    else:
        start, storage = None, online.new_storage(view)
        expected = served.storage if served else None
    with reporter.task(f"materializing {view.name}", None) as step:
        if view.windowed:
            rows = _write_tiles(plan, offline, online, view, storage, end_us, step)
            written = rows
        else:
            rows = 0
            with offline.latest_rows(plan, view.name, end_us, start) as reader:
                for batch in reader:
                    online.write_rows(view, storage, batch, fresh=storage != expected)
                    rows += batch.num_rows
                    step.advance(f"materializing {view.name}: {rows} rows")
            written = online.flush()
    while online.activate(view, storage, end_us, rows, expected):  # pushes came meanwhile
        _replay(plan, offline, online, view, storage)
    online.reclaim(view.name, RECLAIM_GRACE_MS)
    return Materialized(view.name, view.version, start, end_us, rows, written)


def _write_tiles(plan: Plan, offline: OfflineStore, online: OnlineStore, view: ViewPlan,
                 storage: str, end_us: int, step: Reporter) -> int:
    """A windowed view's live tiles as of END, rebuilt from its source and the pushed
    batches logged by END: every tile a read at END can touch, one window key per entity and
    hop group, and the events of those batches not visible yet; then the batches logged
    since. Returns the number of window keys written."""
    event_log.remove_leftovers(offline.root, view.source)
    log = {path: {b: t for b, t in event_log.batches(path).items() if t <= end_us}
           for path in event_log.files(offline.root, view.source)}
    log = {path: held for path, held in log.items() if held}
    oldest = min((end_us // g.hop_us - g.span + 1) * g.hop_us  # what a read at END covers
                 for g in groups(view.aggregates))
    events = offline.window_events(plan, view.name, end_us, list(log), oldest)
    written, now = 0, now_us()

    def build(first: int) -> list[WindowWrites]:
        chunk = events.entities(first, min(first + TILE_CHUNK, len(events.starts)))
        newest = max(end_us, int(chunk.ts.max())) if len(chunk) else end_us  # pushed early
        return view_window_writes(plan.project, view, storage, chunk, end_us, newest, end_us,
                                  now, whole=True)

    # Chunks are built two at a time (the kernels release the GIL), written in order.
    with ThreadPoolExecutor(BUILDERS, thread_name_prefix="featurestore-tiles") as pool:
        pending: deque[Future[list[WindowWrites]]] = deque()
        firsts = iter(range(0, len(events.starts), TILE_CHUNK))
        for first in itertools.islice(firsts, BUILDERS):
            pending.append(pool.submit(build, first))
        while pending:
            done = pending.popleft().result()
            for first in itertools.islice(firsts, 1):
                pending.append(pool.submit(build, first))
            for writes in done:
                written += online.write_windows(writes)
            step.advance(f"materializing {view.name}: {written} window keys")
    online.flush()
    online.mark_applied(view.name, storage, {b: t for held in log.values()
                                             for b, t in held.items()})
    _replay(plan, offline, online, view, storage)
    return written


def _replay(plan: Plan, offline: OfflineStore, online: OnlineStore, view: ViewPlan,
            storage: str) -> None:
    """Merges into the storage every logged batch it does not hold yet."""
    if not view.windowed:
        return
    held = online.applied(view.name, storage)
    for path in event_log.files(offline.root, view.source):
        for batch_id, ingested in event_log.batches(path).items():
            if batch_id not in held:
                push.replay(plan, online, view, storage, path, batch_id, ingested)
