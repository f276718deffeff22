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
    input_row,
    state_width,
)
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
        for a, agg in enumerate(aggregations):
            code = CODES[agg.function]
            is_float = agg.dtype is Float64
            spec[a] = (code, offset, is_float, agg.window_us, agg.hop_us)
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
        """(xi, xf, m): each aggregation's input column as a row of int64 or float64 values
        and a validity row."""
        n = len(next(iter(columns.values()))) if columns else 0
        xi = np.zeros((len(self.aggregations), n), np.int64)
        xf = np.zeros((len(self.aggregations), n), np.float64)
        m = np.zeros((len(self.aggregations), n), np.bool_)
        for a, agg in enumerate(self.aggregations):
            column = columns[agg.column]
            ints, floats = input_row(CODES[agg.function], column.values, agg.dtype is Float64)
            if ints is not None:
                xi[a] = ints
            if floats is not None:
                xf[a] = floats
            m[a] = column.valid
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
    a = len(layout.aggregations)
    return np.zeros((a, n), np.int64), np.zeros((a, n), np.float64), np.zeros((a, n), np.bool_)


def hops(aggregations: tuple[AggregatePlan, ...]) -> dict[int, tuple[AggregatePlan, ...]]:
    """Aggregations grouped by hop: each group shares one set of tiles."""
    out: dict[int, list[AggregatePlan]] = {}
    for agg in aggregations:
        out.setdefault(agg.hop_us, []).append(agg)
    return {hop: tuple(group) for hop, group in sorted(out.items())}


def span(aggregations: tuple[AggregatePlan, ...]) -> int:
    """Tiles a group's window reads: its longest window's full tiles plus the head."""
    return max(a.window_us // a.hop_us for a in aggregations) + 1

