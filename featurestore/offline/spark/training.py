"""Training sets in Spark: per plain view an as-of lookup in its Spark feature table (the
latest row visible at each label's time, found by a running last-value over labels and table
rows sorted together), per windowed view the kernels at label times (windows.at_labels); then
the same assembly as the DuckDB engine (transforms, statuses) on the driver."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from featurestore.errors import NotAppliedError
from featurestore.offline.connection import quote
from featurestore.offline.feature_tables import visible_value
from featurestore.offline.labels import ROW, TS
from featurestore.offline.spark import windows
from featurestore.offline.spark.feature_tables import from_bits, location
from featurestore.offline.training import state_column, state_sql
from featurestore.plan import Plan, ViewPlan
from featurestore.values.columns import Column, from_arrow

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def labels_frame(spark: SparkSession, prepared: pa.Table, keys: list[str]) -> DataFrame:
    """The prepared labels' row numbers, keys and as-of times (micros) as a Spark frame."""
    table = prepared.select([ROW, *keys]).append_column(
        TS, prepared.column(TS).cast(pa.int64()))
    return spark.createDataFrame(table)


def feature_table(spark: SparkSession, tables: str, view: ViewPlan) -> DataFrame:
    from pyspark.errors import AnalysisException

    try:
        return spark.read.parquet(location(tables, view))
    except AnalysisException:
        raise NotAppliedError(
            f"feature view {view.name!r} version {view.version} has no Spark feature table in "
            f"{tables}: run `featurestore backfill --engine spark`") from None


def lookup(table: DataFrame, labels: DataFrame, view: ViewPlan, index: int,
           features: list[str]) -> DataFrame:
    """`__row`, the view's state column and its `features` as each label sees them. Table
    rows sort before labels at equal times: a row visible at T is visible to a label at T."""
    keys = [quote(k) for k, _ in view.join_keys]
    found = table.selectExpr(
        *keys, "unix_micros(__vis) AS __t", "CAST(NULL AS BIGINT) AS __row", "0 AS __side",
        f"struct(unix_micros(__vis) AS __vis, unix_micros(__event_ts) AS __event_ts, "
        f"{', '.join(quote(f) for f in features)}) AS s")
    asked = labels.selectExpr(*keys, f"{TS} AS __t", ROW, "1 AS __side")
    both = found.unionByName(asked, allowMissingColumns=True).selectExpr(
        ROW, "__t", "__side", f"last(s, true) OVER (PARTITION BY {', '.join(keys)} ORDER BY "
        "__t, __side ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS s")
    return both.where("__side = 1").selectExpr(
        ROW, f"CAST({state_sql(view, 's', '__t', micros=True)} AS INT) AS "
             f"{quote(state_column(index))}",
        *(f"{visible_value(view, f's.{quote(f)}', 's', '__t', micros=True)} AS "
          f"{quote(f'{view.name}:{f}')}" for f in features))


def in_row_order(frame: DataFrame) -> pa.Table:
    table = frame.toArrow()
    return table.take(pa.array(np.argsort(table.column(ROW).to_numpy(), kind="stable")))


def looked_up(spark: SparkSession, plan: Plan, tables: str, views: dict[str, list[str]],
              labels: DataFrame, events: Callable[[ViewPlan], DataFrame]
              ) -> tuple[pa.Table, dict[str, Column]]:
    """What assemble needs: the plain views' joined columns and the windowed features'
    Columns, in label order. `events(view)`: the windowed view's events frame."""
    joined: dict[str, pa.Array | pa.ChunkedArray] = {}
    out: dict[str, Column] = {}
    for i, (name, features) in enumerate(views.items()):
        view = plan.views[name]
        if view.windowed:
            keys = [quote(k) for k, _ in view.join_keys]
            mine = events(view).join(labels.selectExpr(*keys).distinct(),
                                     [k for k, _ in view.join_keys], "left_semi")
            got = in_row_order(windows.at_labels(mine, labels, view))
            for agg in view.aggregates:
                if agg.name in features:
                    out[f"{name}:{agg.name}"] = from_arrow(got.column(agg.name), agg.output)
        else:
            got = in_row_order(lookup(feature_table(spark, tables, view), labels, view, i,
                                      features))
            joined[state_column(i)] = got.column(state_column(i))
            for f in features:
                ref = f"{name}:{f}"
                joined[ref] = from_bits(got.column(ref), view.dtype(f))
    return pa.table(joined), out
