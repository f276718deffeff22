"""max: min's kernels with the order reversed."""

import numba

from featurestore.aggregation.functions import min as lowest


@numba.njit(cache=True, nogil=True)
def add(s, off, flt, k, x, ts, created):  # type: ignore[no-untyped-def]
    lowest.keep(s, off, 1, k, False)


@numba.njit(cache=True, nogil=True)
def merge(s, off, flt, o):  # type: ignore[no-untyped-def]
    if o[off]:
        lowest.keep(s, off, o[off], o[off + 1], False)


@numba.njit(cache=True, nogil=True)
def better(k, ts, created, k2, ts2, created2):  # type: ignore[no-untyped-def]
    return k > k2


UNIT = lowest.UNIT._replace(add=add, merge=merge, better=better)
