"""last: first's kernels with the order reversed."""

import numba

from featurestore.aggregation.functions import first


@numba.njit(cache=True, nogil=True)
def add(s, off, flt, k, x, ts, created):  # type: ignore[no-untyped-def]
    first.keep(s, off, 1, ts, created, k, False)


@numba.njit(cache=True, nogil=True)
def merge(s, off, flt, o):  # type: ignore[no-untyped-def]
    if o[off]:
        first.keep(s, off, o[off], o[off + 1], o[off + 2], o[off + 3], False)


@numba.njit(cache=True, nogil=True)
def better(k, ts, created, k2, ts2, created2):  # type: ignore[no-untyped-def]
    return first.later(ts, created, k, ts2, created2, k2)


UNIT = first.UNIT._replace(add=add, merge=merge, better=better)
