"""Compiled transform kernels against the same Python functions called uncompiled, row by row.

For every row the reference calls the plain Python function with the row's inputs (a missing
input is replaced by its declared default, or makes the output NULL when it has none); a row
for which the Python call raises (ZeroDivisionError, ...) must come out NULL from the kernel.
Values are compared bit for bit: floats by their bit pattern, all NaNs equal.

Int64/Timestamp results that Python computes outside the int64 range cannot be represented by
any Int64 output, so the reference has no value for them; such rows are left out of the
comparison (what int64 overflow should give is not specified by the design)."""

from __future__ import annotations

import math
import struct
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from featurestore import FeatureStore
from featurestore.definitions.types import Bool, DType, Float64, Int64, String, Timestamp
from featurestore.errors import CompileError
from featurestore.plan import Plan, build_plan
from featurestore.repo import load_repo
from featurestore.values.columns import Column, from_arrow
from featurestore.values.strings import Utf8Array

DEFINITIONS = '''
from featurestore import Request, transform
from featurestore.types import Bool, Float64, Int64, String, Timestamp

X, Y = Request("x", Float64), Request("y", Float64)
I, J = Request("i", Int64), Request("j", Int64)
P, Q, R = Request("p", Bool), Request("q", Bool), Request("r", Bool)
S, T = Request("s", String), Request("t", String)
TS, TS2 = Request("ts", Timestamp), Request("ts2", Timestamp)


@transform(inputs={"x": X, "y": Y}, output=Float64)
def f_div(x, y):
    return x / y


@transform(inputs={"x": X, "y": Y}, output=Float64)
def f_arith(x, y):
    return x * y - x + 0.5 * y - 1e-300


@transform(inputs={"x": X, "y": Y}, output=Float64)
def f_floordiv(x, y):
    return x // y


@transform(inputs={"x": X, "y": Y}, output=Float64)
def f_mod(x, y):
    return x % y


@transform(inputs={"x": X, "y": Y}, output=Float64)
def f_branch(x, y):
    return x / y if y > 0.0 else -x


@transform(inputs={"x": X, "y": Y}, output=Bool)
def f_compare(x, y):
    return x < y or x != x or x == -y


@transform(inputs={"i": I, "j": J}, output=Int64)
def i_arith(i, j):
    return i * 3 + j - 7


@transform(inputs={"i": I, "j": J}, output=Int64)
def i_floordiv(i, j):
    return i // j


@transform(inputs={"i": I, "j": J}, output=Int64)
def i_mod(i, j):
    return i % j


@transform(inputs={"i": I, "j": J}, output=Float64)
def i_truediv(i, j):
    return i / j


@transform(inputs={"x": X, "i": I, "p": P}, output=Float64)
def mixed(x, i, p):
    return x * i if p else x - i


@transform(inputs={"p": P, "q": Q, "r": R}, output=Bool)
def b_logic(p, q, r):
    return (p and not q) or (r != p)


@transform(inputs={"s": S}, output=String)
def s_lower(s):
    return s.lower()


@transform(inputs={"s": S, "t": T}, output=String)
def s_concat(s, t):
    return s + "·" + t[: len(s) % 4] + t[-1:]


@transform(inputs={"s": S, "t": T}, output=Int64)
def s_measure(s, t):
    return len(s) * 1000 + len(t) + (1_000_000 if s == t else 0)


@transform(inputs={"ts": TS}, output=Timestamp)
def ts_shift(ts):
    return ts + 3_600_000_000


@transform(inputs={"ts": TS, "ts2": TS2}, output=Int64)
def ts_gap_s(ts, ts2):
    return (ts2 - ts) // 1_000_000


@transform(inputs={"ts": TS, "ts2": TS2}, output=Timestamp)
def ts_latest(ts, ts2):
    return ts if ts >= ts2 else ts2


@transform(inputs={"x": X, "y": Y}, output=Float64, defaults={"y": 1.0})
def d_div(x, y):
    return x / y


@transform(inputs={"s": S, "t": T}, output=String, defaults={"s": "?", "t": ""})
def d_concat(s, t):
    return s + t


@transform(inputs={"p": P, "i": I, "ts": TS}, output=Int64,
           defaults={"p": False, "i": -1, "ts": 0})
def d_pick(p, i, ts):
    return i + ts // 1000 if p else -i


@transform(inputs={"z": f_div, "x": X}, output=Float64)
def c_scale(z, x):
    return z * 2.0 + x


@transform(inputs={"z": f_div}, output=Float64, defaults={"z": -1.0})
def c_default(z):
    return z + 1.0


@transform(inputs={"u": c_scale, "w": s_lower}, output=Int64)
def c_deep(u, w):
    return len(w) if u > 0.0 else -len(w)
'''

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
TS_MIN, TS_MAX = -62_135_596_800_000_000, 253_402_300_799_999_999  # 0001-01-01, 9999-12-31
REQUESTS: dict[str, DType] = {"x": Float64, "y": Float64, "i": Int64, "j": Int64, "p": Bool,
                              "q": Bool, "r": Bool, "s": String, "t": String, "ts": Timestamp,
                              "ts2": Timestamp}
SINGLE = ["f_div", "f_arith", "f_floordiv", "f_mod", "f_branch", "f_compare", "i_arith",
          "i_floordiv", "i_mod", "i_truediv", "mixed", "b_logic", "s_lower", "s_concat",
          "s_measure", "ts_shift", "ts_gap_s", "ts_latest", "d_div", "d_concat", "d_pick"]
CHAINED = ["c_scale", "c_default", "c_deep"]


@dataclass
class Compiled:
    store: FeatureStore
    plan: Plan
    fns: dict[str, Callable[..., Any]]

    def __repr__(self) -> str:  # hypothesis prints fixtures of failing examples
        return "Compiled(...)"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Compiled:
    root = tmp_path_factory.mktemp("kernels_repo")
    (root / "featurestore.yaml").write_text("project: kernels\n")
    (root / "features.py").write_text(DEFINITIONS)
    store = FeatureStore(root)
    store.apply()  # compiles every transform once; store.plan keeps the compiled plan
    _, defs = load_repo(root)
    return Compiled(store, store.plan, {name: t.fn for name, t in defs.transforms.items()})


# ---------------------------------------------------------------- the row-by-row reference


class OutOfRange(Exception):
    """No reference value: Python's exact integer result does not fit int64, or an int / int
    whose operands exceed 2**53, where kernels divide as float64 (the documented rule)."""


def python_value(c: Compiled, name: str, row: dict[str, Any]) -> Any:
    """The transform's value for one row by calling the uncompiled functions; None = NULL."""
    t = c.plan.transforms[name]
    args = []
    for inp in t.inputs:
        value = row[inp.ref] if inp.kind == "request" else python_value(c, inp.ref, row)
        if value is None:
            if inp.default is None:
                return None
            value = inp.default
        args.append(value)
    if name == "i_truediv" and args[1] != 0 and any(abs(a) > 2**53 for a in args):
        raise OutOfRange
    try:
        out = c.fns[name](*args)
    except Exception:
        return None
    if t.output is Float64:
        return float(out)
    if t.output in (Int64, Timestamp):
        assert isinstance(out, int) and not isinstance(out, bool), out
        if not I64_MIN <= out <= I64_MAX:
            raise OutOfRange
        return out
    assert isinstance(out, bool if t.output is Bool else str), out
    return out


def bits(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else struct.unpack("<q", struct.pack("<d", value))[0]
    return value


def cell(column: Column, dtype: DType, i: int) -> Any:
    if not column.valid[i]:
        return None
    if dtype is String:
        assert isinstance(column.values, Utf8Array)
        return column.values.to_list()[i]
    value = column.values[i]
    return {Float64: float, Int64: int, Timestamp: int, Bool: bool}[dtype](value)


def compare(c: Compiled, name: str, rows: list[dict[str, Any]], result: Column) -> int:
    """Asserts every comparable row matches; returns how many rows were compared."""
    dtype = c.plan.transforms[name].output
    assert len(result) == len(rows)
    compared, problems = 0, []
    for i, row in enumerate(rows):
        try:
            want = python_value(c, name, row)
        except OutOfRange:
            continue
        got = cell(result, dtype, i)
        compared += 1
        if type(got) is not type(want) or bits(got) != bits(want):
            problems.append(f"row {row}: kernel {got!r}, python {want!r}")
    assert not problems, f"{name}:\n" + "\n".join(problems[:10])
    return compared


# ---------------------------------------------------------------- generated inputs

SPECIAL_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, math.nan, -math.nan, math.inf, -math.inf, 5e-324,
                  -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e-300, 3.0]
SPECIAL_INTS = [0, 1, -1, 2, -2, 3, 4, 1000, I64_MIN, I64_MIN + 1, I64_MAX, I64_MAX - 1,
                2**53, 2**53 + 1, -(2**53) - 1, 2**62]
SPECIAL_STRINGS = ["", "a", "A", "ß", "ẞ", "İ", "ΑΣ", "Σ", "ǅ", "é", "e\u0301", "😀", "\x00",
                   "ﬃ", "Ⅷ", "Straße", "ΌΣΟΣ", "MÜLLER", "Ça"]

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "Float64": st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats()),
    "Int64": st.one_of(st.sampled_from(SPECIAL_INTS), st.integers(-1000, 1000),
                       st.integers(I64_MIN, I64_MAX)),
    "Bool": st.booleans(),
    "String": st.one_of(st.sampled_from(SPECIAL_STRINGS), st.text(max_size=8)),
    # Timestamps as Python datetimes can hold them, years 1 to 9999 (so differences of two
    # never overflow int64 halfway through a computation).
    "Timestamp": st.one_of(st.sampled_from([0, -1, 1, TS_MIN, TS_MAX]),
                           st.integers(TS_MIN, TS_MAX)),
}


def request_columns(c: Compiled, name: str) -> list[str]:
    """The request inputs a transform needs, through its upstream transforms."""
    out: list[str] = []
    for inp in c.plan.transforms[name].inputs:
        wanted = [inp.ref] if inp.kind == "request" else request_columns(c, inp.ref)
        out += [r for r in wanted if r not in out]
    return out


def draw_rows(data: st.DataObject, names: list[str], most: int = 30) -> list[dict[str, Any]]:
    n = data.draw(st.integers(0, most), label="rows")
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for name in names:
        strategy = VALUES[REQUESTS[name].name]
        values = data.draw(st.lists(st.one_of(st.none(), strategy, strategy, strategy),
                                    min_size=n, max_size=n), label=name)
        for row, value in zip(rows, values, strict=True):
            row[name] = value
    return rows


def as_column(values: list[Any], dtype: DType, via_arrow: bool) -> Column:
    """Missing rows either as Arrow nulls, or as a False mask over arbitrary leftover values
    (which the kernel must not look at)."""
    if via_arrow:
        return from_arrow(pa.array(values, pa.int64() if dtype is Timestamp else dtype.arrow)
                          .cast(dtype.arrow), dtype)
    valid = np.array([v is not None for v in values], np.bool_)
    junk = {Float64: 123.25, Int64: -99, Timestamp: 77, Bool: True, String: "junk"}[dtype]
    filled = [junk if v is None else v for v in values]
    if dtype is String:
        return Column(Utf8Array.from_list(filled), valid)
    return Column(np.array(filled, dtype.numpy), valid)


def run_kernel(c: Compiled, name: str, rows: list[dict[str, Any]], via_arrow: bool) -> Column:
    """What the executors do: request inputs from the rows, transform inputs from upstream
    kernels' outputs."""
    t = c.plan.transforms[name]
    inputs = []
    for inp in t.inputs:
        if inp.kind == "request":
            inputs.append(as_column([r[inp.ref] for r in rows], inp.dtype, via_arrow))
        else:
            inputs.append(run_kernel(c, inp.ref, rows, via_arrow))
    assert t.kernel is not None
    result, errors = t.kernel.run(inputs)
    raised = 0
    for row in rows:  # rows whose inputs were all there but the Python function raised
        args_present = all(
            inp.default is not None
            or (row[inp.ref] if inp.kind == "request" else _value_or_none(c, inp.ref, row))
            is not None
            for inp in t.inputs)
        if args_present and _value_or_none(c, name, row) is None:
            raised += 1
    assert errors == raised, f"{name}: kernel counted {errors} errors, python raised {raised}"
    return result


def _value_or_none(c: Compiled, name: str, row: dict[str, Any]) -> Any:
    try:
        return python_value(c, name, row)
    except OutOfRange:
        return 0  # a value, just not a comparable one


@settings(max_examples=40, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("name", SINGLE + CHAINED)
def test_kernel_matches_python(compiled: Compiled, name: str, data: st.DataObject) -> None:
    rows = draw_rows(data, request_columns(compiled, name))
    via_arrow = data.draw(st.booleans(), label="via_arrow")
    compare(compiled, name, rows, run_kernel(compiled, name, rows, via_arrow))


def test_int_true_division_of_large_ints(compiled: Compiled) -> None:
    """Documented rule: int / int converts both to float64 first (as NumPy does), where Python
    divides exactly and rounds once; the two differ only beyond 2**53."""
    rows = [{"i": 2**53 + 1, "j": 3}, {"i": I64_MAX, "j": 3}, {"i": 7, "j": 2}]
    result = run_kernel(compiled, "i_truediv", rows, False)
    assert [bits(cell(result, Float64, k)) for k in range(3)] == [
        bits(float(r["i"]) / float(r["j"])) for r in rows]
    assert cell(result, Float64, 0) != (2**53 + 1) / 3  # the case where Python differs


def test_lower_of_latin1_strings(compiled: Compiled) -> None:
    """Strings whose characters are all below U+0100 but not all ASCII."""
    rows = [{"s": v} for v in ["À", "MÜLLER", "ÉCOLE", "Ça", "ÀĀ", "ABC", "Straße"]]
    assert compare(compiled, "s_lower", rows,
                   run_kernel(compiled, "s_lower", rows, False)) == len(rows)


def test_every_transform_is_covered(compiled: Compiled) -> None:
    assert sorted(compiled.plan.transforms) == sorted([*SINGLE, *CHAINED])


def test_special_rows(compiled: Compiled) -> None:
    """A few rows checked by hand, so the reference itself is pinned down."""
    rows = [{"x": 1.0, "y": 0.0}, {"x": 1.0, "y": -0.0}, {"x": -0.0, "y": 1.0},
            {"x": None, "y": 2.0}, {"x": 3.0, "y": None}, {"x": math.inf, "y": math.inf}]
    div = run_kernel(compiled, "f_div", rows, False)
    assert [cell(div, Float64, i) for i in range(len(rows))][:5] == [None, None, -0.0, None, None]
    assert bits(cell(div, Float64, 2)) == bits(-0.0)
    assert math.isnan(cell(div, Float64, 5))
    with_default = run_kernel(compiled, "d_div", rows, False)
    assert [cell(with_default, Float64, i) for i in range(5)] == [None, None, -0.0, None, 3.0]
    chained = run_kernel(compiled, "c_default", rows, False)  # f_div NULL -> default -1.0
    assert [cell(chained, Float64, i) for i in range(5)] == [0.0, 0.0, 1.0, 0.0, 0.0]
    compare(compiled, "c_default", rows, chained)


# ---------------------------------------------------------------- chained, through training_set


# Each example is a whole training set, so shrinking a failure would take many seconds; the
# assertion message already names every failing row with its inputs.
@settings(max_examples=15, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(data=st.data())
def test_chained_transforms_in_training_set(compiled: Compiled, data: st.DataObject) -> None:
    names = ["f_div", "c_scale", "c_default", "c_deep", "s_lower", "d_concat"]
    columns = sorted({r for name in names for r in request_columns(compiled, name)})
    rows = draw_rows(data, columns, most=8)  # each example is a whole training set
    if not rows:
        rows = [dict.fromkeys(columns)]
    labels = pl.DataFrame(
        {name: pl.Series(name, [r[name] for r in rows],
                         dtype=pl.Float64 if REQUESTS[name] is Float64 else pl.String)
         for name in columns}
    ).with_columns(event_timestamp=pl.lit(0).cast(pl.Datetime("us", "UTC")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows where a transform raised
        out = compiled.store.training_set(labels, features=names, statuses=True)
    assert out.columns[: labels.width] == labels.columns
    table = out.to_arrow()
    for name in names:
        dtype = compiled.plan.transforms[name].output
        result = from_arrow(table.column(name), dtype)
        compare(compiled, name, rows, result)
        statuses = table.column(f"{name}__status").to_pylist()
        assert statuses == ["PRESENT" if ok else "NULL" for ok in result.valid]


# ---------------------------------------------------------------- what cannot compile

BAD_TRANSFORMS = {
    "calls_open": ("Float64", "    open('/tmp/x')\n    return x"),
    "uses_dict": ("Float64", "    d = dict(a=x)\n    return d['a']"),
    "calls_helper": ("Float64", "    return helper(x)"),
    "int_returns_str": ("Int64", "    return 'big' if x > 0.0 else 'small'"),
    "int_returns_float": ("Int64", "    return x * 1.5"),
    "str_returns_int": ("String", "    return 1"),
    "mixed_returns": ("Float64", "    if x > 0.0:\n        return 1.0\n    return 'a'"),
    "formats_text": ("String", "    return f'{x:.2f}'"),  # Numba has no f-string format spec
}


@pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaTypeSafetyWarning")
@pytest.mark.parametrize("fn_name", sorted(BAD_TRANSFORMS))
def test_uncompilable_transform_raises_compile_error(tmp_path: Path, fn_name: str) -> None:
    output, body = BAD_TRANSFORMS[fn_name]
    (tmp_path / "featurestore.yaml").write_text("project: bad\n")
    (tmp_path / "features.py").write_text(textwrap.dedent(f"""
        from featurestore import Request, transform
        from featurestore.types import Float64, Int64, String


        def helper(v):
            return v + 1.0


        @transform(inputs={{"x": Request("x", Float64)}}, output={output})
        def {fn_name}(x):
        """) + body + "\n")
    config, defs = load_repo(tmp_path)
    with pytest.raises(CompileError, match=fn_name) as caught:
        build_plan(config.project, defs, config.kernel_cache)
    if "_returns_" in fn_name:  # a wrong return type names the declared output
        assert f"output={output}" in str(caught.value)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 700  # one short line
