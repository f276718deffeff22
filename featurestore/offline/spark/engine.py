"""The Spark engine's operations: backfill (rebuild feature tables from the sources' files),
training sets, and the latest rows materialization writes online, each a Spark job; the
driver only plans them and assembles the result."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from featurestore.errors import FeatureStoreError
from featurestore.offline.labels import prepare, to_arrow_table
from featurestore.offline.spark import feature_tables, training, windows
from featurestore.offline.spark.session import spark_session
from featurestore.offline.spark.sources import check_timestamps, source_rows
from featurestore.offline.training import assemble, check_labels
from featurestore.plan import Plan, Selection, ViewPlan
from featurestore.progress import QUIET, Reporter

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


class SparkOffline:
    """`master`: the Spark master URL; `tables`: where feature tables are written (a folder
    or a URL all executors reach); `root`: the repo, whose paths the sources name."""

    def __init__(self, master: str, tables: str, root: Path):
        self.master, self.tables, self.root = master, tables, root

    @cached_property
    def spark(self) -> SparkSession:
        return spark_session(self.master)

    def backfill(self, plan: Plan, views: list[str] | None = None,
                 reporter: Reporter = QUIET) -> dict[str, int]:
        """Rebuild the feature tables of `views` (default all) from the sources' current
        files and pushed-event logs; returns each table's rows."""
        for name in views or []:
            if name not in plan.views:
                raise FeatureStoreError(f"unknown feature view {name!r}")
        built: dict[str, int] = {}
        checked: set[str] = set()
        names = views or list(plan.views)
        with reporter.task("building feature tables with Spark", len(names)) as step:
            for name in names:
                view = plan.views[name]
                step.advance(f"building {name}")
                rows = self._rows(plan, view.source)
                if view.source not in checked:
                    check_timestamps(rows, plan.sources[view.source])
                    checked.add(view.source)
                table = (feature_tables.windowed_table(windows.backfill(
                    windows.events_frame(rows, plan, view), view)) if view.windowed
                         else feature_tables.latest(rows, plan, view))
                where = feature_tables.location(self.tables, view)
                table.write.mode("overwrite").parquet(where)
                built[name] = self.spark.read.parquet(where).count()
        return built

    def training_set(self, plan: Plan, selection: Selection, labels: Any, timestamp: str,
                     timezone: str | None, statuses: bool) -> pl.DataFrame:
        table = to_arrow_table(labels)
        check_labels(table, selection)
        prepared = prepare(table, selection, timestamp, timezone)
        frame = training.labels_frame(self.spark, prepared, list(selection.join_keys))
        joined, windowed = training.looked_up(
            self.spark, plan, self.tables, selection.views, frame,
            lambda view: self._events(plan, view))
        return assemble(plan, selection, labels, table, prepared, joined, windowed, statuses)

    def latest_rows(self, plan: Plan, view: str, end_us: int, start_us: int | None
                    ) -> DataFrame:
        """A plain view's winner per entity as of `end` from its Spark feature table, for
        materialization (feature_tables.latest_at)."""
        table = training.feature_table(self.spark, self.tables, plan.views[view])
        return feature_tables.latest_at(table, plan.views[view], end_us, start_us)

    def _rows(self, plan: Plan, source: str) -> DataFrame:
        return source_rows(self.spark, plan, plan.sources[source], self.root)

    def _events(self, plan: Plan, view: ViewPlan) -> DataFrame:
        return windows.events_frame(self._rows(plan, view.source), plan, view)
