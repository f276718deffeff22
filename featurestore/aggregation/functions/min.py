"""min: null over no events; floats in their total order (-0.0 below 0.0, NaN above inf).
State: [n, key]; max shares its kernels, with `lowest` False."""

import numba
import numpy as np

from featurestore.aggregation.inputs import key_float
from featurestore.aggregation.unit import KEYS, QUEUE, Unit, no_normalize, no_remove


@numba.njit(cache=True, nogil=True)
def keep(s, off, n, k, lowest):  # type: ignore[no-untyped-def]
    """Adds n events whose extreme is k."""
    if s[off] == 0 or (k < s[off + 1] if lowest else k > s[off + 1]):
        s[off + 1] = k
    s[off] += n


@numba.njit(cache=True, nogil=True)
def add(s, off, flt, k, x, ts, created):  # type: ignore[no-untyped-def]
    keep(s, off, 1, k, True)


@numba.njit(cache=True, nogil=True)
def merge(s, off, flt, o):  # type: ignore[no-untyped-def]
    if o[off]:
        keep(s, off, o[off], o[off + 1], True)


@numba.njit(cache=True, nogil=True)
def finish(s, off, flt):  # type: ignore[no-untyped-def]
    if s[off] == 0:
        return False, np.int64(0), 0.0
    return True, s[off + 1], key_float(s[off + 1]) if flt else 0.0


@numba.njit(cache=True, nogil=True)
def better(k, ts, created, k2, ts2, created2):  # type: ignore[no-untyped-def]
    return k < k2


UNIT = Unit(add, no_remove, merge, no_normalize, finish, better, widths=(2, 2),
            inputs=(KEYS, KEYS), sweep=QUEUE)
