"""The analysts' SQL surface: the offline store read-only, with every compiled transform
registered as a vectorized DuckDB function fed through the same kernels as training sets, so
`SELECT amount_to_limit(amount, credit_limit)` gives the same bits, and every windowed view's
window function (called by its `_asof` macro) evaluated as training sets evaluate windows.

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
from types import TracebackType

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from featurestore.definitions.types import Timestamp
from featurestore.errors import FeatureStoreError, ReadOnlyError
from featurestore.offline import discovery
from featurestore.offline.catalog import window_function
from featurestore.offline.connection import attach_read_only
from featurestore.offline.labels import ROW, TS
from featurestore.plan import Plan, TransformPlan, ViewPlan
from featurestore.values.columns import Column, from_arrow, to_arrow

# (view name, labels with `__row`, the view's keys and `__ts`) -> its aggregates per label.
WindowValues = Callable[[str, pa.Table], list[Column]]

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


def _window_udf(view: ViewPlan, windows: WindowValues) -> Callable[..., pa.Array]:
    names = [a.name for a in view.aggregates]

    def call(*arrays: pa.Array | pa.ChunkedArray) -> pa.Array:
        columns = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays]
        valid = np.logical_and.reduce([c.is_valid().to_numpy(zero_copy_only=False)
                                       for c in columns])
        rows = pa.array(np.flatnonzero(valid))
        keys = zip(view.join_keys, columns[:-1], strict=True)
        labels = pa.table({ROW: pa.array(np.arange(len(rows), dtype=np.int64)),
                           **{k: c.take(rows) for (k, _), c in keys},
                           TS: columns[-1].take(rows)})
        values = windows(view.name, labels)
        # Rows with a NULL key or time get a NULL struct (every field NULL once unnested).
        back = pa.array(np.cumsum(valid) - 1, pa.int64(), mask=~valid)
        return pa.StructArray.from_arrays(
            [to_arrow(v, a.output).take(back) for v, a in zip(values, view.aggregates,
                                                                strict=True)],
            names=names, mask=pa.array(~valid))

    call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(f"p{i}", inspect.Parameter.POSITIONAL_ONLY)
         for i in range(len(view.join_keys) + 1)])
    return call


def register_windows(con: duckdb.DuckDBPyConnection, plan: Plan, windows: WindowValues) -> None:
    for view in plan.views.values():
        if not view.windowed:
            continue
        result = ", ".join(f'"{a.name}" {a.output.duckdb}' for a in view.aggregates)
        con.create_function(
            window_function(view.name), _window_udf(view, windows),
            [duckdb.sqltype(d.duckdb) for _, d in view.join_keys]
            + [duckdb.sqltype(Timestamp.duckdb)],
            duckdb.sqltype(f"STRUCT({result})"), type="arrow", null_handling="special",
            side_effects=False)


def open_session(path: Path, plan: Plan, windows: WindowValues) -> duckdb.DuckDBPyConnection:
    con = attach_read_only(path)
    try:
        register_transforms(con, plan)
        register_windows(con, plan, windows)
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")  # last: nothing can undo the line above
    except BaseException:
        con.close()
        raise
    return con


class SqlSession:
    """One sandboxed connection for as many queries as wanted: temporary views, tables and
    macros last until it is closed."""

    def __init__(self, path: Path, plan: Plan, windows: WindowValues):
        self.plan = plan
        self.con = open_session(path, plan, windows)

    def sql(self, query: str) -> pl.DataFrame:
        return run(self.con, self.plan, query)

    def tables(self) -> pl.DataFrame:
        """What SHOW TABLES lists: name, kind and usage of every object an analyst can use."""
        return self.sql("SHOW TABLES")

    def describe(self, name: str) -> pl.DataFrame:
        """A table's or view's columns, or a macro's or transform's parameters and results."""
        return discovery.describe(self.con, self.plan, name)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> SqlSession:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def run(con: duckdb.DuckDBPyConnection, plan: Plan, query: str) -> pl.DataFrame:
    """Every statement of `query` is checked before the first one runs; the last one's rows
    are returned (an empty frame when it returns none)."""
    try:
        statements = con.extract_statements(query)
        kinds = [s.type.name for s in statements]
    except ValueError:  # a statement kind the Python client has no name for
        raise ReadOnlyError(f"{LIMIT}: statements of this kind are refused") from None
    except duckdb.Error as exc:
        raise FeatureStoreError(f"SQL error: {exc}") from exc
    for kind in kinds:
        if kind not in _ALLOWED:
            why = " (the offline store is read-only)" if kind in _WRITES else ""
            raise ReadOnlyError(f"{LIMIT}: {_SPELLED.get(kind, kind)} statements are "
                                f"refused{why}")
    if not statements:
        return pl.DataFrame()
    try:
        # One at a time, so SHOW TABLES lists what the statements before it created.
        for statement in statements[:-1]:
            con.execute(discovery.rewrite(con, plan, statement.query))
        relation = con.sql(discovery.rewrite(con, plan, statements[-1].query))
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
