"""The offline store's operations, each one transaction on the DuckDB file: apply (register a
plan and make its feature tables), backfill (rebuild them from current data), training sets and
read-only SQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from featurestore.aggregation.events import Events
from featurestore.errors import FeatureStoreError, NotAppliedError
from featurestore.offline import (
    catalog,
    event_log,
    feature_tables,
    ingest,
    registry,
    training,
    windowed,
)
from featurestore.offline.connection import INTERNAL, connect, cursor
from featurestore.offline.sql import SqlSession
from featurestore.plan import Plan, Selection, ViewPlan
from featurestore.plan.hashing import version_of
from featurestore.progress import QUIET, Reporter
from featurestore.values.columns import Column


@dataclass
class ApplyResult:
    diff: registry.PlanDiff
    ingested: dict[str, ingest.Ingested] = field(default_factory=dict)
    built: dict[str, int] = field(default_factory=dict)  # view -> feature table rows


class OfflineStore:
    def __init__(self, path: Path, root: Path):
        self.path, self.root = path, root
        self._held: duckdb.DuckDBPyConnection | None = None  # see session()
        self._windows_lock = threading.Lock()

    @contextmanager
    def session(self) -> Iterator[None]:
        """Hold one read-only connection for the reads inside: DuckDB then keeps its buffer
        pool warm between training sets instead of re-reading tables on every call. While a
        session is open, other processes cannot open the store for writing (apply). A session
        inside a session is the outer one."""
        if self._held is not None:
            yield
            return
        self._held = connect(self.path, read_only=True)
        try:
            yield
        finally:
            self._held.close()
            self._held = None

    @contextmanager
    def _reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._held is not None:
            with cursor(self._held) as cur:
                yield cur
            return
        con = connect(self.path, read_only=True)
        try:
            yield con
        finally:
            con.close()

    def diff(self, plan: Plan) -> registry.PlanDiff:
        if not self.path.exists():
            return registry.diff(plan, {})
        with self._reading() as con:
            return registry.diff(plan, registry.active_versions(con))

    def apply(self, plan: Plan, reporter: Reporter = QUIET) -> ApplyResult:
        """Register the plan and build what its new versions need, atomically: on any error
        the previous registry, tables and views stay as they were."""
        with self._transaction() as con:
            result = ApplyResult(registry.diff(plan, registry.active_versions(con)))
            self._refresh(con, plan, set(), result, reporter)
            registry.record(con, plan)
            catalog.refresh(con, plan)
            feature_tables.drop_stale(con, plan)
        return result

    def backfill(self, plan: Plan, views: list[str] | None = None,
                 reporter: Reporter = QUIET) -> ApplyResult:
        """Re-ingest changed source data and rebuild feature tables (all, or `views`)."""
        with self._transaction() as con:
            result = ApplyResult(registry.diff(plan, registry.active_versions(con)))
            if not result.diff.empty:
                raise NotAppliedError(
                    "the definitions differ from the registry (" + _summary(result.diff)
                    + "); run `featurestore apply` first")
            for name in views or []:
                if name not in plan.views:
                    raise FeatureStoreError(f"unknown feature view {name!r}")
            self._refresh(con, plan, set(views or plan.views), result, reporter)
        return result

    def training_set(self, plan: Plan, selection: Selection, labels: Any, timestamp: str,
                     timezone: str | None, statuses: bool) -> pl.DataFrame:
        """A read: windowed views see pushed batches straight from the event log."""
        with self._reading() as con:
            self._check_active(con, plan, selection)
            return training.training_set(con, plan, selection, labels, timestamp, timezone,
                                         statuses, self._logs(plan))

    def last_push_us(self, source: str) -> int | None:
        """The ingest time of the latest batch pushed to a source, if any."""
        return max((t for path in event_log.files(self.root, source)
                    for t in event_log.batches(path).values()), default=None)

    def _logs(self, plan: Plan) -> dict[str, list[Path]]:
        return {name: event_log.files(self.root, name) for name in plan.sources}

    @contextmanager
    def latest_rows(self, plan: Plan, view: str, end_us: int, start_us: int | None,
                    batch_rows: int = 20_000) -> Iterator[pa.RecordBatchReader]:
        """Each entity's winner as of `end`, streamed in batches (for materialization)."""
        with self._reading() as con:
            self._check_applied(con, plan)
            reader = con.sql(feature_tables.latest_sql(plan.views[view], end_us, start_us))
            yield reader.to_arrow_reader(batch_rows)

    def window_events(self, plan: Plan, view: str, until_us: int, log: list[Path],
                      since_us: int | None = None) -> Events:
        """A windowed view's events visible at `until_us`, and the pushed ones logged by then
        (for materializing its tiles), at or after `since_us`: its source's file rows and the
        pushed batches of the `log` files given."""
        with self._reading() as con:
            self._check_applied(con, plan)
            return windowed.read_events(con, plan, plan.views[view], log, until_us=until_us,
                                        since_us=since_us)

    def record_materializations(self, plan: Plan,
                                done: list[tuple[str, int | None, int, int]]) -> None:
        """Records materializations (view, start_us, end_us, rows), in one transaction."""
        if not done:
            return
        with self._transaction() as con:
            con.execute(f"""CREATE TABLE IF NOT EXISTS {INTERNAL}.materializations (
                view VARCHAR, version VARCHAR, start_us BIGINT, end_us BIGINT, rows BIGINT,
                finished_at TIMESTAMPTZ)""")
            con.executemany(
                f"INSERT INTO {INTERNAL}.materializations VALUES (?, ?, ?, ?, ?, now())",
                [[view, plan.views[view].version, start, end, rows]
                 for view, start, end, rows in done])

    def last_materialized_end(self, plan: Plan, view: str) -> int | None:
        """End of the latest materialization of the view's current version, if any."""
        with self._reading() as con:
            exists = con.execute(
                "SELECT 1 FROM duckdb_tables() WHERE schema_name = ? AND table_name = "
                "'materializations'", [INTERNAL]).fetchall()
            if not exists:
                return None
            row = con.execute(
                f"SELECT max(end_us) FROM {INTERNAL}.materializations WHERE view = ? AND version = ?",
                [view, plan.views[view].version]).fetchone()
            return row[0] if row else None

    def check_applied(self, plan: Plan) -> None:
        """Refuses definitions that differ from the registry (run `featurestore apply`)."""
        with self._reading() as con:
            self._check_applied(con, plan)

    def _check_applied(self, con: duckdb.DuckDBPyConnection, plan: Plan) -> None:
        d = registry.diff(plan, registry.active_versions(con))
        if not d.empty:
            raise NotAppliedError(
                f"the definitions differ from the registry ({_summary(d)}); run `featurestore apply`")

    def sql_session(self, plan: Plan) -> SqlSession:
        return SqlSession(self.path, plan, lambda view, labels: self.windows_at(
            plan, plan.views[view], labels))

    def windows_at(self, plan: Plan, view: ViewPlan, labels: pa.Table) -> list[Column]:
        """A windowed view's aggregates at each row of `labels` (`__row`, the keys, `__ts`),
        read as a training set reads them (pushed events included). Called from SQL functions,
        which DuckDB may run on several threads at once: one read at a time."""
        with self._windows_lock, self._reading() as con:
            training.check_built(con, plan, [view.name])
            con.register("__labels", labels)
            try:
                return training.window_values(con, plan, view, labels,
                                              event_log.files(self.root, view.source))
            finally:
                con.unregister("__labels")

    def _check_active(self, con: duckdb.DuckDBPyConnection, plan: Plan,
                      selection: Selection) -> None:
        active = registry.active_versions(con)
        wanted = [("feature_view", v, plan.views[v].hash) for v in selection.views]
        wanted += [("transform", t.name, t.hash) for t in selection.transforms]
        for kind, name, digest in wanted:
            if active.get((kind, name)) != version_of(digest):
                raise NotAppliedError(
                    f"{kind.replace('_', ' ')} {name!r} is not applied in this version "
                    f"({version_of(digest)}); run `featurestore apply`")

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        held = self._held is not None
        if held:  # one process cannot hold the file read-only and read-write at once
            self._held.close()  # type: ignore[union-attr]
            self._held = None
        con = connect(self.path)
        try:
            con.execute("BEGIN TRANSACTION")
            registry.ensure_schema(con)
            ingest.ensure_tables(con)
            feature_tables.ensure_tables(con)
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        else:
            con.execute("COMMIT")
        finally:
            con.close()
            if held:
                self._held = connect(self.path, read_only=True)

    def _refresh(self, con: duckdb.DuckDBPyConnection, plan: Plan, force: set[str],
                 result: ApplyResult, reporter: Reporter) -> None:
        stored = dict(con.execute(f"SELECT source, fingerprint FROM {INTERNAL}.ingests").fetchall())
        fingerprints: dict[str, str] = {}
        with reporter.task("ingesting sources", len(plan.sources)) as step:
            for name in sorted(plan.sources):
                src = plan.sources[name]
                current = ingest.fingerprint(plan, src, self.root)
                forced = any(plan.views[v].source == name for v in force)
                if current is None or current != stored.get(name) or forced:
                    step.advance(f"ingesting {name}")
                    done = ingest.ingest(con, plan, src, self.root)
                    con.execute(f"INSERT OR REPLACE INTO {INTERNAL}.ingests VALUES (?, ?, ?, now())",
                                [name, done.fingerprint, done.rows])
                    result.ingested[name] = done
                    current = done.fingerprint
                else:
                    step.advance(f"{name} unchanged")
                fingerprints[name] = current or ""
        have = feature_tables.built(con)
        last_read: dict[tuple, Events] = {}
        with reporter.task("building feature tables", len(plan.views)) as step:
            for view in plan.views.values():
                fp = fingerprints[view.source]
                if view.name in force or have.get((view.name, view.version)) != feature_tables.stamp(fp) or \
                        view.source in result.ingested:
                    step.advance(f"building {view.name}")
                    result.built[view.name] = feature_tables.build(con, plan, view, fp, last_read)
                else:
                    step.advance(f"{view.name} up to date")


def _summary(d: registry.PlanDiff) -> str:
    parts = [f"{len(d.added)} added", f"{len(d.changed)} changed", f"{len(d.removed)} removed"]
    return ", ".join(parts)
