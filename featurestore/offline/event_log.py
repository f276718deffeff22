"""The pushed-event log, the offline record of every pushed batch, and the only code that
knows its layout:

    <repo>/pushed/<source>/<ingest time, 20 digits>-<batch id>.parquet   one file per batch
    <repo>/pushed/<source>/compacted/<uuid>.parquet                    many batches (compact)
    <repo>/pushed/<source>/.ids/<batch id>                             the batch id's claim

A batch is logged exactly once per batch id, whatever retries, deadlines or concurrent
senders happen: the claim is created exclusively (a hard link, which fails when the name
exists) and holds the batch's ingest time, so every sender of one id writes the same file
name, written under a temporary name and renamed into place. The file holds the batch's
declared columns in their types plus `__ingested`, its ingest time.

`compact` merges the files of old batches into one, whose Parquet metadata lists each batch
(id, ingest time, rows), marks their claims compacted and deletes the files; `files` lists a
batch once at every moment of it, and a retry of a compacted batch id writes nothing. The
rare append that must write a file for an id claimed before (a sender that died) and
`compact` serialize on a lock file.

Reading the log needs no writes: ingest (apply, backfill) copies it into the source's table,
and windowed evaluation reads it directly (`offline/windowed.py`)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from featurestore.definitions.types import Timestamp
from featurestore.errors import FeatureStoreError, SourceDataError
from featurestore.plan import Plan
from featurestore.plan.plan import declared_columns
from featurestore.values.timestamps import MIN_TIME_US

INGESTED = "__ingested"  # when a pushed row arrived; NULL for rows read from the source's files
LOG_DIR = "pushed"
BATCH_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
LEFTOVER_AGE_S = 3600.0
COMPACTED_DIR = "compacted"
COMPACTED_MARK = " compacted"  # appended to a claim once its batch is in a compacted file
BATCHES_KEY = b"featurestore.batches"


def files(root: Path, source: str) -> list[Path]:
    """The source's log files, each batch in exactly one: compacted files first (they hold
    the oldest batches), then one file per batch, oldest first (names start with the ingest
    time)."""
    directory = root / LOG_DIR / source
    compacted = sorted((directory / COMPACTED_DIR).glob("*.parquet"))
    merged = {b for path in compacted for b in _index(path)}
    return compacted + [p for p in sorted(directory.glob("*.parquet"))
                        if batch_of(p) not in merged]


def batch_of(path: Path) -> str:
    return path.name.split("-", 1)[1].removesuffix(".parquet")


def ingest_time(path: Path) -> int:
    return int(path.name.split("-", 1)[0])


def check_id(batch_id: str) -> None:
    if not BATCH_ID.match(batch_id):
        raise FeatureStoreError(
            f"batch id {batch_id!r}: use 1-128 letters, digits, '_', '.' or '-'")


def append(root: Path, source: str, batch_id: str, table: pa.Table, now_us: int) -> int:
    """Logs a checked batch once; returns its ingest time (the first sender's, for a batch
    id logged before)."""
    directory = root / LOG_DIR / source
    ids = directory / ".ids"
    ids.mkdir(parents=True, exist_ok=True)
    ingested, first = _claim(ids, batch_id, now_us)
    final = directory / f"{ingested:020d}-{batch_id}.parquet"
    if first:
        _write(table.append_column(INGESTED, pa.array(np.full(table.num_rows, ingested),
                                                      pa.int64()).cast(Timestamp.arrow)), final)
        return ingested
    with _locked(directory):  # claimed before: written, compacted, or its sender died
        if not final.exists() and not _compacted(ids / batch_id):
            _write(table.append_column(INGESTED, pa.array(np.full(table.num_rows, ingested),
                                                          pa.int64()).cast(Timestamp.arrow)), final)
    return ingested


def _write(table: pa.Table, final: Path) -> None:
    """Writes under a temporary name, then renames: readers never see half a file."""
    partial = final.parent / f".{final.name}.{uuid.uuid4().hex}.partial"
    pq.write_table(table, partial)
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    partial.replace(final)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with open(directory / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _compacted(claim: Path) -> bool:
    return claim.read_text().endswith(COMPACTED_MARK)


def batches(path: Path) -> dict[str, int]:
    """The batches a log file holds: batch id -> ingest time."""
    if path.parent.name != COMPACTED_DIR:
        return {batch_of(path): ingest_time(path)}
    return {b: ingest for b, (ingest, _, _) in _index(path).items()}


def batch_table(path: Path, batch_id: str) -> pa.Table:
    """One batch's rows of a log file."""
    if path.parent.name != COMPACTED_DIR:
        return pq.read_table(path)
    _, first, rows = _index(path)[batch_id]
    return pq.read_table(path).slice(first, rows)


def _index(path: Path) -> dict[str, list[int]]:
    """A compacted file's batches: id -> [ingest time, first row, rows]."""
    return json.loads(pq.read_schema(path).metadata[BATCHES_KEY])  # type: ignore[no-any-return]


def compact(root: Path, source: str, before_us: int) -> int:
    """Merges the files of the batches ingested before `before_us` into one compacted file;
    returns how many batches. Readers and retries stay exactly-once throughout: the
    merged file names its batches, so `files` hides their single files at once, and claims
    are marked before those files go."""
    directory = root / LOG_DIR / source
    if not directory.is_dir():
        return 0
    with _locked(directory):
        singles = [p for p in files(root, source)
                   if p.parent == directory and ingest_time(p) < before_us]
        if not singles:
            return 0
        tables = [pq.read_table(p) for p in singles]
        index, row = {}, 0
        for path, table in zip(singles, tables, strict=True):
            index[batch_of(path)] = [ingest_time(path), row, table.num_rows]
            row += table.num_rows
        merged = pa.concat_tables(tables, promote_options="default")
        merged = merged.replace_schema_metadata({BATCHES_KEY: json.dumps(index)})
        (directory / COMPACTED_DIR).mkdir(exist_ok=True)
        _write(merged, directory / COMPACTED_DIR / f"{uuid.uuid4().hex}.parquet")
        for path in singles:
            claim = directory / ".ids" / batch_of(path)
            claim.write_text(f"{ingest_time(path)}{COMPACTED_MARK}")
        for path in singles:
            path.unlink()
    return len(singles)


def remove_leftovers(root: Path, source: str, older_than_s: float = LEFTOVER_AGE_S) -> int:
    """Deletes what killed pushes left: half-written batch files and staged claims older
    than `older_than_s` (a live push finishes within seconds). Returns how many."""
    directory = root / LOG_DIR / source
    cutoff = time.time() - older_than_s
    removed = 0
    for path in [*directory.glob(".*.partial"), *(directory / COMPACTED_DIR).glob(".*.partial"),
                 *(directory / ".ids").glob(".*")]:
        with suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed


def _claim(ids: Path, batch_id: str, now_us: int) -> tuple[int, bool]:
    """(the batch's ingest time, whether this call claimed it first)."""
    claim = ids / batch_id
    staged = ids / f".{batch_id}.{uuid.uuid4().hex}"
    staged.write_text(str(now_us))
    try:
        os.link(staged, claim)  # exclusive: fails when the batch id was claimed before
        return now_us, True
    except FileExistsError:
        return int(claim.read_text().split()[0]), False
    finally:
        staged.unlink()


def read_events_table(events: Any) -> pa.Table:
    """A batch given as a Polars or pandas frame, an Arrow table, or a Parquet or CSV path."""
    if isinstance(events, pa.Table):
        return events
    if isinstance(events, str | Path):
        path = Path(events)
        try:
            return pacsv.read_csv(path) if path.suffix == ".csv" else pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceDataError(f"cannot read events file {path}: {exc}") from exc
    if type(events).__module__.startswith("polars"):
        return events.to_arrow()
    if type(events).__module__.startswith("pandas"):
        return pa.Table.from_pandas(events, preserve_index=False)
    raise FeatureStoreError(f"events must be a table or a Parquet/CSV path, got {type(events)}")


def content_id(table: pa.Table) -> str:
    """A batch id from the batch's content: the same batch pushed twice is applied once."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return "sha256-" + hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:32]


def check_batch(plan: Plan, source: str, batch: pa.Table, now_us: int,
                max_future_us: int) -> pa.Table:
    """The batch's declared columns cast to their types; every problem is reported with the
    rows and columns at fault, and nothing is kept of a bad batch."""
    src = plan.sources[source]
    declared = declared_columns(plan, src, pushed=True)
    owner = f"push to source {source!r}"
    missing = [c for c in declared if c not in batch.column_names]
    if missing:
        raise SourceDataError(
            f"{owner}: the batch has no column(s) {', '.join(missing)}; it has "
            f"{', '.join(batch.column_names) or 'none'}")
    if batch.num_rows == 0:
        raise SourceDataError(f"{owner}: the batch has no rows")
    columns = {}
    for column, (dtype, reader) in declared.items():
        array = batch.column(column)
        if dtype is Timestamp and pa.types.is_timestamp(array.type) and array.type.tz is None:
            raise SourceDataError(
                f"{owner}: column {column!r} holds timestamps without a time zone; send UTC")
        try:
            columns[column] = array.cast(dtype.arrow, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SourceDataError(
                f"{owner}: column {column!r} is {array.type}, but {reader} reads it as "
                f"{dtype}: {exc}") from exc
    keys = {k for v in plan.views.values() if v.source == source for k, _ in v.join_keys}
    for column in [*sorted(keys), src.timestamp]:
        nulls = _rows(pc.is_null(columns[column]))
        if nulls:
            raise SourceDataError(
                f"{owner}: column {column!r} is null in row(s) {_some(nulls)}; every event "
                "needs its entity key(s) and event time")
    ts = columns[src.timestamp].cast(pa.int64())
    outside = _rows(pc.less(ts, MIN_TIME_US))
    if outside:
        raise SourceDataError(
            f"{owner}: row(s) {_some(outside)} have an event time before 0001-01-01; fix the "
            "producer (a zero or sentinel timestamp?)")
    ahead = _rows(pc.greater(ts, now_us + max_future_us))
    if ahead:
        raise SourceDataError(
            f"{owner}: row(s) {_some(ahead)} have an event time more than "
            f"{max_future_us / 1e6:g} s after now; fix the producer's clock or raise the "
            "allowed future skew")
    return pa.table(columns)


def _rows(mask: pa.ChunkedArray | pa.Array) -> list[int]:
    return np.flatnonzero(mask.to_numpy(zero_copy_only=False)).tolist()


def _some(rows: list[int]) -> str:
    shown = ", ".join(map(str, rows[:10]))
    return shown + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
