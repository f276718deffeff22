"""What an analyst can use in the SQL session, and how to call it: the listing that
`SHOW TABLES` and `.tables` give (the store's sources, feature views and point-in-time macros,
the transform functions, and the session's own temporary objects; never the store's
bookkeeping, `_fs.*`), and `.describe NAME` (a relation's columns, a macro's or function's
parameters and results)."""

from __future__ import annotations

import re

import duckdb
import polars as pl

from featurestore.errors import FeatureStoreError
from featurestore.offline.connection import INTERNAL, literal, quote
from featurestore.plan import Plan, TransformPlan, ViewPlan

# DuckDB's SHOW TABLES lists the current schema, which is empty here (the store's objects live
# in `sources` and `features`); SHOW ALL TABLES lists the bookkeeping too. Both are answered
# from the listings below instead.
_SHOW_TABLES = re.compile(r"\s*SHOW\s+TABLES\s*;?\s*", re.IGNORECASE)
_SHOW_ALL = re.compile(r"\s*SHOW\s+ALL\s+TABLES\s*;?\s*", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*){0,2}")
COLUMNS = ("name", "kind", "usage")


def rewrite(con: duckdb.DuckDBPyConnection, plan: Plan, statement: str) -> str:
    """The statement to run for `statement`: itself, unless it is SHOW [ALL] TABLES."""
    if _SHOW_TABLES.fullmatch(statement):
        rows = objects(con, plan)
        values = ", ".join("(" + ", ".join(map(literal, row)) + ")" for row in rows)
        if not rows:
            return "SELECT '' AS name, '' AS kind, '' AS usage WHERE false"
        return f"SELECT * FROM (VALUES {values}) AS t({', '.join(COLUMNS)})"
    if _SHOW_ALL.fullmatch(statement):
        return f"SELECT * FROM (SHOW ALL TABLES) WHERE schema <> {literal(INTERNAL)}"
    return statement


def objects(con: duckdb.DuckDBPyConnection, plan: Plan) -> list[tuple[str, str, str]]:
    """(name, kind, usage) of everything an analyst can call, in listing order."""
    rows = []
    for schema, name in con.execute(
            "SELECT schema_name, view_name FROM duckdb_views() WHERE database_name = 'store' "
            "AND schema_name IN ('sources', 'features') AND NOT internal "
            "ORDER BY schema_name DESC, view_name").fetchall():
        view = plan.views.get(name) if schema == "features" else None
        kind = "source" if schema == "sources" else (
            "windowed feature view" if view is not None and view.windowed else "feature view")
        rows.append((f"{schema}.{name}", kind, f"SELECT * FROM {schema}.{name}"))
    for (name,) in con.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() WHERE database_name = 'store' "
            "AND schema_name = 'features' AND function_type = 'table_macro' ORDER BY 1").fetchall():
        rows.append((f"features.{name}", "point-in-time lookup",
                     f"SELECT * FROM features.{name}('labels')"))
    for t in sorted(plan.transforms.values(), key=lambda t: t.name):
        rows.append((t.name, "transform function", _signature(t)))
    for name, kind in con.execute(
            "SELECT view_name, 'temporary view' FROM duckdb_views() WHERE temporary AND NOT "
            "internal UNION ALL SELECT table_name, 'temporary table' FROM duckdb_tables() WHERE "
            "temporary UNION ALL SELECT DISTINCT function_name, 'temporary macro' FROM "
            "duckdb_functions() WHERE database_name = 'temp' AND NOT internal AND "
            "function_type IN ('macro', 'table_macro') ORDER BY 1").fetchall():
        rows.append((name, kind, ""))
    return rows


def describe(con: duckdb.DuckDBPyConnection, plan: Plan, name: str) -> pl.DataFrame:
    """(name, type, role) rows: a relation's columns, a point-in-time macro's parameter, the
    label columns it needs and its result columns, or a transform's parameters and result."""
    name = name.strip().removesuffix("()")
    if not _NAME.fullmatch(name):
        raise FeatureStoreError(f"{name!r} is not a table, view, macro or function name")
    if name in plan.transforms:
        return _frame(_describe_transform(plan.transforms[name]))
    view = plan.views.get(name.removeprefix("features.").removesuffix("_asof"))
    if name.endswith("_asof") and view is not None:
        return _frame(_describe_asof(view))
    try:
        columns = con.execute(f"DESCRIBE {'.'.join(map(quote, name.split('.')))}").fetchall()
    except duckdb.Error:
        raise FeatureStoreError(f"no table, view, macro or transform named {name!r}; "
                                "`.tables` lists them") from None
    return _frame([(c[0], c[1], "column") for c in columns])


def _describe_asof(view: ViewPlan) -> list[tuple[str, str, str]]:
    results = ([(a.name, a.output.duckdb) for a in view.aggregates] if view.windowed
               else [(f, d.duckdb) for f, d in view.features])
    return ([("labels", "VARCHAR", "parameter: the name of a table or view with the label "
                                   "columns below")]
            + [(k, d.duckdb, "label column: join key") for k, d in view.join_keys]
            + [("event_timestamp", "TIMESTAMP WITH TIME ZONE", "label column: as-of time")]
            + [(f, t, "result column, after the labels' columns") for f, t in results])


def _describe_transform(t: TransformPlan) -> list[tuple[str, str, str]]:
    what = {"request": "request input", "feature": "feature", "transform": "transform"}
    return ([(i.param, i.dtype.duckdb, f"parameter: {what[i.kind]} {i.ref.replace(':', '.')}")
             for i in t.inputs] + [(t.name, t.output.duckdb, "result")])


def _signature(t: TransformPlan) -> str:
    params = ", ".join(f"{i.param} {i.dtype.duckdb}" for i in t.inputs)
    return f"{t.name}({params}) -> {t.output.duckdb}"


def _frame(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["name", "type", "role"], orient="row")
