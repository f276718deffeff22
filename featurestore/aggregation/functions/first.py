"""first: the value of the earliest event, null over no events. Events are ordered by event
time, then created time, then value, so the result never depends on arrival order. State:
[n, ts, created, key]; last shares its kernels, with `earliest` False."""

import numba
import numpy as np

from featurestore.aggregation.inputs import key_float
from featurestore.aggregation.unit import KEYS, QUEUE, Unit, no_normalize, no_remove


@numba.njit(cache=True, nogil=True)
def later(ts, created, key, ts2, created2, key2):  # type: ignore[no-untyped-def]
    """(ts, created, key) > (ts2, created2, key2)."""
    if ts != ts2:
        return ts > ts2
    if created != created2:
        return created > created2
    return key > key2


@numba.njit(cache=True, nogil=True)
def keep(s, off, n, ts, created, k, earliest):  # type: ignore[no-untyped-def]
    """Adds n events whose first (or last) is (ts, created, k)."""
    if s[off] == 0 or later(ts, created, k, s[off + 1], s[off + 2], s[off + 3]) != earliest:
        s[off + 1], s[off + 2], s[off + 3] = ts, created, k
    s[off] += n


@numba.njit(cache=True, nogil=True)
def add(s, off, flt, k, x, ts, created):  # type: ignore[no-untyped-def]
    keep(s, off, 1, ts, created, k, True)


@numba.njit(cache=True, nogil=True)
def merge(s, off, flt, o):  # type: ignore[no-untyped-def]
    if o[off]:
        keep(s, off, o[off], o[off + 1], o[off + 2], o[off + 3], True)


@numba.njit(cache=True, nogil=True)
def finish(s, off, flt):  # type: ignore[no-untyped-def]
    if s[off] == 0:
        return False, np.int64(0), 0.0
    return True, s[off + 3], key_float(s[off + 3]) if flt else 0.0


@numba.njit(cache=True, nogil=True)
def better(k, ts, created, k2, ts2, created2):  # type: ignore[no-untyped-def]
    return not later(ts, created, k, ts2, created2, k2)


UNIT = Unit(add, no_remove, merge, no_normalize, finish, better, widths=(4, 4),
            inputs=(KEYS, KEYS), sweep=QUEUE)
