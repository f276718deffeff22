"""The accumulators of windowed aggregations, one unit per aggregate function (functions/),
behind one dispatch: offline evaluation, online tiles and pushes all call these kernels with
a row of the spec (which unit, where its state starts, whether its input is Float64, its
window and hop, its input row, whether its result is Float64, and which aggregation's sweep
computes its exact sums: see Layout) and never name a function themselves.

An aggregation's input arrives as one row of `xi` (int64) or of `xf` (float64), encoded as
its unit asks (inputs.py), plus a validity row, at the spec's INPUT row: aggregations of the
same column and encoding share it. Every function skips nulls. Its result goes to one row of
`out_i`, whose bits `out_f` views as float64 for a Float64 result (FLOAT_OUTPUT)."""

from __future__ import annotations

from importlib import import_module

import numba
from numba import literal_unroll  # the unrolling pass finds it by this name

from featurestore.aggregation.unit import Unit
from featurestore.definitions.functions import AGGREGATE_FUNCTIONS

UNITS: tuple[Unit, ...] = tuple(import_module(f"featurestore.aggregation.functions.{name}").UNIT
                                for name in AGGREGATE_FUNCTIONS)
CODES = {name: code for code, name in enumerate(AGGREGATE_FUNCTIONS)}
_CODED = tuple(enumerate(UNITS))  # what the kernels unroll: (code, unit)

# spec columns, one spec row per aggregation
FUNC, OFFSET, FLOAT_INPUT, WINDOW, HOP, INPUT, FLOAT_OUTPUT, LEADER = range(8)
SPEC_WIDTH = 8


def state_width(function: int, float_input: bool) -> int:
    return UNITS[function].widths[float_input]


@numba.njit(cache=True, nogil=True, inline="always")
def add_event(spec, a, s, xi, xf, m, i, ts, created):  # type: ignore[no-untyped-def]
    """Adds event i's input of aggregation a to the state row s."""
    f, off, flt, x = spec[a, FUNC], spec[a, OFFSET], spec[a, FLOAT_INPUT] != 0, spec[a, INPUT]
    if m[x, i]:  # (an early return here defeats the unrolling)
        for coded in literal_unroll(_CODED):
            if coded[0] == f:
                coded[1].add(s, off, flt, xi[x, i], xf[x, i], ts, created)


@numba.njit(cache=True, nogil=True, inline="always")
def remove_event(spec, a, s, xi, xf, m, i):  # type: ignore[no-untyped-def]
    """Undoes add_event if the state allows it (always for a unit that sweeps by SUBTRACT);
    whether it did."""
    f, off, flt, x = spec[a, FUNC], spec[a, OFFSET], spec[a, FLOAT_INPUT] != 0, spec[a, INPUT]
    done = True
    if m[x, i]:
        for coded in literal_unroll(_CODED):
            if coded[0] == f:
                done = coded[1].remove(s, off, flt, xi[x, i], xf[x, i])
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
    """Aggregation a's value from state row s into column r of the outputs."""
    f, off, flt = spec[a, FUNC], spec[a, OFFSET], spec[a, FLOAT_INPUT] != 0
    for coded in literal_unroll(_CODED):
        if coded[0] == f:
            ok, k, x = coded[1].finish(s, off, flt)
            put_output(spec, a, r, ok, k, x, out_i, out_f, valid)


@numba.njit(cache=True, nogil=True, inline="always")
def put_output(spec, a, r, ok, k, x, out_i, out_f, valid):  # type: ignore[no-untyped-def]
    """A unit's result (valid, int64, float64) into column r: the float for a Float64
    result, else the int, in the one row out_i and out_f share."""
    valid[a, r] = ok
    if spec[a, FLOAT_OUTPUT]:
        out_f[a, r] = x
    else:
        out_i[a, r] = k


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
    f, x = spec[a, FUNC], spec[a, INPUT]
    wins = False
    for coded in literal_unroll(_CODED):
        if coded[0] == f:
            wins = coded[1].better(xi[x, i], ts[i], created[i], xi[x, j], ts[j], created[j])
    return wins


@numba.njit(cache=True, nogil=True, inline="always")
def moments(spec, a):  # type: ignore[no-untyped-def]
    """Which exact sum aggregation a's value comes from (unit.NONE, TOTAL, SPREAD or COUNT)."""
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
            ok, k, x = coded[1].from_moments(n, total, spread)
            put_output(spec, a, r, ok, k, x, out_i, out_f, valid)
