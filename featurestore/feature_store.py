"""FeatureStore: the scientist's entry point. A thin face over the repo loader, the Plan and
the stores; the work happens in those modules."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from featurestore.definitions.base import micros, parse_duration
from featurestore.errors import FeatureStoreError, OnlineUnavailable
from featurestore.materialization import Materialized, materialize
from featurestore.offline import ApplyResult, OfflineStore, event_log
from featurestore.offline.event_log import content_id, read_events_table
from featurestore.offline.registry import PlanDiff
from featurestore.offline.spark import SparkOffline
from featurestore.offline.sql import SqlSession
from featurestore.online.managed import ManagedRedis
from featurestore.online.store import OnlineStore
from featurestore.plan import Plan
from featurestore.progress import Reporter
from featurestore.push import DEFAULT_MAX_FUTURE_US, PushResult, push
from featurestore.repo import RepoConfig, check_engine, load_config, load_plan
from featurestore.serving.client import FeatureServiceSchema, OnlineFeatures, encode_request
from featurestore.serving.local import answer
from featurestore.values.timestamps import now_us, to_micros


class FeatureStore:
    def __init__(self, repo: str | Path = "feature_repo", progress: bool = False):
        self.config: RepoConfig = load_config(repo)
        self.offline = OfflineStore(self.config.offline_store, self.config.root)
        self.reporter = Reporter(progress)
        self._plan: Plan | None = None
        self._spark: SparkOffline | None = None

    @property
    def plan(self) -> Plan:
        """The compiled definitions as they are in the repo's files now."""
        if self._plan is None:
            self._plan = load_plan(self.config.root)
        return self._plan

    def reload(self) -> Plan:
        self._plan = None
        return self.plan

    def diff(self) -> PlanDiff:
        """What `apply` would change, read from the files as they are now."""
        return self.offline.diff(self.reload())

    def apply(self) -> ApplyResult:
        return self.offline.apply(self.reload(), self.reporter)

    def backfill(self, views: list[str] | None = None, engine: str | None = None) -> ApplyResult:
        """Rebuild feature tables from the sources' current data; `engine` ('duckdb' or
        'spark') overrides the repo's offline_engine."""
        if self._engine(engine) == "spark":
            return ApplyResult(PlanDiff(), built=self.spark.backfill(self.plan, views,
                                                                      self.reporter))
        return self.offline.backfill(self.plan, views, self.reporter)

    @property
    def spark(self) -> SparkOffline:
        """The Spark engine, as featurestore.yaml configures it (spark_master, spark_tables)."""
        if self._spark is None:
            self._spark = SparkOffline(self.config.spark_master, self.config.spark_tables_url,
                                       self.config.root)
        return self._spark

    def _engine(self, engine: str | None) -> str:
        return check_engine(engine, "engine") if engine else self.config.offline_engine

    def session(self) -> AbstractContextManager[None]:
        """`with store.session(): ...` keeps the offline store open between calls, which makes
        repeated training sets faster; other processes cannot apply meanwhile."""
        return self.offline.session()

    def training_set(
        self,
        labels: Any,
        service: str | None = None,
        features: list[str] | None = None,
        timestamp: str = "event_timestamp",
        timezone: str | None = None,
        statuses: bool = False,
        output: str = "polars",
        engine: str | None = None,
    ) -> Any:
        """One row per label row (order and duplicates kept): the label columns, then one
        column per feature as it was visible at the label's `timestamp`. With statuses=True,
        a `<feature>__status` column per feature says PRESENT, NULL, NOT_FOUND or
        OUTSIDE_TTL. output: 'polars' (default), 'arrow' or 'pandas'. `engine` ('duckdb' or
        'spark') overrides the repo's offline_engine."""
        if output not in ("polars", "arrow", "pandas"):
            raise ValueError("output must be 'polars', 'arrow' or 'pandas'")
        selection = self.plan.select(service=service, features=features)
        offline = self.spark if self._engine(engine) == "spark" else self.offline
        frame = offline.training_set(self.plan, selection, labels, timestamp, timezone, statuses)
        if output == "arrow":
            return frame.to_arrow()
        return frame.to_pandas() if output == "pandas" else frame

    def get_online_features(
        self,
        service: str | None = None,
        features: list[str] | None = None,
        entities: dict[str, Any] | None = None,
        request: dict[str, Any] | None = None,
        as_of: datetime | int | None = None,
    ) -> OnlineFeatures:
        """What a server would answer Client.get_online_features with the same arguments,
        read from the online store in this process (no server needed): the same values,
        statuses and errors, the same result type."""
        selection = self.plan.select(service=service, features=features)
        schema = FeatureServiceSchema(service or "", {o.name: o.dtype for o in selection.outputs},
                                      dict(selection.join_keys), dict(selection.requests),
                                      list(selection.views), "", True)
        message = encode_request(service, features, entities, request, as_of, None, schema)
        with self.online() as online:
            return OnlineFeatures(answer(self.plan, online, message), entities)

    def online_url(self) -> str:
        """FEATURESTORE_REDIS_URL if set, else the repo's online_store; a managed store's
        redis-server is started if it is not running."""
        url = self.config.online_url
        if url == "managed":
            managed = ManagedRedis(self.config.root)
            managed.start()
            return managed.url
        return url

    def materialize(self, end: datetime | None = None, start: datetime | None = None,
                    views: list[str] | None = None, incremental: bool = False,
                    engine: str | None = None) -> list[Materialized]:
        """Write each online view's latest values as of `end` (default now) to Redis. With
        `start`, only entities whose value became visible after it; `incremental=True` starts
        where the last materialization of the same version ended. `engine` ('duckdb' or
        'spark') overrides the repo's offline_engine: with Spark, the plain views' rows come
        from the Spark feature tables, written by the executors."""
        end_us = to_micros(end) if end is not None else now_us()
        spark = self.spark if self._engine(engine) == "spark" else None
        with self.online() as online:
            return materialize(self.plan, self.offline, online, end_us,
                               to_micros(start) if start is not None else None, views,
                               incremental, self.reporter, spark)

    def online(self) -> OnlineStore:
        """The repo's online store (close it, or use it in a `with` block)."""
        return OnlineStore(self.online_url(), self.config.project)

    def push(self, source: str, events: Any, batch_id: str | None = None,
             max_future: float = DEFAULT_MAX_FUTURE_US / 1e6) -> PushResult:
        """Push a batch of events (Polars, pandas or Arrow table, or a Parquet/CSV path) to a
        source: logged offline and folded into the online tiles of its windowed views. The
        batch id defaults to a hash of the batch's content, so pushing the same batch twice
        applies it once. `max_future`: seconds an event time may be ahead of now."""
        table = read_events_table(events)
        batch_id = batch_id or content_id(table)
        with self.online() as online:
            try:
                return push(self.plan, self.config.root, online, source, table, batch_id,
                            int(max_future * 1e6))
            except OnlineUnavailable as exc:
                raise OnlineUnavailable(
                    f"{exc}; push again with batch id {batch_id!r} (it is logged offline and "
                    "will be applied once)") from None

    def compact_log(self, older_than: str | timedelta = "1d",
                    sources: list[str] | None = None) -> dict[str, int]:
        """Merges the pushed-event log's files of batches ingested more than `older_than` ago
        into one file per source (the log otherwise grows a file per batch); exactly-once
        holds throughout, for readers and retries. Returns the batches merged per source."""
        before = now_us() - micros(parse_duration("compact_log older_than", older_than))
        names = sources or sorted(self.plan.sources)
        unknown = [s for s in names if s not in self.plan.sources]
        if unknown:
            raise FeatureStoreError(f"unknown source(s) {unknown}; sources: "
                                    f"{', '.join(sorted(self.plan.sources))}")
        return {s: event_log.compact(self.config.root, s, before) for s in names}

    def sql(self, query: str) -> pl.DataFrame:
        """SQL over the offline store's sources.* and features.* objects, with transforms
        callable as functions; nothing else (no files, settings, extensions or other
        databases): see README "Sandbox". Each call has its own sandboxed connection, also
        inside `session()`, so temporary views last for one call (see `sql_session`)."""
        with self.sql_session() as session:
            return session.sql(query)

    def sql_session(self) -> SqlSession:
        """One sandboxed SQL connection for many queries (`with store.sql_session() as s:
        s.sql(...)`): temporary views, tables and macros last until it is closed. Also
        `s.tables()` (what SHOW TABLES lists) and `s.describe(name)`."""
        return self.offline.sql_session(self.plan)
