"""Windowed views in Spark: each partition of a view's events (hashed by entity, sorted by
entity then event time) is handed to the offline windowed kernels as Arrow inside the
executor: backfill points and the sweep for feature tables, direct evaluation at label times
for training sets. The kernels load from Numba's cache once per executor process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from featurestore.aggregation.events import Events
from featurestore.aggregation.layout import Layout
from featurestore.offline import windowed
from featurestore.offline.connection import quote
from featurestore.offline.spark.feature_tables import stored_type, to_bits
from featurestore.offline.spark.sources import SPARK_TYPES
from featurestore.offline.windowed import visible_from
from featurestore.plan import Plan, ViewPlan
from featurestore.values.columns import from_arrow, to_arrow

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

LABEL = "__label"  # true on the label rows of a union of events and labels
BATCH = 65_536


def events_frame(rows: DataFrame, plan: Plan, view: ViewPlan) -> DataFrame:
    """The view's events from its source's rows: keys, `__ts`, `__created` (when it became
    visible, as the DuckDB engine's read_events has it) and the aggregated columns."""
    src = plan.sources[view.source]
    event = quote(src.timestamp)
    keys = [quote(k) for k, _ in view.join_keys]
    columns = [quote(c) for c in Layout.of(view.aggregates).columns]
    return rows.where(" AND ".join(f"{k} IS NOT NULL" for k in keys)).selectExpr(
        *keys, f"{event} AS __ts", f"{visible_from(src, event)} AS __created", *columns)


def backfill(events: DataFrame, view: ViewPlan) -> DataFrame:
    """The view's feature table rows (keys, `__vis` in micros, each aggregate as stored) at
    the hop boundaries where a value changes, computed partition by partition."""
    keys = [k for k, _ in view.join_keys]
    schema = ", ".join([*(f"{quote(k)} {SPARK_TYPES[t]}" for k, t in view.join_keys),
                        "__vis BIGINT",
                        *(f"{quote(a.name)} {stored_type(a.output)}" for a in view.aggregates)])

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        table = _table(batches)
        if table is None:
            return
        for part in windowed.backfill_parts(view, _events(view, table)):
            for agg in view.aggregates:
                i = part.schema.get_field_index(agg.name)
                part = part.set_column(i, agg.name, to_bits(part.column(i).combine_chunks(),
                                                            agg.output))
            yield from part.to_batches(BATCH)

    return events.repartition(*keys).sortWithinPartitions(*keys, "__ts").mapInArrow(run, schema)


def at_labels(events: DataFrame, labels: DataFrame, view: ViewPlan) -> DataFrame:
    """Every aggregate at each label's time (`labels`: `__row`, the keys, `__ts` in micros):
    `__row` and one column per aggregate. Events and labels of an entity meet in one
    partition; entities without events get the empty windows' values."""
    keys = [k for k, _ in view.join_keys]
    schema = ", ".join(["__row BIGINT",
                        *(f"{quote(a.name)} {SPARK_TYPES[a.output]}" for a in view.aggregates)])
    both = events.selectExpr("*", f"false AS {LABEL}").unionByName(
        labels.selectExpr(*(quote(k) for k in keys), "__ts", "__row", f"true AS {LABEL}"),
        allowMissingColumns=True)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        table = _table(batches)
        if table is None:
            return
        label = table.column(LABEL).to_numpy(zero_copy_only=False)
        group = np.cumsum(_changes(table, keys)) - 1  # entity number within the partition
        found = _events(view, table.filter(pa.array(~label)))
        of_group = np.full(int(group[-1]) + 1, -1, np.int64)
        of_group[group[~label][found.starts]] = np.arange(len(found.starts))
        rows = table.filter(pa.array(label))
        values = windowed.evaluate_at(view, found, of_group[group[label]],
                                      rows.column("__ts").to_numpy().astype(np.int64))
        columns = {"__row": rows.column("__row")}
        for agg, column in zip(view.aggregates, values, strict=True):
            columns[agg.name] = to_arrow(column, agg.output)
        yield from pa.table(columns).to_batches(BATCH)

    return both.repartition(*keys).sortWithinPartitions(*keys, LABEL, "__ts").mapInArrow(
        run, schema)


def _table(batches: Iterator[pa.RecordBatch]) -> pa.Table | None:
    """A partition's batches as one table (an entity's rows may span batches)."""
    got = list(batches)
    return pa.Table.from_batches(got) if got and sum(b.num_rows for b in got) else None


def _changes(table: pa.Table, keys: list[str]) -> np.ndarray:
    """True where a row's keys differ from the previous row's (and on the first row)."""
    change = np.zeros(table.num_rows, np.bool_)
    change[0] = True
    for k in keys:
        values = table.column(k).to_numpy(zero_copy_only=False)
        change[1:] |= values[1:] != values[:-1]
    return change


def _events(view: ViewPlan, table: pa.Table) -> Events:
    dtypes = {a.column: a.dtype for a in view.aggregates}
    return Events.from_sorted(
        table, [k for k, _ in view.join_keys],
        ts=table.column("__ts").to_numpy().astype(np.int64),
        created=table.column("__created").to_numpy().astype(np.int64),
        columns={c: from_arrow(table.column(c), dtypes[c]) for c in Layout.of(view.aggregates).columns})
