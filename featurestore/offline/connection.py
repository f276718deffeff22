"""Opening the offline store. One place decides the session settings every query relies on."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from featurestore.errors import NotAppliedError, OfflineStoreBusy

INTERNAL = "_fs"  # bookkeeping: registry, ingested sources, feature tables
SCHEMAS = (INTERNAL, "sources", "features")


def connect(path: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    if read_only and not path.exists():
        raise NotAppliedError(f"offline store {path} does not exist yet: run `featurestore apply`")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        held = re.search(r"\(PID (\d+)\)", str(exc))
        if "lock" not in str(exc) or held is None:
            raise
        raise OfflineStoreBusy(
            f"the offline store {path} is in use by another process (PID {held.group(1)}): "
            "another `featurestore apply`, `backfill`, `materialize` or session is running; "
            "wait for it to finish and run again") from None
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # stdout belongs to the caller
    return con


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
