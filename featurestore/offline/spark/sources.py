"""A source's rows as Spark reads them from its Parquet files and its pushed-event log: the
same rows, values and `__seq` numbers as the DuckDB engine's ingest, with every timestamp as
epoch microseconds (so the shared SQL helpers compare plain integers)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from featurestore.definitions.types import Bool, DType, Float64, Int64, String, Timestamp
from featurestore.errors import SourceDataError
from featurestore.offline import event_log
from featurestore.offline.connection import literal, quote
from featurestore.offline.event_log import INGESTED
from featurestore.offline.ingest import SEQ_FILE_SHIFT, files
from featurestore.plan import Plan, SourcePlan
from featurestore.plan.plan import declared_columns

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SPARK_TYPES = {Int64: "BIGINT", Float64: "DOUBLE", Bool: "BOOLEAN", String: "STRING",
               Timestamp: "TIMESTAMP"}
_INTEGERS = {"tinyint", "smallint", "int", "bigint"}
_ACCEPTS: dict[DType, set[str]] = {
    Int64: _INTEGERS, Float64: {"float", "double"} | _INTEGERS, Bool: {"boolean"},
    String: {"string"}, Timestamp: {"timestamp", "timestamp_ntz"},
}


def source_rows(spark: SparkSession, plan: Plan, src: SourcePlan, root: Path) -> DataFrame:
    """The source's declared columns (timestamps as epoch micros), `__ingested` (micros, NULL
    for the files' rows) and `__seq`: the files in ingest order, then the pushed batches."""
    if src.format != "parquet":
        raise SourceDataError(
            f"Source {src.name!r} is a {src.format} source; offline_engine: spark reads Parquet "
            "sources only: write it as Parquet, or use offline_engine: duckdb")
    parts = [(p, False) for p in files(src, root)] + [(p, True) for p in event_log.files(
        root, src.name)]
    frames = [_file_rows(spark, plan, src, path, index, pushed)
              for index, (path, pushed) in enumerate(parts)]
    rows = frames[0]
    for frame in frames[1:]:
        rows = rows.unionByName(frame)
    return rows


def _file_rows(spark: SparkSession, plan: Plan, src: SourcePlan, path: Path, index: int,
               pushed: bool) -> DataFrame:
    from pyspark.errors import AnalysisException

    try:
        frame = spark.read.parquet(str(path))
    except AnalysisException as exc:
        raise SourceDataError(f"Source {src.name!r}: Spark cannot read {path}: {exc}") from None
    if src.field_mapping and not pushed:
        frame = frame.withColumnsRenamed(dict(src.field_mapping))
    types = {f.name: f.dataType.simpleString() for f in frame.schema.fields}
    items = [f"unix_micros({INGESTED})" if pushed else "CAST(NULL AS BIGINT)"]
    items[0] += f" AS {INGESTED}"
    if pushed and src.created:  # a pushed event's created time is its ingest time
        items.append(f"unix_micros({INGESTED}) AS {quote(src.created)}")
    for column, (dtype, owner) in declared_columns(plan, src, pushed).items():
        found = types.get(column)
        if found is None:
            raise SourceDataError(
                f"Source {src.name!r}: {path} has no column {column!r}, which {owner} reads; its "
                f"columns are {', '.join(types)}"
                + (" (names are after field_mapping)" if src.field_mapping else ""))
        if found not in _ACCEPTS[dtype] and not (dtype is Float64 and found.startswith("decimal")):
            raise SourceDataError(
                f"Source {src.name!r}: column {column!r} in {path} is {found}, but {owner} "
                f"declares {dtype}; fix the data or declare the matching type")
        items.append(f"{_value(src, column, dtype, found, path)} AS {quote(column)}")
    items.append(f"{index << SEQ_FILE_SHIFT} + _metadata.row_index AS __seq")
    return frame.selectExpr(*items)


def _value(src: SourcePlan, column: str, dtype: DType, found: str, path: Path) -> str:
    q = quote(column)
    if dtype is not Timestamp:
        return f"CAST({q} AS {SPARK_TYPES[dtype]})"
    if found == "timestamp_ntz":
        if not src.timezone:
            raise SourceDataError(
                f"Source {src.name!r}: column {column!r} in {path} holds timestamps without a "
                "time zone; featurestore never guesses one: write zone-aware timestamps, or "
                "declare Source(..., timezone='UTC') (or the zone they are in)")
        return f"unix_micros(to_utc_timestamp({q}, {literal(src.timezone)}))"
    return f"unix_micros({q})"


def check_timestamps(rows: DataFrame, src: SourcePlan) -> None:
    """Every row needs its event (and created) time, as ingest demands."""
    for column in [src.timestamp, *([src.created] if src.created else [])]:
        if rows.filter(f"{quote(column)} IS NULL").limit(1).count():
            raise SourceDataError(
                f"Source {src.name!r}: some rows have no value in timestamp column {column!r}; "
                "every row needs one")
