"""What analysts see in the DuckDB file: a view per source (`sources.<name>`), a view per
feature view (`features.<name>`), and a point-in-time table macro per feature view of latest
values (`features.<name>_asof('labels_table')`). All plain SQL, so any DuckDB client can read
them. A windowed view's `features.<name>` lists its values at the hop boundaries where they
change (`window_end`); values between boundaries come from training sets."""

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
        if view.windowed:
            con.execute(
                f"CREATE VIEW features.{quote(view.name)} AS SELECT {', '.join(keys)}, "
                f"__vis AS window_end, {', '.join(features)} FROM {feature_table(view)}")
            continue
        con.execute(
            f"CREATE VIEW features.{quote(view.name)} AS SELECT {', '.join(keys)}, "
            f"__event_ts AS event_timestamp, __vis AS visible_at, {', '.join(features)} "
            f"FROM {feature_table(view)}")
        values = ", ".join(
            f"{visible_value(view, 'f.' + f, 'f', 'l.event_timestamp')} AS {f}" for f in features)
        con.execute(
            f"CREATE MACRO features.{quote(view.name + '_asof')}(labels) AS TABLE "
            f"SELECT l.*, {values} FROM query_table(labels) l "
            f"{asof_join(view, 'l', 'f', 'l.event_timestamp')}")


def _drop_all(con: duckdb.DuckDBPyConnection) -> None:
    for schema, name in con.execute(
        "SELECT schema_name, view_name FROM duckdb_views() "
        "WHERE schema_name IN ('sources', 'features') AND NOT internal").fetchall():
        con.execute(f"DROP VIEW {quote(schema)}.{quote(name)}")
    for (name,) in con.execute(
        "SELECT DISTINCT function_name FROM duckdb_functions() "
        "WHERE schema_name = 'features' AND function_type = 'table_macro'").fetchall():
        con.execute(f"DROP MACRO TABLE features.{quote(name)}")

