"""`featurestore parity`: checks a live deployment. `check`: for a sample of entities, the
values a server returns at T must equal the training-set values at T, bit for bit, with the
same statuses; T defaults to the end of the last materialization, the moment the online store
describes (or the latest push to a windowed view's source, if later). `check_samples`: the
same comparison for the live requests servers logged (`serve --log-sample`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from featurestore.definitions.types import Bool, DType, Float64, Int64, String, Timestamp
from featurestore.errors import FeatureStoreError
from featurestore.feature_store import FeatureStore
from featurestore.offline.connection import quote
from featurestore.offline.event_log import INGESTED
from featurestore.offline.windowed import visible_from
from featurestore.plan import OutputFeature, Plan, ViewPlan
from featurestore.serving.client import Client, OnlineFeatures
from featurestore.serving.samples import (
    Sample,
    read_samples,
    samples_dir,
    selection_version,
    write_summary,
)
from featurestore.values.timestamps import EPOCH, now_us


@dataclass(frozen=True)
class Mismatch:
    feature: str
    row: int
    keys: dict[str, Any]
    offline: Any
    offline_status: str
    online: Any
    online_status: str
    selection: str = ""  # from a sample: the service or feature list asked for
    as_of_us: int | None = None  # from a sample: the time it was served for


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
    """Bit for bit: NaN payloads, -0.0 and infinities included."""
    if dtype is Float64 and a is not None and b is not None:
        return bool(np.float64(a).view(np.int64) == np.float64(b).view(np.int64))
    return bool(a == b)


SAME, EXPIRED, DIFFERENT = 0, 1, 2


def compare(out: OutputFeature, offline: pl.DataFrame, online: pl.DataFrame) -> np.ndarray:
    """One feature of a training set and of the online answers for the same rows (both with
    status columns), row by row: SAME, EXPIRED (OUTSIDE_TTL offline, NOT_FOUND online: Redis
    reclaimed the stale key, which is no mismatch) or DIFFERENT (another status, or other
    bits)."""
    status_off = offline[f"{out.name}__status"].cast(pl.String).to_list()
    status_on = online[f"{out.name}__status"].cast(pl.String).to_list()
    verdicts = np.full(len(status_off), SAME, np.int8)
    for row, (v_off, v_on, s_off, s_on) in enumerate(zip(
            offline[out.name].to_list(), online[out.name].to_list(), status_off, status_on,
            strict=True)):
        if s_off == "OUTSIDE_TTL" and s_on == "NOT_FOUND":
            verdicts[row] = EXPIRED
        elif s_off != s_on or not _same(v_off, v_on, out.dtype):
            verdicts[row] = DIFFERENT
    return verdicts


def _mismatch(out: OutputFeature, row: int, keys: dict[str, Any], offline: pl.DataFrame,
              online: pl.DataFrame, **where: Any) -> Mismatch:
    status = f"{out.name}__status"
    return Mismatch(out.name, row, keys, offline[out.name][row], str(offline[status][row]),
                    online[out.name][row], str(online[status][row]), **where)


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


def default_as_of(store: FeatureStore, service: str) -> int:
    """The end of the last materialization of the service's views, or the latest push to a
    windowed view's source if later: windowed views are exact from their latest push on
    (earlier reads are refused)."""
    plan = store.plan
    selection = plan.select(service=service)
    ends = [store.offline.last_materialized_end(plan, v) for v in selection.views]
    if not ends or any(e is None for e in ends):
        raise FeatureStoreError(
            f"service {service!r} reads views that were never materialized in their current "
            "version: run `featurestore materialize` first, or pass --as-of")
    pushes = [store.offline.last_push_us(plan.views[v].source) for v in selection.views
              if plan.views[v].windowed]
    return max([min(e for e in ends if e is not None), *(p for p in pushes if p is not None)])


def check(store: FeatureStore, client: Client, service: str, sample: int = 1000,
          as_of_us: int | None = None, seed: int = 0) -> ParityReport:
    selection = store.plan.select(service=service)
    if as_of_us is None:
        as_of_us = default_as_of(store, service)
    labels = sample_labels(store, service, sample, as_of_us, seed)
    offline = store.training_set(labels, service=service, statuses=True)
    online = client.get_online_features(
        service=service, entities={k: labels[k].to_list() for k in selection.join_keys},
        request={k: labels[k].to_list() for k in selection.requests}, as_of=as_of_us
    ).to_polars(statuses=True)
    report = ParityReport(service, as_of_us, labels.height)
    for out in selection.outputs:
        verdicts = compare(out, offline, online)
        report.values += len(verdicts)
        report.expired += int((verdicts == EXPIRED).sum())
        report.mismatches += [
            _mismatch(out, row, {k: labels[k][row] for k in selection.join_keys}, offline, online)
            for row in np.flatnonzero(verdicts == DIFFERENT).tolist()]
    return report


# --- the live monitor: recomputing the requests servers logged ----------------------------

AS_OF = "__served_as_of"  # the labels' as-of column: each sample's as_of


@dataclass
class FeatureCounts:
    checked: int = 0  # values compared
    mismatched: int = 0
    expired: int = 0  # of the checked: OUTSIDE_TTL offline, NOT_FOUND online
    not_reproducible: int = 0  # values the offline store cannot recompute as served


@dataclass
class LogReport:
    samples: int
    unreadable: int  # lines of the sample files that could not be read
    since_us: int | None
    features: dict[tuple[str, str], FeatureCounts] = field(default_factory=dict)
    not_reproducible: Counter[str] = field(default_factory=Counter)  # reason -> values
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def counts(self, selection: str, feature: str) -> FeatureCounts:
        return self.features.setdefault((selection, feature), FeatureCounts())

    def summary(self, run_at_us: int) -> dict[str, Any]:
        """What `parity.json` holds (README "Live parity monitor")."""
        return {"run_at_us": run_at_us, "since_us": self.since_us, "samples": self.samples,
                "unreadable": self.unreadable,
                "features": [{"selection": s, "feature": f, **vars(c)}
                             for (s, f), c in sorted(self.features.items())],
                "not_reproducible": dict(self.not_reproducible)}


def check_samples(store: FeatureStore, since_us: int | None = None) -> LogReport:
    """Recomputes every request the servers sampled (at or after `since_us`) as a training set
    at its as_of and compares it with what was served; writes the summary beside the samples.

    Only what the online store could know is compared: a value is not reproducible when a view
    it reads was served at another version than the repo's, or when the view's offline rows
    for that entity became visible after the END of the materialization served and by the
    as_of (a row view's feature-table rows; a windowed view's source-file rows, pushed events
    being online as soon as they are logged). Those are counted by reason, never compared."""
    folder = samples_dir(store.config.root)
    samples, unreadable = read_samples(folder, since_us)
    report = LogReport(len(samples), unreadable, since_us)
    groups: dict[tuple[Any, ...], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.service, sample.features, sample.version), []).append(sample)
    for group in groups.values():
        _check_group(store, group, report)
    write_summary(folder, report.summary(now_us()))
    return report


def _check_group(store: FeatureStore, group: list[Sample], report: LogReport) -> None:
    """Samples of one selection and version: one training set for all of their rows."""
    plan, first = store.plan, group[0]
    try:
        selection = first.select(plan)
    except FeatureStoreError:
        _skip(report, group, f"{first.selection} is no longer defined in the repo")
        return
    version = selection_version(plan, first.service, selection)
    if version != first.version:
        _skip(report, group, f"{first.selection} changed since it was served (version "
                             f"{first.version} then, {version} in the repo)")
        return
    served = [(s, OnlineFeatures(s.online())) for s in group]
    served = [(s, r) for s, r in served if len(r)]
    if not served:
        return
    labels = pa.concat_tables(pa.table({**s.columns(selection), AS_OF: pa.array(
        np.full(len(r), s.as_of_us), pa.int64()).cast(Timestamp.arrow)}) for s, r in served)
    offline = store.training_set(labels, service=first.service,
                                 features=list(first.features) if first.features else None,
                                 timestamp=AS_OF, statuses=True)
    online = pl.concat([r.to_polars(statuses=True) for _, r in served])
    samples = [s for s, _ in served]
    owner = np.repeat(np.arange(len(served)), [len(r) for _, r in served])
    why = {v: _unreproducible(store, v, samples, owner, offline) for v in selection.views}
    for out in selection.outputs:
        counts = report.counts(first.selection, out.name)
        reasons = _first_reason([why[v] for v in _views_of(plan, out.ref)], len(owner))
        skipped = reasons != None  # noqa: E711 (elementwise)
        report.not_reproducible.update(reasons[skipped].tolist())
        verdicts = compare(out, offline, online)
        counts.not_reproducible += int(skipped.sum())
        counts.checked += int((~skipped).sum())
        counts.expired += int((~skipped & (verdicts == EXPIRED)).sum())
        different = ~skipped & (verdicts == DIFFERENT)
        counts.mismatched += int(different.sum())
        report.mismatches += [
            _mismatch(out, row, {k: offline[k][row] for k in selection.join_keys}, offline,
                      online, selection=first.selection, as_of_us=samples[owner[row]].as_of_us)
            for row in np.flatnonzero(different).tolist()]


def _skip(report: LogReport, group: list[Sample], reason: str) -> None:
    for sample in group:
        response = sample.online()
        for name in response.feature_names:
            report.counts(sample.selection, name).not_reproducible += response.num_entities
        report.not_reproducible[reason] += response.num_entities * len(response.feature_names)


def _unreproducible(store: FeatureStore, view: str, group: list[Sample], owner: np.ndarray,
                    offline: pl.DataFrame) -> np.ndarray:
    """Per row: why the view's values cannot be recomputed as served, or None."""
    plan_view = store.plan.views[view]
    served = [s.views.get(view) for s in group]
    why = np.full(len(owner), None, object)
    for i, held in enumerate(served):
        if held is None or held.end_us is None:
            why[owner == i] = f"the server did not know which materialization of {view} it read"
        elif held.version != plan_view.version:
            why[owner == i] = (f"{view} was served at version {held.version}, the repo's is "
                               f"{plan_view.version} (not materialized yet)")
    ends = np.array([h.end_us if h is not None and h.end_us is not None else 0 for h in served],
                    np.int64)[owner]
    as_of = np.array([s.as_of_us for s in group], np.int64)[owner]
    open_rows = (why == None) & (ends < as_of)  # noqa: E711
    if not open_rows.any():
        return why
    keys = [k for k, _ in plan_view.join_keys]
    rows = offline.select(keys).with_columns(
        pl.Series("__row", np.arange(len(owner))), pl.Series("__end", ends),
        pl.Series("__as_of", as_of)).filter(pl.Series(open_rows))
    later = _rows_visible_between(store, plan_view, int(rows["__end"].min()),
                                  int(rows["__as_of"].max()))
    hit = rows.join(later, on=keys).filter(
        (pl.col("__vis") > pl.col("__end")) & (pl.col("__vis") <= pl.col("__as_of")))
    why[hit["__row"].unique().to_numpy()] = (
        f"{view} had rows visible after the end of its materialization (not materialized)")
    return why


def _rows_visible_between(store: FeatureStore, view: ViewPlan, after_us: int, until_us: int
                          ) -> pl.DataFrame:
    """Keys and visibility times (__vis, micros) of the view's offline rows that became
    visible in (after, until]: a row view's feature-table rows, or a windowed view's
    source-file rows (pushed rows are online from their push on)."""
    keys = ", ".join(quote(k) for k, _ in view.join_keys)
    if view.windowed:
        src = store.plan.sources[view.source]
        vis = visible_from(src, quote(src.timestamp))
        rows = f"sources.{quote(src.name)} WHERE {INGESTED} IS NULL AND"
    else:
        vis, rows = "visible_at", f"features.{quote(view.name)} WHERE"
    return store.sql(f"SELECT {keys}, epoch_us({vis}) AS __vis FROM {rows} "
                     f"{vis} > make_timestamptz({after_us}) AND "
                     f"{vis} <= make_timestamptz({until_us})")


def _views_of(plan: Plan, ref: str) -> set[str]:
    """The views a feature reads, through transforms too."""
    if ":" in ref:
        return {ref.split(":", 1)[0]}
    return {v for i in plan.transforms[ref].inputs if i.kind != "request"
            for v in _views_of(plan, i.ref)}


def _first_reason(whys: list[np.ndarray], n: int) -> np.ndarray:
    out = np.full(n, None, object)
    for why in whys:
        out = np.where(out == None, why, out)  # noqa: E711
    return out
