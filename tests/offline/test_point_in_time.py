"""The point-in-time join of `FeatureStore.training_set` against a brute-force reference.

The reference below walks the raw source rows in plain Python (no DuckDB): a row is visible at
label time T when event_ts <= T and created_ts <= T (when the source has a created column);
among visible rows of the label's entity key the greatest (event_ts, created_ts, file order)
wins; the view's ttl hides a winner with event_ts < T - ttl (exactly T - ttl stays visible).
A created column declared `created_role="tie_break"` (Feast's meaning) hides nothing: it only
ranks rows of equal event time.
Every value is compared bit for bit (floats by their bit pattern, all NaNs equal) together
with its status."""

from __future__ import annotations

import math
import os
import struct
import textwrap
from dataclasses import dataclass
from itertools import count, pairwise
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore import FeatureStore

DEFINITIONS = """
from datetime import timedelta

from featurestore import Entity, FeatureService, FeatureView, Field, Source
from featurestore.types import Bool, Float64, Int64, String, Timestamp

acct = Entity("acct", join_keys={"acct_id": Int64})
acct_region = Entity("acct_region", join_keys={"acct_id": Int64, "region": String})

a_src = Source("a_src", path="data/a.parquet", timestamp="event_ts", created="created_ts")
b_src = Source("b_src", path="data/b/*.parquet", timestamp="ts")
a_tie = Source("a_tie", path="data/a.parquet", timestamp="event_ts", created="created_ts",
               created_role="tie_break")

view_a = FeatureView(
    "view_a", entity=acct, source=a_src, ttl=timedelta(seconds=2),
    fields=[Field("a_int", Int64), Field("a_float", Float64), Field("a_bool", Bool),
            Field("a_str", String), Field("a_ts", Timestamp)])
view_b = FeatureView(
    "view_b", entity=acct_region, source=b_src,
    fields=[Field("b_int", Int64), Field("b_float", Float64), Field("b_str", String)])

view_t = FeatureView(
    "view_t", entity=acct, source=a_tie, ttl=timedelta(seconds=2),
    fields=[Field("a_int", Int64), Field("a_str", String)])

everything = FeatureService("everything", features=[view_a, view_b])
tie_break = FeatureService("tie_break", features=[view_t])
"""

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
BASE = 1_700_000_000_000_000  # epoch micros
STEP = 500_000  # the small time grid: ties on event and created times are frequent
TTL = 2_000_000  # view_a's ttl in micros (4 grid steps)
TS = pa.timestamp("us", tz="UTC")

A_FIELDS = {"a_int": "Int64", "a_float": "Float64", "a_bool": "Bool", "a_str": "String",
            "a_ts": "Timestamp"}
B_FIELDS = {"b_int": "Int64", "b_float": "Float64", "b_str": "String"}
ARROW = {"Int64": pa.int64(), "Float64": pa.float64(), "Bool": pa.bool_(), "String": pa.string(),
         "Timestamp": TS}
A_SCHEMA = {"acct_id": pa.int64(), "event_ts": TS, "created_ts": TS,
            **{f: ARROW[t] for f, t in A_FIELDS.items()}}
B_SCHEMA = {"acct_id": pa.int64(), "region": pa.string(), "ts": TS,
            **{f: ARROW[t] for f, t in B_FIELDS.items()}}
FEATURES = {**A_FIELDS, **B_FIELDS}  # the service's output order
LABEL_COLUMNS = ["acct_id", "region", "event_timestamp", "weight"]

Row = dict[str, Any]


# ---------------------------------------------------------------- the brute-force reference


@dataclass(frozen=True)
class ViewSpec:
    keys: tuple[str, ...]
    event: str
    created: str | None
    ttl: int | None
    fields: dict[str, str]
    created_hides: bool = True


VIEW_A = ViewSpec(("acct_id",), "event_ts", "created_ts", TTL, A_FIELDS)
VIEW_B = ViewSpec(("acct_id", "region"), "ts", None, None, B_FIELDS)
T_FIELDS = {"a_int": "Int64", "a_str": "String"}
VIEW_T = ViewSpec(("acct_id",), "event_ts", "created_ts", TTL, T_FIELDS, created_hides=False)


def reference_view(view: ViewSpec, rows: list[Row], label: Row) -> dict[str, tuple[Any, str]]:
    """feature -> (value, status) for one label row, by looking at every source row."""
    t = label["event_timestamp"]
    wanted = tuple(label[k] for k in view.keys)
    winner: Row | None = None
    best: tuple[int, int, int] | None = None
    for position, row in enumerate(rows):  # rows in file order
        key = tuple(row[k] for k in view.keys)
        if None in key or key != wanted:
            continue
        if row[view.event] > t:
            continue
        if view.created is not None and view.created_hides and row[view.created] > t:
            continue
        rank = (row[view.event], row[view.created] if view.created else 0, position)
        if best is None or rank > best:
            winner, best = row, rank
    out: dict[str, tuple[Any, str]] = {}
    for feature in view.fields:
        if winner is None:
            out[feature] = (None, "NOT_FOUND")
        elif view.ttl is not None and winner[view.event] < t - view.ttl:
            out[feature] = (None, "OUTSIDE_TTL")
        elif winner[feature] is None:
            out[feature] = (None, "NULL")
        else:
            out[feature] = (winner[feature], "PRESENT")
    return out


def reference(a_rows: list[Row], b_files: list[list[Row]], labels: list[Row]) -> list[dict]:
    b_rows = [row for part in b_files for row in part]  # files in name order, rows in order
    return [{**reference_view(VIEW_A, a_rows, label), **reference_view(VIEW_B, b_rows, label)}
            for label in labels]


# ---------------------------------------------------------------- comparing bit for bit


def float_bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x))[0]


def same(actual: Any, expected: Any) -> bool:
    if actual is None or expected is None:
        return actual is None and expected is None
    if type(actual) is not type(expected):
        return False
    if isinstance(actual, float):
        if math.isnan(actual) and math.isnan(expected):
            return True
        return float_bits(actual) == float_bits(expected)
    return actual == expected


def cells(table: pa.Table, name: str) -> list[Any]:
    column = table.column(name)
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.int64())
    return column.to_pylist()


def check(store: FeatureStore, a_rows: list[Row], b_files: list[list[Row]],
          labels: list[Row]) -> None:
    frame = labels_frame(labels)
    out = store.training_set(frame, service="everything", statuses=True)
    assert isinstance(out, pl.DataFrame)
    assert out.height == len(labels)
    features = list(FEATURES)
    assert out.columns[: len(LABEL_COLUMNS) + len(features)] == LABEL_COLUMNS + features
    assert sorted(out.columns[len(LABEL_COLUMNS) + len(features):]) == sorted(
        f"{f}__status" for f in features)
    table = out.to_arrow()
    for name in LABEL_COLUMNS:  # label columns come back unchanged, in label order
        got, sent = cells(table, name), cells(frame.to_arrow(), name)
        assert all(same(g, s) for g, s in zip(got, sent, strict=True)), name
    expected = reference(a_rows, b_files, labels)
    problems = []
    for feature in features:
        values = cells(table, feature)
        statuses = table.column(f"{feature}__status").to_pylist()
        for i, (value, status) in enumerate(zip(values, statuses, strict=True)):
            want_value, want_status = expected[i][feature]
            if status != want_status or not same(value, want_value):
                problems.append(
                    f"label {i} {labels[i]}: {feature} = {value!r} ({status}), "
                    f"expected {want_value!r} ({want_status})")
    assert not problems, "\n".join(problems[:20])
    check_tie_break(store, a_rows, labels)


def check_tie_break(store: FeatureStore, a_rows: list[Row], labels: list[Row]) -> None:
    table = store.training_set(labels_frame(labels), service="tie_break",
                               statuses=True).to_arrow()
    problems = []
    for i, label_ in enumerate(labels):
        expected = reference_view(VIEW_T, a_rows, label_)
        for feature in T_FIELDS:
            got = (cells(table, feature)[i], table.column(f"{feature}__status")[i].as_py())
            if got[1] != expected[feature][1] or not same(got[0], expected[feature][0]):
                problems.append(f"tie_break label {i} {label_}: {feature} = {got}, "
                                f"expected {expected[feature]}")
    assert not problems, "\n".join(problems[:20])


# ---------------------------------------------------------------- the repo and its data


@dataclass
class Repo:
    root: Path
    store: FeatureStore


_MTIME = count(1_600_000_000_000_000_000, 1_000_000_000)


def write_table(path: Path, rows: list[Row], schema: dict[str, pa.DataType]) -> None:
    table = pa.table({c: pa.array([r[c] for r in rows], t) for c, t in schema.items()})
    pq.write_table(table, path)
    stamp = next(_MTIME)  # every rewrite gets a new mtime, so ingest sees the change
    os.utime(path, ns=(stamp, stamp))


def load_data(repo: Repo, a_rows: list[Row], b_files: list[list[Row]]) -> None:
    data = repo.root / "data"
    write_table(data / "a.parquet", a_rows, A_SCHEMA)
    for old in (data / "b").glob("*.parquet"):
        old.unlink()
    for i, part in enumerate(b_files):
        write_table(data / "b" / f"part{i}.parquet", part, B_SCHEMA)
    result = repo.store.backfill()
    assert set(result.ingested) == {"a_src", "a_tie", "b_src"}, \
        "backfill did not re-ingest the sources"
    assert result.ingested["a_src"].rows == len(a_rows)
    assert result.ingested["b_src"].rows == sum(len(p) for p in b_files)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    root = tmp_path_factory.mktemp("pit_repo")
    (root / "data" / "b").mkdir(parents=True)
    (root / "featurestore.yaml").write_text("project: pit\n")
    (root / "features.py").write_text(textwrap.dedent(DEFINITIONS))
    write_table(root / "data" / "a.parquet", [a_row(1, 0, 0, a_int=1)], A_SCHEMA)
    write_table(root / "data" / "b" / "part0.parquet", [b_row(1, "eu", 0, b_int=1)], B_SCHEMA)
    store = FeatureStore(root)
    store.apply()
    return Repo(root, store)


def at(step: int, plus_us: int = 0) -> int:
    return BASE + step * STEP + plus_us


def a_row(acct_id: int | None, event: int, created: int, **values: Any) -> Row:
    return {"acct_id": acct_id, "event_ts": event, "created_ts": created,
            **{f: values.get(f) for f in A_FIELDS}}


def b_row(acct_id: int | None, region: str | None, ts: int, **values: Any) -> Row:
    return {"acct_id": acct_id, "region": region, "ts": ts,
            **{f: values.get(f) for f in B_FIELDS}}


def label(acct_id: int, region: str, t: int, weight: float = 0.0) -> Row:
    return {"acct_id": acct_id, "region": region, "event_timestamp": t, "weight": weight}


def labels_frame(labels: list[Row]) -> pl.DataFrame:
    return pl.DataFrame({
        "acct_id": pl.Series([r["acct_id"] for r in labels], dtype=pl.Int64),
        "region": pl.Series([r["region"] for r in labels], dtype=pl.String),
        "event_timestamp": pl.Series([r["event_timestamp"] for r in labels], dtype=pl.Int64)
        .cast(pl.Datetime("us", "UTC")),
        "weight": pl.Series([r["weight"] for r in labels], dtype=pl.Float64),
    })


# ---------------------------------------------------------------- generated data

SPECIAL_FLOATS = [math.nan, -math.nan, 0.0, -0.0, math.inf, -math.inf, 5e-324, -5e-324,
                  2.2250738585072014e-308, 1.7976931348623157e308, 1.0, -1.5]
KEYS = [1, 2, -7, 0, I64_MIN, I64_MAX]
REGIONS = ["", "eu", "é", "e\u0301", "😀"]

grid = st.integers(0, 8).map(at)
keys = st.sampled_from([*KEYS, None])  # null keys in the source are skipped
regions = st.sampled_from([*REGIONS, None])
ints = st.one_of(st.none(), st.sampled_from([0, -1, I64_MIN, I64_MAX]),
                 st.integers(I64_MIN, I64_MAX))
floats = st.one_of(st.none(), st.sampled_from(SPECIAL_FLOATS), st.floats())
bools = st.one_of(st.none(), st.booleans())
strings = st.one_of(st.none(), st.sampled_from(["", "é", "e\u0301", "😀", "a\x00b", "NULL"]),
                    st.text(max_size=6))
stamps = st.one_of(st.none(), st.sampled_from([I64_MIN, I64_MIN + 1, I64_MAX, 0, -1]),
                   st.integers(I64_MIN, I64_MAX))

a_rows_st = st.lists(st.fixed_dictionaries({
    "acct_id": keys, "event_ts": grid, "created_ts": grid, "a_int": ints, "a_float": floats,
    "a_bool": bools, "a_str": strings, "a_ts": stamps}), max_size=25)
b_rows_st = st.lists(st.fixed_dictionaries({
    "acct_id": keys, "region": regions, "ts": grid, "b_int": ints, "b_float": floats,
    "b_str": strings}), max_size=20)

OFFSETS = [0, -1, 1, TTL, TTL - 1, TTL + 1]


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[Row], list[list[Row]], list[Row]]:
    a_rows = draw(a_rows_st)
    b_rows = draw(b_rows_st)
    cuts = sorted(draw(st.lists(st.integers(0, len(b_rows)), max_size=2)))
    bounds = [0, *cuts, len(b_rows)]
    b_files = [b_rows[lo:hi] for lo, hi in pairwise(bounds)]
    anchors = sorted({r["event_ts"] for r in a_rows} | {r["created_ts"] for r in a_rows}
                     | {r["ts"] for r in b_rows} | {at(0)})
    times = st.one_of(
        st.integers(-1, 14).map(at),  # on the grid, before and after every row
        st.builds(lambda t, d: t + d, st.sampled_from(anchors), st.sampled_from(OFFSETS)))
    base = draw(st.lists(st.builds(
        label, st.sampled_from([*KEYS, 99]), st.sampled_from([*REGIONS, "zz"]), times,
        st.sampled_from(SPECIAL_FLOATS)), min_size=1, max_size=25))
    copies = draw(st.lists(st.sampled_from(base), max_size=5))  # duplicate label rows
    labels = draw(st.permutations(base + copies))
    return a_rows, b_files, labels


@settings(max_examples=40, deadline=None)
@given(case=cases())
def test_training_set_matches_brute_force(repo: Repo, case: tuple) -> None:
    a_rows, b_files, labels = case
    load_data(repo, a_rows, b_files)
    check(repo.store, a_rows, b_files, labels)


# ---------------------------------------------------------------- explicit cases


def values_at(repo: Repo, labels: list[Row], feature: str) -> list[tuple[Any, str]]:
    out = repo.store.training_set(labels_frame(labels), service="everything", statuses=True)
    table = out.to_arrow()
    return list(zip(cells(table, feature), table.column(f"{feature}__status").to_pylist(),
                    strict=True))


def test_event_tie_broken_by_created_then_file_order(repo: Repo) -> None:
    a_rows = [
        a_row(1, at(2), at(5), a_int=20),  # same event time, created later: wins from at(5)
        a_row(1, at(2), at(3), a_int=10),  # created earlier: the only visible one before at(5)
        a_row(2, at(1), at(1), a_int=1),
        a_row(2, at(1), at(1), a_int=2),  # full tie: the row later in the file wins
    ]
    b_files = [[b_row(1, "eu", at(1), b_int=1), b_row(1, "eu", at(1), b_int=2)],
               [b_row(1, "eu", at(1), b_int=3)]]  # full tie across files: the later file wins
    load_data(repo, a_rows, b_files)
    labels = [label(1, "eu", at(2)), label(1, "eu", at(3)), label(1, "eu", at(4)),
              label(1, "eu", at(5)), label(1, "eu", at(5, -1)), label(2, "eu", at(1))]
    assert values_at(repo, labels, "a_int") == [
        (None, "NOT_FOUND"), (10, "PRESENT"), (10, "PRESENT"), (20, "PRESENT"),
        (10, "PRESENT"), (2, "PRESENT")]
    assert values_at(repo, labels, "b_int") == [(3, "PRESENT")] * 5 + [(None, "NOT_FOUND")]
    check(repo.store, a_rows, b_files, labels)


def test_row_created_after_label_time_is_hidden(repo: Repo) -> None:
    a_rows = [a_row(1, at(0), at(0), a_str="old"),
              a_row(1, at(2), at(6), a_str="new")]  # newer event, but only known from at(6)
    load_data(repo, a_rows, [[]])
    labels = [label(1, "", at(2)), label(1, "", at(4)), label(1, "", at(6, -1)),
              label(1, "", at(6))]
    assert values_at(repo, labels, "a_str") == [
        ("old", "PRESENT"), ("old", "PRESENT"), (None, "OUTSIDE_TTL"), ("new", "PRESENT")]
    check(repo.store, a_rows, [[]], labels)


def test_tie_break_created_column_hides_nothing(repo: Repo) -> None:
    a_rows = [a_row(1, at(0), at(0), a_str="old"),
              a_row(1, at(2), at(6), a_str="new"),  # known from at(6), used from at(2)
              a_row(1, at(3), at(9), a_str="tie-late"),
              a_row(1, at(3), at(1), a_str="tie-early")]  # same event: the later created wins
    load_data(repo, a_rows, [[]])
    labels = [label(1, "", at(2, -1)), label(1, "", at(2)), label(1, "", at(3))]
    out = repo.store.training_set(labels_frame(labels), service="tie_break", statuses=True)
    assert out["a_str"].to_list() == ["old", "new", "tie-late"]
    assert values_at(repo, labels, "a_str") == [  # the visibility role hides the late rows
        ("old", "PRESENT"), ("old", "PRESENT"), ("tie-early", "PRESENT")]
    check(repo.store, a_rows, [[]], labels)


def test_ttl_edge(repo: Repo) -> None:
    e = at(2)
    a_rows = [a_row(1, e, e, a_float=-0.0),
              a_row(2, e, e + TTL + 5, a_float=1.0),  # visible only when already expired
              a_row(3, e, e, a_float=None)]
    load_data(repo, a_rows, [[]])
    labels = [label(1, "", e + TTL), label(1, "", e + TTL + 1), label(1, "", e),
              label(2, "", e + TTL + 5), label(2, "", e + TTL),
              label(3, "", e + TTL), label(3, "", e + TTL + 1)]
    got = values_at(repo, labels, "a_float")
    assert [s for _, s in got] == ["PRESENT", "OUTSIDE_TTL", "PRESENT", "OUTSIDE_TTL",
                                   "NOT_FOUND", "NULL", "OUTSIDE_TTL"]
    assert float_bits(got[0][0]) == float_bits(-0.0)
    assert got[1][0] is None
    check(repo.store, a_rows, [[]], labels)


def test_label_order_and_duplicates_preserved(repo: Repo) -> None:
    a_rows = [a_row(k, at(0), at(0), a_int=k) for k in (1, 2, 3)]
    load_data(repo, a_rows, [[b_row(3, "é", at(0), b_str="x")]])
    labels = [label(3, "é", at(1), 0.5), label(1, "é", at(1)), label(3, "é", at(1), 0.5),
              label(99, "é", at(1)), label(2, "e\u0301", at(0)), label(3, "é", at(1), 0.5)]
    assert values_at(repo, labels, "a_int") == [
        (3, "PRESENT"), (1, "PRESENT"), (3, "PRESENT"), (None, "NOT_FOUND"), (2, "PRESENT"),
        (3, "PRESENT")]
    assert [s for _, s in values_at(repo, labels, "b_str")] == [
        "PRESENT", "NOT_FOUND", "PRESENT", "NOT_FOUND", "NOT_FOUND", "PRESENT"]
    check(repo.store, a_rows, [[b_row(3, "é", at(0), b_str="x")]], labels)
