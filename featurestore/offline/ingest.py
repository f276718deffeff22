"""Ingesting a source into the offline store: check its data against every view that reads it,
normalize timestamps to UTC, and number rows in a deterministic order (`__seq`), which breaks
the last ties of the point-in-time rule."""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv

from featurestore.definitions.types import Bool, DType, Float64, Int64, String, Timestamp
from featurestore.errors import SourceDataError
from featurestore.offline import event_log
from featurestore.offline.connection import INTERNAL, literal, quote
from featurestore.offline.event_log import INGESTED
from featurestore.plan import Plan, SourcePlan
from featurestore.plan.plan import declared_columns

_INTEGERS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"}
_NAIVE = {"TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "TIMESTAMP WITHOUT TIME ZONE"}
_ACCEPTS: dict[DType, set[str]] = {
    Int64: _INTEGERS,
    Float64: {"DOUBLE", "FLOAT", "REAL"} | _INTEGERS,
    Bool: {"BOOLEAN"},
    String: {"VARCHAR"},
    Timestamp: {"TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ", "TIMESTAMPTZ_NS"} | _NAIVE,
}
SEQ_FILE_SHIFT = 40  # __seq = file index << 40 | row number within the file


def source_table(name: str) -> str:
    return f"{INTERNAL}.{quote('src_' + name)}"


@dataclass(frozen=True)
class Ingested:
    rows: int
    skipped_null_keys: int
    fingerprint: str


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"""CREATE TABLE IF NOT EXISTS {INTERNAL}.ingests (
        source VARCHAR PRIMARY KEY, fingerprint VARCHAR, rows BIGINT, ingested_at TIMESTAMPTZ)""")


def files(src: SourcePlan, root: Path) -> list[Path]:
    assert src.path is not None
    pattern = src.path if Path(src.path).is_absolute() else str(root / src.path)
    found = sorted(Path(p) for p in glob.glob(pattern))
    if not found:
        raise SourceDataError(
            f"Source {src.name!r}: no file matches path={src.path!r} (looked for {pattern}); "
            "create the data or fix the path"
        )
    return found


def fingerprint(plan: Plan, src: SourcePlan, root: Path) -> str | None:
    """Changes when the data files or what views read from them change; None for tables,
    which are re-read every time."""
    if src.format == "table":
        return None
    parts = [src.hash, json.dumps({c: t.name for c, (t, _) in declared_columns(plan, src).items()},
                                  sort_keys=True)]
    for path in files(src, root) + event_log.files(root, src.name):
        st = path.stat()
        parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _relations(con: duckdb.DuckDBPyConnection, src: SourcePlan, root: Path
               ) -> list[tuple[str, str, bool]]:
    """(label for messages, SQL relation with a __seq column, pushed?) per file, in ingest
    order: the source's own files, then its pushed batches."""
    pushed = [(str(p), True) for p in event_log.files(root, src.name)]
    if src.format == "table":
        base = len(pushed) << SEQ_FILE_SHIFT
        return [(f"table {src.table}", f"(SELECT *, {base} + rowid AS __seq FROM {src.table})",
                 False)] + [(label, _parquet(label, i), True) for i, (label, _) in enumerate(pushed)]
    out = []
    for index, (path, is_pushed) in enumerate([(str(p), False) for p in files(src, root)] + pushed):
        base = index << SEQ_FILE_SHIFT
        if src.format == "parquet" or is_pushed:
            rel = _parquet(path, index)
        else:
            try:
                table = pacsv.read_csv(path)
            except (pa.ArrowInvalid, OSError) as exc:
                raise SourceDataError(f"Source {src.name!r}: cannot read CSV {path}: {exc}") from exc
            name = f"__csv_{src.name}_{index}"
            con.register(name, table.append_column("__seq", pa.array(
                range(base, base + table.num_rows), pa.int64())))
            rel = name
        out.append((path, rel, is_pushed))
    return out


def _parquet(path: str, index: int) -> str:
    return (f"(SELECT * EXCLUDE (file_row_number), {index << SEQ_FILE_SHIFT} + file_row_number "
            f"AS __seq FROM read_parquet({literal(path)}, file_row_number = true))")


def _mapped(rel: str, src: SourcePlan) -> str:
    if not src.field_mapping:
        return rel
    renames = ", ".join(f"{quote(a)} AS {quote(b)}" for a, b in src.field_mapping)
    return f"(SELECT * RENAME ({renames}) FROM {rel})"


def _check_columns(con: duckdb.DuckDBPyConnection, plan: Plan, src: SourcePlan, label: str,
                   rel: str, pushed: bool) -> dict[str, str]:
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()
    except duckdb.Error as exc:
        raise SourceDataError(f"Source {src.name!r}: cannot read {label}: {exc}") from exc
    types = {row[0]: row[1] for row in described}
    for column, (dtype, owner) in declared_columns(plan, src, pushed).items():
        if column not in types:
            raise SourceDataError(
                f"Source {src.name!r}: {label} has no column {column!r}, which {owner} reads; "
                f"its columns are {', '.join(c for c in types if c != '__seq')}"
                + (" (names are after field_mapping)" if src.field_mapping else "")
            )
        found = types[column]
        if found not in _ACCEPTS[dtype] and not (dtype is Float64 and found.startswith("DECIMAL")):
            raise SourceDataError(
                f"Source {src.name!r}: column {column!r} in {label} is {found}, but {owner} "
                f"declares {dtype}; fix the data or declare the matching type"
            )
        if dtype is Timestamp and found in _NAIVE and not src.timezone:
            raise SourceDataError(
                f"Source {src.name!r}: column {column!r} in {label} holds timestamps without a "
                f"time zone ({found}); featurestore never guesses one: write zone-aware "
                "timestamps, or declare Source(..., timezone='UTC') (or the zone they are in)"
            )
    return types


def _select_list(plan: Plan, src: SourcePlan, types: dict[str, str], pushed: bool) -> str:
    declared = declared_columns(plan, src)
    items = [INGESTED if pushed else f"NULL::TIMESTAMPTZ AS {INGESTED}"]
    if pushed and src.created:  # a pushed event's created time is its ingest time
        items.append(f"{INGESTED} AS {quote(src.created)}")
    for column, found in types.items():
        if column in ("__seq", INGESTED):
            continue
        q = quote(column)
        if column in declared:
            dtype = declared[column][0]
            if dtype is Timestamp and found in _NAIVE:
                expr = f"timezone({literal(src.timezone or 'UTC')}, {q}::TIMESTAMP)"
            else:
                expr = f"{q}::{dtype.duckdb}"
            items.append(f"{expr} AS {q}")
        else:
            items.append(q)
    return ", ".join(items) + ", __seq"


def ingest(con: duckdb.DuckDBPyConnection, plan: Plan, src: SourcePlan, root: Path) -> Ingested:
    """Replace the source's table with the current data. Runs inside the caller's transaction."""
    relations = _relations(con, src, root)
    target = source_table(src.name)
    keys = sorted({k for v in plan.views.values() if v.source == src.name for k, _ in v.join_keys})
    key_nulls = " OR ".join(f"{quote(k)} IS NULL" for k in keys) or "false"
    skipped = 0
    for index, (label, rel, pushed) in enumerate(relations):
        rel = rel if pushed else _mapped(rel, src)
        types = _check_columns(con, plan, src, label, rel, pushed)
        select = _select_list(plan, src, types, pushed)
        try:
            if index == 0:
                con.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT {select} FROM {rel} "
                            "WHERE false")
            con.execute(f"INSERT INTO {target} BY NAME SELECT {select} FROM {rel}")
        except duckdb.ConversionException as exc:
            raise SourceDataError(
                f"Source {src.name!r}: values in {label} do not convert to their declared "
                f"types: {exc}") from exc
        except duckdb.BinderException as exc:
            raise SourceDataError(
                f"Source {src.name!r}: {label} does not have the same columns as the first "
                f"file: {exc}") from exc
    for column in [src.timestamp, *([src.created] if src.created else [])]:
        bad = con.execute(
            f"SELECT count(*), min(__seq) FROM {target} WHERE {quote(column)} IS NULL").fetchone()
        if bad and bad[0]:
            raise SourceDataError(
                f"Source {src.name!r}: {bad[0]} rows have no value in timestamp column "
                f"{column!r} (first: {_row_label(relations, bad[1])}); every row needs one"
            )
    if keys:
        row = con.execute(f"SELECT count(*) FROM {target} WHERE {key_nulls}").fetchone()
        skipped = row[0] if row else 0
    rows = con.execute(f"SELECT count(*) FROM {target}").fetchone()
    return Ingested(rows[0] if rows else 0, skipped, fingerprint(plan, src, root) or "")


def _row_label(relations: list[tuple[str, str, bool]], seq: int) -> str:
    if len(relations) == 1 and relations[0][0].startswith("table "):
        return f"row {seq + 1} of {relations[0][0]}"
    return f"row {(seq & ((1 << SEQ_FILE_SHIFT) - 1)) + 1} of {relations[seq >> SEQ_FILE_SHIFT][0]}"
