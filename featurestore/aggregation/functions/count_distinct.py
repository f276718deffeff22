"""count_distinct: exact up to EXACT_SET distinct values (a sorted set of their hashes), then
a HyperLogLog estimate over HLL_REGISTERS one-byte registers, eight to a slot; -0.0 counts as
0.0 and every NaN as one value. State: [mode (the set's size, or -1 once an estimate),
EXACT_SET slots]."""

import numba
import numpy as np

from featurestore.aggregation.events import lower_bound
from featurestore.aggregation.unit import HASHES, SET, Unit, no_better, no_normalize

EXACT_SET = 32
HLL_REGISTERS = 256


@numba.njit(cache=True, nogil=True)
def _clz56(w):  # type: ignore[no-untyped-def]
    """Leading zeros of the low 56 bits of w, plus one (the HLL rank), at most 57."""
    rank = 1
    bit = np.int64(1) << np.int64(55)
    while rank <= 56 and (w & bit) == 0:
        rank += 1
        bit >>= np.int64(1)
    return rank


@numba.njit(cache=True, nogil=True)
def _hll_add(s, off, h):  # type: ignore[no-untyped-def]
    index = (h >> np.int64(56)) & np.int64(0xFF)
    rank = np.int64(_clz56(h & np.int64(0x00FFFFFFFFFFFFFF)))
    slot = off + 1 + index // 8
    shift = np.int64(8) * (index % 8)
    current = (s[slot] >> shift) & np.int64(0xFF)
    if rank > current:
        s[slot] = (s[slot] & ~(np.int64(0xFF) << shift)) | (rank << shift)


@numba.njit(cache=True, nogil=True)
def _to_hll(s, off):  # type: ignore[no-untyped-def]
    n = s[off]
    hashes = s[off + 1:off + 1 + n].copy()
    s[off + 1:off + 1 + EXACT_SET] = 0
    s[off] = -1
    for h in hashes:
        _hll_add(s, off, h)


@numba.njit(cache=True, nogil=True)
def _add_hash(s, off, h):  # type: ignore[no-untyped-def]
    n = s[off]
    if n < 0:
        _hll_add(s, off, h)
        return
    lo = lower_bound(s, off + 1, off + 1 + n, h)  # in the sorted exact set
    if lo < off + 1 + n and s[lo] == h:
        return
    if n == EXACT_SET:
        _to_hll(s, off)
        _hll_add(s, off, h)
        return
    for j in range(off + n, lo - 1, -1):
        s[j + 1] = s[j]
    s[lo] = h
    s[off] = n + 1


@numba.njit(cache=True, nogil=True)
def add(s, off, flt, k, x, ts, created):  # type: ignore[no-untyped-def]
    _add_hash(s, off, k)


@numba.njit(cache=True, nogil=True)
def remove(s, off, flt, k, x):  # type: ignore[no-untyped-def]
    """Takes a hash out of the exact set (the slots then are those of the set without it);
    an estimate's registers cannot lose one."""
    n = s[off]
    if n < 0:
        return False
    lo = lower_bound(s, off + 1, off + 1 + n, k)
    for j in range(lo, off + n):
        s[j] = s[j + 1]
    s[off + n] = 0
    s[off] = n - 1
    return True


@numba.njit(cache=True, nogil=True)
def merge(s, off, flt, o):  # type: ignore[no-untyped-def]
    m = o[off]
    if m >= 0:
        for j in range(m):
            _add_hash(s, off, o[off + 1 + j])
        return
    if s[off] >= 0:
        _to_hll(s, off)
    for j in range(1, 1 + EXACT_SET):
        a, b = s[off + j], o[off + j]
        merged = np.int64(0)
        for byte in range(8):
            shift = np.int64(8 * byte)
            ra = (a >> shift) & np.int64(0xFF)
            rb = (b >> shift) & np.int64(0xFF)
            merged |= max(ra, rb) << shift
        s[off + j] = merged


@numba.njit(cache=True, nogil=True)
def finish(s, off, flt):  # type: ignore[no-untyped-def]
    if s[off] >= 0:
        return True, s[off], 0.0
    inverse, zeros = 0.0, 0
    for index in range(HLL_REGISTERS):
        rank = (s[off + 1 + index // 8] >> np.int64(8 * (index % 8))) & np.int64(0xFF)
        inverse += 2.0 ** -float(rank)
        zeros += rank == 0
    m = float(HLL_REGISTERS)
    estimate = 0.7213 / (1.0 + 1.079 / m) * m * m / inverse
    if estimate <= 2.5 * m and zeros > 0:
        estimate = m * np.log(m / zeros)
    return True, np.int64(np.round(estimate)), 0.0


UNIT = Unit(add, remove, merge, no_normalize, finish, no_better,
            widths=(1 + EXACT_SET, 1 + EXACT_SET), inputs=(HASHES, HASHES), sweep=SET)
