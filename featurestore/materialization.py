"""Materialization: each online view's latest values as of END, read from the offline store's
feature tables and written to Redis under the view's version, which becomes the served one
only once every row is written. Sits above offline/ and online/, which never import each other."""

from __future__ import annotations

from dataclasses import dataclass

from featurestore.errors import FeatureStoreError
from featurestore.offline import OfflineStore, event_log
from featurestore.online.store import OnlineStore
from featurestore.online.tiles import view_tile_writes
from featurestore.plan import Plan, ViewPlan
from featurestore.progress import QUIET, Reporter
from featurestore.values.timestamps import now_us

TILE_CHUNK = 2000  # entities whose tiles are built at once (a tile row is a few kB wide)


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
    return [_materialize_view(plan, offline, online, name, end_us, start_us, incremental,
                              reporter) for name in names]


def _materialize_view(plan: Plan, offline: OfflineStore, writer: OnlineStore, name: str,
                      end_us: int, start_us: int | None, incremental: bool,
                      reporter: Reporter) -> Materialized:
    view = plan.views[name]
    if view.windowed:
        return _materialize_tiles(plan, offline, writer, view, end_us, reporter)
    start = offline.last_materialized_end(plan, name) if incremental else start_us
    rows = 0
    with offline.latest_rows(plan, name, end_us, start) as reader, \
            reporter.task(f"materializing {name}", None) as step:
        for batch in reader:
            writer.write_rows(view, batch)
            rows += batch.num_rows
            step.advance(f"materializing {name}: {rows} rows")
        written = writer.flush()  # every row is in Redis before the version is served
    writer.activate(view, end_us, rows)
    offline.record_materialization(plan, name, start, end_us, rows)
    return Materialized(name, view.version, start, end_us, rows, written)


def _materialize_tiles(plan: Plan, offline: OfflineStore, writer: OnlineStore, view: ViewPlan,
                       end_us: int, reporter: Reporter) -> Materialized:
    """A windowed view's live tiles as of END, rebuilt from the offline event log: every tile
    a read at END can touch, and the raw events of END's hop. Always a full rebuild (tiles are
    cheap to recompute, and a rebuild leaves no partial state behind). Its row count is the
    number of tile blocks written."""
    with reporter.task(f"materializing {view.name}", None) as step:
        events = offline.window_events(plan, view.name, end_us)
        blocks, now = 0, now_us()
        for first in range(0, len(events.starts), TILE_CHUNK):
            stop = min(first + TILE_CHUNK, len(events.starts))
            chunk = events.entities(first, stop)
            for writes in view_tile_writes(plan.project, view, chunk, end_us, end_us, end_us, now):
                blocks += writer.write_tiles(writes, now)
            step.advance(f"materializing {view.name}: {stop} of {len(events.starts)} entities, "
                         f"{blocks} tile blocks")
        writer.flush()
    # Batches in the log are in these tiles now: a retry of one must not add it again.
    writer.mark_pushed(view.source, event_log.batches_until(offline.root, view.source, end_us))
    writer.activate(view, end_us, blocks)
    offline.record_materialization(plan, view.name, None, end_us, blocks)
    return Materialized(view.name, view.version, None, end_us, blocks, blocks)
