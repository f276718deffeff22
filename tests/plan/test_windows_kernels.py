"""The three ways windows are computed agree bit for bit: direct evaluation over events (training
sets), the sliding sweep (backfill), and tiles merged with head events (online), including
tiles built from the events in any order and split into any batches."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.aggregation.events import Events
from featurestore.aggregation.layout import Layout, empty_outputs
from featurestore.aggregation.tiles import add_head_events, build_tiles, finish_rows, merge_tile
from featurestore.aggregation.windows import evaluate, sweep
from featurestore.definitions.functions import AGGREGATE_FUNCTIONS
from featurestore.definitions.types import Float64, Int64
from featurestore.online.tile_format import encode_tiles, index_blocks, merge_windows, pack_blocks
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
    return {"rows": rows, "late": draw(st.booleans())}


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

    # Online: tiles of everything visible at the latest time, merged at each time T in the
    # hop of that latest time (reads happen at or after the last arrival).
    t = max(times)
    if t < 0 or any(c > t for c in ev.created):
        return
    span = 50 // H + 1
    head = t // H
    ent, k, states = build_tiles(layout.spec, layout.width, H, xi, xf, m, ev.ts, ev.created,
                                 ev.starts, ev.ends, head - span + 1, head, t)
    # As online: tiles packed into blocks (of 4 hops here), the blocks read back per entity.
    buf, offsets = encode_tiles(states)
    data, block_offsets, block_entity, block = pack_blocks(buf, offsets, ent, k, 4)
    numbers = range((head - span + 1) // 4, head // 4 + 1)
    found = {(int(e), int(b)): bytes(data[block_offsets[i]:block_offsets[i + 1]])
             for i, (e, b) in enumerate(zip(block_entity, block, strict=True))}
    blobs = [found.get((e, b), b"") for e in range(3) for b in numbers]
    flat = np.frombuffer(b"".join(blobs), np.uint8)
    off = np.zeros(len(blobs) + 1, np.int64)
    np.cumsum([len(x) for x in blobs], out=off[1:])
    lo, hi = index_blocks(flat, off, 3, len(numbers), numbers.start, head - span + 1, span, 4)
    online = empty_outputs(layout, 3)
    acc = merge_windows(layout.spec, layout.width, head, flat, lo, hi, 3, span,
                        np.ones(3, np.bool_))
    finish_rows(layout.spec, acc, *online)
    last = [len(times) * (e + 1) - 1 for e in range(3)]  # each entity's query at t
    expected = [x[:, last] for x in direct]
    assert canonical(*online) == canonical(*expected)
    # ...and with the head tile left out and its events added raw.
    acc = merge_windows(layout.spec, layout.width, head, flat, lo, hi, 3, span,
                        np.zeros(3, np.bool_))
    rows = np.flatnonzero(ev.ts // H == head)
    owner = np.repeat(np.arange(3), ev.ends - ev.starts)[rows]
    add_head_events(layout.spec, acc, owner.astype(np.int64), xi[:, rows].copy(),
                    xf[:, rows].copy(), m[:, rows].copy(), ev.ts[rows].copy(),
                    ev.created[rows].copy(), t)
    raw = empty_outputs(layout, 3)
    finish_rows(layout.spec, acc, *raw)
    assert canonical(*raw) == canonical(*expected)


@settings(max_examples=60, deadline=None)
@given(streams(), st.randoms(use_true_random=False))
def test_tiles_do_not_depend_on_arrival_order_or_batches(stream: dict, rnd) -> None:
    ev = events_of(stream["rows"], False)
    layout = Layout.of(AGGS)
    xi, xf, m = layout.inputs(ev.columns)
    n = len(ev.ts)
    whole = build_tiles(layout.spec, layout.width, H, xi, xf, m, ev.ts, ev.created,
                        ev.starts, ev.ends, -100, 100, 10**9)
    # The same events split into random batches, each folded into tiles and merged.
    merged: dict[tuple[int, int], np.ndarray] = {}
    order = list(range(n))
    rnd.shuffle(order)
    cut = sorted(rnd.sample(range(1, n), min(3, n - 1))) if n > 1 else []
    owner = np.repeat(np.arange(3), ev.ends - ev.starts)
    for batch in np.split(np.array(order, np.int64), cut):
        batch = batch[np.lexsort((ev.ts[batch], owner[batch]))]
        starts = np.searchsorted(owner[batch], np.arange(3)).astype(np.int64)
        ends = np.searchsorted(owner[batch], np.arange(3), side="right").astype(np.int64)
        e, k, states = build_tiles(layout.spec, layout.width, H, xi[:, batch].copy(),
                                   xf[:, batch].copy(), m[:, batch].copy(), ev.ts[batch].copy(),
                                   ev.created[batch].copy(), starts, ends, -100, 100, 10**9)
        for j, key in enumerate(zip(e.tolist(), k.tolist(), strict=True)):
            if key in merged:
                merge_tile(layout.spec, states[j], merged[key])
            merged[key] = states[j]
    keys = list(zip(whole[0].tolist(), whole[1].tolist(), strict=True))
    assert sorted(merged) == keys
    a = encode_tiles(whole[2])
    b = encode_tiles(np.array([merged[key] for key in keys], np.int64).reshape(len(keys),
                                                                               layout.width))
    assert a[0].tobytes() == b[0].tobytes()
