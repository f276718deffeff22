"""Windowed aggregations in `FeatureStore.training_set` against a brute-force reference.

The reference below walks the raw event rows in plain Python (no DuckDB, no featurestore
internals). An aggregate with window w and hop h evaluated at label time T covers the events
of the label's entity with event time in [floor(T, h) - w, T] (both ends inclusive,
floor(T, h) = (T // h) * h in epoch microseconds) that are visible at T: event_ts <= T and,
when the source has a created column, created <= T. Nulls are skipped by every function:

- count: non-null values (0 when none); count_distinct: distinct non-null values (-0.0 equals
  0.0, all NaNs are equal; only the exact regime of at most 32 distinct values is generated);
- sum: the exact sum correctly rounded (an exact zero is +0.0; 0.0 when none; NaN with a NaN
  or both infinities; the infinity when one is present); Int64 sums are Int64 (0 when none);
- mean: the correctly rounded sum divided by the count in float arithmetic; null when none;
- var: the sample variance (n - 1) of the exact values, correctly rounded (inf when that
  overflows), null under 2 values, NaN when a value is not finite (IEEE: inf - inf); stddev:
  the square root of that var; both compared with a relative tolerance of 1e-12 (and an
  absolute one of 1e-300, for results that are subnormal or zero);
- min / max: in the total order -inf < ... < -0.0 < 0.0 < ... < inf < NaN; null when none;
- first / last: the value of the least / greatest (event_ts, visible time, value in that
  total order), the visible time being the later of event_ts and created; null when none.

Every other value is compared bit for bit (floats by their bit pattern, all NaNs equal)."""

from __future__ import annotations

import math
import os
import statistics
import struct
import textwrap
from dataclasses import dataclass
from fractions import Fraction
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore import Aggregate, FeatureStore, FeatureStoreError
from featurestore.aggregation.accumulators import CODES
from featurestore.definitions.functions import AGGREGATE_FUNCTIONS
from featurestore.types import Float64, String

MINUTE = 60_000_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
GRID = 15 * MINUTE
T0 = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z in epoch micros
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
TS = pa.timestamp("us", tz="UTC")

FUNCTIONS = ("count", "sum", "mean", "var", "stddev", "min", "max", "first", "last",
             "count_distinct")
DURATIONS = {"15m": 15 * MINUTE, "30m": 30 * MINUTE, "45m": 45 * MINUTE, "1h": HOUR,
             "2h": 2 * HOUR, "6h": 6 * HOUR, "1d": DAY}
WINDOWS = [("1h", "1h"), ("45m", "15m"), ("2h", "30m"), ("1d", "6h")]  # (window, hop)


@dataclass(frozen=True)
class Agg:
    view: str  # "spend" reads tx (with a created column), "plain" reads tx_plain (without)
    column: str
    function: str
    window: str
    hop: str
    dtype: str  # the column's type: Float64, Int64 or String
    explicit_name: str | None = None

    @property
    def name(self) -> str:
        return self.explicit_name or f"{self.column}_{self.function}_{self.window}"

    @property
    def window_us(self) -> int:
        return DURATIONS[self.window]

    @property
    def hop_us(self) -> int:
        return DURATIONS[self.hop]

    @property
    def output(self) -> str:
        if self.function in ("count", "count_distinct"):
            return "Int64"
        if self.function in ("mean", "var", "stddev"):
            return "Float64"
        return self.dtype

    def source_text(self) -> str:
        name = f", name={self.explicit_name!r}" if self.explicit_name else ""
        return (f"Aggregate({self.column!r}, {self.function!r}, window={self.window!r}, "
                f"hop={self.hop!r}, dtype={self.dtype}{name})")


AGGS: list[Agg] = [
    *(Agg("spend", "amount", f, w, h, "Float64") for w, h in WINDOWS for f in FUNCTIONS),
    *(Agg("spend", "qty", f, "2h", "30m", "Int64") for f in FUNCTIONS),
    Agg("spend", "merchant", "count", "2h", "30m", "String"),
    Agg("spend", "merchant", "count_distinct", "2h", "30m", "String"),
    *(Agg("plain", "amount", f, "2h", "30m", "Float64", f"plain_amount_{f}_2h")
      for f in FUNCTIONS),
]

DEFINITIONS = textwrap.dedent("""
    from featurestore import Aggregate, Entity, FeatureService, FeatureView, Source
    from featurestore.types import Float64, Int64, String

    user = Entity("user", join_keys={"user_id": Int64})
    tx = Source("tx", path="data/tx.parquet", timestamp="event_ts", created="created_ts")
    tx_plain = Source("tx_plain", path="data/tx_plain.parquet", timestamp="event_ts")
    """) + "".join(
    f"\n{view} = FeatureView({view!r}, entity=user, source={source}, aggregates=[\n"
    + "".join(f"    {a.source_text()},\n" for a in AGGS if a.view == view) + "])\n"
    for view, source in (("spend", "tx"), ("plain", "tx_plain"))
) + '\neverything = FeatureService("everything", features=[spend, plain])\n'

Row = dict[str, Any]  # user_id, event_ts, created_ts, amount, qty, merchant


# ---------------------------------------------------------------- the brute-force reference


def is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def total_order(v: Any) -> tuple:
    """-inf < ... < -0.0 < 0.0 < ... < inf < NaN (all NaNs equal); ints and strings as is."""
    if isinstance(v, float):
        if math.isnan(v):
            return (1, 0.0, 0.0)
        return (0, v, math.copysign(1.0, v))
    return (0, v)


def to_float(x: Fraction) -> float:
    """Correctly rounded (ties to even), ±inf when the rounded value overflows."""
    if x == 0:
        return 0.0
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def exact_sum(values: list[float]) -> float:
    if any(math.isnan(v) for v in values) or (math.inf in values and -math.inf in values):
        return math.nan
    if math.inf in values:
        return math.inf
    if -math.inf in values:
        return -math.inf
    return to_float(sum((Fraction(v) for v in values), Fraction(0)))


def reference_value(agg: Agg, rows: list[Row], user_id: int, t: int) -> Any:
    tail = (t // agg.hop_us) * agg.hop_us - agg.window_us
    has_created = agg.view == "spend"
    events = []  # (event_ts, created, value) of the visible, non-null events in the window
    for row in rows:
        if row["user_id"] != user_id or not tail <= row["event_ts"] <= t:
            continue
        created = row["created_ts"] if has_created else row["event_ts"]
        if created > t:
            continue
        if row[agg.column] is not None:  # first/last order by the time it became visible
            events.append((row["event_ts"], max(created, row["event_ts"]), row[agg.column]))
    values = [v for _, _, v in events]
    n = len(values)
    f = agg.function
    if f == "count":
        return n
    if f == "count_distinct":
        distinct = {("nan",) if is_nan(v) else (v + 0.0 if isinstance(v, float) else v)
                    for v in values}  # v + 0.0 makes -0.0 equal to 0.0
        assert len(distinct) <= 32, "only the exact regime is tested"
        return len(distinct)
    if f == "sum":
        if agg.dtype == "Int64":
            s = sum(values) & (2**64 - 1)  # int64 wrap-around (no test overflows)
            return s - 2**64 if s >= 2**63 else s
        return exact_sum(values)
    if n == 0:
        return None
    if f == "mean":
        return exact_sum([float(v) for v in values]) / n
    if f in ("var", "stddev"):
        if n < 2:
            return None
        if not all(math.isfinite(v) for v in values):
            return math.nan
        var = to_float(statistics.variance([Fraction(v) for v in values]))
        return var if f == "var" else math.sqrt(var)
    if f in ("min", "max"):
        pick = min if f == "min" else max
        return pick(values, key=total_order)
    if f in ("first", "last"):
        pick = min if f == "first" else max
        return pick(events, key=lambda e: (e[0], e[1], total_order(e[2])))[2]
    raise AssertionError(f)


# ---------------------------------------------------------------- comparing


def float_bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x))[0]


def same(actual: Any, expected: Any, agg: Agg) -> bool:
    if actual is None or expected is None:
        return actual is None and expected is None
    if agg.output == "Int64":
        return type(actual) is int and actual == expected
    if not isinstance(actual, float):
        return False
    if math.isnan(actual) or math.isnan(expected):
        return math.isnan(actual) and math.isnan(expected)
    if agg.function in ("var", "stddev"):
        return math.isclose(actual, expected, rel_tol=1e-12, abs_tol=1e-300)
    return float_bits(actual) == float_bits(expected)


def labels_frame(labels: list[tuple[int, int]]) -> pl.DataFrame:
    return pl.DataFrame({
        "user_id": pl.Series([u for u, _ in labels], dtype=pl.Int64),
        "event_timestamp": pl.Series([t for _, t in labels], dtype=pl.Int64)
        .cast(pl.Datetime("us", "UTC")),
    })


def training_set(store: FeatureStore, labels: list[tuple[int, int]]) -> pa.Table:
    out = store.training_set(labels_frame(labels), service="everything")
    assert isinstance(out, pl.DataFrame)
    assert out.columns == ["user_id", "event_timestamp", *(a.name for a in AGGS)]
    assert out.height == len(labels)
    return out.to_arrow()


def check(store: FeatureStore, rows: list[Row], labels: list[tuple[int, int]]) -> pa.Table:
    table = training_set(store, labels)
    assert table.column("user_id").to_pylist() == [u for u, _ in labels]
    assert table.column("event_timestamp").cast(pa.int64()).to_pylist() == [t for _, t in labels]
    problems = []
    for agg in AGGS:
        for (user_id, t), got in zip(labels, table.column(agg.name).to_pylist(), strict=True):
            want = reference_value(agg, rows, user_id, t)
            if not same(got, want, agg):
                problems.append(f"{agg.name} user {user_id} at T0{t - T0:+d}us: got {got!r}, "
                                f"expected {want!r}")
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:30])
    return table


# ---------------------------------------------------------------- the repo and its data


@dataclass
class Repo:
    root: Path
    store: FeatureStore


_MTIME = count(1_600_000_000_000_000_000, 1_000_000_000)

TX_SCHEMA = {"user_id": pa.int64(), "event_ts": TS, "created_ts": TS, "amount": pa.float64(),
             "qty": pa.int64(), "merchant": pa.string()}


def write_table(path: Path, rows: list[Row], schema: dict[str, pa.DataType]) -> None:
    pq.write_table(pa.table({c: pa.array([r[c] for r in rows], t) for c, t in schema.items()}),
                   path)
    stamp = next(_MTIME)  # every rewrite gets a new mtime, so ingest sees the change
    os.utime(path, ns=(stamp, stamp))


def load(repo: Repo, rows: list[Row]) -> None:
    write_table(repo.root / "data" / "tx.parquet", rows, TX_SCHEMA)
    plain = {c: t for c, t in TX_SCHEMA.items() if c != "created_ts"}
    write_table(repo.root / "data" / "tx_plain.parquet", rows, plain)
    result = repo.store.backfill()
    assert set(result.ingested) == {"tx", "tx_plain"}, "backfill did not re-ingest the sources"
    assert result.ingested["tx"].rows == len(rows)


def event(user_id: int, ts: int, created: int | None = None, amount: float | None = None,
          qty: int | None = None, merchant: str | None = None) -> Row:
    return {"user_id": user_id, "event_ts": ts, "created_ts": ts if created is None else created,
            "amount": amount, "qty": qty, "merchant": merchant}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    root = tmp_path_factory.mktemp("windows_repo")
    (root / "data").mkdir()
    (root / "featurestore.yaml").write_text("project: windows\n")
    (root / "features.py").write_text(DEFINITIONS)
    r = Repo(root, FeatureStore(root))
    write_table(root / "data" / "tx.parquet", [event(1, T0, amount=1.0)], TX_SCHEMA)
    write_table(root / "data" / "tx_plain.parquet", [event(1, T0, amount=1.0)],
                {c: t for c, t in TX_SCHEMA.items() if c != "created_ts"})
    r.store.apply()
    return r


# ---------------------------------------------------------------- generated cases

NAN_PAYLOAD = struct.unpack("<d", struct.pack("<q", 0x7FF0000000000001))[0]
SPECIAL_FLOATS = [math.nan, -math.nan, NAN_PAYLOAD, math.inf, -math.inf, 0.0, -0.0,
                  5e-324, -5e-324, 2.225073858507201e-308, 2.2250738585072014e-308,
                  1.7976931348623157e308, -1.7976931348623157e308, 1e300, -1e300, 1e-300,
                  1.0, 1.0000000000000002, 0.1, 0.2, 0.3, -1.5, 3.0, 2.0**53, 1e16]
INTS = [0, 1, -1, 7, 2**40, -(2**40)]
MERCHANTS = ["", "a", "b", "é", "e\u0301", "😀"]

floats = st.one_of(st.none(), st.sampled_from(SPECIAL_FLOATS), st.floats(),
                   st.floats(-1000.0, 1000.0))
ints = st.one_of(st.none(), st.sampled_from(INTS), st.integers(-(2**40), 2**40))
merchants = st.one_of(st.none(), st.sampled_from(MERCHANTS))
slots = st.one_of(st.integers(-8, 16), st.integers(-100, 100))  # 15-minute grid around T0
jitter = st.sampled_from([0, 0, 0, 0, 0, 1, -1])  # mostly on the grid, sometimes 1us off it
delays = st.one_of(st.just(0), st.integers(-2, 8).map(lambda d: d * GRID), st.sampled_from([1, -1]))


def boundary_times(rows: list[Row]) -> set[int]:
    """Label times where some event enters or leaves some window: at the event and created
    times, where the window's tail lands on an event, and at the last instant it covers it."""
    out = {T0}
    for row in rows:
        for t in (row["event_ts"], row["created_ts"]):
            out |= {t - 1, t, t + 1}
        for window, hop in WINDOWS:
            w, h = DURATIONS[window], DURATIONS[hop]
            k = (row["event_ts"] + w) // h * h  # floor(T, h) - w <= event_ts for T < k + h
            out |= {k - 1, k, k + 1, k + h - 1, k + h}
    return out


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[Row], list[tuple[int, int]]]:
    users = list(range(1, draw(st.integers(1, 3)) + 1))
    # repeated values are frequent; some cases hold only signed zeros and NaNs, so that the
    # total order's -0.0 < 0.0 and the one NaN decide min, max and distinct counts
    pool = draw(st.one_of(st.lists(floats, min_size=1, max_size=5), st.sampled_from([
        [0.0, -0.0], [-0.0, 0.0, math.nan, NAN_PAYLOAD], [math.nan, -math.nan, NAN_PAYLOAD]])))
    only_pool = draw(st.booleans())  # half of the cases draw from the pool alone
    amounts = st.sampled_from(pool) if only_pool else st.one_of(st.sampled_from(pool), floats)
    rows = []
    for _ in range(draw(st.integers(0, 30))):
        ts = T0 + draw(slots) * GRID + draw(jitter)
        rows.append(event(draw(st.sampled_from(users)), ts, ts + draw(delays), draw(amounts),
                          draw(ints), draw(merchants)))
    times = st.one_of(st.sampled_from(sorted(boundary_times(rows))),
                      st.integers(-8, 110).map(lambda k: T0 + k * GRID))
    labels = draw(st.lists(st.tuples(st.sampled_from([*users, 99]), times), min_size=1,
                           max_size=40))
    return rows, labels


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cases())
def test_aggregates_match_brute_force(repo: Repo, case: tuple) -> None:
    rows, labels = case
    load(repo, rows)
    check(repo.store, rows, labels)


# ---------------------------------------------------------------- targeted edges


def column(table: pa.Table, name: str) -> list[Any]:
    return table.column(name).to_pylist()


def test_window_edges_are_inclusive(repo: Repo) -> None:
    t = T0 + 10 * HOUR + 20 * MINUTE  # floor(t, 30m) = T0 + 10h, so the 2h tail is T0 + 8h
    tail = T0 + 8 * HOUR
    rows = [event(1, tail, amount=1.0), event(1, tail - 1, amount=2.0),
            event(1, t, amount=4.0), event(1, t + 1, amount=8.0),
            event(2, tail - 1, amount=16.0)]
    load(repo, rows)
    labels = [(1, t), (1, t + 1), (1, T0 + 10 * HOUR + 30 * MINUTE - 1),
              (1, T0 + 10 * HOUR + 30 * MINUTE), (2, t), (2, tail - 1)]
    table = check(repo.store, rows, labels)
    # at t: the event at the tail and the one at t, not the one 1us before the tail or after t
    assert column(table, "amount_sum_2h") == [5.0, 13.0, 13.0, 12.0, 0.0, 16.0]
    assert column(table, "amount_count_2h") == [2, 3, 3, 2, 0, 1]
    assert column(table, "amount_first_2h")[:4] == [1.0, 1.0, 1.0, 4.0]
    assert column(table, "amount_last_2h")[:4] == [4.0, 8.0, 8.0, 8.0]
    assert column(table, "plain_amount_sum_2h") == [5.0, 13.0, 13.0, 12.0, 0.0, 16.0]


def test_created_later_than_label_time_is_hidden(repo: Repo) -> None:
    e = T0 + 3 * HOUR
    rows = [event(1, e, amount=1.0), event(1, e, created=e + 20 * MINUTE, amount=10.0)]
    load(repo, rows)
    labels = [(1, e), (1, e + 20 * MINUTE - 1), (1, e + 20 * MINUTE)]
    table = check(repo.store, rows, labels)
    assert column(table, "amount_sum_2h") == [1.0, 1.0, 11.0]
    assert column(table, "amount_max_2h") == [1.0, 1.0, 10.0]
    assert column(table, "amount_last_2h") == [1.0, 1.0, 10.0]  # same event time, created later
    assert column(table, "plain_amount_sum_2h") == [11.0, 11.0, 11.0]  # no created column


def test_int64_column(repo: Repo) -> None:
    e = T0 + 5 * HOUR
    rows = [event(1, e, qty=I64_MAX), event(1, e + MINUTE, qty=I64_MIN),
            event(1, e + 2 * MINUTE, qty=5), event(1, e + 3 * MINUTE, qty=None),
            event(1, e + 4 * MINUTE, qty=5), event(2, e, qty=-3)]
    load(repo, rows)
    labels = [(1, e + HOUR), (2, e + HOUR)]
    table = training_set(repo.store, labels)
    assert table.schema.field("qty_sum_2h").type == pa.int64()
    for f in ("min", "max", "first", "last", "count", "count_distinct"):
        assert table.schema.field(f"qty_{f}_2h").type == pa.int64()
    assert column(table, "qty_sum_2h") == [I64_MAX + I64_MIN + 10, -3]
    assert column(table, "qty_min_2h") == [I64_MIN, -3]
    assert column(table, "qty_max_2h") == [I64_MAX, -3]
    assert column(table, "qty_first_2h") == [I64_MAX, -3]
    assert column(table, "qty_last_2h") == [5, -3]
    assert column(table, "qty_count_2h") == [4, 1]
    assert column(table, "qty_count_distinct_2h") == [3, 1]
    assert column(table, "qty_var_2h")[1] is None
    small = [event(1, e, qty=3), event(1, e + MINUTE, qty=-8), event(1, e + 2 * MINUTE, qty=3)]
    load(repo, small)
    table = check(repo.store, small, [(1, e + HOUR)])
    assert column(table, "qty_sum_2h") == [-2]
    assert column(table, "qty_mean_2h") == [-2 / 3]


def test_count_distinct_of_strings(repo: Repo) -> None:
    e = T0 + HOUR
    names = ["a", "b", "a", None, "é", "e\u0301", "", "", "😀", "b"]
    rows = [event(1, e + i * MINUTE, merchant=m) for i, m in enumerate(names)]
    load(repo, rows)
    table = check(repo.store, rows, [(1, e + HOUR), (1, e + 2 * MINUTE)])
    assert column(table, "merchant_count_distinct_2h") == [6, 2]
    assert column(table, "merchant_count_2h") == [9, 3]


def test_entity_without_events(repo: Repo) -> None:
    rows = [event(1, T0, amount=1.0, qty=1, merchant="a")]
    load(repo, rows)
    table = check(repo.store, rows, [(7, T0), (7, T0 + DAY)])
    for agg in AGGS:
        want = 0 if agg.function in ("count", "count_distinct") else None
        if agg.function == "sum":
            want = 0 if agg.dtype == "Int64" else 0.0
        values = column(table, agg.name)
        assert values == [want, want], agg.name
        if want == 0.0 and agg.dtype == "Float64":
            assert all(float_bits(v) == 0 for v in values), agg.name  # +0.0


def test_float_edge_values(repo: Repo) -> None:
    e = T0 + HOUR
    values = [-0.0, 0.0, -0.0, 5e-324, math.nan, -math.nan, None]
    rows = [event(1, e, amount=v) for v in values]
    rows += [event(2, e, amount=-0.0), event(2, e, amount=-0.0)]
    rows += [event(3, e, amount=math.inf), event(3, e, amount=-math.inf), event(3, e, amount=1.0)]
    load(repo, rows)
    labels = [(1, e), (2, e), (3, e)]
    table = check(repo.store, rows, labels)
    mins, maxes = column(table, "amount_min_1h"), column(table, "amount_max_1h")
    assert float_bits(mins[0]) == float_bits(-0.0) and math.isnan(maxes[0])
    assert float_bits(mins[1]) == float_bits(-0.0) == float_bits(maxes[1])
    assert float_bits(column(table, "amount_sum_1h")[1]) == float_bits(0.0)  # exact zero: +0.0
    assert column(table, "amount_count_distinct_1h") == [3, 1, 3]  # {0.0, 5e-324, NaN}; {0.0}
    assert math.isnan(column(table, "amount_sum_1h")[2])
    assert (mins[2], maxes[2]) == (-math.inf, math.inf)
    assert column(table, "amount_var_1h")[1] == 0.0


def test_huge_and_nearly_equal_values(repo: Repo) -> None:
    """sum/mean round the exact sum once; var/stddev are within 1e-12 of the exact values,
    also when the sum of squares overflows or the values nearly cancel."""
    e = T0 + HOUR
    big = 1.7976931348623157e308
    groups = {
        1: [big, big],  # sum overflows: inf; variance exactly 0
        2: [big, -big, 1.0],  # sum exactly 1.0
        3: [1e154, 1e154 + 2.0**461],  # sum of squares > max double, variance 2**921
        4: [1e300, 1.0],  # variance ~5e599 overflows: inf
        5: [1.0, 1.0000000000000002],  # variance 2**-105 (adjacent doubles)
        6: [1e16, 1e16 + 2, 1e16 + 4, 1e16 + 2],
    }
    rows = [event(u, e, amount=v) for u, values in groups.items() for v in values]
    load(repo, rows)
    table = training_set(repo.store, [(u, e) for u in groups])
    exact_var = {1: 0.0, 2: to_float(statistics.variance([Fraction(v) for v in groups[2]])),
                 3: 2.0**921, 4: math.inf, 5: 2.0**-105, 6: 8 / 3}
    problems = []
    for u, values in groups.items():
        got = {f: column(table, f"amount_{f}_1h")[u - 1] for f in ("sum", "mean", "var", "stddev")}
        want = {"sum": exact_sum(values), "mean": exact_sum(values) / len(values),
                "var": exact_var[u], "stddev": math.sqrt(exact_var[u])}
        for f in got:
            agg = Agg("spend", "amount", f, "1h", "1h", "Float64")
            if not same(got[f], want[f], agg):
                problems.append(f"{f}({values}) = {got[f]!r}, expected {want[f]!r}")
    assert not problems, "\n".join(problems)
    assert column(table, "amount_sum_1h")[:2] == [math.inf, 1.0]


def test_first_last_order_by_created_time(repo: Repo) -> None:
    """Events with equal event times are ordered by when they became visible (the later of
    event and created time); the value decides between full ties, so a created time before
    the event time counts as the event time."""
    e = T0 + HOUR
    rows = [event(1, e, created=e, amount=0.5, qty=0),
            event(1, e, created=e - GRID, amount=2.0, qty=1),
            event(2, e, created=e + GRID, amount=0.5, qty=0),
            event(2, e, created=e, amount=2.0, qty=1),
            event(3, e, amount=2.0), event(3, e, amount=0.5)]
    load(repo, rows)
    labels = [(1, e + HOUR), (2, e + HOUR), (3, e + HOUR)]
    table = training_set(repo.store, labels)
    assert column(table, "amount_first_2h") == [0.5, 2.0, 0.5]
    assert column(table, "amount_last_2h") == [2.0, 0.5, 2.0]
    assert column(table, "qty_first_2h")[:2] == [0, 1]
    assert column(table, "qty_last_2h")[:2] == [1, 0]
    assert column(table, "plain_amount_first_2h") == [0.5, 0.5, 0.5]  # created = event time
    check(repo.store, rows, labels)


def test_count_distinct_of_int64(repo: Repo) -> None:
    e = T0 + HOUR
    rows = [event(1, e, qty=-1), event(1, e, qty=0), event(1, e, qty=-1),
            event(2, e, qty=I64_MIN), event(2, e, qty=I64_MAX), event(2, e, qty=1)]
    load(repo, rows)
    table = training_set(repo.store, [(1, e), (2, e)])
    assert column(table, "qty_count_distinct_2h") == [2, 3]


def test_count_distinct_is_exact_to_32_then_within_the_estimates_error(repo: Repo) -> None:
    """Up to 32 distinct values the count is exact; beyond, a 256-register HyperLogLog whose
    standard error is 1.04 / sqrt(256) = 6.5% (README): checked at 4 standard errors over
    several sizes, and the mean error over them within 2 standard errors."""
    e = T0 + HOUR
    rng = np.random.default_rng(32)
    sizes = {u: n for u, n in enumerate([*range(20, 33), 33, 40, 100, 300, 1000, 3000, 10_000], 1)}
    rows = [event(u, e, qty=int(q)) for u, n in sizes.items()
            for q in rng.choice(2**40, size=n, replace=False)]
    load(repo, rows)
    table = training_set(repo.store, [(u, e) for u in sizes])
    got = dict(zip(sizes, column(table, "qty_count_distinct_2h"), strict=True))
    assert {u: got[u] for u, n in sizes.items() if n <= 32} == \
        {u: n for u, n in sizes.items() if n <= 32}
    errors = [(got[u] - n) / n for u, n in sizes.items() if n > 32]
    assert all(abs(err) <= 4 * 0.065 for err in errors), errors
    assert abs(sum(errors) / len(errors)) <= 2 * 0.065, errors


# ---------------------------------------------------------------- errors


def test_hop_must_divide_window() -> None:
    with pytest.raises(FeatureStoreError, match="hop"):
        Aggregate("amount", "sum", window="1d", hop="7h")


def test_every_function_has_a_reference_and_a_kernel() -> None:
    """A function added to the definitions' table must be added to this module's reference
    (FUNCTIONS, checked against the brute force above) and to the accumulators."""
    assert set(AGGREGATE_FUNCTIONS) == set(FUNCTIONS) == set(CODES)


def test_function_must_accept_the_column_type() -> None:
    with pytest.raises(FeatureStoreError, match="sum"):
        Aggregate("merchant", "sum", window="1d", hop="1h", dtype=String)
    Aggregate("merchant", "count_distinct", window="1d", hop="1h", dtype=String)
    Aggregate("amount", "sum", window="1d", hop="1h", dtype=Float64)


def test_column_type_mismatch_fails_at_apply(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "featurestore.yaml").write_text("project: mismatch\n")
    (tmp_path / "features.py").write_text(textwrap.dedent("""
        from featurestore import Aggregate, Entity, FeatureView, Source
        from featurestore.types import Float64, Int64

        user = Entity("user", join_keys={"user_id": Int64})
        tx = Source("tx", path="data/tx.parquet", timestamp="event_ts")
        spend = FeatureView("spend", entity=user, source=tx, aggregates=[
            Aggregate("amount", "sum", window="1d", hop="1h", dtype=Float64)])
        """))
    pl.DataFrame({
        "user_id": [1], "event_ts": pl.Series([T0], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
        "amount": ["12.5"],
    }).write_parquet(tmp_path / "data" / "tx.parquet")
    with pytest.raises(FeatureStoreError, match="amount"):
        FeatureStore(tmp_path).apply()
