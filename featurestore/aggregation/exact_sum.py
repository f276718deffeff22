"""Exact, order-independent, mergeable sums of float64 values and of exact float64 products.

Windowed sum/mean/var/stddev must give bit-identical results however events are ordered or
split into tiles that are merged later. Floating-point addition is not associative, so the
sum is kept exactly, as a big fixed-point integer, and rounded once, correctly, at the end.

An accumulator is a 1-D int64 array of WIDTH slots (zeros = empty sum):

    acc[0:TOP]   limbs: acc[i] counts units of 2**(BASE + 32*i); |acc[i]| stays < 2**53
    acc[TOP]     top limb (carries only), signed, unbounded within int64
    acc[NAN]     number of NaNs added (also inf*0 products)
    acc[PINF]    number of +inf added
    acc[NINF]    number of -inf added
    acc[PENDING] operations since the last normalize (bounds the limbs' growth)
    acc[LOW]     TOP - the lowest limb that may be nonzero (0: none below TOP)
    acc[HIGH]    1 + the highest limb that may be nonzero (0: none)

LOW and HIGH bound the limbs normalize and rounding visit: a sum of everyday values touches
three or four limbs of the 138, and walking all of them made each value cost ~100 ns.

BASE = -2176 reaches the lowest bit of a product of two subnormals (2**-2148); direct adds
reach up to 2**2208, where the top limb starts: room for the variance's exact n*S2 - S1*S1
(up to 2**2112 for 2**32 values near the largest double), and the top limb holds sums up to
2**2271. Each add puts less than 2**32 into up to
three limbs and bumps PENDING; after LIMIT pending operations the carries are propagated,
which keeps every limb far from int64 overflow.

Canonical form (normalize): PENDING = 0 and sign-magnitude limbs, i.e. every limb has the
sign of the value and |acc[i]| < 2**32 below the top. That representation of an integer is
unique, so equal sums give equal arrays, whatever produced them."""

from __future__ import annotations

import math

import numba
import numpy as np

BASE = -2176                  # exponent of limb 0's unit (a multiple of 32: limb 100 is 2**1024)
TOP = 137                     # top limb; direct adds reach limb 136 at most
NAN = TOP + 1
PINF = TOP + 2
NINF = TOP + 3
PENDING = TOP + 4
LOW = TOP + 5
HIGH = TOP + 6
WIDTH = TOP + 7
LIMIT = 1 << 20               # pending operations before carries are propagated
_MASK = (1 << 32) - 1
_EMIN = -1074                 # exponent of the smallest subnormal's unit
_QMIN = _EMIN - BASE          # rounding position of subnormals, relative to BASE
_INF_LIMB = (1024 - BASE) >> 5  # a nonzero limb at or above this one means |sum| >= 2**1024
_TWO53 = 9007199254740992.0
# How merge treats each slot (unit.py's `merges`): limbs and counters add, LOW and HIGH keep
# the larger. (merge also counts itself in PENDING, which bounds the limbs' growth between
# carries; a reader adding tiles slot by slot bounds it by normalizing, see merge_windows.)
MERGES = "+" * (PENDING + 1) + "^^"

_jit = numba.njit(cache=True, nogil=True)
_inline = numba.njit(cache=True, nogil=True, inline="always")  # no call, no refcounts


@_jit
def normalize(acc):
    """Propagate carries into canonical sign-magnitude form (idempotent), visiting only the
    limbs between LOW and HIGH (plus the two a carry can reach), then tighten LOW and HIGH
    to the nonzero limbs so that they too are a function of the value alone."""
    acc[PENDING] = 0
    if acc[HIGH] == 0:
        return
    lo, end = TOP - acc[LOW], min(acc[HIGH] + 2, TOP)
    c = 0
    for i in range(lo, end):
        v = acc[i] + c
        acc[i] = v & _MASK
        c = v >> 32
    if end == TOP:  # the top limb may be involved: the general case
        t = acc[TOP] + c
        acc[TOP] = t
        if t < 0:
            c = 0
            for i in range(lo, TOP):
                v = c - acc[i]
                acc[i] = -(v & _MASK)
                c = v >> 32
            acc[TOP] = t - c
    elif c < 0:  # c == -1: the value is -(2**(32*end) - the limbs): store its magnitude
        c = 0
        for i in range(lo, end):
            v = c - acc[i]
            acc[i] = -(v & _MASK)
            c = v >> 32
        acc[end] = -(1 + c)
    h = min(end, TOP)
    while h >= lo and acc[h] == 0:
        h -= 1
    if h < lo:
        acc[LOW] = 0
        acc[HIGH] = 0
        return
    low = lo
    while acc[low] == 0:
        low += 1
    acc[LOW] = TOP - low
    acc[HIGH] = h + 1


@_inline
def _add_int(acc, m, e):
    """acc += m * 2**e for an integer |m| < 2**60 and e >= BASE (spread over three limbs)."""
    if acc[PENDING] >= LIMIT:
        normalize(acc)
    acc[PENDING] += 1
    k = (e - BASE) >> 5
    if TOP - k > acc[LOW]:
        acc[LOW] = TOP - k
    if k + 3 > acc[HIGH]:
        acc[HIGH] = k + 3
    put(acc, 0, m, e)


@_inline
def put(limbs, first, m, e):
    """Adds m * 2**e (an integer |m| < 2**60, e >= BASE) to the limbs (limbs[i] counts units
    of 2**(BASE + 32*(first + i))), less than 2**32 to each of three: no carries, no
    bookkeeping."""
    o = e - BASE
    k = (o >> 5) - first
    s = o & 31
    a = -m if m < 0 else m
    t = (a & _MASK) << s
    u = ((a >> 32) << s) + (t >> 32)
    if m < 0:
        limbs[k] -= t & _MASK
        limbs[k + 1] -= u & _MASK
        limbs[k + 2] -= u >> 32
    else:
        limbs[k] += t & _MASK
        limbs[k + 1] += u & _MASK
        limbs[k + 2] += u >> 32


@_inline
def split(ax):
    """(m, e) with ax = m * 2**e exactly, for finite ax > 0: m < 2**53 an integer, e >= -1074
    (m >= 2**52 unless ax is subnormal), read off ax's bits."""
    b = np.float64(ax).view(np.int64)
    biased = b >> 52
    m = b & 0xFFFFFFFFFFFFF
    if biased == 0:  # subnormal
        return m, _EMIN
    return m | (1 << 52), biased - 1075


@_inline
def _add_special(acc, p):
    """Count a NaN or infinity."""
    if p != p:
        acc[NAN] += 1
    elif p > 0:
        acc[PINF] += 1
    else:
        acc[NINF] += 1


@_inline
def add(acc, x):
    """acc += x exactly; NaN and infinities only go to their counters."""
    if x - x == 0.0:  # finite
        if x != 0.0:
            m, e = split(abs(x))
            _add_int(acc, -m if x < 0 else m, e)
    else:
        _add_special(acc, x)


@_inline
def subtract(acc, x):
    """Takes an added x back out: finite values exactly, NaN and infinities from their
    counters."""
    if x - x == 0.0:
        add(acc, -x)
    elif x != x:
        acc[NAN] -= 1
    else:
        acc[PINF if x > 0 else NINF] -= 1


@_inline
def product(mx, my):
    """(lo, hi) with mx*my = hi * 2**52 + lo, lo < 2**53 and hi < 2**55, for integers
    mx < 2**53 and my < 2**53, from 26/27-bit partial products."""
    x1, x0 = mx >> 26, mx & 0x3FFFFFF
    y1, y0 = my >> 26, my & 0x3FFFFFF
    mid = x0 * y1 + x1 * y0                          # < 2**54
    lo = x0 * y0 + ((mid & 0x3FFFFFF) << 26)          # < 2**53
    return lo, x1 * y1 + (mid >> 26)


@_inline
def add_product(acc, x, y):
    """acc += x*y exactly (no rounding, no overflow or underflow). A non-finite factor is
    classified like IEEE x*y."""
    if x - x == 0.0 and y - y == 0.0:
        if x == 0.0 or y == 0.0:
            return
        mx, ex = split(abs(x))
        my, ey = split(abs(y))
        lo, hi = product(mx, my)
        if (x < 0) != (y < 0):
            lo, hi = -lo, -hi
        _add_int(acc, lo, ex + ey)
        _add_int(acc, hi, ex + ey + 52)
    else:
        _add_special(acc, x * y)


@_jit
def scaled_minus_square(n, sq, s):
    """n*sq - s*s exactly, correctly rounded, for a count 0 <= n < 2**63 and normalized sums
    of doubles sq and s without specials (the variance's n*S2 - S1*S1). Schoolbook products
    of the 32-bit limbs go into a few int64 columns (each below 2**64 as uint64, split in
    halves: no column can overflow), whose carries then give the result's limbs; its
    rounding is value's. s's limbs start at 2**-1088, so no product bit falls below
    2**BASE."""
    return spread(n, sq, TOP - sq[LOW], sq[HIGH], 0, s, TOP - s[LOW], s[HIGH], 0,
                  np.empty(0, np.int64))


@_jit
def spread(n, sq, l2, h2, b2, s, l1, h1, b1, c):
    """scaled_minus_square of any sign-magnitude limbs: limb k of sq is sq[k - b2], nonzero
    only for l2 <= k < h2, and limb i of s is s[i - b1], for l1 <= i < h1 (h = 0: none).
    c: scratch for the columns of the products (a larger one is made if it is too short)."""
    if h1 == 0 and (h2 == 0 or n == 0):
        return 0.0
    shift = BASE >> 5                       # limb i*j of s*s is limb i + j + shift
    lo = min(2 * l1 + shift if h1 else l2, l2 if h2 else 2 * l1 + shift)
    hi = max(2 * h1 + shift if h1 else 0, h2 + 2 if h2 else 0) + 1
    base = max(lo - 2, 0)                   # rounding may read two limbs below the lowest
    size = hi - base
    if c.shape[0] < size:
        c = np.zeros(size, np.int64)
    else:
        c[:size] = 0
    halves = (np.uint64(n) & np.uint64(_MASK), np.uint64(n) >> np.uint64(32))
    for k in range(l2, h2):
        limb = np.uint64(abs(sq[k - b2]))
        sign = -1 if sq[k - b2] < 0 else 1
        for h in range(2):
            p = halves[h] * limb
            c[k + h - base] += sign * np.int64(p & np.uint64(_MASK))
            c[k + h + 1 - base] += sign * np.int64(p >> np.uint64(32))
    for i in range(l1, h1):
        if s[i - b1] == 0:
            continue
        x = np.uint64(abs(s[i - b1]))
        for j in range(i, h1):
            p = x * np.uint64(abs(s[j - b1]))
            twice = 1 if i == j else 2  # s has one sign: every product is positive
            c[i + j + shift - base] -= twice * np.int64(p & np.uint64(_MASK))
            c[i + j + shift + 1 - base] -= twice * np.int64(p >> np.uint64(32))
    carry = 0
    for k in range(size):
        v = c[k] + carry
        c[k] = v & _MASK
        carry = v >> 32
    neg = carry < 0  # then c holds 2**(32*len(c)) + the value: take its magnitude
    if neg:
        carry = 0
        for k in range(size):
            v = carry - c[k]
            c[k] = -(v & _MASK)
            carry = v >> 32
    top = size - 1
    while top >= 0 and c[top] == 0:
        top -= 1
    if top < 0:
        return 0.0
    return round_limbs(c, base, lo, top + base)


@_jit
def merge(acc, other):
    """acc += other exactly (other is unchanged). Both have at most LIMIT pending operations,
    so the sum of their limbs is still far from overflow; carry it if the total exceeds LIMIT."""
    if other[HIGH] == 0:
        lo, hi = 0, 0
    else:
        lo, hi = TOP - other[LOW], other[HIGH]
    for i in range(lo, hi):
        acc[i] += other[i]
    acc[LOW] = max(acc[LOW], other[LOW])
    acc[HIGH] = max(acc[HIGH], other[HIGH])
    acc[NAN] += other[NAN]
    acc[PINF] += other[PINF]
    acc[NINF] += other[NINF]
    acc[PENDING] += other[PENDING] + 1
    if acc[PENDING] > LIMIT:
        normalize(acc)


@_jit
def _bitlen(v):
    """Number of bits of 0 < v < 2**63."""
    n = 1
    for s in (32, 16, 8, 4, 2, 1):
        if v >> s:
            v >>= s
            n += s
    return n


@_jit
def _limb(acc, i, neg):
    """Magnitude of limb i of a normalized accumulator."""
    return -acc[i] if neg else acc[i]


@_jit
def _round_finite(acc):
    """Correctly rounded (half-even) value of the finite part of a normalized accumulator."""
    h = acc[HIGH] - 1
    while h >= 0 and acc[h] == 0:
        h -= 1
    if h < 0:
        return 0.0
    return round_limbs(acc, 0, TOP - acc[LOW], h)


@_inline
def round_limbs(limbs, base, low, h):
    """Correctly rounded (half-even) value of the sum of limbs[i - base] * 2**(BASE + 32*i)
    over low <= i <= h: sign-magnitude limbs (each with the value's sign, magnitude below
    2**32 but for limb h, which is nonzero), base <= max(low - 2, 0)."""
    neg = limbs[h - base] < 0
    sign = -1.0 if neg else 1.0
    if h >= _INF_LIMB:
        return sign * math.inf
    top = 32 * h + _bitlen(_limb(limbs, h - base, neg)) - 1  # highest set bit, from BASE
    q = max(top - 52, _QMIN)                           # position of the result's last bit
    pos = q - 1                                        # keep one more bit: the rounding bit
    if pos > top:
        return sign * 0.0                             # below half the smallest subnormal
    j = pos >> 5
    b = pos & 31
    w = _limb(limbs, j - base, neg) >> b               # bits pos .. top (at most 54 of them)
    if j + 1 <= h:
        w |= _limb(limbs, j + 1 - base, neg) << (32 - b)
    if j + 2 <= h and b > 10:
        w |= _limb(limbs, j + 2 - base, neg) << (64 - b)
    sticky = (_limb(limbs, j - base, neg) & ((1 << b) - 1)) != 0
    i = j - 1
    while not sticky and i >= low:
        sticky = limbs[i - base] != 0
        i -= 1
    r = w >> 1
    if (w & 1) and (sticky or (r & 1)):
        r += 1
    return sign * math.ldexp(float(r), q + BASE)      # exact, or inf past the largest double


@_jit
def _special(acc):
    """NaN/inf from the special counters, or 0.0 when there are none."""
    if acc[NAN] > 0 or (acc[PINF] > 0 and acc[NINF] > 0):
        return math.nan
    if acc[PINF] > 0:
        return math.inf
    if acc[NINF] > 0:
        return -math.inf
    return 0.0


@_jit
def value(acc):
    """The exact sum correctly rounded to float64 (leaves acc normalized). An exact zero is
    +0.0; NaN if a NaN or both infinities were added, else the infinity that was added."""
    normalize(acc)
    s = _special(acc)
    if s != 0.0:
        return s
    return _round_finite(acc)
