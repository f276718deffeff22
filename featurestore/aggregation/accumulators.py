"""The accumulators of windowed aggregations: one row of int64 slots per partial aggregate,
updated event by event, merged pairwise and finished into a value. Offline evaluation, online
tiles and pushes all go through these functions, and every state is a function of the *set* of
events it has seen (exact sums, total orders, sorted sets), never of their order: that is what
makes late and out-of-order events give the same bits on both paths.

An aggregation's input arrives as one row of `xi` (int64: integers, timestamps, booleans as
0/1, and order keys or hashes, see `input_columns`) or of `xf` (float64, for sums), plus a
validity row; nulls are skipped by every function."""

from __future__ import annotations

import numba
import numpy as np

from featurestore.aggregation import exact_sum
from featurestore.values.strings import Utf8Array

COUNT, SUM, MEAN, VAR, STDDEV, MIN, MAX, FIRST, LAST, COUNT_DISTINCT = range(10)
CODES = {"count": COUNT, "sum": SUM, "mean": MEAN, "var": VAR, "stddev": STDDEV, "min": MIN,
         "max": MAX, "first": FIRST, "last": LAST, "count_distinct": COUNT_DISTINCT}

# spec columns, one spec row per aggregation
FUNC, OFFSET, FLOAT_INPUT, WINDOW, HOP = range(5)
SPEC_WIDTH = 5

W = exact_sum.WIDTH
EXACT_SET = 32  # count_distinct keeps up to this many hashes exactly, then a 256-register HLL
HLL_REGISTERS = 256
_MASK63 = np.int64(0x7FFFFFFFFFFFFFFF)
CANONICAL_NAN = np.int64(0x7FF8000000000000)


def state_width(function: int, float_input: bool) -> int:
    if function == COUNT:
        return 1
    if function in (SUM, MEAN):
        return 1 + W if float_input or function == MEAN else 2
    if function in (VAR, STDDEV):
        return 1 + 2 * W
    if function in (MIN, MAX):
        return 2
    if function in (FIRST, LAST):
        return 4
    return 1 + EXACT_SET  # COUNT_DISTINCT: mode (set size, or -1 for HLL) + slots


# ---------------------------------------------------------------------------------------------
# Inputs: how a column becomes a row of xi or xf.


@numba.njit(cache=True, nogil=True)
def _splitmix(x):  # type: ignore[no-untyped-def]
    z = np.uint64(x) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return np.int64(z ^ (z >> np.uint64(31)))


@numba.njit(cache=True, nogil=True)
def float_keys(values):  # type: ignore[no-untyped-def]
    """Float64 -> int64 keys whose signed order is the total order -inf < ... < -0.0 < 0.0 <
    ... < inf < NaN, with every NaN made the one canonical NaN."""
    bits = values.view(np.int64)
    out = np.empty(values.shape[0], np.int64)
    for i in range(values.shape[0]):
        if np.isnan(values[i]):
            out[i] = CANONICAL_NAN
        elif bits[i] < 0:
            out[i] = bits[i] ^ _MASK63
        else:
            out[i] = bits[i]
    return out


@numba.njit(cache=True, nogil=True)
def key_floats(keys):  # type: ignore[no-untyped-def]
    """The inverse of float_keys."""
    out = np.empty(keys.shape[0], np.int64)
    for i in range(keys.shape[0]):
        out[i] = keys[i] ^ _MASK63 if keys[i] < 0 else keys[i]
    return out.view(np.float64)


@numba.njit(cache=True, nogil=True)
def hash_keys(keys, is_float):  # type: ignore[no-untyped-def]
    """Distinct-count hashes of int64 values (floats as float_keys, with -0.0 equal to 0.0)."""
    out = np.empty(keys.shape[0], np.int64)
    for i in range(keys.shape[0]):
        k = keys[i]
        if is_float and k == -1:  # -0.0 after float_keys
            k = 0
        out[i] = _splitmix(k)
    return out


@numba.njit(cache=True, nogil=True)
def hash_utf8(offsets, data):  # type: ignore[no-untyped-def]
    """Distinct-count hashes of strings: FNV-1a over the UTF-8 bytes, then mixed."""
    n = offsets.shape[0] - 1
    out = np.empty(n, np.int64)
    for i in range(n):
        h = np.uint64(0xCBF29CE484222325)
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * np.uint64(0x100000001B3)
        out[i] = _splitmix(np.int64(h))
    return out


def input_row(function: int, values: np.ndarray | Utf8Array, is_float: bool
              ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(xi row, xf row) of one aggregation's input column."""
    if isinstance(values, Utf8Array):
        return hash_utf8(values.offsets, values.data), None
    if function in (SUM, MEAN, VAR, STDDEV) and (is_float or function != SUM):
        return None, np.asarray(values, np.float64)
    keys = float_keys(values) if is_float else np.asarray(values, np.int64)
    return (hash_keys(keys, is_float) if function == COUNT_DISTINCT else keys), None


# ---------------------------------------------------------------------------------------------
# States.


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
def lower_bound(a, lo, hi, x):  # type: ignore[no-untyped-def]
    """The first index in [lo, hi) of the sorted a whose value is >= x (hi if none)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True, nogil=True)
def _distinct_add(s, off, h):  # type: ignore[no-untyped-def]
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
def _distinct_merge(s, off, o, ooff):  # type: ignore[no-untyped-def]
    m = o[ooff]
    if m >= 0:
        for j in range(m):
            _distinct_add(s, off, o[ooff + 1 + j])
        return
    if s[off] >= 0:
        _to_hll(s, off)
    for j in range(1, 1 + EXACT_SET):
        a, b = s[off + j], o[ooff + j]
        merged = np.int64(0)
        for byte in range(8):
            shift = np.int64(8 * byte)
            ra = (a >> shift) & np.int64(0xFF)
            rb = (b >> shift) & np.int64(0xFF)
            merged |= max(ra, rb) << shift
        s[off + j] = merged


@numba.njit(cache=True, nogil=True)
def _distinct_value(s, off):  # type: ignore[no-untyped-def]
    if s[off] >= 0:
        return s[off]
    inverse, zeros = 0.0, 0
    for index in range(HLL_REGISTERS):
        rank = (s[off + 1 + index // 8] >> np.int64(8 * (index % 8))) & np.int64(0xFF)
        inverse += 2.0 ** -float(rank)
        zeros += rank == 0
    m = float(HLL_REGISTERS)
    estimate = 0.7213 / (1.0 + 1.079 / m) * m * m / inverse
    if estimate <= 2.5 * m and zeros > 0:
        estimate = m * np.log(m / zeros)
    return np.int64(np.round(estimate))


@numba.njit(cache=True, nogil=True)
def add_event(spec, a, s, xi, xf, m, i, ts, created):  # type: ignore[no-untyped-def]
    """Adds event i's input of aggregation a to the state row s."""
    if not m[a, i]:
        return
    f, off = spec[a, FUNC], spec[a, OFFSET]
    s[off] += 1
    if f == COUNT:
        return
    if f in (SUM, MEAN):
        if spec[a, FLOAT_INPUT] or f == MEAN:
            exact_sum.add(s[off + 1:off + 1 + W], xf[a, i])
        else:
            s[off + 1] += xi[a, i]  # Int64 sums wrap like int64 arithmetic
    elif f in (VAR, STDDEV):
        x = xf[a, i]
        exact_sum.add(s[off + 1:off + 1 + W], x)
        exact_sum.add_product(s[off + 1 + W:off + 1 + 2 * W], x, x)
    elif f in (MIN, MAX):
        k = xi[a, i]
        if s[off] == 1 or (k < s[off + 1] if f == MIN else k > s[off + 1]):
            s[off + 1] = k
    elif f in (FIRST, LAST):
        k = xi[a, i]
        if s[off] == 1 or later(ts, created, k, s[off + 1], s[off + 2], s[off + 3]) == (f == LAST):
            s[off + 1], s[off + 2], s[off + 3] = ts, created, k
    else:
        s[off] -= 1  # the first slot of a distinct count is its mode, not a count
        _distinct_add(s, off, xi[a, i])


@numba.njit(cache=True, nogil=True)
def _unsum(acc, x):
    """Takes x back out of an exact sum (finite values exactly, specials from their counts)."""
    if np.isfinite(x):
        exact_sum.add(acc, -x)
    elif np.isnan(x):
        acc[exact_sum.NAN] -= 1
    else:
        acc[exact_sum.PINF if x > 0 else exact_sum.NINF] -= 1


@numba.njit(cache=True, nogil=True)
def subtractable(f):  # type: ignore[no-untyped-def]
    return f in (COUNT, SUM, MEAN, VAR, STDDEV)


@numba.njit(cache=True, nogil=True)
def remove_event(spec, a, s, xi, xf, m, i):  # type: ignore[no-untyped-def]
    """Undoes add_event for a subtractable aggregation (count, sum, mean, var, stddev)."""
    if not m[a, i]:
        return
    f, off = spec[a, FUNC], spec[a, OFFSET]
    s[off] -= 1
    if f in (SUM, MEAN):
        if spec[a, FLOAT_INPUT] or f == MEAN:
            _unsum(s[off + 1:off + 1 + W], xf[a, i])
        else:
            s[off + 1] -= xi[a, i]
    elif f in (VAR, STDDEV):
        x = xf[a, i]
        _unsum(s[off + 1:off + 1 + W], x)
        if np.isfinite(x):
            exact_sum.add_product(s[off + 1 + W:off + 1 + 2 * W], -x, x)
        else:
            _unsum(s[off + 1 + W:off + 1 + 2 * W], x * x)


@numba.njit(cache=True, nogil=True)
def later(ts, created, key, ts2, created2, key2):  # type: ignore[no-untyped-def]
    """(ts, created, key) > (ts2, created2, key2): events are ordered by event time, then
    created time, then value, so first/last never depend on arrival order."""
    if ts != ts2:
        return ts > ts2
    if created != created2:
        return created > created2
    return key > key2


@numba.njit(cache=True, nogil=True)
def merge_state(spec, a, s, o):  # type: ignore[no-untyped-def]
    """Merges aggregation a's partial state in row o into row s."""
    f, off = spec[a, FUNC], spec[a, OFFSET]
    if f == COUNT_DISTINCT:
        _distinct_merge(s, off, o, off)
        return
    n = o[off]
    if n == 0:
        return
    first = s[off] == 0
    s[off] += n
    if f == COUNT:
        return
    if f in (SUM, MEAN):
        if spec[a, FLOAT_INPUT] or f == MEAN:
            exact_sum.merge(s[off + 1:off + 1 + W], o[off + 1:off + 1 + W])
        else:
            s[off + 1] += o[off + 1]
    elif f in (VAR, STDDEV):
        exact_sum.merge(s[off + 1:off + 1 + W], o[off + 1:off + 1 + W])
        exact_sum.merge(s[off + 1 + W:off + 1 + 2 * W], o[off + 1 + W:off + 1 + 2 * W])
    elif f in (MIN, MAX):
        k = o[off + 1]
        if first or (k < s[off + 1] if f == MIN else k > s[off + 1]):
            s[off + 1] = k
    else:
        if first or later(o[off + 1], o[off + 2], o[off + 3], s[off + 1], s[off + 2],
                           s[off + 3]) == (f == LAST):
            s[off + 1], s[off + 2], s[off + 3] = o[off + 1], o[off + 2], o[off + 3]


@numba.njit(cache=True, nogil=True)
def normalize_state(spec, a, s):  # type: ignore[no-untyped-def]
    """Canonical slots, so that equal states serialize to equal bytes."""
    f, off = spec[a, FUNC], spec[a, OFFSET]
    if f in (SUM, MEAN):
        if spec[a, FLOAT_INPUT] or f == MEAN:
            exact_sum.normalize(s[off + 1:off + 1 + W])
    elif f in (VAR, STDDEV):
        exact_sum.normalize(s[off + 1:off + 1 + W])
        exact_sum.normalize(s[off + 1 + W:off + 1 + 2 * W])


@numba.njit(cache=True, nogil=True)
def _variance(s, off):  # type: ignore[no-untyped-def]
    """Sample variance rounded once from its exact value: n*S2 - S1*S1 = n * sum (x - mean)**2
    is computed exactly from the exact sums S1 of x and S2 of x*x (the accumulator has room
    for it up to 2**32 values near the largest double), rounded correctly, and divided by
    n*(n - 1). NaN when any input was NaN or infinite; inf when n*(n-1)*var passes the largest
    double (values beyond about 1e150)."""
    n = s[off]
    a1, a2 = s[off + 1:off + 1 + W], s[off + 1 + W:off + 1 + 2 * W]
    if a1[exact_sum.NAN] or a1[exact_sum.PINF] or a1[exact_sum.NINF]:
        return np.nan
    exact_sum.normalize(a1)
    exact_sum.normalize(a2)
    total = np.zeros(W, np.int64)
    exact_sum.add_scaled(total, float(n), a2)
    exact_sum.subtract_square(total, a1)
    return exact_sum.value(total) / (float(n) * float(n - 1))


@numba.njit(cache=True, nogil=True)
def finish(spec, a, s, r, out_i, out_f, valid):  # type: ignore[no-untyped-def]
    """Aggregation a's value from state row s into column r of the outputs (out_i for
    integer-like results and order keys, out_f for floats). count, count_distinct and sum are
    0 over no events; the others are null."""
    f, off = spec[a, FUNC], spec[a, OFFSET]
    n = s[off]
    valid[a, r] = True
    if f == COUNT:
        out_i[a, r] = n
    elif f == COUNT_DISTINCT:
        out_i[a, r] = _distinct_value(s, off)
    elif f == SUM and not spec[a, FLOAT_INPUT]:
        out_i[a, r] = s[off + 1] if n else 0
    elif f == SUM:
        out_f[a, r] = exact_sum.value(s[off + 1:off + 1 + W])
    elif n == 0:
        valid[a, r] = False
    elif f == MEAN:
        out_f[a, r] = exact_sum.value(s[off + 1:off + 1 + W]) / float(n)
    elif f in (VAR, STDDEV):
        if n < 2:
            valid[a, r] = False
        else:
            v = _variance(s, off)
            out_f[a, r] = v if f == VAR else np.sqrt(v)
    elif f in (MIN, MAX):
        out_i[a, r] = s[off + 1]
    else:
        out_i[a, r] = s[off + 3]
