"""`featurestore parity`: checks a live deployment. For a sample of entities, the values a
server returns at T must equal the training-set values at T, bit for bit, with the same
statuses; T defaults to the end of the last materialization, the moment the online store
describes (or the latest push to a windowed view's source, if later)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

from featurestore.definitions.types import Bool, DType, Float64, Int64, String, Timestamp
from featurestore.errors import FeatureStoreError
from featurestore.feature_store import FeatureStore
from featurestore.serving.client import Client
from featurestore.values.timestamps import EPOCH


@dataclass(frozen=True)
class Mismatch:
    feature: str
    row: int
    keys: dict[str, Any]
    offline: Any
    offline_status: str
    online: Any
    online_status: str


@dataclass
class ParityReport:
    service: str
    as_of_us: int
    entities: int
    values: int = 0
    expired: int = 0  # OUTSIDE_TTL offline, NOT_FOUND online: Redis reclaimed the stale key
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _same(a: Any, b: Any, dtype: DType) -> bool:
    if dtype is Float64 and a is not None and b is not None:
        return bool(np.float64(a).view(np.int64) == np.float64(b).view(np.int64)) or (
            np.isnan(a) and np.isnan(b))
    return bool(a == b)


def _request_values(dtype: DType, n: int, rng: np.random.Generator, as_of_us: int) -> list[Any]:
    """Deterministic request inputs, with the awkward values transforms must survive."""
    if dtype is Float64:
        special = [0.0, -0.0, float("inf"), float("nan"), 5e-324, None]
        return [special[i % 6] if i % 7 == 0 else float(v)
                for i, v in enumerate(rng.normal(100.0, 300.0, n))]
    if dtype is Int64:
        return rng.integers(-1000, 1000, n).tolist()
    if dtype is Bool:
        return (rng.random(n) < 0.5).tolist()
    if dtype is String:
        return rng.choice(["", "US", "FR", "DE", "é", "日本"], n).tolist()
    assert dtype is Timestamp
    return [EPOCH + timedelta(microseconds=as_of_us - int(s) * 1_000_000)
            for s in rng.integers(0, 86_400 * 30, n)]


def sample_labels(store: FeatureStore, service: str, sample: int, as_of_us: int,
                  seed: int) -> pl.DataFrame:
    """Entity keys sampled from the service's feature tables (plus one never seen), the as-of
    time, and generated request inputs."""
    plan = store.plan
    selection = plan.select(service=service)
    rng = np.random.default_rng(seed)
    columns: dict[str, list[Any]] = {}
    views = sorted(selection.views, key=lambda v: -len(plan.views[v].join_keys))
    for name in views:
        keys = [k for k, _ in plan.views[name].join_keys if k not in columns]
        if not keys:
            continue
        quoted = ", ".join(f'"{k}"' for k in keys)
        rows = store.sql(f'SELECT DISTINCT {quoted} FROM features."{name}" '
                         f"USING SAMPLE {sample} ROWS (reservoir, {seed})")
        picks = rng.integers(0, rows.height, sample) if rows.height else np.zeros(0, np.int64)
        for k in keys:
            values = rows[k].to_list()
            columns[k] = [values[i] for i in picks]
    n = min(len(v) for v in columns.values()) if columns else 0
    frame = pl.DataFrame({k: v[:n] for k, v in columns.items()},
                         schema={k: _polars(t) for k, t in selection.join_keys.items()})
    unseen = pl.DataFrame({k: [-1 if t is Int64 else "__never_seen__"]
                           for k, t in selection.join_keys.items()},
                          schema={k: _polars(t) for k, t in selection.join_keys.items()})
    frame = pl.concat([frame, unseen])
    as_of = EPOCH + timedelta(microseconds=as_of_us)
    frame = frame.with_columns(event_timestamp=pl.lit(as_of, pl.Datetime("us", "UTC")))
    for name, dtype in selection.requests.items():
        frame = frame.with_columns(pl.Series(name, _request_values(dtype, frame.height, rng,
                                                                   as_of_us), _polars(dtype)))
    return frame


def _polars(dtype: DType) -> Any:
    return {Int64: pl.Int64, Float64: pl.Float64, Bool: pl.Boolean, String: pl.String,
            Timestamp: pl.Datetime("us", "UTC")}[dtype]


def check(store: FeatureStore, client: Client, service: str, sample: int = 1000,
          as_of_us: int | None = None, seed: int = 0) -> ParityReport:
    plan = store.plan
    selection = plan.select(service=service)
    if as_of_us is None:
        ends = [store.offline.last_materialized_end(plan, v) for v in selection.views]
        if not ends or any(e is None for e in ends):
            raise FeatureStoreError(
                f"service {service!r} reads views that were never materialized in their current "
                "version: run `featurestore materialize` first, or pass --as-of")
        as_of_us = min(e for e in ends if e is not None)
        # windowed views are exact from their latest push on (earlier reads are refused)
        pushes = [store.offline.last_push_us(plan.views[v].source) for v in selection.views
                  if plan.views[v].windowed]
        as_of_us = max([as_of_us, *(p for p in pushes if p is not None)])
    labels = sample_labels(store, service, sample, as_of_us, seed)
    offline = store.training_set(labels, service=service, statuses=True)
    online = client.get_online_features(
        service=service, entities={k: labels[k].to_list() for k in selection.join_keys},
        request={k: labels[k].to_list() for k in selection.requests}, as_of=as_of_us
    ).to_polars(statuses=True)
    report = ParityReport(service, as_of_us, labels.height)
    for out in selection.outputs:
        status_off = offline[f"{out.name}__status"].cast(pl.String).to_list()
        status_on = online[f"{out.name}__status"].cast(pl.String).to_list()
        for row, (v_off, v_on, s_off, s_on) in enumerate(zip(
                offline[out.name].to_list(), online[out.name].to_list(), status_off, status_on,
                strict=True)):
            report.values += 1
            if s_off == "OUTSIDE_TTL" and s_on == "NOT_FOUND":
                report.expired += 1
            elif s_off != s_on or not _same(v_off, v_on, out.dtype):
                keys = {k: labels[k][row] for k in selection.join_keys}
                report.mismatches.append(Mismatch(out.name, row, keys, v_off, s_off, v_on, s_on))
    return report
