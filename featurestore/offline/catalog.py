"""What analysts see in the DuckDB file: a view per source (`sources.<name>`), a view per
feature view (`features.<name>`), and a point-in-time table macro per feature view
(`features.<name>_asof('labels_table')`). Plain SQL, so any DuckDB client can read them, except
a windowed view's macro: a window's value at a label's time is evaluated from the events by
the compiled window kernels, as in training sets, through a function that only the analysts'
SQL session registers (`window_function`). A windowed view's `features.<name>` lists its values
at the hop boundaries where they change (`window_end`)."""

from __future__ import annotations

import duckdb

from featurestore.offline.connection import quote
from featurestore.offline.feature_tables import asof_join, feature_table, visible_value
from featurestore.offline.ingest import source_table
from featurestore.plan import Plan


def refresh(con: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    _drop_all(con)
    for src in plan.sources.values():
        con.execute(f"CREATE VIEW sources.{quote(src.name)} AS "
                    f"SELECT * EXCLUDE (__seq) FROM {source_table(src.name)}")
    for view in plan.views.values():
        keys = [quote(k) for k, _ in view.join_keys]
        features = [quote(f) for f, _ in view.features]
        macro = f"CREATE MACRO features.{quote(view.name + '_asof')}(labels) AS TABLE"
        if view.windowed:
            con.execute(
                f"CREATE VIEW features.{quote(view.name)} AS SELECT {', '.join(keys)}, "
                f"__vis AS window_end, {', '.join(features)} FROM {feature_table(view)}")
            call = f"{quote(window_function(view.name))}({', '.join('l.' + k for k in keys)}, " \
                   "l.event_timestamp)"
            con.execute(f"{macro} SELECT * EXCLUDE (__window), unnest(__window) FROM "
                        f"(SELECT l.*, {call} AS __window FROM query_table(labels) l)")
            continue
        con.execute(
            f"CREATE VIEW features.{quote(view.name)} AS SELECT {', '.join(keys)}, "
            f"__event_ts AS event_timestamp, __vis AS visible_at, {', '.join(features)} "
            f"FROM {feature_table(view)}")
        values = ", ".join(
            f"{visible_value(view, 'f.' + f, 'f', 'l.event_timestamp')} AS {f}" for f in features)
        con.execute(
            f"{macro} SELECT l.*, {values} FROM query_table(labels) l "
            f"{asof_join(view, 'l', 'f', 'l.event_timestamp')}")


def window_function(view: str) -> str:
    """The SQL function a windowed view's `_asof` macro calls: (keys..., time) -> a struct of
    the view's aggregates at that time."""
    return f"__window_{view}"


def _drop_all(con: duckdb.DuckDBPyConnection) -> None:
    for schema, name in con.execute(
        "SELECT schema_name, view_name FROM duckdb_views() "
        "WHERE schema_name IN ('sources', 'features') AND NOT internal").fetchall():
        con.execute(f"DROP VIEW {quote(schema)}.{quote(name)}")
    for (name,) in con.execute(
        "SELECT DISTINCT function_name FROM duckdb_functions() "
        "WHERE schema_name = 'features' AND function_type = 'table_macro'").fetchall():
        con.execute(f"DROP MACRO TABLE features.{quote(name)}")

