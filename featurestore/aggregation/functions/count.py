"""count: the events with a value. State: [n]."""

import numba

from featurestore.aggregation.unit import COUNT, KEYS, SUBTRACT, Unit, no_better, no_normalize


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
def from_moments(n, total, spread):  # type: ignore[no-untyped-def]
    return True, n, 0.0


@numba.njit(cache=True, nogil=True)
def finish(s, off, flt):  # type: ignore[no-untyped-def]
    return from_moments(s[off], 0.0, 0.0)


UNIT = Unit(add, remove, merge, no_normalize, finish, no_better, widths=(1, 1),
            inputs=(KEYS, KEYS), sweep=SUBTRACT, merges=("+", "+"), moments=(COUNT, COUNT),
            from_moments=from_moments)
