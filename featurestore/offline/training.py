"""Point-in-time-correct training sets: one ASOF join per feature view against its feature
table, then the transform kernels, returning one row per label row in label order."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from featurestore.errors import LabelsError, NotAppliedError
from featurestore.offline import windowed
from featurestore.offline.connection import quote
from featurestore.offline.feature_tables import asof_join, built, expired, visible_value
from featurestore.offline.labels import ROW, TS, prepare, to_arrow_table
from featurestore.plan import Plan, Selection, ViewPlan
from featurestore.plan.execute import computed_status, feature_status, run_transforms
from featurestore.values.columns import Column, from_arrow, to_arrow
from featurestore.values.status import STATUS_NAMES, Status, status_dtype


def check_built(con: duckdb.DuckDBPyConnection, plan: Plan, views: list[str]) -> None:
    have = built(con)
    for name in views:
        view = plan.views[name]
        if (view.name, view.version) not in have:
            raise NotAppliedError(
                f"feature view {name!r} version {view.version} has no feature table: the "
                "definitions changed since the last apply; run `featurestore apply`"
            )


def state_column(index: int) -> str:
    """The joined column holding the state of the selection's `index`-th view's lookup."""
    return f"__st_{index}"


def state_sql(view: ViewPlan, alias: str, label_ts: str, micros: bool = False) -> str:
    """A plain view's lookup state at `label_ts` from the row `alias` the ASOF join found
    (NOT_FOUND, OUTSIDE_TTL or PRESENT; NULL values are told apart later, per feature).
    `micros`: see feature_tables.expired."""
    return (f"CASE WHEN {alias}.__vis IS NULL THEN {int(Status.NOT_FOUND)} "
            f"WHEN {expired(view, alias, label_ts, micros)} THEN {int(Status.OUTSIDE_TTL)} "
            f"ELSE {int(Status.PRESENT)} END")


def join_sql(plan: Plan, selection: Selection) -> str:
    items, joins = [f"l.{ROW}"], []
    for i, (name, features) in enumerate(selection.views.items()):
        view, alias = plan.views[name], f"f{i}"
        if view.windowed:
            continue
        items.append(f"{state_sql(view, alias, f'l.{TS}')}::UTINYINT AS {quote(state_column(i))}")
        items += [f"{visible_value(view, f'{alias}.{quote(f)}', alias, f'l.{TS}')} "
                  f"AS {quote(f'{name}:{f}')}" for f in features]
        joins.append(asof_join(view, "l", alias, f"l.{TS}"))
    return f"SELECT {', '.join(items)} FROM __labels l {' '.join(joins)} ORDER BY l.{ROW}"


def _windowed(con: duckdb.DuckDBPyConnection, plan: Plan, selection: Selection,
              prepared: pa.Table, logs: dict[str, list[Path]]) -> dict[str, Column]:
    """Each windowed view's aggregates at every label's time, over the events of the labels'
    entities."""
    out: dict[str, Column] = {}
    for name, features in selection.views.items():
        view = plan.views[name]
        if not view.windowed:
            continue
        values = window_values(con, plan, view, prepared, logs[view.source])
        for agg, column in zip(view.aggregates, values, strict=True):
            if agg.name in features:
                out[f"{name}:{agg.name}"] = column
    return out


def window_values(con: duckdb.DuckDBPyConnection, plan: Plan, view: ViewPlan,
                  prepared: pa.Table, log: list[Path]) -> list[Column]:
    """A windowed view's aggregates at each label's time (`prepared`, registered as
    `__labels`: `__row`, the keys, `__ts`), over the events of the labels' entities and the
    source's pushed-event `log`; one Column per aggregate, in `__row` order. Training sets and
    the analysts' `_asof` macros both read windows here."""
    events = windowed.read_events(con, plan, view, log, only_keys="__labels")
    entity = windowed.entity_index(con, view, events, "__labels", ROW)
    return windowed.evaluate_at(view, events, entity, prepared.column(TS).cast(pa.int64())
                                .to_numpy())


def training_set(con: duckdb.DuckDBPyConnection, plan: Plan, selection: Selection, labels: Any,
                 timestamp: str, timezone: str | None, with_statuses: bool,
                 logs: dict[str, list[Path]]) -> pl.DataFrame:
    """`logs`: each source's pushed-event log files, read by windowed views."""
    table = to_arrow_table(labels)
    check_labels(table, selection)
    check_built(con, plan, list(selection.views))
    prepared = prepare(table, selection, timestamp, timezone)
    con.register("__labels", prepared)
    try:
        joined = con.sql(join_sql(plan, selection)).to_arrow_table()
        windows = _windowed(con, plan, selection, prepared, logs)
    finally:
        con.unregister("__labels")
    return assemble(plan, selection, labels, table, prepared, joined, windows, with_statuses)


def check_labels(table: pa.Table, selection: Selection) -> None:
    for out in selection.outputs:
        if out.name in table.column_names:
            raise LabelsError(
                f"labels column {out.name!r} has the name of a selected feature; rename or "
                "drop it so the training set's columns stay unambiguous")


def assemble(plan: Plan, selection: Selection, labels: Any, table: pa.Table, prepared: pa.Table,
             joined: pa.Table, windows: dict[str, Column], with_statuses: bool) -> pl.DataFrame:
    """The training set from what an engine looked up, in label order: `joined` holds each
    plain view's state column (`state_column`) and its features (`view:feature`), `windows`
    each windowed feature's Column. Transforms and statuses are computed here, the same for
    every engine."""
    # Stored features go from the engine's Arrow straight to the frame; only transform inputs
    # become Columns, and statuses are computed only when asked for.
    dtypes = {f"{v}:{f}": plan.views[v].dtype(f) for v, fs in selection.views.items() for f in fs}
    inputs = {i.ref for t in selection.transforms for i in t.inputs if i.kind == "feature"}
    columns = {ref: from_arrow(joined.column(ref), dtypes[ref]) for ref in inputs
               if ref not in windows}
    columns.update(windows)
    statuses: dict[str, np.ndarray] = {}
    if with_statuses:
        for ref, column in windows.items():
            statuses[ref] = computed_status(column.valid)
        for i, (name, features) in enumerate(selection.views.items()):
            if plan.views[name].windowed:
                continue
            state = joined.column(state_column(i)).to_numpy().astype(np.uint8)
            for feature in features:
                ref = f"{name}:{feature}"
                statuses[ref] = feature_status(state, joined.column(ref).is_valid().to_numpy(
                    zero_copy_only=False))
    requests = {name: from_arrow(prepared.column(name), dtype)
                for name, dtype in selection.requests.items()}
    for name, raised in run_transforms(selection, columns, requests).items():
        warnings.warn(f"transform {name!r} raised for {raised} of {prepared.num_rows} rows; "
                      "those values are NULL", RuntimeWarning, stacklevel=4)
    for t in selection.transforms:
        statuses[t.name] = computed_status(columns[t.name].valid)
    out = {f.name: to_arrow(columns[f.ref], f.dtype) if f.ref in columns
           else joined.column(f.ref).cast(f.dtype.arrow) for f in selection.outputs}
    frame = labels if isinstance(labels, pl.DataFrame) else pl.from_arrow(table)
    features = pl.from_arrow(pa.table(out))
    assert isinstance(frame, pl.DataFrame) and isinstance(features, pl.DataFrame)
    if with_statuses:
        features = features.with_columns(
            pl.Series(f"{f.name}__status", np.asarray(STATUS_NAMES)[statuses[f.ref]],
                      dtype=status_dtype()) for f in selection.outputs)
    return pl.concat([frame, features], how="horizontal")
