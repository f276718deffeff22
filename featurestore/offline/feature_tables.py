"""Feature tables: each view's value history as it became visible, the point-in-time rule in
one place.

A source row is visible at T when its event timestamp and its created timestamp are both <= T,
that is from `visible_at = greatest(event_ts, created)` on (a created column declared as a
tie-break only does not delay visibility). Among rows visible at T the winner
is the greatest (event_ts, created, __seq). Visible sets only grow with T, so the winner at T is
the running maximum over rows ordered by visible_at; the feature table keeps one row per
(entity, visible_at) holding that winner. A training set is then one ASOF join per view, and
materialization reads the last row per entity."""

from __future__ import annotations

import duckdb

from featurestore.aggregation.events import Events
from featurestore.offline import windowed
from featurestore.offline.connection import INTERNAL, quote
from featurestore.offline.ingest import source_table
from featurestore.offline.windowed import created_at, visible_from
from featurestore.plan import Plan, ViewPlan

# Bumped whenever the feature tables' columns change, so existing stores rebuild them.
LAYOUT = 3


def stamp(source_fingerprint: str) -> str:
    """What a feature table records it was built from: its layout and its source's data."""
    return f"{LAYOUT}:{source_fingerprint}"


def feature_table(view: ViewPlan) -> str:
    return f"{INTERNAL}.{quote(f'fv_{view.name}_{view.version}')}"


def visible_value(view: ViewPlan, value: str, alias: str, label_ts: str,
                  micros: bool = False) -> str:
    """A feature value as a label at `label_ts` sees it: NULL when older than the ttl
    (an event exactly at label_ts - ttl is still inside)."""
    if view.ttl_us is None:
        return value
    return f"CASE WHEN NOT {expired(view, alias, label_ts, micros)} THEN {value} END"


def expired(view: ViewPlan, alias: str, label_ts: str, micros: bool = False) -> str:
    """`micros`: the times are epoch microseconds (as the Spark engine compares them), not
    timestamps."""
    if view.ttl_us is None:
        return "false"
    ttl = str(view.ttl_us) if micros else f"to_microseconds({view.ttl_us})"
    return f"({alias}.__event_ts < {label_ts} - {ttl})"


def asof_join(view: ViewPlan, labels: str, alias: str, label_ts: str) -> str:
    """The join that finds, per label, the winner visible at the label's time."""
    on = " AND ".join(f"{labels}.{quote(k)} = {alias}.{quote(k)}" for k, _ in view.join_keys)
    return (f"ASOF LEFT JOIN {feature_table(view)} {alias} "
            f"ON {on} AND {label_ts} >= {alias}.__vis")


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"""CREATE TABLE IF NOT EXISTS {INTERNAL}.feature_tables (
        view VARCHAR, version VARCHAR, source_fingerprint VARCHAR, rows BIGINT,
        built_at TIMESTAMPTZ, PRIMARY KEY (view, version))""")


def build(con: duckdb.DuckDBPyConnection, plan: Plan, view: ViewPlan, fingerprint: str,
          last_read: dict[tuple, Events] | None = None) -> int:
    """The view's feature table (`last_read`: see windowed.build)."""
    if view.windowed:
        count = windowed.build(con, plan, view, feature_table(view), last_read)
    else:
        count = _build_latest(con, plan, view)
    con.execute(f"INSERT OR REPLACE INTO {INTERNAL}.feature_tables VALUES (?, ?, ?, ?, now())",
                [view.name, view.version, stamp(fingerprint), count])
    return count


def _build_latest(con: duckdb.DuckDBPyConnection, plan: Plan, view: ViewPlan) -> int:
    src = plan.sources[view.source]
    keys = [quote(k) for k, _ in view.join_keys]
    key_list = ", ".join(keys)
    event = quote(src.timestamp)
    created = created_at(src, event)
    features = [quote(f) for f, _ in view.features]
    not_null = " AND ".join(f"{k} IS NOT NULL" for k in keys)
    con.execute(f"""
        CREATE OR REPLACE TABLE {feature_table(view)} AS
        WITH r AS (
            SELECT {key_list}, {", ".join(features)}, {event} AS __event_ts,
                   {created} AS __created, __seq, {visible_from(src, event)} AS __vis
            FROM {source_table(src.name)} WHERE {not_null}),
        w AS (
            SELECT {key_list}, __vis,
                   arg_max(__seq, (__event_ts, __created, __seq)) OVER (
                       PARTITION BY {key_list} ORDER BY __vis
                       RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS __winner
            FROM r
            QUALIFY row_number() OVER (PARTITION BY {key_list}, __vis ORDER BY __seq) = 1)
        SELECT {", ".join(f"w.{k}" for k in keys)}, w.__vis, r.__event_ts, r.__created, r.__seq,
               {", ".join(f"r.{f}" for f in features)}
        FROM w JOIN r ON r.__seq = w.__winner""")
    rows = con.execute(f"SELECT count(*) FROM {feature_table(view)}").fetchone()
    return rows[0] if rows else 0


def latest_sql(view: ViewPlan, end_us: int, start_us: int | None) -> str:
    """Each entity's winner as of `end` (what materialization writes online); with `start`,
    only entities whose winner became visible after it."""
    keys = ", ".join(quote(k) for k, _ in view.join_keys)
    features = ", ".join(quote(f) for f, _ in view.features)
    since = f"WHERE __vis > make_timestamptz({start_us})" if start_us is not None else ""
    return f"""
        SELECT {keys}, __event_ts, __created, __seq, {features} FROM (
            SELECT * FROM {feature_table(view)} WHERE __vis <= make_timestamptz({end_us})
            QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY __vis DESC) = 1) {since}"""


def built(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], str]:
    """(view, version) -> fingerprint of the source data it was built from."""
    rows = con.execute(
        f"SELECT view, version, source_fingerprint FROM {INTERNAL}.feature_tables").fetchall()
    return {(v, ver): fp for v, ver, fp in rows}


def drop_stale(con: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    """Feature tables of versions no longer active are dropped (the registry keeps history)."""
    active = {(v.name, v.version) for v in plan.views.values()}
    for view, version in list(built(con)):
        if (view, version) not in active:
            con.execute(f"DROP TABLE IF EXISTS {INTERNAL}.{quote(f'fv_{view}_{version}')}")
            con.execute(f"DELETE FROM {INTERNAL}.feature_tables WHERE view = ? AND version = ?",
                        [view, version])
