"""Turning the labels a scientist hands over (Polars, pandas, Arrow or a Parquet path) into a
checked Arrow table: entity keys present, typed and non-null, and as-of timestamps in UTC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featurestore.definitions.types import DType, Float64, Int64, String, Timestamp
from featurestore.errors import LabelsError
from featurestore.plan import Selection

ROW = "__row"
TS = "__ts"


def to_arrow_table(labels: Any) -> pa.Table:
    if isinstance(labels, pa.Table):
        return labels
    if isinstance(labels, str | Path):
        path = Path(labels)
        if not path.is_file():
            raise LabelsError(f"labels file {path} does not exist")
        try:
            return pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise LabelsError(f"labels file {path} is not a readable Parquet file: {exc}") from exc
    if hasattr(labels, "to_arrow") and type(labels).__module__.startswith("polars"):
        return labels.to_arrow()
    if type(labels).__module__.startswith("pandas"):
        return pa.Table.from_pandas(labels, preserve_index=False)
    raise LabelsError(
        f"labels must be a Polars, pandas or Arrow table or a Parquet path, got {type(labels)}"
    )


def _first_null(column: pa.ChunkedArray) -> int:
    return int(np.flatnonzero(~column.is_valid().to_numpy(zero_copy_only=False))[0])


def prepare(labels: pa.Table, selection: Selection, timestamp: str,
            timezone: str | None) -> pa.Table:
    """Keys, request inputs and the as-of time, normalized, plus the row number `__row`."""
    if labels.num_rows == 0:
        raise LabelsError("labels have no rows; a training set needs at least one label row")
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        ROW: pa.array(np.arange(labels.num_rows, dtype=np.int64))}
    for key, dtype in selection.join_keys.items():
        column = _column(labels, key, "entity key")
        if column.null_count:
            raise LabelsError(
                f"labels column {key!r} has {column.null_count} null entity keys (first at row "
                f"{_first_null(column)}); drop those rows or fill them"
            )
        columns[key] = _cast(column, key, dtype, "entity key")
    as_of = _column(labels, timestamp, "as-of timestamp")
    if as_of.null_count:
        raise LabelsError(
            f"labels column {timestamp!r} has {as_of.null_count} null timestamps (first at row "
            f"{_first_null(as_of)}); every label needs an as-of time"
        )
    columns[TS] = _timestamps(as_of, timestamp, timezone)
    for name, dtype in selection.requests.items():
        column = _column(labels, name, "request input")
        columns[name] = (_timestamps(column, name, timezone) if dtype is Timestamp
                         else _cast(column, name, dtype, "request input"))
    return pa.table(columns)


def _column(labels: pa.Table, name: str, role: str) -> pa.ChunkedArray:
    if name not in labels.column_names:
        raise LabelsError(
            f"labels have no column {name!r} ({role}); their columns are "
            f"{', '.join(labels.column_names)}"
        )
    return labels.column(name)


def _cast(column: pa.ChunkedArray, name: str, dtype: DType, role: str) -> pa.ChunkedArray:
    t = column.type
    ok = (
        (dtype is Int64 and pa.types.is_integer(t))
        or (dtype is Float64 and (pa.types.is_floating(t) or pa.types.is_integer(t)))
        or (dtype is String and (pa.types.is_string(t) or pa.types.is_large_string(t)))
        or t == dtype.arrow
    )
    if pa.types.is_dictionary(t):
        return _cast(column.cast(t.value_type), name, dtype, role)
    if not ok:
        raise LabelsError(f"labels column {name!r} ({role}) has type {t}, expected {dtype}")
    try:
        return column.cast(dtype.arrow)
    except pa.ArrowInvalid as exc:
        raise LabelsError(f"labels column {name!r} ({role}) does not fit {dtype}: {exc}") from exc


def _timestamps(column: pa.ChunkedArray, name: str, timezone: str | None) -> pa.ChunkedArray:
    """UTC microseconds from any zone-aware timestamp (or a naive one with `timezone`)."""
    t = column.type
    if not pa.types.is_timestamp(t):
        raise LabelsError(
            f"labels column {name!r} has type {t}; as-of times must be timestamps (parse "
            "strings first, e.g. polars str.to_datetime(time_zone='UTC'))"
        )
    if t.tz is None:
        if timezone is None:
            raise LabelsError(
                f"labels column {name!r} holds timestamps without a time zone; featurestore "
                "never guesses one: make them zone-aware, or pass timezone='UTC' (or their zone)"
            )
        try:
            column = pc.assume_timezone(column, timezone)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise LabelsError(
                f"labels column {name!r}: its naive timestamps cannot be placed in time zone "
                f"{timezone!r} ({exc}); use zone-aware timestamps for times in a DST gap or "
                "overlap, and an IANA zone name such as 'UTC' or 'Europe/Paris'") from exc
    if t.unit == "ns":  # sub-microsecond parts are floored, as online requests are
        ns = column.cast(pa.int64())
        micros = pa.array(ns.to_numpy(zero_copy_only=False) // 1000, pa.int64(),
                          mask=ns.is_null().to_numpy(zero_copy_only=False))
        return pa.chunked_array([micros.cast(pa.timestamp("us", "UTC"))])
    return column.cast(pa.timestamp("us", "UTC"))
