"""Materialization: each online view's values as of END, read from the offline store and
written to Redis. Sits above offline/ and online/, which never import each other.

A full materialization is isolated: it holds the view's lock (every view's it writes, taken
first, as the next view's rows are read from DuckDB while this one's are written), writes a
new storage (a generation of the view's version) that nothing reads, replays into it every
pushed batch it does not hold, and flips the registry to it in one atomic step that fails
while the served storage holds a batch the new one misses (then it replays again). A crash at any point
leaves the served storage as it was; the superseded one expires after RECLAIM_GRACE_MS, and
what a killed run left is removed by the next run.

With the Spark engine, a row view's latest rows come from its Spark feature table and the
executors write them, each partition over its own connection with the same packing; the
driver keeps the locks, the new storage and the flip. Windowed views' tiles are built from
the DuckDB store's events either way."""

from __future__ import annotations

import itertools
import queue
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from featurestore import push
from featurestore.errors import FeatureStoreError
from featurestore.offline import OfflineStore, event_log
from featurestore.offline.spark import SparkOffline
from featurestore.offline.spark.feature_tables import with_values
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
                reporter: Reporter = QUIET, spark: SparkOffline | None = None
                ) -> list[Materialized]:
    """`spark`: the row views' rows are read and written by Spark (module docstring)."""
    names = list(dict.fromkeys(views or [v.name for v in plan.views.values() if v.online]))
    unknown = [n for n in names if n not in plan.views]
    if unknown:
        raise FeatureStoreError(f"unknown feature view(s) {unknown}; see `featurestore list`")
    done: list[Materialized] = []
    try:
        with offline.session(), ExitStack() as held:
            for name in names:  # all first: the next view's rows are read while this one's write
                held.enter_context(online.lock(name))
            queries = [_Query(plan, offline, online, plan.views[n], end_us, start_us,
                              incremental) for n in names if not plan.views[n].windowed]
            reader = held.enter_context(_SparkRows(spark, queries) if spark
                                        else _RowReader(queries))
            for name in names:
                done.append(_materialize_view(plan, offline, online, plan.views[name], end_us,
                                              reader, reporter))
    finally:  # what was flipped is recorded, also when a later view failed
        offline.record_materializations(plan, [(m.view, m.start_us, m.end_us, m.rows)
                                               for m in done])
    return done


@dataclass(frozen=True)
class _Query:
    """Which rows of a row view a materialization writes: all (into a new storage), or with
    a start, those newer than it (an update of the served storage)."""

    plan: Plan
    offline: OfflineStore
    online: OnlineStore
    view: ViewPlan
    end_us: int
    start_us: int | None
    incremental: bool

    def start(self) -> int | None:
        """The start, None for every row. The view's lock is held, so nothing else changes
        what this reads."""
        view = self.view
        start = (self.offline.last_materialized_end(self.plan, view.name) if self.incremental
                 else self.start_us)
        served = self.online.served().get(view.name)
        updates = (start is not None and served is not None
                   and served.view.version == view.version)
        return start if updates else None


class _RowReader:
    """Reads the row views' rows from the offline store on a thread, view after view, a few
    batches ahead: DuckDB computes the next view's rows while Redis takes this one's."""

    AHEAD = 3  # batches per view held in memory at most

    def __init__(self, queries: list[_Query]):
        self._queries = queries
        self._queues: dict[str, queue.Queue[Any]] = {
            q.view.name: queue.Queue(self.AHEAD) for q in queries}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="featurestore-rows",
                                        daemon=True)

    def __enter__(self) -> _RowReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def start(self, view: str) -> int | None:
        return self._next(view)  # type: ignore[no-any-return]

    def write(self, online: OnlineStore, view: ViewPlan, storage: str, fresh: bool,
              step: Reporter) -> tuple[int, int]:
        """Writes the view's rows into the storage: (rows, rows written)."""
        rows = 0
        while (batch := self._next(view.name)) is not _DONE:
            online.write_rows(view, storage, batch, fresh=fresh)
            rows += batch.num_rows
            step.advance(f"materializing {view.name}: {rows} rows")
        return rows, online.flush()

    def _next(self, view: str) -> Any:
        item = self._queues[view].get()
        if isinstance(item, BaseException):
            raise item
        return item

    def _run(self) -> None:
        for query in self._queries:
            out = self._queues[query.view.name]
            try:
                start = query.start()
                self._put(out, start)
                with query.offline.latest_rows(query.plan, query.view.name, query.end_us,
                                               start) as rows:
                    for batch in rows:
                        if not self._put(out, batch):
                            return
                self._put(out, _DONE)
            except BaseException as exc:  # raised where the view's rows are taken
                self._put(out, exc)
                return

    def _put(self, out: queue.Queue[Any], item: Any) -> bool:
        """Waits for room unless the materialization stopped; False then."""
        while not self._stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


_DONE = object()


class _SparkRows:
    """The row views' rows as _RowReader gives them, read from the Spark feature tables and
    written by the executors: each partition's batches go through OnlineStore.write_rows on
    a connection of its own (to one Redis or a Redis Cluster), in parallel."""

    def __init__(self, spark: SparkOffline, queries: list[_Query]):
        self._spark, self._queries = spark, {q.view.name: q for q in queries}
        self._starts: dict[str, int | None] = {}

    def __enter__(self) -> _SparkRows:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def start(self, view: str) -> int | None:
        query = self._queries[view]
        query.offline.check_applied(query.plan)  # as the DuckDB store's reads do
        self._starts[view] = query.start()
        return self._starts[view]

    def write(self, online: OnlineStore, view: ViewPlan, storage: str, fresh: bool,
              step: Reporter) -> tuple[int, int]:
        query = self._queries[view.name]
        url, project = online.url, online.project

        def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            rows = 0
            with OnlineStore(url, project) as mine:
                for batch in batches:
                    mine.write_rows(view, storage, with_values(batch, view), fresh=fresh)
                    rows += batch.num_rows
                written = mine.flush()
            yield pa.RecordBatch.from_pydict({"rows": [rows], "written": [written]})

        frame = self._spark.latest_rows(query.plan, view.name, query.end_us,
                                        self._starts[view.name])
        done = frame.mapInArrow(run, "rows BIGINT, written BIGINT").toArrow()
        rows, written = (sum(done.column(c).to_pylist()) for c in ("rows", "written"))
        step.advance(f"materializing {view.name}: {rows} rows (Spark)")
        return rows, written


def _materialize_view(plan: Plan, offline: OfflineStore, online: OnlineStore, view: ViewPlan,
                      end_us: int, reader: _RowReader | _SparkRows, reporter: Reporter
                      ) -> Materialized:
    online.reclaim(view.name, RECLAIM_GRACE_MS)  # what killed runs left (reads may be on it)
    served = online.served().get(view.name)
    start = None if view.windowed else reader.start(view.name)
    if start is not None and served is not None:
        # An update of the served storage: rows only ever get newer (write-if-newer).
        storage, expected = served.storage, served.storage
    else:
        storage = online.new_storage(view)
        expected = served.storage if served else None
    with reporter.task(f"materializing {view.name}", None) as step:
        if view.windowed:
            rows = _write_tiles(plan, offline, online, view, storage, end_us, step)
            written = rows
        else:
            rows, written = reader.write(online, view, storage, storage != expected, step)
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
