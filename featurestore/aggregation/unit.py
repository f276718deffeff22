"""What a unit, the kernels of one aggregate function, provides. Every function keeps its
partial aggregate in its own slots of an int64 state row, from offset `off`, and its state
must depend on the *set* of events it has seen (exact sums, total orders, sorted sets), never
on their order: that is what makes late and out-of-order events give the same bits offline,
in tiles and in pushes.

The kernels, all Numba-jitted with these signatures (`flt`: the input column is Float64):

- add(s, off, flt, k, x, ts, created): adds one event, whose input is k (int64: integers,
  timestamps, booleans, order keys or hashes, see `inputs`) or x (float64).
- remove(s, off, flt, k, x) -> bool: takes an added event back out if the state allows it,
  and says whether it did: SUBTRACT units always do, SET units when their state can lose
  that input exactly (the sweep then rebuilds it).
- merge(s, off, flt, o): merges the partial state in row o (same offset) into row s.
- normalize(s, off, flt): makes equal states equal slot for slot, so their bytes are equal.
- finish(s, off, flt) -> (valid, int64 value, float64 value): the result; a Float64 result
  goes in the float, every other in the int; both values are zero when it is not valid.
- better(k, ts, created, k2, ts2, created2): whether the first event wins over the second
  (QUEUE units only): the state of a set of events is then that of its best one.

and, as plain ints, indexed by `flt`: `widths`, the slots of the state, and `inputs`, how the
column is encoded (KEYS, FLOATS or HASHES); also indexed by `flt`, `merges`: when `merge` only
adds each slot or keeps the larger value, one character per slot ("+" or "^"), so a lookup
merges tiles slot by slot as it decodes them (online/tile_format.py), else "". `sweep` says
how the backfill sweep slides a window: SUBTRACT (add entering, remove leaving events), QUEUE
(a monotonic queue of best events), SET (for a state that depends only on the set of distinct
int64 inputs, so adding an input twice changes nothing: add the inputs new to the window,
remove those that leave it or, if the state cannot, rebuild it from those left) or
DIRECT (re-read the window at every step).

A unit whose value comes from exact sums of float64 inputs says so in `moments` (indexed by
`flt`): TOTAL (the sum, rounded once) or SPREAD (n * sum of squares - sum**2, rounded once),
or from the count of values alone: COUNT. It gives its value from that with
from_moments(n, total, spread) -> (valid, int64, float64), which its finish uses too: the
sweep then may keep those sums in fewer limbs (fixed_sum), and computes them once for all
the aggregations of a column that share a window."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numba

KEYS, FLOATS, HASHES = range(3)
SUBTRACT, QUEUE, DIRECT, SET = range(4)
NONE, TOTAL, SPREAD, COUNT = range(4)  # moments
Kernel = Callable[..., Any]  # a Numba dispatcher


@numba.njit(cache=True, nogil=True)
def no_moments(n, total, spread):  # type: ignore[no-untyped-def]
    """For units whose `moments` are NONE: the sweep never calls it."""
    return False, 0, 0.0


class Unit(NamedTuple):
    add: Kernel
    remove: Kernel
    merge: Kernel
    normalize: Kernel
    finish: Kernel
    better: Kernel
    widths: tuple[int, int]
    inputs: tuple[int, int]
    sweep: int
    merges: tuple[str, str] = ("", "")
    moments: tuple[int, int] = (NONE, NONE)
    from_moments: Kernel = no_moments


@numba.njit(cache=True, nogil=True)
def no_remove(s, off, flt, k, x):  # type: ignore[no-untyped-def]
    """For units that are neither SUBTRACT nor SET: the sweep never calls it."""
    return False


@numba.njit(cache=True, nogil=True)
def no_normalize(s, off, flt):  # type: ignore[no-untyped-def]
    """For units whose states are canonical as they are."""


@numba.njit(cache=True, nogil=True)
def no_better(k, ts, created, k2, ts2, created2):  # type: ignore[no-untyped-def]
    """For units that are not QUEUE: the sweep never calls it."""
    return False
