"""Opening the offline store. One place decides the session settings every query relies on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from featurestore.errors import NotAppliedError, OfflineStoreBusy

INTERNAL = "_fs"  # bookkeeping: registry, ingested sources, feature tables
SCHEMAS = (INTERNAL, "sources", "features")


def connect(path: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    if read_only:
        _require(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _busy(path):
        con = duckdb.connect(str(path), read_only=read_only)
    _settings(con)
    return con


def cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Another connection to `con`'s database, with the session settings: threads may read
    through cursors at once, never through one connection."""
    cur = con.cursor()
    _settings(cur)
    return cur


def attach_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    """A private in-memory database with the store file attached read-only (as catalog
    `store`, the default one). Settings changed on it stay on it: DuckDB shares one instance
    between connections to the same file in a process, so locking down a direct connection
    would also lock the store's own connections (a held session, a training set)."""
    _require(path)
    con = duckdb.connect(":memory:")
    try:
        with _busy(path):
            con.execute(f"ATTACH {literal(str(path))} AS store (READ_ONLY)")
        con.execute("USE store")
        # Spill files go where a direct connection to the file puts them, not into the cwd.
        con.execute(f"SET temp_directory = {literal(str(path) + '.tmp')}")
        _settings(con)
    except BaseException:
        con.close()
        raise
    return con


def _require(path: Path) -> None:
    if not path.exists():
        raise NotAppliedError(f"offline store {path} does not exist yet: run `featurestore apply`")


@contextmanager
def _busy(path: Path) -> Iterator[None]:
    try:
        yield
    except duckdb.IOException as exc:
        held = re.search(r"\(PID (\d+)\)", str(exc))
        if "lock" not in str(exc) or held is None:
            raise
        raise OfflineStoreBusy(
            f"the offline store {path} is in use by another process (PID {held.group(1)}): "
            "another `featurestore apply`, `backfill`, `materialize` or session is running; "
            "wait for it to finish and run again") from None


def _settings(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # stdout belongs to the caller


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
