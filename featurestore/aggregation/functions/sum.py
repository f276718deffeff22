"""sum: 0 over no events. Int64 columns add in int64 arithmetic (wrapping), state [n, total];
Float64 columns add exactly and round once, state [n, exact sum]."""

import numba
import numpy as np

from featurestore.aggregation import exact_sum
from featurestore.aggregation.unit import FLOATS, KEYS, NONE, SUBTRACT, TOTAL, Unit, no_better

W = exact_sum.WIDTH


@numba.njit(cache=True, nogil=True)
def add(s, off, flt, k, x, ts, created):  # type: ignore[no-untyped-def]
    s[off] += 1
    if flt:
        exact_sum.add(s[off + 1:off + 1 + W], x)
    else:
        s[off + 1] += k


@numba.njit(cache=True, nogil=True)
def remove(s, off, flt, k, x):  # type: ignore[no-untyped-def]
    s[off] -= 1
    if flt:
        exact_sum.subtract(s[off + 1:off + 1 + W], x)
    else:
        s[off + 1] -= k
    return True


@numba.njit(cache=True, nogil=True)
def merge(s, off, flt, o):  # type: ignore[no-untyped-def]
    s[off] += o[off]
    if flt:
        exact_sum.merge(s[off + 1:off + 1 + W], o[off + 1:off + 1 + W])
    else:
        s[off + 1] += o[off + 1]


@numba.njit(cache=True, nogil=True)
def normalize(s, off, flt):  # type: ignore[no-untyped-def]
    if flt:
        exact_sum.normalize(s[off + 1:off + 1 + W])


@numba.njit(cache=True, nogil=True)
def from_moments(n, total, spread):  # type: ignore[no-untyped-def]
    return True, np.int64(0), total


@numba.njit(cache=True, nogil=True)
def finish(s, off, flt):  # type: ignore[no-untyped-def]
    if flt:
        return from_moments(s[off], exact_sum.value(s[off + 1:off + 1 + W]), 0.0)
    return True, s[off + 1] if s[off] else np.int64(0), 0.0


UNIT = Unit(add, remove, merge, normalize, finish, no_better, widths=(2, 1 + W),
            inputs=(KEYS, FLOATS), sweep=SUBTRACT, moments=(NONE, TOTAL),
            from_moments=from_moments,
            merges=("++", "+" + exact_sum.MERGES))
