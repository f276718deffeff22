"""The analysts' SQL surface: the offline store read-only, with every compiled transform
registered as a vectorized DuckDB function fed through the same kernels as training sets, so
`SELECT amount_to_limit(amount, credit_limit)` gives the same bits.

It is a sandbox, since the SQL may come from anyone allowed to query: it reaches the store's
objects and the transforms, nothing else on the machine. Two fences, each enough for what it
covers: statements that are not queries are refused by kind before anything runs, and the
connection itself has DuckDB's external access off (no file or network reads or writes, no
extensions) and its configuration locked, set after the store is attached and the transforms
registered."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from featurestore.errors import FeatureStoreError, ReadOnlyError
from featurestore.offline.connection import attach_read_only
from featurestore.plan import Plan, TransformPlan
from featurestore.values.columns import from_arrow, to_arrow

LIMIT = ("SQL is limited to reading the store's objects (sources.*, features.*, transform "
         "functions)")
# Queries, and temporary objects to build them from (the store itself is attached read-only).
_ALLOWED = {"SELECT", "EXPLAIN", "CREATE", "DROP"}
_WRITES = {"INSERT", "UPDATE", "DELETE", "ALTER", "MERGE_INTO"}
_SPELLED = {"LOAD": "INSTALL/LOAD", "SET": "SET/RESET/USE/PRAGMA", "PRAGMA": "PRAGMA/IMPORT DATABASE",
            "EXPORT": "EXPORT DATABASE", "VACUUM": "VACUUM/ANALYZE",
            "TRANSACTION": "BEGIN/COMMIT/ROLLBACK", "MERGE_INTO": "MERGE INTO"}


def _udf(t: TransformPlan) -> Callable[..., pa.Array]:
    def call(*arrays: pa.Array) -> pa.Array:
        assert t.kernel is not None
        inputs = [from_arrow(a, i.dtype) for a, i in zip(arrays, t.inputs, strict=True)]
        result, _ = t.kernel.run(inputs)
        return to_arrow(result, t.output)

    # DuckDB counts the parameters it will pass from the signature.
    call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(i.param, inspect.Parameter.POSITIONAL_ONLY) for i in t.inputs])
    return call


def register_transforms(con: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    for t in plan.transforms.values():
        con.create_function(
            t.name, _udf(t), [duckdb.sqltype(i.dtype.duckdb) for i in t.inputs],
            duckdb.sqltype(t.output.duckdb), type="arrow", null_handling="special",
            side_effects=False)


def open_session(path: Path, plan: Plan) -> duckdb.DuckDBPyConnection:
    con = attach_read_only(path)
    try:
        register_transforms(con, plan)
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")  # last: nothing can undo the line above
    except BaseException:
        con.close()
        raise
    return con


def run(con: duckdb.DuckDBPyConnection, query: str) -> pl.DataFrame:
    """Every statement of `query` is checked before the first one runs; the last one's rows
    are returned (an empty frame when it returns none)."""
    try:
        kinds = [s.type.name for s in con.extract_statements(query)]
    except ValueError:  # a statement kind the Python client has no name for
        raise ReadOnlyError(f"{LIMIT}: statements of this kind are refused") from None
    except duckdb.Error as exc:
        raise FeatureStoreError(f"SQL error: {exc}") from exc
    for kind in kinds:
        if kind not in _ALLOWED:
            why = " (the offline store is read-only)" if kind in _WRITES else ""
            raise ReadOnlyError(f"{LIMIT}: {_SPELLED.get(kind, kind)} statements are "
                                f"refused{why}")
    try:
        relation = con.sql(query)
        return relation.pl() if relation is not None else pl.DataFrame()
    except duckdb.PermissionException as exc:
        target = re.search(r'"([^"]*)"', str(exc))  # the file, folder or URL
        raise ReadOnlyError(f"{LIMIT}: access outside the store is refused "
                            f"({target.group(1) if target else exc})") from None
    except duckdb.InvalidInputException as exc:
        stored = re.search(r'statement of type "(\w+)" on database "[^"]*" which is '
                           r"attached in read-only mode", str(exc))
        if stored is None:
            raise FeatureStoreError(f"SQL error: {exc}") from exc
        raise ReadOnlyError(f"{LIMIT}: {stored.group(1)} on the store is refused (the offline "
                            "store is read-only; temporary views and tables work)") from None
    except duckdb.Error as exc:
        raise FeatureStoreError(f"SQL error: {exc}") from exc
