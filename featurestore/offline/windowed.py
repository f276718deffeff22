"""Windowed views offline: a view's events read out of DuckDB (and the pushed-event log),
grouped by entity and sorted by event time, and the aggregations evaluated over them with the
aggregation package's kernels, at label times for training sets and at hop boundaries for
backfill."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import duckdb
import numba
import numpy as np
import pyarrow as pa

from featurestore.aggregation.events import Events
from featurestore.aggregation.layout import Layout, empty_outputs
from featurestore.aggregation.windows import change_points, evaluate, sweep
from featurestore.definitions.types import Timestamp
from featurestore.offline.connection import literal, quote
from featurestore.offline.event_log import INGESTED
from featurestore.offline.ingest import source_table
from featurestore.plan import Plan, SourcePlan, ViewPlan
from featurestore.values.columns import Column, from_arrow, to_arrow

ENTITY = "__e"
PARTS = 16  # parts of a sweep, more than threads so that uneven parts even out
PART_EVENTS = 1 << 20  # events per part of a backfill (backfill_parts)


def created_at(src: SourcePlan, event: str) -> str:
    """A source row's created time, which breaks ties between equal event times: when it was
    pushed (pushed rows carry their ingest time), else its created column, else its event
    time."""
    return f"coalesce({INGESTED}, {quote(src.created) if src.created else event})"


def visible_from(src: SourcePlan, event: str) -> str:
    """When a source row becomes visible: the later of its event and created times, where a
    created column declared `created_role="tie_break"` does not count (pushed rows' ingest
    time always does)."""
    created = created_at(src, event) if src.created_hides else f"coalesce({INGESTED}, {event})"
    return f"greatest({event}, {created})"


def read_events(con: duckdb.DuckDBPyConnection, plan: Plan, view: ViewPlan,
                log: list[Path] | None = None, only_keys: str | None = None,
                until_us: int | None = None, since_us: int | None = None) -> Events:
    """The view's events (those of entities in the relation `only_keys`, and, when `until_us`
    is given, those visible by then and the pushed ones logged by then, which include events
    pushed ahead of the clock). With `log` (the source's pushed-event log files), pushed
    events come from the log as it is now rather than from the last ingest: a read that sees
    every push without writing anything. `since_us`: only events at or after it."""
    src = plan.sources[view.source]
    layout = Layout.of(view.aggregates)
    keys = [quote(k) for k, _ in view.join_keys]
    event = quote(src.timestamp)
    filters = [f"{k} IS NOT NULL" for k in keys]
    if until_us is not None:
        until = f"make_timestamptz({until_us})"
        filters.append(f"({visible_from(src, event)} <= {until} OR {INGESTED} <= {until})")
    if since_us is not None:
        filters.append(f"{event} >= make_timestamptz({since_us})")
    semi = ""
    if only_keys is not None:
        on = " AND ".join(f"s.{k} = o.{k}" for k in keys)
        semi = f"SEMI JOIN (SELECT DISTINCT {', '.join(keys)} FROM {only_keys}) o ON {on}"
    columns = ", ".join(f"s.{quote(c)}" for c in layout.columns)
    table = con.sql(f"""
        SELECT {", ".join(f"s.{k}" for k in keys)},
               epoch_us(s.{event}) AS __ts,
               epoch_us({visible_from(src, f"s.{event}")}) AS __created, {columns}
        FROM {_rows(src, log)} s {semi}
        WHERE {" AND ".join(filters)}
        ORDER BY {", ".join(f"s.{k}" for k in keys)}, __ts""").to_arrow_table()
    dtypes = {a.column: a.dtype for a in view.aggregates}
    return Events.from_sorted(
        table, [k for k, _ in view.join_keys],
        ts=table.column("__ts").to_numpy().astype(np.int64),
        created=table.column("__created").to_numpy().astype(np.int64),
        columns={c: from_arrow(table.column(c), dtypes[c]) for c in layout.columns})


def _rows(src: SourcePlan, log: list[Path] | None) -> str:
    """The source's rows: as ingested, or its files' rows plus the pushed-event log."""
    if log is None:
        return source_table(src.name)
    table = f"(SELECT * FROM {source_table(src.name)} WHERE {INGESTED} IS NULL)"
    if not log:
        return table
    files = ", ".join(literal(str(p)) for p in log)
    return (f"(SELECT * FROM {table} UNION ALL BY NAME "
            f"SELECT * FROM read_parquet([{files}], union_by_name = true))")


def entity_index(con: duckdb.DuckDBPyConnection, view: ViewPlan, events: Events,
                 labels: str, row: str) -> np.ndarray:
    """Per label row (in `row` order), the index of its entity in `events`, or -1."""
    keys = [quote(k) for k, _ in view.join_keys]
    index = events.keys.append_column(ENTITY, pa.array(np.arange(events.keys.num_rows)))
    con.register("__entities", index)
    try:
        on = " AND ".join(f"l.{k} = e.{k}" for k in keys)
        got = con.sql(f"SELECT coalesce(e.{ENTITY}, -1) AS i FROM {labels} l "
                      f"LEFT JOIN __entities e ON {on} ORDER BY l.{row}").to_arrow_table()
    finally:
        con.unregister("__entities")
    return got.column("i").to_numpy().astype(np.int64)


def evaluate_at(view: ViewPlan, events: Events, entity: np.ndarray,
                at_us: np.ndarray) -> list[Column]:
    """Every aggregate of the view for each (entity index, time), one Column per aggregate."""
    layout = Layout.of(view.aggregates)
    xi, xf, m = layout.inputs(events.columns) if len(events) else layout.inputs(
        {c: Column(np.zeros(0, np.float64), np.zeros(0, np.bool_)) for c in layout.columns})
    out_i, out_f, valid = empty_outputs(layout, len(entity))
    evaluate(layout.spec, layout.width, xi, xf, m, events.ts, events.created, events.starts,
             events.ends, entity, at_us, out_i, out_f, valid)
    return layout.outputs(out_i, out_f, valid)


def sweep_at(view: ViewPlan, events: Events, entity: np.ndarray, at_us: np.ndarray
             ) -> list[Column]:
    """Like evaluate_at for times sorted by entity then time (every entity of `events`).

    The entities are swept in parts, one kernel call per part from a pool of threads, each
    call single-threaded: calls from different threads share no reference counts, where one
    multi-threaded kernel's threads would contend for those of the shared arrays."""
    layout = Layout.of(view.aggregates)
    xi, xf, m = layout.inputs(events.columns)
    out_i, out_f, valid = empty_outputs(layout, len(entity))
    bounds = np.searchsorted(entity, np.arange(len(events.starts) + 1)).astype(np.int64)

    def part(first: int, stop: int) -> None:
        numba.set_num_threads(1)
        sweep(layout.spec, layout.width, xi, xf, m, events.ts, events.created,
              events.starts[first:stop], events.ends[first:stop], bounds[first:stop],
              bounds[first + 1:stop + 1], at_us, out_i, out_f, valid)

    cuts = np.linspace(0, len(events.starts), PARTS + 1).astype(np.int64)
    with ThreadPoolExecutor(numba.config.NUMBA_NUM_THREADS) as pool:
        list(pool.map(part, cuts[:-1], cuts[1:]))
    return layout.outputs(out_i, out_f, valid)


def backfill_points(view: ViewPlan, events: Events) -> tuple[np.ndarray, np.ndarray]:
    """(entity, T): the hop boundaries at which some aggregate of the view changes, per
    entity: where an event becomes visible (rounded up to its hop) and where it leaves the
    window. Between two such boundaries every value stays the same."""
    hops = np.array(sorted({a.hop_us for a in view.aggregates}), np.int64)
    windows = np.array(sorted({(a.hop_us, a.window_us) for a in view.aggregates}),
                       np.int64).reshape(-1, 2)
    return change_points(events.ts, events.created, events.starts, events.ends, hops, windows)


def backfill_parts(view: ViewPlan, events: Events) -> Iterator[pa.Table]:
    """The view's feature table rows: its keys, `__vis` (micros) and every aggregate at each
    hop boundary where a value changes, for its entities in parts of about PART_EVENTS
    events, each computed when asked for: a backfill holds a part or two (one written while
    the next is computed) where the whole table's rows would be several times the events',
    and fresh memory is slow to map."""
    keys = [k for k, _ in view.join_keys]
    cuts = np.unique(np.append(np.searchsorted(
        events.starts, np.arange(0, len(events), PART_EVENTS)), len(events.starts)))
    for first, stop in pairwise(cuts):
        part = events.entities(first, stop)
        entity, at = backfill_points(view, part)
        values = sweep_at(view, part, entity, at)
        take = pa.array(entity, pa.int64())
        columns = {k: part.keys.column(k).take(take) for k in keys}
        columns["__vis"] = pa.array(at, pa.int64())
        for agg, column in zip(view.aggregates, values, strict=True):
            columns[agg.name] = to_arrow(column, agg.output)
        yield pa.table(columns)


def build(con: duckdb.DuckDBPyConnection, plan: Plan, view: ViewPlan, table: str,
          last_read: dict[tuple, Events] | None = None) -> int:
    """The view's feature table: every aggregate per entity at each hop boundary where a value
    changes (an ASOF join on `__vis` gives the value at any boundary), streamed into DuckDB
    part by part. `last_read` keeps the events read last, for the next view that reads the
    same ones (views of one source and columns, built one after the other, read them once)."""
    read = (view.source, view.join_keys, tuple(Layout.of(view.aggregates).columns))
    events = (last_read or {}).get(read)
    if events is None:
        if last_read is not None:
            last_read.clear()  # before reading: one view's events in memory at a time
        events = read_events(con, plan, view)
        if last_read is not None:
            last_read[read] = events
    schema = pa.schema([*events.keys.schema, pa.field("__vis", Timestamp.arrow),
                        *(pa.field(a.name, a.output.arrow) for a in view.aggregates)])
    rows = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal rows
        for part in _ahead(backfill_parts(view, events)):
            rows += part.num_rows
            vis = part.schema.get_field_index("__vis")
            yield from part.set_column(vis, "__vis", part.column(vis).cast(Timestamp.arrow)
                                       ).cast(schema).to_batches()

    con.register("__backfill", pa.RecordBatchReader.from_batches(schema, batches()))
    try:
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM __backfill")
    finally:
        con.unregister("__backfill")
    return rows


def _ahead(parts: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """The parts, each computed in a thread while DuckDB writes the one before."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(next, parts, None)
        while (part := future.result()) is not None:
            future = pool.submit(next, parts, None)
            yield part
