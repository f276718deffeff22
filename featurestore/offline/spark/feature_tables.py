"""Feature tables built by Spark, with the DuckDB engine's columns and point-in-time rule
(see offline.feature_tables): Parquet folders under the engine's tables location. Float64
columns are stored as their IEEE bits (BIGINT): Spark's Parquet writer turns every NaN into
the canonical one, and a NaN's sign and payload are bits like any other."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

from featurestore.definitions.types import DType, Float64, Timestamp
from featurestore.offline.connection import quote
from featurestore.offline.spark.sources import SPARK_TYPES
from featurestore.offline.windowed import created_at, visible_from
from featurestore.plan import Plan, ViewPlan

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def location(tables: str, view: ViewPlan) -> str:
    """Where a view version's feature table lives (named as the DuckDB engine's table)."""
    return f"{tables.rstrip('/')}/fv_{view.name}_{view.version}"


def stored_type(dtype: DType) -> str:
    """A feature's column type in a Spark feature table."""
    return "BIGINT" if dtype is Float64 else SPARK_TYPES[dtype]


def to_bits(array: pa.Array, dtype: DType) -> pa.Array:
    return array.view(pa.int64()) if dtype is Float64 else array


def from_bits(column: pa.Array | pa.ChunkedArray, dtype: DType) -> pa.Array | pa.ChunkedArray:
    """A column read from a Spark feature table as its feature type's values."""
    if dtype is not Float64:
        return column
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array.view(pa.float64())


def with_values(batch: pa.RecordBatch, view: ViewPlan) -> pa.RecordBatch:
    """A batch of a plain view's feature table with its features as their types' values."""
    return _converted(batch, dict(view.features), from_bits)


def _converted(batch: pa.RecordBatch, dtypes: dict[str, DType],
               convert: Callable[[pa.Array, DType], pa.Array]) -> pa.RecordBatch:
    """The batch with each column named in `dtypes` converted."""
    return pa.RecordBatch.from_arrays(
        [convert(batch.column(i), dtypes[n]) if n in dtypes else batch.column(i)
         for i, n in enumerate(batch.schema.names)], names=batch.schema.names)


def latest_at(table: DataFrame, view: ViewPlan, end_us: int, start_us: int | None
              ) -> DataFrame:
    """Each entity's winner as of `end` (what materialization writes online), as the DuckDB
    engine's latest_sql has it: with `start`, only entities whose winner became visible after
    it. Float64 features stay bits (with_values turns them back)."""
    keys = [quote(k) for k, _ in view.join_keys]
    ranked = table.where(f"__vis <= timestamp_micros({end_us})").selectExpr(
        "*", f"row_number() OVER (PARTITION BY {', '.join(keys)} ORDER BY __vis DESC) AS __rank")
    since = f" AND __vis > timestamp_micros({start_us})" if start_us is not None else ""
    return ranked.where(f"__rank = 1{since}").selectExpr(
        *keys, "__event_ts", "__created", "__seq", *(quote(f) for f, _ in view.features))


def _float_bits(frame: DataFrame, view: ViewPlan) -> DataFrame:
    dtypes = dict(view.features)
    if Float64 not in dtypes.values():
        return frame
    schema = ", ".join(f"{quote(f.name)} {stored_type(dtypes[f.name])}" if f.name in dtypes
                       else f"{quote(f.name)} {f.dataType.simpleString()}"
                       for f in frame.schema.fields)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield _converted(batch, dtypes, to_bits)

    return frame.mapInArrow(run, schema)


def latest(rows: DataFrame, plan: Plan, view: ViewPlan) -> DataFrame:
    """A plain view's feature table: per entity and visibility time, the winner among the rows
    visible then, the greatest (event time, created time, __seq). One winner per (entity,
    visibility time) first, then a running maximum over visibility times; the features ride
    in the compared struct behind the unique __seq, so they are carried, never compared."""
    src = plan.sources[view.source]
    event = quote(src.timestamp)
    keys = [quote(k) for k, _ in view.join_keys]
    features = [quote(f) for f, _ in view.features]
    visible = rows.where(" AND ".join(f"{k} IS NOT NULL" for k in keys)).selectExpr(
        *keys, f"{visible_from(src, event)} AS __vis",
        f"struct({event} AS __event_ts, {created_at(src, event)} AS __created, __seq, "
        f"{', '.join(features)}) AS w")
    winners = visible.groupBy(*(k for k, _ in view.join_keys), "__vis").agg(
        {"w": "max"}).withColumnRenamed("max(w)", "w")
    running = winners.selectExpr(
        *keys, "__vis", f"max(w) OVER (PARTITION BY {', '.join(keys)} ORDER BY __vis ROWS "
        "BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS w")
    micros = {f for f, t in view.features if t is Timestamp}
    return _float_bits(running.selectExpr(
        *keys, "timestamp_micros(__vis) AS __vis", "timestamp_micros(w.__event_ts) AS __event_ts",
        "timestamp_micros(w.__created) AS __created", "w.__seq AS __seq",
        *(f"timestamp_micros(w.{quote(f)}) AS {quote(f)}" if f in micros
          else f"w.{quote(f)} AS {quote(f)}" for f, _ in view.features)), view)


def windowed_table(rows: DataFrame) -> DataFrame:
    """A windowed view's feature table from windows.backfill's rows."""
    return rows.withColumn("__vis", rows["__vis"].cast("long")).selectExpr(
        *(quote(c) if c != "__vis" else "timestamp_micros(__vis) AS __vis" for c in rows.columns))
