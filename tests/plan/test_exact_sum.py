"""The exact accumulator against independent references: math.fsum (correctly rounded sums of
doubles) and exact Fraction arithmetic rounded by Python's correctly rounded int division.

Results are compared bit for bit. Documented deviation: an exact zero sum is +0.0, where
math.fsum gives -0.0 when every input is -0.0."""

from __future__ import annotations

import math
import random
import struct
from fractions import Fraction

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.aggregation import exact_sum as es

MAX = 1.7976931348623157e308
TINY = 5e-324
OVERFLOW = Fraction(2) ** 1024 - Fraction(2) ** 970  # IEEE rounds magnitudes >= this to inf

EDGES = [MAX, -MAX, TINY, -TINY, 2.0**-1022, -(2.0**-1022), 2.0**-1022 - TINY, 1e308, -1e308,
         1e-300, 1.0, -1.0, 0.1, 2.0**53 - 1, 2.0**1023, 0.0, -0.0]
finite = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e6, max_value=1e6),
    st.sampled_from(EDGES),
)
FAST = settings(max_examples=150, deadline=None)


def bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x))[0]


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or bits(a) == bits(b)


def round_exact(q: Fraction) -> float:
    """Correctly rounded float of an exact rational, ±inf past the overflow threshold."""
    if abs(q) >= OVERFLOW:
        return math.inf if q > 0 else -math.inf
    return float(q)  # int / int true division: correctly rounded, subnormals included


def new() -> np.ndarray:
    return np.zeros(es.WIDTH, np.int64)


def summed(xs: list[float]) -> np.ndarray:
    acc = new()
    for x in xs:
        es.add(acc, x)
    return acc


def canonical(acc: np.ndarray) -> np.ndarray:
    acc = acc.copy()
    es.normalize(acc)
    return acc


def with_cancellations(draw_list):
    """Lists plus, often, the negations of some of their elements (exact cancellations)."""
    return draw_list.flatmap(
        lambda xs: st.lists(st.booleans(), min_size=len(xs), max_size=len(xs)).map(
            lambda keep: xs + [-x for x, k in zip(xs, keep, strict=True) if k]
        )
    ).flatmap(st.permutations)


@FAST
@given(with_cancellations(st.lists(finite, max_size=40)))
def test_value_matches_fsum_and_fraction(xs):
    acc = summed(xs)
    got = es.value(acc)
    exact = sum((Fraction(x) for x in xs), Fraction(0))
    if exact == 0:
        assert bits(got) == bits(0.0)  # documented: exact zero is +0.0
        return
    assert bits(got) == bits(round_exact(exact))
    try:
        ref = math.fsum(xs)
    except OverflowError:
        return  # fsum gives up on intermediate overflow; the Fraction check above stands
    if math.isfinite(ref):
        assert bits(got) == bits(ref)


def test_documented_cases():
    assert es.value(summed([1e308, 1e308, -1e308, -1e308, 1e-300])) == 1e-300
    assert bits(es.value(summed([-0.0, -0.0]))) == bits(0.0)  # fsum says -0.0
    assert bits(es.value(new())) == bits(0.0)
    assert es.value(summed([MAX, MAX])) == math.inf
    assert es.value(summed([-MAX, -MAX, MAX])) == -MAX
    # halfway between MAX and 2**1024 rounds to even, i.e. up to inf; just below stays MAX
    assert es.value(summed([MAX, 2.0**970])) == math.inf
    assert es.value(summed([MAX, 2.0**969, 2.0**900])) == MAX
    assert es.value(summed([1.0, 2.0**-53])) == 1.0  # tie to even
    assert es.value(summed([1.0, 2.0**-53, TINY])) == 1.0 + 2.0**-52
    assert es.value(summed([TINY, TINY, -TINY])) == TINY


@pytest.mark.parametrize(
    ("xs", "expected"),
    [
        ([math.nan], math.nan),
        ([1.0, math.nan, 2.0], math.nan),
        ([math.inf, 1.0], math.inf),
        ([-math.inf, MAX, MAX], -math.inf),
        ([math.inf, math.inf, -1e308], math.inf),
        ([math.inf, -math.inf], math.nan),
        ([math.inf, math.nan], math.nan),
        ([-math.inf, -math.inf], -math.inf),
    ],
)
def test_specials(xs, expected):
    acc = summed(xs)
    assert same(es.value(acc), expected)
    assert acc[es.NAN] + acc[es.PINF] + acc[es.NINF] == sum(not math.isfinite(x) for x in xs)


with_specials = st.one_of(finite, finite, finite, st.sampled_from([math.nan, math.inf, -math.inf]))


@FAST
@given(st.lists(with_specials, max_size=40), st.randoms(use_true_random=False))
def test_order_and_partition_independence(xs, rnd):
    whole = canonical(summed(xs))
    shuffled = xs[:]
    rnd.shuffle(shuffled)
    cuts = sorted(rnd.randint(0, len(xs)) for _ in range(rnd.randint(0, 5)))
    merged = new()
    for a, b in zip([0, *cuts], [*cuts, len(xs)], strict=True):
        part = summed(shuffled[a:b])
        if rnd.random() < 0.5:
            es.normalize(part)
        es.merge(merged, part)
    assert np.array_equal(canonical(summed(shuffled)), whole)
    assert np.array_equal(canonical(merged), whole)
    again = canonical(whole)
    assert np.array_equal(again, whole)  # idempotent
    assert whole[es.PENDING] == 0
    # value leaves the accumulator in canonical form, not otherwise changed
    v = es.value(merged)
    assert np.array_equal(merged, whole)
    assert same(v, es.value(summed(xs)))


@FAST
@given(st.lists(st.tuples(finite, finite), max_size=20))
def test_products_canonical_like_adds(pairs):
    """x*y and y*x, and x*1.0 vs add(x), land on the same canonical array."""
    a, b, c, d = new(), new(), new(), new()
    for x, y in pairs:
        es.add_product(a, x, y)
        es.add_product(b, y, x)
        es.add_product(c, x, 1.0)
        es.add(d, x)
    assert np.array_equal(canonical(a), canonical(b))
    assert np.array_equal(canonical(c), canonical(d))


near_200 = st.one_of(
    st.floats(min_value=1e190, max_value=1e210),
    st.floats(min_value=-1e210, max_value=-1e190),
    st.floats(min_value=1e-210, max_value=1e-190),
    st.floats(min_value=-1e-190, max_value=-1e-210),
)
factor = st.one_of(finite, near_200, st.sampled_from([1e-300, 1e300, -1e300, 2.0**-1074, 2.0**1023]))


@FAST
@given(st.lists(st.tuples(factor, factor), max_size=25), st.lists(finite, max_size=10))
def test_add_product_matches_fraction(pairs, xs):
    acc = new()
    exact = Fraction(0)
    for x, y in pairs:
        es.add_product(acc, x, y)
        exact += Fraction(x) * Fraction(y)
    for x in xs:
        es.add(acc, x)
        exact += Fraction(x)
    got = es.value(acc)
    want = round_exact(exact) if exact != 0 else 0.0
    assert bits(got) == bits(want)


@FAST
@given(st.lists(near_200, min_size=1, max_size=20))
def test_sum_of_squares(xs):
    acc = new()
    for x in xs:
        es.add_product(acc, x, x)
    assert bits(es.value(acc)) == bits(round_exact(sum(Fraction(x) ** 2 for x in xs)))


def test_extreme_products():
    for x, y in [(1e-300, 1e-300), (TINY, TINY), (-TINY, TINY), (1e300, 1e300), (MAX, MAX)]:
        acc = new()
        es.add_product(acc, x, y)
        assert bits(es.value(acc)) == bits(round_exact(Fraction(x) * Fraction(y)))
        es.add_product(acc, -x, y)  # exactly cancels, however far out of range
        assert not canonical(acc)[: es.TOP + 1].any()
    # (1+e)**2 - (1-e)**2 = 4e: products far past the largest double cancel to a finite one
    a, b = 2.0**520 * (1 + 2.0**-52), 2.0**520 * (1 - 2.0**-52)
    acc = new()
    es.add_product(acc, a, a)
    es.add_product(acc, -b, b)
    assert es.value(acc) == 2.0**990


def test_products_rounded_into_subnormals():
    assert es.value(product_sum([(3 * TINY, 0.5)])) == 2 * TINY  # tie to even
    assert es.value(product_sum([(TINY, 0.5)])) == 0.0  # tie to even (zero)
    assert es.value(product_sum([(TINY, 0.5 + 2.0**-53)])) == TINY
    assert bits(es.value(product_sum([(-TINY, 0.25)]))) == bits(-0.0)  # rounds to zero, negative
    assert es.value(product_sum([(TINY, 0.5), (TINY, 0.5)])) == TINY


def product_sum(pairs):
    acc = new()
    for x, y in pairs:
        es.add_product(acc, x, y)
    return acc


small = st.floats(min_value=2.0**-560, max_value=2.0**-480).flatmap(
    lambda x: st.sampled_from([x, -x])
)


@FAST
@given(st.lists(st.tuples(small, small), min_size=1, max_size=6))
def test_products_near_the_subnormal_range(pairs):
    exact = sum((Fraction(x) * Fraction(y) for x, y in pairs), Fraction(0))
    want = round_exact(exact) if exact != 0 else 0.0
    assert bits(es.value(product_sum(pairs))) == bits(want)


@pytest.mark.parametrize(
    ("x", "y"),
    [(math.inf, 0.0), (0.0, -math.inf), (math.inf, -2.0), (-math.inf, -TINY), (math.nan, 0.0),
     (1.0, math.nan), (math.inf, math.inf), (-math.inf, math.inf), (math.inf, math.nan)],
)
def test_product_specials(x, y):
    acc = new()
    es.add_product(acc, x, y)
    assert same(es.value(acc), x * y)


@FAST
@given(st.lists(finite, max_size=15), st.lists(finite, max_size=15),
       st.one_of(st.integers(0, 1000), st.integers(0, 2**63 - 1)))
def test_scaled_minus_square_is_exact(xs, ys, n):
    """n*S2 - S1*S1 (the variance's numerator) for any sums of doubles S1 and S2, of either
    sign, rounded once."""
    s1, s2 = summed(xs), summed(ys)
    if s1[es.NAN:es.NINF + 1].any() or s2[es.NAN:es.NINF + 1].any():
        return  # sums past the largest double hold infinities: not this function's input
    es.normalize(s1)
    es.normalize(s2)
    exact = n * sum(map(Fraction, ys), Fraction(0)) - sum(map(Fraction, xs), Fraction(0)) ** 2
    got = es.scaled_minus_square(n, s2, s1)
    assert bits(got) == bits(round_exact(exact) if exact != 0 else 0.0)


@pytest.mark.parametrize("xs", [[1.0, 2.0, 4.0], [0.1, 0.2, 0.3], [MAX, -MAX, 1e308], [TINY, 2 * TINY],
                                [1e300, 1e-300], [60.23, 17.5, 99.99, 0.01, 123.45]])
def test_scaled_minus_square_of_a_variance(xs):
    s1, s2 = summed(xs), new()
    for x in xs:
        es.add_product(s2, x, x)
    es.normalize(s1)
    es.normalize(s2)
    n = len(xs)
    exact = n * sum(Fraction(x) ** 2 for x in xs) - sum(map(Fraction, xs), Fraction(0)) ** 2
    assert bits(es.scaled_minus_square(n, s2, s1)) == bits(round_exact(exact))


@numba.njit
def _repeat(acc, x, n):
    for _ in range(n):
        es.add(acc, x)


@numba.njit
def _repeat_product(acc, x, y, n):
    for _ in range(n):
        es.add_product(acc, x, y)


@pytest.mark.parametrize("x", [2.0**53 - 1, -(2.0**53 - 1) * 2.0**-1060, 1e308, -MAX, 0.1, TINY])
def test_many_adds_stay_exact(x):
    n = 3 * es.LIMIT + 12345  # several internal carry propagations
    acc = new()
    _repeat(acc, x, n)
    assert bits(es.value(acc)) == bits(round_exact(n * Fraction(x)))
    _repeat(acc, -x, n - 1)
    assert es.value(acc) == x
    _repeat_product(acc, x, x, n)
    _repeat_product(acc, -x, x, n)
    assert es.value(acc) == x


def test_doubling_by_merge_stays_exact():
    """2**70 times a full 106-bit product: limbs would overflow int64 without carries."""
    x, y = (2.0**53 - 1) * 2.0**-600, -(2.0**53 - 3) * 2.0**500
    acc = new()
    es.add_product(acc, x, y)
    es.add(acc, 2.0**-900)
    for _ in range(70):
        es.merge(acc, acc.copy())
    exact = (Fraction(x) * Fraction(y) + Fraction(2.0**-900)) * 2**70
    assert bits(es.value(acc)) == bits(round_exact(exact))


def test_many_merges_of_unnormalized_parts():
    rnd = random.Random(7)
    xs = [rnd.uniform(-1e10, 1e10) for _ in range(2000)]
    part = summed(xs)
    total = new()
    for _ in range(3000):  # pending counts add up past LIMIT
        es.merge(total, part)
    assert es.value(total) == round_exact(3000 * sum(Fraction(x) for x in xs))


def test_beyond_every_product_range():
    """Sums past 2**2208 reach the top limb (2**165 times MAX**2 here, within its 2**2271
    capacity): still exact, still cancel, round to inf."""
    acc = new()
    es.add_product(acc, -MAX, MAX)
    es.add(acc, 1.5)
    for _ in range(165):
        es.merge(acc, acc.copy())
    assert canonical(acc)[es.TOP] != 0
    assert es.value(acc) == -math.inf
    back = new()
    es.add_product(back, MAX, MAX)
    for _ in range(165):
        es.merge(back, back.copy())
    es.merge(acc, back)
    assert es.value(acc) == 1.5 * 2.0**165
