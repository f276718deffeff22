"""mean: null over no events; the exact sum (of Int64 columns too) rounded once, over n.
State: sum's over floats."""

import numba
import numpy as np

from featurestore.aggregation import exact_sum
from featurestore.aggregation.functions import sum as total
from featurestore.aggregation.unit import FLOATS, SUBTRACT, TOTAL, Unit, no_better

W = exact_sum.WIDTH


@numba.njit(cache=True, nogil=True)
def add(s, off, flt, k, x, ts, created):  # type: ignore[no-untyped-def]
    total.add(s, off, True, k, x, ts, created)


@numba.njit(cache=True, nogil=True)
def remove(s, off, flt, k, x):  # type: ignore[no-untyped-def]
    return total.remove(s, off, True, k, x)


@numba.njit(cache=True, nogil=True)
def merge(s, off, flt, o):  # type: ignore[no-untyped-def]
    total.merge(s, off, True, o)


@numba.njit(cache=True, nogil=True)
def normalize(s, off, flt):  # type: ignore[no-untyped-def]
    total.normalize(s, off, True)


@numba.njit(cache=True, nogil=True)
def from_moments(n, total, spread):  # type: ignore[no-untyped-def]
    if n == 0:
        return False, np.int64(0), 0.0
    return True, np.int64(0), total / float(n)


@numba.njit(cache=True, nogil=True)
def finish(s, off, flt):  # type: ignore[no-untyped-def]
    n = s[off]
    return from_moments(n, exact_sum.value(s[off + 1:off + 1 + W]) if n else 0.0, 0.0)


UNIT = Unit(add, remove, merge, normalize, finish, no_better, widths=(1 + W, 1 + W),
            inputs=(FLOATS, FLOATS), sweep=SUBTRACT, moments=(TOTAL, TOTAL),
            from_moments=from_moments,
            merges=("+" + exact_sum.MERGES,) * 2)
