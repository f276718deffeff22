"""stddev: the square root of var, from var's state."""

import numba
import numpy as np

from featurestore.aggregation.functions import var


@numba.njit(cache=True, nogil=True)
def finish(s, off, flt):  # type: ignore[no-untyped-def]
    if s[off] < 2:
        return False, np.int64(0), 0.0
    return True, np.int64(0), np.sqrt(var.variance(s, off))


UNIT = var.UNIT._replace(finish=finish)
