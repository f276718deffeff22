"""Value distributions of the offline feature tables, for the catalog page.

Counted inside DuckDB through the analysts' read-only SQL session (`features.<view>`), so only
bin counts leave the database. A feature table holds a row each time a key's value changed
(a windowed view: each hop boundary where a window's value changed), so a distribution counts
every value a key has taken, once per change."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from featurestore.definitions.types import Bool, DType, Float64, Int64, String, Timestamp
from featurestore.offline.connection import quote
from featurestore.offline.sql import SqlSession
from featurestore.plan import ViewPlan
from featurestore.values.timestamps import EPOCH

BINS = 20  # bars of a numeric or time histogram
TOP = 8  # most frequent strings shown; the rest are counted together


@dataclass(frozen=True)
class Bar:
    label: str  # a range [low, high) of numbers or times, a string, true or false
    count: int


@dataclass(frozen=True)
class Distribution:
    rows: int  # values in the feature table
    nulls: int
    bars: list[Bar]
    outside: int = 0  # values no bar counts: NaN and infinities, strings beyond the top
    outside_label: str = ""  # what `outside` counts
    categorical: bool = False  # bars of values (strings, booleans), not of ranges


def distributions(session: SqlSession, view: ViewPlan) -> dict[str, Distribution]:
    """Each feature's distribution over the view's feature table (the applied version)."""
    table = f"features.{quote(view.name)}"
    return {name: _distribution(session, table, quote(name), dtype)
            for name, dtype in view.features}


def _distribution(session: SqlSession, table: str, column: str, dtype: DType) -> Distribution:
    if dtype is Bool:
        return _categories(session, table, column, lambda v: str(v).lower())
    if dtype is String:
        return _categories(session, table, column, str)
    value = f"epoch_us({column})" if dtype is Timestamp else column
    return _histogram(session, table, f"CAST({value} AS DOUBLE)", column, dtype)


def _categories(session: SqlSession, table: str, column: str, label: Callable[[object], str]
                ) -> Distribution:
    counts = session.sql(
        f"SELECT {column} AS v, count(*) AS n FROM {table} GROUP BY v ORDER BY n DESC, v")
    nulls = sum(n for v, n in counts.iter_rows() if v is None)
    present = [(v, n) for v, n in counts.iter_rows() if v is not None]
    rest = present[TOP:]
    return Distribution(
        rows=nulls + sum(n for _, n in present), nulls=nulls,
        bars=[Bar(label(v), n) for v, n in present[:TOP]],
        outside=sum(n for _, n in rest),
        outside_label=f"{len(rest)} other values" if rest else "", categorical=True)


def _histogram(session: SqlSession, table: str, x: str, column: str, dtype: DType
               ) -> Distribution:
    rows, present, low, high, other = session.sql(
        f"SELECT count(*), count({column}), min(x) FILTER (isfinite(x)), "
        f"max(x) FILTER (isfinite(x)), count(*) FILTER (NOT isfinite(x)) "
        f"FROM (SELECT {column}, {x} AS x FROM {table})").row(0)
    outside_label = "NaN or infinite" if other else ""
    if low is None:
        return Distribution(rows, rows - present, [], other, outside_label)
    edges = _edges(low, high, dtype)
    width = edges[1] - edges[0]
    counts = dict(session.sql(
        f"SELECT least(CAST(floor((x - {low!r}) / {width!r}) AS BIGINT), {len(edges) - 2}) "
        f"AS b, count(*) FROM (SELECT {x} AS x FROM {table}) WHERE isfinite(x) GROUP BY b"
    ).iter_rows())
    bars = [Bar(_range(edges[i], edges[i + 1], dtype), counts.get(i, 0))
            for i in range(len(edges) - 1)]
    return Distribution(rows, rows - present, bars, other, outside_label)


def _edges(low: float, high: float, dtype: DType) -> list[float]:
    """BINS equal bins from low to high; whole numbers get bins of whole widths (one per
    value when they span fewer than BINS values); a single value gets one bin."""
    if dtype is Int64 or dtype is Timestamp:
        width = max(1, math.ceil((high - low + 1) / BINS))
        count = math.ceil((high - low + 1) / width)
    elif high > low:
        width, count = (high - low) / BINS, BINS
    else:
        width, count = 1.0, 1
    return [low + i * width for i in range(count + 1)]


def _range(low: float, high: float, dtype: DType) -> str:
    if dtype is Int64:
        return str(int(low)) if high - low == 1 else f"{int(low)} to {int(high) - 1}"
    if dtype is Timestamp:
        return f"{_time(low)} to {_time(high)}"
    assert dtype is Float64
    return f"{low:.4g} to {high:.4g}"


def _time(us: float) -> str:
    return (EPOCH + timedelta(microseconds=int(us))).strftime("%Y-%m-%d %H:%M")
