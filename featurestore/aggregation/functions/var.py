"""var: the sample variance, null under two events. State: [n, exact sum of x, exact sum of
x*x]; stddev shares it."""

import numba
import numpy as np

from featurestore.aggregation import exact_sum
from featurestore.aggregation.unit import FLOATS, SPREAD, SUBTRACT, Unit, no_better

W = exact_sum.WIDTH


@numba.njit(cache=True, nogil=True)
def add(s, off, flt, k, x, ts, created):  # type: ignore[no-untyped-def]
    s[off] += 1
    exact_sum.add(s[off + 1:off + 1 + W], x)
    exact_sum.add_product(s[off + 1 + W:off + 1 + 2 * W], x, x)


@numba.njit(cache=True, nogil=True)
def remove(s, off, flt, k, x):  # type: ignore[no-untyped-def]
    s[off] -= 1
    exact_sum.subtract(s[off + 1:off + 1 + W], x)
    if np.isfinite(x):
        exact_sum.add_product(s[off + 1 + W:off + 1 + 2 * W], -x, x)
    else:
        exact_sum.subtract(s[off + 1 + W:off + 1 + 2 * W], x * x)
    return True


@numba.njit(cache=True, nogil=True)
def merge(s, off, flt, o):  # type: ignore[no-untyped-def]
    s[off] += o[off]
    exact_sum.merge(s[off + 1:off + 1 + W], o[off + 1:off + 1 + W])
    exact_sum.merge(s[off + 1 + W:off + 1 + 2 * W], o[off + 1 + W:off + 1 + 2 * W])


@numba.njit(cache=True, nogil=True)
def normalize(s, off, flt):  # type: ignore[no-untyped-def]
    exact_sum.normalize(s[off + 1:off + 1 + W])
    exact_sum.normalize(s[off + 1 + W:off + 1 + 2 * W])


@numba.njit(cache=True, nogil=True)
def spread(s, off):  # type: ignore[no-untyped-def]
    """n*S2 - S1*S1 = n * sum (x - mean)**2, computed exactly from the exact sums S1 of x and
    S2 of x*x (the accumulator has room for it up to 2**32 values near the largest double)
    and rounded once; NaN when any input was NaN or infinite."""
    a1, a2 = s[off + 1:off + 1 + W], s[off + 1 + W:off + 1 + 2 * W]
    if a1[exact_sum.NAN] or a1[exact_sum.PINF] or a1[exact_sum.NINF]:
        return np.nan
    exact_sum.normalize(a1)
    exact_sum.normalize(a2)
    return exact_sum.scaled_minus_square(s[off], a2, a1)


@numba.njit(cache=True, nogil=True)
def from_moments(n, total, spread):  # type: ignore[no-untyped-def]
    """The sample variance: the spread, rounded once, over n*(n - 1); inf when that passes
    the largest double (values beyond about 1e150)."""
    if n < 2:
        return False, np.int64(0), 0.0
    return True, np.int64(0), spread / (float(n) * float(n - 1))


@numba.njit(cache=True, nogil=True)
def finish(s, off, flt):  # type: ignore[no-untyped-def]
    return from_moments(s[off], 0.0, spread(s, off) if s[off] >= 2 else 0.0)


UNIT = Unit(add, remove, merge, normalize, finish, no_better, widths=(1 + 2 * W, 1 + 2 * W),
            inputs=(FLOATS, FLOATS), sweep=SUBTRACT, moments=(SPREAD, SPREAD),
            from_moments=from_moments,
            merges=("+" + 2 * exact_sum.MERGES,) * 2)
