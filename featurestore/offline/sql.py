"""The analysts' SQL surface: a read-only connection to the offline store with every compiled
transform registered as a vectorized DuckDB function, fed through the same kernels as
training sets, so `SELECT amount_to_limit(amount, credit_limit)` gives the same bits."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa

from featurestore.errors import FeatureStoreError, ReadOnlyError
from featurestore.offline.connection import connect
from featurestore.plan import Plan, TransformPlan
from featurestore.values.columns import from_arrow, to_arrow


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
    con = connect(path, read_only=True)
    register_transforms(con, plan)
    return con


_WRITES = {"INSERT", "UPDATE", "DELETE", "ALTER", "MERGE_INTO"}
_REFUSAL = ("the offline store is opened read-only for SQL: statements that write "
            "(INSERT, UPDATE, DELETE, CREATE, ...) are refused")


def run(con: duckdb.DuckDBPyConnection, query: str) -> duckdb.DuckDBPyRelation | None:
    try:
        for statement in con.extract_statements(query):
            if statement.type.name in _WRITES:
                raise ReadOnlyError(f"{_REFUSAL} ({statement.type.name} found)")
        return con.sql(query)
    except duckdb.InvalidInputException as exc:
        if "read-only" in str(exc):
            raise ReadOnlyError(f"{_REFUSAL} ({exc})") from exc
        raise FeatureStoreError(f"SQL error: {exc}") from exc
    except duckdb.Error as exc:
        raise FeatureStoreError(f"SQL error: {exc}") from exc
