"""The sweep's fixed run of limbs against exact_sum's accumulator and exact Fractions: every sum
and spread (n * sum of squares - sum**2) it keeps rounds to the same bits, whatever the
values' exponents (down to subnormals, up to overflow), cancellation, negative zeros and values
taken back out; values it cannot hold (NaN, infinities, exponents too far apart, squares too
small) make it decline, so the sweep falls back to exact_sum."""

from __future__ import annotations

import math
import struct
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.aggregation import exact_sum as es
from featurestore.aggregation import fixed_sum as fs

MAX = 1.7976931348623157e308
OVERFLOW = Fraction(2) ** 1024 - Fraction(2) ** 970
FAST = settings(max_examples=200, deadline=None)


def bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x))[0]


def exact(q: Fraction) -> float:
    if abs(q) >= OVERFLOW:
        return math.inf if q > 0 else -math.inf
    return float(q)


@st.composite
def banded(draw: st.DrawFn) -> list[float]:
    """Finite values whose exponents lie in a band (so that most fit), with edge values:
    subnormals, the largest doubles, zeros of both signs, exact cancellations."""
    center = draw(st.integers(-1074, 971))
    width = draw(st.sampled_from([0, 8, 60, 300, 560, 600]))
    mantissas = st.integers(1, 2**53 - 1)
    values = draw(st.lists(st.tuples(mantissas, st.integers(0, width), st.booleans()),
                           max_size=30))
    out = [math.copysign(math.ldexp(m, min(max(center + d, -1074), 971)), -1.0 if neg else 1.0)
           for m, d, neg in values]
    out += draw(st.lists(st.sampled_from([0.0, -0.0, 5e-324, -5e-324, MAX, -MAX, 2.0**-1022]),
                         max_size=3))
    if out and draw(st.booleans()):
        out.append(-out[0])
    return draw(st.permutations(out))


@st.composite
def ties(draw: st.DrawFn) -> list[float]:
    """x plus half its last place, broken (or not) by a value far below, and cancelling
    pairs: sums whose rounding depends on the lowest limbs."""
    x = math.ldexp(draw(st.integers(2**52, 2**53 - 1)), draw(st.integers(-1000, 900)))
    far = math.ldexp(draw(st.sampled_from([1.0, -1.0, 0.0])),
                     math.frexp(x)[1] - draw(st.integers(54, 400)))
    pairs = draw(st.lists(st.floats(-1e6, 1e6), max_size=3))
    return draw(st.permutations([x, math.ulp(x) / 2, far, *pairs, *(-p for p in pairs)]))


def _fixed(values: list[float], gone: list[float], squares: bool):
    """The fixed limbs of values (+ gone, then gone taken out), or None if they decline."""
    every = values + gone
    xf = np.array([every], np.float64)
    m = np.ones((1, len(every)), np.bool_)
    first, size, first_sq, size_sq = fs.layout(xf, m, 0, 0, len(every), squares)
    if first < 0:
        return None
    limbs, at_sq = np.zeros(3 * fs.LIMBS, np.int64), fs.LIMBS
    for sign, xs in ((1, every), (-1, gone)):
        for x in xs:
            fs.add(limbs, 0, first, x, sign)
            if squares:
                fs.add_square(limbs, at_sq, first_sq, x, sign)
    return limbs, (0, size, first), (at_sq, size_sq, first_sq)


def _fixed_after_removals(values: list[float], data: st.DataObject, squares: bool):
    """_fixed with up to 5 of the values drawn to be added again and taken out."""
    gone = data.draw(st.lists(st.sampled_from(values), max_size=5) if values else st.just([]))
    return _fixed(values, gone, squares)


def _accumulated(values: list[float]) -> tuple[np.ndarray, np.ndarray]:
    s1, s2 = np.zeros(es.WIDTH, np.int64), np.zeros(es.WIDTH, np.int64)
    for x in values:
        es.add(s1, x)
        es.add_product(s2, x, x)
    es.normalize(s1)
    es.normalize(s2)
    return s1, s2


@FAST
@given(st.one_of(banded(), ties()), st.data())
def test_sums_round_as_exact_sum_does(values: list[float], data: st.DataObject) -> None:
    fixed = _fixed_after_removals(values, data, False)
    if fixed is None:
        return
    limbs, where, _ = fixed
    s1, _ = _accumulated(values)
    got = fs.value(limbs, *where)
    assert bits(got) == bits(es.value(s1))
    assert bits(got) == bits(exact(sum(map(Fraction, values), Fraction(0))))
    assert bits(fs.value(limbs, *where)) == bits(got)  # reading leaves the value as it was


@FAST
@given(banded(), st.data())
def test_spreads_round_as_exact_sum_does(values: list[float], data: st.DataObject) -> None:
    fixed = _fixed_after_removals(values, data, True)
    if fixed is None:
        return
    limbs, where, where_sq = fixed
    n = len(values)
    s1, s2 = _accumulated(values)
    got = fs.scaled_minus_square(n, limbs, *where, *where_sq, np.zeros(2 * fs.LIMBS + 8, np.int64))
    assert bits(got) == bits(es.scaled_minus_square(n, s2, s1))
    q = [Fraction(x) for x in values]
    assert bits(got) == bits(exact(n * sum(x * x for x in q) - sum(q, Fraction(0)) ** 2))


def test_everyday_values_fit_and_the_rest_declines() -> None:
    """The cases the sweep must send to exact_sum, and the edges of what fits."""
    def fits(values: list[float], squares: bool = True) -> bool:
        return _fixed(values, [], squares) is not None

    assert fits([12.34, 0.01, 399.99, -5.5, 0.0, -0.0])
    assert fits([MAX, MAX, -MAX])
    assert fits([5e-324, 2.0**-1022], squares=False)
    assert not fits([5e-324], squares=True)  # its square falls below exact_sum's limbs
    assert fits([math.ldexp(1.0, -1024 + 52)])
    assert not fits([math.ldexp(1.0, -1025 + 52)]) and fits([math.ldexp(1.0, -1025 + 52)], False)
    assert not fits([1.0, math.nan]) and not fits([1.0, math.inf]) and not fits([-math.inf])
    # exponents up to 18 limbs apart fit, 19 do not (LIMBS = 24: two below, four above)
    base = math.ldexp(1.0, -2176 + 32 * 60 + 52)
    assert fits([base, math.ldexp(base, 32 * 18)], squares=False)
    assert not fits([base, math.ldexp(base, 32 * 19)], squares=False)


@pytest.mark.parametrize("values", [[MAX, MAX], [-MAX, -MAX, MAX], [1e308] * 3])
def test_overflow_rounds_to_infinity_as_exact_sum_does(values: list[float]) -> None:
    limbs, where, where_sq = _fixed(values, [], True)
    s1, s2 = _accumulated(values)
    spread = fs.scaled_minus_square(len(values), limbs, *where, *where_sq, np.zeros(0, np.int64))
    assert bits(fs.value(limbs, *where)) == bits(es.value(s1))
    assert bits(spread) == bits(
        es.scaled_minus_square(len(values), s2, s1))
