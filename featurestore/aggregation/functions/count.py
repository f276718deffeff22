"""count: the events with a value. State: [n]."""

import numba

from featurestore.aggregation.unit import KEYS, SUBTRACT, Unit, no_better, no_normalize


@numba.njit(cache=True, nogil=True)
def add(s, off, flt, k, x, ts, created):  # type: ignore[no-untyped-def]
    s[off] += 1


@numba.njit(cache=True, nogil=True)
def remove(s, off, flt, k, x):  # type: ignore[no-untyped-def]
    s[off] -= 1
    return True


@numba.njit(cache=True, nogil=True)
def merge(s, off, flt, o):  # type: ignore[no-untyped-def]
    s[off] += o[off]


@numba.njit(cache=True, nogil=True)
def finish(s, off, flt):  # type: ignore[no-untyped-def]
    return True, s[off], 0.0


UNIT = Unit(add, remove, merge, no_normalize, finish, no_better, widths=(1, 1),
            inputs=(KEYS, KEYS), sweep=SUBTRACT, merges=("+", "+"))
