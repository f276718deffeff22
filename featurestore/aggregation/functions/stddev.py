"""stddev: the square root of var, from var's state."""

import numba
import numpy as np

from featurestore.aggregation.functions import var


@numba.njit(cache=True, nogil=True)
def from_moments(n, total, spread):  # type: ignore[no-untyped-def]
    valid, _, variance = var.from_moments(n, total, spread)
    return valid, np.int64(0), np.sqrt(variance)


@numba.njit(cache=True, nogil=True)
def finish(s, off, flt):  # type: ignore[no-untyped-def]
    return from_moments(s[off], 0.0, var.spread(s, off) if s[off] >= 2 else 0.0)


UNIT = var.UNIT._replace(finish=finish, from_moments=from_moments)
