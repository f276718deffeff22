"""The three ways windows are computed agree bit for bit: direct evaluation over events (training
sets), the sliding sweep (backfill), and window keys merged (online): written whole, appended
batch by batch as pushes do, or rewritten, including tiles built from the events in any order
and split into any batches."""

from __future__ import annotations

import math
import struct
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.aggregation.accumulators import (
    CODES,
    UNITS,
    add_event,
    finish,
    merge_state,
    normalize_state,
)
from featurestore.aggregation.events import Events
from featurestore.aggregation.layout import Layout, empty_outputs
from featurestore.aggregation.windows import change_points, evaluate, sweep
from featurestore.definitions.functions import AGGREGATE_FUNCTIONS
from featurestore.definitions.types import Float64, Int64
from featurestore.offline.windowed import sweep_at
from featurestore.online.tile_format import HEADER, merge_windows
from featurestore.online.tiles import Bases, compacted, groups, window_writes
from featurestore.plan.plan import AggregatePlan
from featurestore.values.columns import Column

H = 10  # hop
# every function of the table, so a new one is covered here the day it is added
AGGS = (*(AggregatePlan(f"{f}_{w}", "x", f, Float64, sig.output(Float64), w, H)
          for f, sig in AGGREGATE_FUNCTIONS.items() for w in (20, 50)),
        *(AggregatePlan(f"i{f}", "k", f, Int64, sig.output(Int64), 30, H)
          for f, sig in AGGREGATE_FUNCTIONS.items() if Int64 in sig.accepts))
VALUES = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, 1e308,
                                    -1e308, 1.0, 2.0]), st.floats(-100, 100), st.none())


@st.composite
def streams(draw: st.DrawFn) -> dict[str, list]:
    n = draw(st.integers(0, 40))
    rows = sorted(
        [(draw(st.integers(0, 2)), draw(st.integers(0, 120)), draw(st.booleans()),
          draw(VALUES), draw(st.one_of(st.none(), st.integers(-2**40, 2**40))))
         for _ in range(n)], key=lambda r: (r[0], r[1]))
    return {"rows": rows, "late": draw(st.booleans()),
            "coarse": draw(st.sampled_from([0, 2, 3, 4]))}


def events_of(rows: list, late: bool) -> Events:
    entity = np.array([r[0] for r in rows], np.int64)
    ts = np.array([r[1] for r in rows], np.int64)
    created = ts + np.array([7 if (late and r[2]) else 0 for r in rows], np.int64)
    x = [r[3] for r in rows]
    k = [r[4] for r in rows]
    starts = np.searchsorted(entity, np.arange(3)).astype(np.int64)
    ends = np.searchsorted(entity, np.arange(3), side="right").astype(np.int64)
    xs = pa.array(x, pa.float64())
    ks = pa.array(k, pa.int64())
    return Events(pa.table({"e": [0, 1, 2]}), ts, created, {
        "x": Column(xs.fill_null(0.0).to_numpy(zero_copy_only=False),
                    xs.is_valid().to_numpy(zero_copy_only=False)),
        "k": Column(ks.fill_null(0).to_numpy(zero_copy_only=False),
                    ks.is_valid().to_numpy(zero_copy_only=False))}, starts, ends)


def canonical(out_i: np.ndarray, out_f: np.ndarray, valid: np.ndarray) -> list:
    f = np.where(np.isnan(out_f), np.nan, out_f).view(np.int64)
    f = np.where(np.isnan(out_f), -1, f)
    return [out_i.tolist(), f.tolist(), valid.tolist()]


@settings(max_examples=120, deadline=None)
@given(streams(), st.lists(st.integers(-5, 140), min_size=1, max_size=12))
def test_sweep_and_tiles_equal_direct_evaluation(stream: dict, times: list[int]) -> None:
    ev = events_of(stream["rows"], stream["late"])
    layout = Layout.of(AGGS)
    xi, xf, m = layout.inputs(ev.columns)
    times = sorted(set(times))
    q_entity = np.repeat(np.arange(3), len(times)).astype(np.int64)
    q_ts = np.tile(np.array(times, np.int64), 3)
    direct = empty_outputs(layout, len(q_ts))
    evaluate(layout.spec, layout.width, xi, xf, m, ev.ts, ev.created, ev.starts, ev.ends,
             q_entity, q_ts, *direct)
    swept = empty_outputs(layout, len(q_ts))
    bounds = np.arange(4, dtype=np.int64) * len(times)
    sweep(layout.spec, layout.width, xi, xf, m, ev.ts, ev.created, ev.starts, ev.ends,
          bounds[:-1], bounds[1:], q_ts, *swept)
    assert canonical(*swept) == canonical(*direct)

    # Online: window keys written at the latest time t (tiles of what is visible then, later
    # events held apart), read at t and after; the same events appended batch by batch as
    # pushes do, and those keys rewritten, read the same.
    t = max(times)
    if t < 0:
        return
    g = replace(groups(AGGS)[0], coarse=stream["coarse"])
    bases = Bases.of_strings(["e0", "e1", "e2"])
    k_lo, k_hi = t // H - g.span + 1, max([t, *ev.ts.tolist()]) // H
    whole = window_writes(g, bases, ev, k_lo, k_hi, t, 0, True)
    appended = _appended(g, bases, ev, np.array_split(np.arange(len(ev.ts)), 3), k_lo, k_hi, t)
    keys = [f"e{e}:w{H}" for e in range(3)]
    for d in (0, 3, 11, 40):
        at = t + d
        expected = empty_outputs(layout, 3)
        evaluate(layout.spec, layout.width, xi, xf, m, ev.ts, ev.created, ev.starts, ev.ends,
                 np.arange(3, dtype=np.int64), np.full(3, at, np.int64), *expected)
        # rewritten as a push at `at` does: the events visible by then become tiles
        rewritten = compacted(g, [appended.get(k) for k in keys], t, at)
        layouts = {"whole": dict(zip(whole.keys, whole.values, strict=True)),
                   "appended": appended, "rewritten": dict(zip(keys, rewritten, strict=True))}
        for name, values in layouts.items():
            blobs = [values.get(k) or b"" for k in keys]
            off = np.zeros(4, np.int64)
            np.cumsum([len(b) for b in blobs], out=off[1:])
            online = empty_outputs(layout, 3)
            assert merge_windows(*layout.merging, g.coarse, at // H, at,
                                 np.frombuffer(b"".join(blobs), np.uint8), off, 3, g.span,
                                 *online) == 0
            assert canonical(*online) == canonical(*expected), (name, at)


def _appended(g, bases: Bases, ev: Events, batches: list[np.ndarray], k_lo: int,
              k_hi: int, t: int) -> dict[str, bytes]:
    """Window keys as pushes leave them: each batch's records appended, in batch order."""
    owner = np.repeat(np.arange(3), ev.ends - ev.starts)
    out: dict[str, bytes] = {}
    for batch in batches:
        batch = batch[np.lexsort((ev.ts[batch], owner[batch]))]
        part = Events(ev.keys, ev.ts[batch], ev.created[batch],
                      {c: Column(col.values[batch], col.valid[batch])
                       for c, col in ev.columns.items()},
                      np.searchsorted(owner[batch], np.arange(3)).astype(np.int64),
                      np.searchsorted(owner[batch], np.arange(3), side="right").astype(np.int64))
        w = window_writes(g, bases, part, k_lo, k_hi, t, 0, False)
        for key, value in zip(w.keys, w.values, strict=True):
            out[key] = out.get(key, struct.pack("<qq", HEADER, 0)) + value
    return out


@settings(max_examples=60, deadline=None)
@given(streams(), st.randoms(use_true_random=False))
def test_tiles_do_not_depend_on_arrival_order_or_batches(stream: dict, rnd) -> None:
    """The same events pushed in any order and batches, once their keys are rewritten, are
    the same bytes as the keys written whole and rewritten (events held apart keep their
    arrival order: reads of them are compared in the test above)."""
    ev = events_of(stream["rows"], stream["late"])
    g = replace(groups(AGGS)[0], coarse=stream["coarse"])
    bases = Bases.of_strings(["e0", "e1", "e2"])
    n = len(ev.ts)
    t = 200  # every event visible
    order = list(range(n))
    rnd.shuffle(order)
    cut = sorted(rnd.sample(range(1, n), min(3, n - 1))) if n > 1 else []
    pushed = _appended(g, bases, ev, np.split(np.array(order, np.int64), cut), -5, 20, t)
    whole = window_writes(g, bases, ev, -5, 20, t, 0, True)
    assert sorted(pushed) == sorted(whole.keys)
    keys = whole.keys
    a = compacted(g, [dict(zip(keys, whole.values, strict=True))[k] for k in keys], 0, t)
    b = compacted(g, [pushed[k] for k in keys], 0, t)
    assert [v[:8] + v[16:] for v in a] == [v[:8] + v[16:] for v in b]  # all but expiry


@settings(max_examples=150, deadline=None)
@given(streams(), st.lists(st.sampled_from([2, 5, 10]), min_size=1, max_size=3, unique=True),
       st.lists(st.tuples(st.sampled_from([2, 5, 10]), st.integers(1, 6)), min_size=1,
                max_size=3))
def test_change_points_are_every_distinct_boundary_in_order(stream: dict, hops: list[int],
                                                            windows: list) -> None:
    """Per entity in time order, each boundary where an event becomes visible (rounded up to
    a hop) or leaves a window, once: against the rule written out plainly (late events make
    the visibility times unsorted, which the kernel sorts rather than merges)."""
    ev = events_of(stream["rows"], stream["late"])
    windows = sorted({(h, h * k) for h, k in windows})
    want = []
    for e in range(3):
        points = set()
        for i in range(ev.starts[e], ev.ends[e]):
            for h in hops:
                points.add((int(ev.created[i]) + h - 1) // h * h)
            for h, w in windows:
                points.add((int(ev.ts[i]) + w) // h * h + h)
        want += [(e, t) for t in sorted(points)]
    got_e, got_t = change_points(ev.ts, ev.created, ev.starts, ev.ends,
                                 np.array(sorted(hops), np.int64),
                                 np.array(windows, np.int64).reshape(-1, 2))
    assert list(zip(got_e.tolist(), got_t.tolist(), strict=True)) == want


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 39), st.integers(0, 120), st.booleans(), VALUES),
                max_size=150), st.lists(st.integers(-5, 140), min_size=1, max_size=6),
       st.permutations([a for a in AGGS if a.column == "x"]))
def test_sweep_at_in_parts_equals_direct_evaluation(rows: list, times: list[int],
                                                    aggs: list[AggregatePlan]) -> None:
    """sweep_at splits the entities into parts swept by a pool of threads: every entity's
    values, wherever the cuts fall, are those of direct evaluation. The aggregations come in
    any order: those sharing a pass of moments (count, sum, mean, var, stddev of a window)
    get their values from the first of them that needs sums, wherever it stands."""
    rows = sorted(rows, key=lambda r: (r[0], r[1]))
    entity = np.array([r[0] for r in rows], np.int64)
    ts = np.array([r[1] for r in rows], np.int64)
    x = pa.array([r[3] for r in rows], pa.float64())
    ev = Events(pa.table({"e": list(range(40))}), ts,
                ts + np.array([7 * r[2] for r in rows], np.int64),
                {"x": Column(x.fill_null(0.0).to_numpy(zero_copy_only=False),
                             x.is_valid().to_numpy(zero_copy_only=False))},
                np.searchsorted(entity, np.arange(40)).astype(np.int64),
                np.searchsorted(entity, np.arange(40), side="right").astype(np.int64))
    aggs = tuple(aggs)
    layout = Layout.of(aggs)
    times = sorted(set(times))
    q_entity = np.repeat(np.arange(40), len(times)).astype(np.int64)
    q_ts = np.tile(np.array(times, np.int64), 40)
    xi, xf, m = layout.inputs(ev.columns)
    direct = empty_outputs(layout, len(q_ts))
    evaluate(layout.spec, layout.width, xi, xf, m, ev.ts, ev.created, ev.starts, ev.ends,
             q_entity, q_ts, *direct)
    swept = sweep_at(SimpleNamespace(aggregates=aggs), ev, q_entity, q_ts)
    for a, column in enumerate(swept):
        floats = aggs[a].output is Float64
        want = direct[1][a].view(np.int64) if floats else direct[0][a]
        got = column.values.view(np.int64) if floats else column.values
        assert column.valid.tolist() == direct[2][a].tolist()
        assert got.tolist() == want.tolist()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([3, 40, 100, 5000]), st.data())
def test_sweep_of_distinct_counts_past_the_exact_set_equals_direct_evaluation(
        spread: int, data: st.DataObject) -> None:
    """Distinct counts slide (inputs counted in the window, the state rebuilt when one leaves)
    across windows of few and of more than 32 distinct values (HyperLogLog registers), with
    duplicates entering and leaving: the values of direct evaluation at every hop."""
    n = data.draw(st.integers(0, 400))
    ts = np.sort(np.array(data.draw(st.lists(st.integers(0, 400), min_size=n, max_size=n)),
                          np.int64))
    k = pa.array(data.draw(st.lists(st.one_of(st.none(), st.integers(0, spread)), min_size=n,
                                    max_size=n)), pa.int64())
    ev = Events(pa.table({"e": [0]}), ts, ts.copy(),
                {"k": Column(k.fill_null(0).to_numpy(zero_copy_only=False),
                             k.is_valid().to_numpy(zero_copy_only=False))},
                np.array([0], np.int64), np.array([n], np.int64))
    layout = Layout.of(tuple(AggregatePlan(f"d{w}", "k", "count_distinct", Int64, Int64, w, H)
                             for w in (20, 100, 300)))
    xi, xf, m = layout.inputs(ev.columns)
    q_ts = np.arange(-H, 420, H, dtype=np.int64)
    direct = empty_outputs(layout, len(q_ts))
    evaluate(layout.spec, layout.width, xi, xf, m, ev.ts, ev.created, ev.starts, ev.ends,
             np.zeros(len(q_ts), np.int64), q_ts, *direct)
    swept = empty_outputs(layout, len(q_ts))
    sweep(layout.spec, layout.width, xi, xf, m, ev.ts, ev.created, ev.starts, ev.ends,
          np.array([0], np.int64), np.array([len(q_ts)], np.int64), q_ts, *swept)
    assert canonical(*swept) == canonical(*direct)


@settings(max_examples=60, deadline=None)
@given(st.lists(VALUES, max_size=12), st.lists(VALUES, max_size=12),
       st.lists(st.integers(-2**62, 2**62), min_size=24, max_size=24))
def test_units_that_merge_slot_by_slot_merge_as_they_say(xs: list, ys: list, ks: list) -> None:
    """A unit whose `merges` says its merge adds slots ("+") or keeps the larger ("^") gives,
    merged that way slot by slot as lookups do, the state its own merge gives (up to the
    carries normalize propagates) and the same value."""
    for agg in AGGS:
        unit, flt = UNITS[CODES[agg.function]], agg.dtype is Float64
        if not unit.merges[flt]:
            continue
        layout = Layout.of((agg,))
        spec, width = layout.spec, layout.width
        assert len(unit.merges[flt]) == width - 1
        states = []
        for values, keys in ((xs, ks[:12]), (ys, ks[12:])):
            ev = events_of([(0, 7, False, x, k) for x, k in zip(values, keys, strict=False)],
                           False)
            xi, xf, m = layout.inputs(ev.columns)
            s = np.zeros(width, np.int64)
            for i in range(len(ev.ts)):
                add_event(spec, 0, s, xi, xf, m, i, 7, 7)
            normalize_state(spec, 0, s)  # as tiles are stored
            states.append(s)
        by_unit, by_slot = states[0].copy(), states[0].copy()
        merge_state(spec, 0, by_unit, states[1])
        for slot, how in enumerate(unit.merges[flt], start=1):
            other = states[1][slot]
            by_slot[slot] = by_slot[slot] + other if how == "+" else max(by_slot[slot], other)
        finished = []
        for s in (by_unit, by_slot):
            out = empty_outputs(layout, 1)
            finish(spec, 0, s, 0, *out)
            normalize_state(spec, 0, s)
            finished.append(canonical(*out))
        assert finished[0] == finished[1], agg.function
        assert by_unit.tolist() == by_slot.tolist(), agg.function


def test_a_key_of_many_records_reads_as_direct_evaluation() -> None:
    """An entity whose key holds more tiles than a lookup merges before carrying its slot by
    slot sums (600 one-event pushes to one hop group, no rewrite) reads as evaluated."""
    rng = np.random.default_rng(3)
    values = rng.choice([1e300, -1e300, 1.5, -2.25, 1e-300, 3.0], 600).tolist()
    rows = sorted([(0, int(t), False, v, int(k)) for t, v, k in zip(
        rng.integers(60, 100, 600), values, rng.integers(-2**40, 2**40, 600), strict=True)],
        key=lambda r: r[1])
    ev = events_of(rows, False)
    layout = Layout.of(AGGS)
    g = replace(groups(AGGS)[0], coarse=0)
    bases = Bases.of_strings(["e0", "e1", "e2"])
    t = 100
    key = _appended(g, bases, ev, np.array_split(np.arange(600), 600), t // H - g.span + 1,
                    t // H, t)["e0:w10"]
    xi, xf, m = layout.inputs(ev.columns)
    expected = empty_outputs(layout, 1)
    evaluate(layout.spec, layout.width, xi, xf, m, ev.ts, ev.created, ev.starts, ev.ends,
             np.zeros(1, np.int64), np.full(1, t, np.int64), *expected)
    online = empty_outputs(layout, 1)
    assert merge_windows(*layout.merging, g.coarse, t // H, t, np.frombuffer(key, np.uint8),
                         np.array([0, len(key)], np.int64), 1, g.span, *online) == 0
    assert canonical(*online) == canonical(*expected)


@st.composite
def finite_values(draw: st.DrawFn) -> list[float | None]:
    """Finite values in an exponent band (the sweep then keeps exact sums in a few limbs) or
    not (it falls back), with cancellations, zeros of both signs and nulls."""
    center, width = draw(st.integers(-1074, 971)), draw(st.sampled_from([0, 10, 100, 700]))
    parts = st.tuples(st.integers(1, 2**53 - 1), st.integers(0, width), st.booleans())
    values: list[float | None] = [
        math.copysign(math.ldexp(m, min(center + d, 971)), -1.0 if neg else 1.0)
        for m, d, neg in draw(st.lists(parts, max_size=30))]
    values += [v for v in values[:3] if v is not None and draw(st.booleans())]  # repeats
    values += draw(st.lists(st.sampled_from([0.0, -0.0, None]), max_size=4))
    return draw(st.permutations(values))


@settings(max_examples=80, deadline=None)
@given(finite_values(), st.integers(1, 3), st.data())
def test_sweep_of_exact_sums_in_fixed_limbs_equals_direct_evaluation(
        values: list, entities: int, data: st.DataObject) -> None:
    """Sums, means, variances and standard deviations of entities whose values are all finite
    (kept in fixed_sum's limbs when they fit) slide to the bits of direct evaluation."""
    n = len(values)
    entity = np.sort(np.array(data.draw(st.lists(st.integers(0, entities - 1), min_size=n,
                                                 max_size=n)), np.int64))
    ts = np.array(data.draw(st.lists(st.integers(0, 120), min_size=n, max_size=n)), np.int64)
    ts = ts[np.lexsort((ts, entity))]
    x = pa.array(values, pa.float64())
    starts = np.searchsorted(entity, np.arange(entities)).astype(np.int64)
    ends = np.searchsorted(entity, np.arange(entities), side="right").astype(np.int64)
    ev = Events(pa.table({"e": list(range(entities))}), ts, ts.copy(),
                {"x": Column(x.fill_null(0.0).to_numpy(zero_copy_only=False),
                             x.is_valid().to_numpy(zero_copy_only=False))}, starts, ends)
    layout = Layout.of(tuple(a for a in AGGS if a.column == "x" and a.function in (
        "sum", "mean", "var", "stddev")))
    xi, xf, m = layout.inputs(ev.columns)
    q_ts = np.arange(-H, 140, 3, dtype=np.int64)
    q_entity = np.repeat(np.arange(entities), len(q_ts)).astype(np.int64)
    q_all = np.tile(q_ts, entities)
    direct = empty_outputs(layout, len(q_all))
    evaluate(layout.spec, layout.width, xi, xf, m, ev.ts, ev.created, ev.starts, ev.ends,
             q_entity, q_all, *direct)
    swept = empty_outputs(layout, len(q_all))
    bounds = np.arange(entities + 1, dtype=np.int64) * len(q_ts)
    sweep(layout.spec, layout.width, xi, xf, m, ev.ts, ev.created, ev.starts, ev.ends,
          bounds[:-1], bounds[1:], q_all, *swept)
    assert canonical(*swept) == canonical(*direct)
