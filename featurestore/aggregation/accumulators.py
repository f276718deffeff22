"""The accumulators of windowed aggregations, one unit per aggregate function (functions/),
behind one dispatch: offline evaluation, online tiles and pushes all call these kernels with
a row of the spec (which unit, where its state starts, whether its input is Float64, its
window and hop) and never name a function themselves.

An aggregation's input arrives as one row of `xi` (int64) or of `xf` (float64), encoded as
its unit asks (inputs.py), plus a validity row; every function skips nulls."""

from __future__ import annotations

from importlib import import_module

import numba
import numpy as np
from numba import literal_unroll  # the unrolling pass finds it by this name

from featurestore.aggregation.inputs import encode
from featurestore.aggregation.unit import Unit
from featurestore.definitions.functions import AGGREGATE_FUNCTIONS
from featurestore.values.strings import Utf8Array

UNITS: tuple[Unit, ...] = tuple(import_module(f"featurestore.aggregation.functions.{name}").UNIT
                                for name in AGGREGATE_FUNCTIONS)
CODES = {name: code for code, name in enumerate(AGGREGATE_FUNCTIONS)}
_CODED = tuple(enumerate(UNITS))  # what the kernels unroll: (code, unit)

# spec columns, one spec row per aggregation
FUNC, OFFSET, FLOAT_INPUT, WINDOW, HOP = range(5)
SPEC_WIDTH = 5


def state_width(function: int, float_input: bool) -> int:
    return UNITS[function].widths[float_input]


def input_row(function: int, values: np.ndarray | Utf8Array, is_float: bool
              ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(xi row, xf row) of one aggregation's input column."""
    return encode(UNITS[function].inputs[is_float], values, is_float)


@numba.njit(cache=True, nogil=True, inline="always")
def add_event(spec, a, s, xi, xf, m, i, ts, created):  # type: ignore[no-untyped-def]
    """Adds event i's input of aggregation a to the state row s."""
    f, off, flt = spec[a, FUNC], spec[a, OFFSET], spec[a, FLOAT_INPUT] != 0
    if m[a, i]:  # (an early return here defeats the unrolling)
        for coded in literal_unroll(_CODED):
            if coded[0] == f:
                coded[1].add(s, off, flt, xi[a, i], xf[a, i], ts, created)


@numba.njit(cache=True, nogil=True, inline="always")
def remove_event(spec, a, s, xi, xf, m, i):  # type: ignore[no-untyped-def]
    """Undoes add_event if the state allows it (always for a unit that sweeps by SUBTRACT);
    whether it did."""
    f, off, flt = spec[a, FUNC], spec[a, OFFSET], spec[a, FLOAT_INPUT] != 0
    done = True
    if m[a, i]:
        for coded in literal_unroll(_CODED):
            if coded[0] == f:
                done = coded[1].remove(s, off, flt, xi[a, i], xf[a, i])
    return done


@numba.njit(cache=True, nogil=True, inline="always")
def merge_state(spec, a, s, o):  # type: ignore[no-untyped-def]
    """Merges aggregation a's partial state in row o into row s."""
    f, off, flt = spec[a, FUNC], spec[a, OFFSET], spec[a, FLOAT_INPUT] != 0
    for coded in literal_unroll(_CODED):
        if coded[0] == f:
            coded[1].merge(s, off, flt, o)


@numba.njit(cache=True, nogil=True, inline="always")
def normalize_state(spec, a, s):  # type: ignore[no-untyped-def]
    """Canonical slots, so that equal states serialize to equal bytes."""
    f, off, flt = spec[a, FUNC], spec[a, OFFSET], spec[a, FLOAT_INPUT] != 0
    for coded in literal_unroll(_CODED):
        if coded[0] == f:
            coded[1].normalize(s, off, flt)


@numba.njit(cache=True, nogil=True, inline="always")
def finish(spec, a, s, r, out_i, out_f, valid):  # type: ignore[no-untyped-def]
    """Aggregation a's value from state row s into column r of the outputs (out_f for Float64
    results, out_i for the others)."""
    f, off, flt = spec[a, FUNC], spec[a, OFFSET], spec[a, FLOAT_INPUT] != 0
    for coded in literal_unroll(_CODED):
        if coded[0] == f:
            valid[a, r], out_i[a, r], out_f[a, r] = coded[1].finish(s, off, flt)


@numba.njit(cache=True, nogil=True, inline="always")
def sweep_kind(spec, a):  # type: ignore[no-untyped-def]
    """How the backfill sweep slides aggregation a's window (unit.SUBTRACT, QUEUE, SET, DIRECT)."""
    f = spec[a, FUNC]
    kind = 0
    for coded in literal_unroll(_CODED):
        if coded[0] == f:
            kind = coded[1].sweep
    return kind


@numba.njit(cache=True, nogil=True, inline="always")
def better(spec, a, xi, ts, created, i, j):  # type: ignore[no-untyped-def]
    """Whether event i wins over event j, for an aggregation whose unit sweeps by QUEUE."""
    f = spec[a, FUNC]
    wins = False
    for coded in literal_unroll(_CODED):
        if coded[0] == f:
            wins = coded[1].better(xi[a, i], ts[i], created[i], xi[a, j], ts[j], created[j])
    return wins


@numba.njit(cache=True, nogil=True, inline="always")
def moments(spec, a):  # type: ignore[no-untyped-def]
    """Which exact sum aggregation a's value comes from (unit.NONE, TOTAL or SPREAD)."""
    f, flt = spec[a, FUNC], spec[a, FLOAT_INPUT] != 0
    kind = 0
    for coded in literal_unroll(_CODED):
        if coded[0] == f:
            kind = coded[1].moments[1] if flt else coded[1].moments[0]
    return kind


@numba.njit(cache=True, nogil=True, inline="always")
def finish_moments(spec, a, n, total, spread, r, out_i, out_f, valid):  # type: ignore[no-untyped-def]
    """Like finish, from n events' rounded exact sum or spread (see `moments`)."""
    f = spec[a, FUNC]
    for coded in literal_unroll(_CODED):
        if coded[0] == f:
            valid[a, r], out_i[a, r], out_f[a, r] = coded[1].from_moments(n, total, spread)
