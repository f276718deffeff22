"""How a view's aggregations share one row of int64 state slots, and how their inputs and
results cross between Columns and the kernels' arrays."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from featurestore.aggregation.accumulators import (
    CODES,
    OFFSET,
    SPEC_WIDTH,
    UNITS,
    state_width,
)
from featurestore.aggregation.inputs import encode
from featurestore.aggregation.unit import NONE, SPREAD, TOTAL
from featurestore.definitions.types import Bool, Float64
from featurestore.plan.plan import AggregatePlan
from featurestore.values.columns import Column

MAX_TS = 0  # slot 0 of a tile row: the latest event time it holds
# How merge_windows (online/tile_format.py) merges a slot of a tile: through its unit's merge,
# or slot by slot as it decodes the tile (Unit.merges: "+" adds, "^" keeps the larger)
BY_UNIT, ADD, MAX = range(3)


@dataclass(frozen=True)
class Layout:
    """Aggregations laid out in a state row: slot 0 is MAX_TS, then each one's state."""

    aggregations: tuple[AggregatePlan, ...]
    spec: np.ndarray  # int64 [A, SPEC_WIDTH]
    width: int

    @classmethod
    def of(cls, aggregations: tuple[AggregatePlan, ...]) -> Layout:
        spec = np.zeros((len(aggregations), SPEC_WIDTH), np.int64)
        offset = 1
        rows, leaders = _input_rows(aggregations), _leaders(aggregations)
        for a, agg in enumerate(aggregations):
            code = CODES[agg.function]
            is_float = agg.dtype is Float64
            spec[a] = (code, offset, is_float, agg.window_us, agg.hop_us, rows.index(_input(agg)),
                       agg.output is Float64, leaders[a])
            offset += state_width(code, is_float)
        spec.flags.writeable = False
        return cls(aggregations, spec, offset)

    @cached_property
    def merging(self) -> tuple[np.ndarray, np.ndarray]:
        """(spec, slots) for merging tiles (merge_windows). An aggregation whose state always
        equals an earlier one's (same column, type, window, hop and unit state: var and stddev
        of a column) reads that one's slots in `spec` and its own are not merged. slots[i]:
        -1 for a slot not merged (MAX_TS, such slots), else aggregation << 2 | how
        (BY_UNIT, ADD or MAX)."""
        spec = self.spec.copy()
        slots = np.full(self.width, -1, np.int64)
        for a, agg in enumerate(self.aggregations):
            unit, flt = UNITS[CODES[agg.function]], agg.dtype is Float64
            twin = next((b for b, other in enumerate(self.aggregations[:a])
                         if _same_state(agg, other)), None)
            if twin is not None:
                spec[a, OFFSET] = spec[twin, OFFSET]
                continue
            off, how = spec[a, OFFSET], unit.merges[flt] or "=" * unit.widths[flt]
            codes = {"=": BY_UNIT, "+": ADD, "^": MAX}
            slots[off:off + len(how)] = [a << 2 | codes[c] for c in how]
        spec.flags.writeable = False
        return spec, slots

    @property
    def columns(self) -> list[str]:
        return sorted({a.column for a in self.aggregations})

    def inputs(self, columns: dict[str, Column]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xi, xf, m): the aggregations' inputs, one row of values and a validity row per
        column and encoding (spec's INPUT row), as a view's aggregations mostly read one
        column. A row holds int64 values or float64 ones as its encoding says: xf views xi's
        bits, and each unit reads only the one its encoding gives."""
        n = len(next(iter(columns.values()))) if columns else 0
        rows = _input_rows(self.aggregations)
        xi = np.zeros((len(rows), n), np.int64)
        xf = xi.view(np.float64)
        m = np.zeros((len(rows), n), np.bool_)
        for r, (name, kind, is_float) in enumerate(rows):
            column = columns[name]
            ints, floats = encode(kind, column.values, is_float)
            if ints is not None:
                xi[r] = ints
            else:
                xf[r] = floats
            m[r] = column.valid
        return xi, xf, m

    def outputs(self, out_i: np.ndarray, out_f: np.ndarray, valid: np.ndarray) -> list[Column]:
        """The finished values as Columns of each aggregation's output type (views of the
        rows: a unit's finish gives zeros where its value is not valid)."""
        columns = []
        for a, agg in enumerate(self.aggregations):
            if agg.output is Float64:
                values = out_f[a]
            elif agg.output is Bool:
                values = out_i[a] != 0
            else:
                values = out_i[a]
            columns.append(Column(values, valid[a]))
        return columns


def _same_state(a: AggregatePlan, b: AggregatePlan) -> bool:
    """Whether a's state always equals b's: the same events added and merged alike."""
    ua, ub = UNITS[CODES[a.function]], UNITS[CODES[b.function]]
    return (a.column, a.dtype, a.window_us, a.hop_us) == (b.column, b.dtype, b.window_us,
                                                          b.hop_us) and \
        (ua.add, ua.merge, ua.widths, ua.inputs) == (ub.add, ub.merge, ub.widths, ub.inputs)


def empty_outputs(layout: Layout, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(out_i, out_f, valid): out_f views out_i's bits, a row per aggregation holding its
    int64 or float64 results (spec's FLOAT_OUTPUT)."""
    a = len(layout.aggregations)
    out_i = np.zeros((a, n), np.int64)
    return out_i, out_i.view(np.float64), np.zeros((a, n), np.bool_)


def _input(agg: AggregatePlan) -> tuple[str, int, bool]:
    """What an aggregation reads: its column, that column's encoding for it, whether Float64."""
    is_float = agg.dtype is Float64
    return agg.column, UNITS[CODES[agg.function]].inputs[is_float], is_float


def _input_rows(aggregations: tuple[AggregatePlan, ...]) -> list[tuple[str, int, bool]]:
    return list(dict.fromkeys(_input(agg) for agg in aggregations))


def _leaders(aggregations: tuple[AggregatePlan, ...]) -> list[int]:
    """Per aggregation, the one whose backfill sweep computes its moments (itself when it
    has none): the aggregations of one column and window whose values come from moments
    (count, sum, mean, var, stddev of a Float64 column) share one pass, led by the first of
    them that needs sums, whose input row holds the values."""
    leaders = list(range(len(aggregations)))
    groups: dict[tuple[str, int, int], list[tuple[int, int]]] = {}
    for a, agg in enumerate(aggregations):
        wanted = UNITS[CODES[agg.function]].moments[agg.dtype is Float64]
        if wanted != NONE:
            groups.setdefault((agg.column, agg.window_us, agg.hop_us), []).append((a, wanted))
    for members in groups.values():
        lead = next((a for a, wanted in members if wanted in (TOTAL, SPREAD)), members[0][0])
        for a, _ in members:
            leaders[a] = lead
    return leaders


def hops(aggregations: tuple[AggregatePlan, ...]) -> dict[int, tuple[AggregatePlan, ...]]:
    """Aggregations grouped by hop: each group shares one set of tiles."""
    out: dict[int, list[AggregatePlan]] = {}
    for agg in aggregations:
        out.setdefault(agg.hop_us, []).append(agg)
    return {hop: tuple(group) for hop, group in sorted(out.items())}


def span(aggregations: tuple[AggregatePlan, ...]) -> int:
    """Tiles a group's window reads: its longest window's full tiles plus the head."""
    return max(a.window_us // a.hop_us for a in aggregations) + 1

