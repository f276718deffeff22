"""Exact sums in a fixed run of limbs: the backfill sweep's fast path for sums, means and
variances of an entity whose values are all finite.

exact_sum's accumulator spans every double (138 limbs) and, as values come, tracks which limbs
are in use and when carries are due. A sweep knows an entity's values before it starts: their
exponents bound the limbs any window's sum can reach, so its sums live in just those limbs
(the same 32-bit limbs, units of 2**(BASE + 32*i), from limb `first` on), and adding or taking
out a value is three additions, with no bookkeeping and no carries: each limb gets less than
2**32 per value in the window, and a window holds fewer than 2**30 values. Carries are
propagated when a value is read, which is then rounded by exact_sum's one rounding: the same
integer, the same bits."""

from __future__ import annotations

import numba

from featurestore.aggregation import exact_sum
from featurestore.aggregation.exact_sum import BASE, put, split

LIMBS = 24                      # at most, for a sum (its squares take at most twice as many)
MAX_EVENTS = 1 << 30            # more values than this in a window could overflow a limb
_MASK = (1 << 32) - 1
_MIN_SQUARE_EXP = -1024         # smallest exponent whose square's limbs spread() can place

_jit = numba.njit(cache=True, nogil=True)  # once per value read: kept out of the sweep's loop
_inline = numba.njit(cache=True, nogil=True, inline="always")


@_inline
def layout(xf, m, a, lo, hi, squares):
    """(first, limbs, first_sq, limbs_sq): the first limb and how many limbs hold any sum of
    row a's values xf[a, lo:hi] (where m), and with `squares` the same for their squares;
    first is -1 when they do not fit: a NaN or infinity, too many values, exponents too far
    apart for LIMBS or, with `squares`, too small to square within exact_sum's limbs."""
    low, high = 1 << 20, -(1 << 20)
    if hi - lo >= MAX_EVENTS:
        return -1, 0, 0, 0
    for i in range(lo, hi):
        x = xf[a, i]
        if m[a, i] and x != 0.0:
            if x - x != 0.0:
                return -1, 0, 0, 0
            _, e = split(abs(x))
            low, high = min(low, e), max(high, e)
    if high < low:  # no value but zeros
        return 0, 0, 0, 0
    first = ((low - BASE) >> 5) - 2  # two zero limbs below: rounding may read them
    limbs = ((high - BASE) >> 5) + 4 - first  # three limbs a value, one for the carries
    if limbs > LIMBS or (squares and low < _MIN_SQUARE_EXP):
        return -1, 0, 0, 0
    if not squares:
        return first, limbs, 0, 0
    first_sq = ((2 * low - BASE) >> 5) - 2  # the squares then span fewer than 2 * LIMBS
    return first, limbs, first_sq, ((2 * high + 52 - BASE) >> 5) + 4 - first_sq


@_inline
def add(limbs, at, first, x, sign):
    """Adds sign * x, for a finite x, to the sum whose limb `first` is limbs[at]."""
    if x != 0.0:
        mx, e = split(abs(x))
        put(limbs, first - at, mx if (x > 0) == (sign > 0) else -mx, e)


@_inline
def add_square(limbs, at, first, x, sign):
    """Adds sign * x*x exactly, for a finite x, to the sum whose limb `first` is limbs[at]."""
    if x != 0.0:
        mx, e = split(abs(x))
        lo, hi = exact_sum.product(mx, mx)
        put(limbs, first - at, sign * lo, 2 * e)
        put(limbs, first - at, sign * hi, 2 * e + 52)


@_inline
def _carry(limbs, at, size):
    """Propagate carries through limbs[at:at + size] into sign-magnitude limbs (the value
    unchanged); (lowest, highest + 1) of the nonzero ones, from `at`, (0, 0) for zero."""
    c = 0
    for i in range(at, at + size):
        v = limbs[i] + c
        limbs[i] = v & _MASK
        c = v >> 32
    if c < 0:  # the value is -(2**(32*size) - the limbs): store its magnitude, negated
        c = 0
        for i in range(at, at + size):
            v = c - limbs[i]
            limbs[i] = -(v & _MASK)
            c = v >> 32
    h = size
    while h > 0 and limbs[at + h - 1] == 0:
        h -= 1
    low = 0
    while low < h and limbs[at + low] == 0:
        low += 1
    return low, h


@_jit
def value(limbs, at, size, first):
    """The sum in limbs[at:at + size] (limb `first` at `at`, as layout sized it) correctly
    rounded to float64 (+0.0 for zero), as exact_sum.value rounds it."""
    low, h = _carry(limbs, at, size)
    if h == 0:  # also for no limbs at all
        return 0.0
    return exact_sum.round_limbs(limbs, first - at, first + low, first + h - 1)


@_jit
def scaled_minus_square(n, limbs, at, size, first, at_sq, size_sq, first_sq, scratch):
    """n * (sum of squares) - (sum)**2, correctly rounded, as exact_sum.scaled_minus_square
    rounds it: the sum as in `value`, the sum of squares likewise from at_sq (scratch: as
    exact_sum.spread's, about 2 * LIMBS + 8 long not to be replaced)."""
    l2, h2 = _carry(limbs, at_sq, size_sq)
    l1, h1 = _carry(limbs, at, size)
    return exact_sum.spread(n, limbs, first_sq + l2, first_sq + h2 if h2 else 0,
                            first_sq - at_sq, limbs, first + l1, first + h1 if h1 else 0,
                            first - at, scratch)
