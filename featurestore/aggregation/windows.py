"""Windowed aggregations over events and tiles, for every path.

A window of length w with hop h, evaluated at T, covers the events with event time in
[floor(T, h) - w, T] that were visible at T (created <= T). Tile k of hop h holds the partial
aggregate of the events with event time in [k*h, (k+1)*h), so the window at T is exactly the
w/h full tiles before K = floor(T/h) plus the events of tile K up to T (the head).

- `evaluate` runs the accumulators over the raw events, per (entity, T): training sets and
  backfill.
- `build_encoded` (online/tile_format.py) folds events into tiles: materialization, pushes.
- `merge_windows` (online/tile_format.py) folds stored tiles into values: online lookups.
All three use the same accumulators, whose states do not depend on event order, so the values
agree bit for bit."""

from __future__ import annotations

import numba
import numpy as np

from featurestore.aggregation import fixed_sum, multiset
from featurestore.aggregation.accumulators import (
    HOP,
    INPUT,
    LEADER,
    OFFSET,
    WINDOW,
    add_event,
    better,
    finish,
    finish_moments,
    moments,
    remove_event,
    sweep_kind,
)
from featurestore.aggregation.events import lower_bound
from featurestore.aggregation.unit import COUNT, DIRECT, QUEUE, SET, SPREAD, SUBTRACT, TOTAL

FIXED = SET + 1  # the sweep's own kind: SUBTRACT with the exact sums in fixed_sum's limbs


@numba.njit(cache=True, nogil=True)
def _reset(spec, a, s):  # type: ignore[no-untyped-def]
    end = spec[a + 1, OFFSET] if a + 1 < spec.shape[0] else s.shape[0]
    s[spec[a, OFFSET]:end] = 0


@numba.njit(cache=True, nogil=True)
def _direct(spec, a, s, xi, xf, m, ts, created, lo, hi, t):  # type: ignore[no-untyped-def]
    """Aggregation a's state at t from the events [lo, hi) of one entity, one by one."""
    _reset(spec, a, s)
    tail = (t // spec[a, HOP]) * spec[a, HOP] - spec[a, WINDOW]
    i = lower_bound(ts, lo, hi, tail)
    while i < hi and ts[i] <= t:
        if created[i] <= t:
            add_event(spec, a, s, xi, xf, m, i, ts[i], created[i])
        i += 1


@numba.njit(cache=True, nogil=True)
def evaluate(spec, width, xi, xf, m, ts, created, starts, ends, q_entity, q_ts,
             out_i, out_f, valid):  # type: ignore[no-untyped-def]
    """Every aggregation at every query (entity index, T) over the raw events, which are
    sorted by entity then event time; entity e's events are [starts[e], ends[e]), and a
    query entity of -1 has none."""
    s = np.zeros(width, np.int64)
    for q in range(q_entity.shape[0]):
        e, t = q_entity[q], q_ts[q]
        for a in range(spec.shape[0]):
            if e >= 0:
                _direct(spec, a, s, xi, xf, m, ts, created, starts[e], ends[e], t)
            else:
                _reset(spec, a, s)
            finish(spec, a, s, q, out_i, out_f, valid)


@numba.njit(cache=True, nogil=True)
def _entity_points(ts, created, lo, hi, hops, windows, out):  # type: ignore[no-untyped-def]
    """One entity's change points (events [lo, hi)) into `out`, sorted and distinct; returns
    how many. Each hop's visibility points and each window's leaving points form a sorted
    run when their times are sorted (the leaving points always are, since events are sorted
    by time; visibility when no event became visible after a later one), and the runs are
    merged; otherwise they are sorted."""
    n = hi - lo
    runs = hops.shape[0] + windows.shape[0]
    sorted_runs = True
    for r in range(runs):
        for i in range(lo, hi):
            if r < hops.shape[0]:
                h = hops[r]
                point = -((-created[i]) // h) * h
            else:
                h, w = windows[r - hops.shape[0], 0], windows[r - hops.shape[0], 1]
                point = ((ts[i] + w) // h + 1) * h
            out[r * n + i - lo] = point
            if i > lo and point < out[r * n + i - lo - 1]:
                sorted_runs = False
    if not sorted_runs:
        out.sort()
        c = 0
        for j in range(out.shape[0]):
            if j == 0 or out[j] != out[c - 1]:
                out[c] = out[j]
                c += 1
        return c
    merged = np.empty(out.shape[0], np.int64)
    head = np.arange(runs) * n
    c = 0
    while True:
        best = -1
        for r in range(runs):
            if head[r] < (r + 1) * n and (best < 0 or out[head[r]] < out[head[best]]):
                best = r
        if best < 0:
            break
        point = out[head[best]]
        head[best] += 1
        if c == 0 or point != merged[c - 1]:
            merged[c] = point
            c += 1
    out[:c] = merged[:c]
    return c


@numba.njit(cache=True, nogil=True, parallel=True)
def change_points(ts, created, starts, ends, hops, windows):  # type: ignore[no-untyped-def]
    """Per entity, in time order, the hop boundaries at which some aggregate can change: where
    an event becomes visible (rounded up to each hop in `hops`) and where it leaves each
    window ((hop, window) rows of `windows`). Between two of them every value stays put."""
    per_event = hops.shape[0] + windows.shape[0]
    points = np.empty(ts.shape[0] * per_event, np.int64)
    counts = np.zeros(starts.shape[0] + 1, np.int64)
    for e in numba.prange(starts.shape[0]):
        counts[e + 1] = _entity_points(ts, created, starts[e], ends[e], hops, windows,
                                       points[starts[e] * per_event:ends[e] * per_event])
    first = np.cumsum(counts)
    out_e = np.empty(first[-1], np.int64)
    out_t = np.empty(first[-1], np.int64)
    for e in numba.prange(starts.shape[0]):
        at = starts[e] * per_event
        for j in range(counts[e + 1]):
            out_e[first[e] + j] = e
            out_t[first[e] + j] = points[at + j]
    return out_e, out_t


# parallel=True though Numba runs this loop serially (it warns so): compiled without it, the
# sweep took twice the CPU (10M events, 5 aggregations: 13.5 s against 6.5 s)
@numba.njit(cache=True, nogil=True, parallel=True)
def sweep(spec, width, xi, xf, m, ts, created, starts, ends, p_starts, p_ends, p_ts,
          out_i, out_f, valid):  # type: ignore[no-untyped-def]
    """Every aggregation at each entity's increasing times p_ts[p_starts[e]:p_ends[e]]: the
    same values as `evaluate`, found by sliding each window over the events instead of
    re-reading it, as each unit's `sweep` says: sums and counts add entering and subtract
    leaving events (exactly; in fixed_sum's few limbs where an entity's values fit, in one
    pass for the counts, sums, means and spreads of a column over one window); min, max,
    first and last keep a monotonic queue of best events; distinct counts count each input in
    the window, add the new ones and remove the gone ones, or are rebuilt from the distinct
    inputs left when their state cannot; entities with events visible only after their event
    time (created later) are evaluated directly."""
    for e in numba.prange(starts.shape[0]):
        s = np.zeros(width, np.int64)
        queue = np.empty(ends[e] - starts[e], np.int64)
        slots, live = multiset.make(ends[e] - starts[e])
        limbs = np.zeros(3 * fixed_sum.LIMBS, np.int64)  # sums from 0, squares from LIMBS
        scratch = np.zeros(2 * fixed_sum.LIMBS + 8, np.int64)
        covered = np.zeros(spec.shape[0], np.bool_)  # by its leader's pass of moments
        lo_e, hi_e = starts[e], ends[e]
        late = False
        for i in range(lo_e, hi_e):
            late |= created[i] > ts[i]
        for step in range(2 * spec.shape[0]):  # the leaders first, then the others left
            a = step % spec.shape[0]
            if (spec[a, LEADER] == a) != (step < spec.shape[0]) or covered[spec[a, LEADER]]:
                continue
            kind = DIRECT if late else sweep_kind(spec, a)
            _reset(spec, a, s)
            if kind == SET:
                multiset.clear(slots, live)
            x, totals, spreads = spec[a, INPUT], False, False
            for b in range(spec.shape[0]):
                if _leads(spec, a, b):
                    totals |= moments(spec, b) == TOTAL
                    spreads |= moments(spec, b) == SPREAD
            first, size, first_sq, size_sq = -1, 0, 0, 0
            if kind == SUBTRACT and (totals or spreads):
                first, size, first_sq, size_sq = fixed_sum.layout(xf, m, x, lo_e, hi_e, spreads)
            elif kind == SUBTRACT and moments(spec, a) == COUNT:
                first = 0
            if first >= 0:
                kind = FIXED
                limbs[:] = 0
                covered[a] = spec[a, LEADER] == a
            n, sq = 0, fixed_sum.LIMBS
            lo, hi, q_head, q_tail, gone = lo_e, lo_e, 0, 0, False
            for p in range(p_starts[e], p_ends[e]):
                t = p_ts[p]
                if kind == DIRECT:
                    _direct(spec, a, s, xi, xf, m, ts, created, lo_e, hi_e, t)
                    finish(spec, a, s, p, out_i, out_f, valid)
                    continue
                tail = (t // spec[a, HOP]) * spec[a, HOP] - spec[a, WINDOW]
                moved_from = (lo, hi)
                while hi < hi_e and ts[hi] <= t:
                    if kind == SUBTRACT:
                        add_event(spec, a, s, xi, xf, m, hi, ts[hi], created[hi])
                    elif kind == FIXED:
                        if m[x, hi]:
                            n += 1
                            if totals or spreads:
                                fixed_sum.add(limbs, 0, first, xf[x, hi], 1)
                            if spreads:
                                fixed_sum.add_square(limbs, sq, first_sq, xf[x, hi], 1)
                    elif kind == SET:
                        if m[x, hi] and multiset.enter(slots, live, xi[x, hi], hi):
                            add_event(spec, a, s, xi, xf, m, hi, ts[hi], created[hi])
                    elif m[x, hi]:
                        while q_tail > q_head and better(spec, a, xi, ts, created, hi,
                                                         queue[q_tail - 1]):
                            q_tail -= 1
                        queue[q_tail] = hi
                        q_tail += 1
                    hi += 1
                while lo < hi and ts[lo] < tail:
                    if kind == SUBTRACT:
                        remove_event(spec, a, s, xi, xf, m, lo)
                    elif kind == FIXED:
                        if m[x, lo]:
                            n -= 1
                            if totals or spreads:
                                fixed_sum.add(limbs, 0, first, xf[x, lo], -1)
                            if spreads:
                                fixed_sum.add_square(limbs, sq, first_sq, xf[x, lo], -1)
                    elif kind == SET:
                        if m[x, lo] and multiset.leave(slots, live, xi[x, lo]) and not gone:
                            gone = not remove_event(spec, a, s, xi, xf, m, lo)
                    elif q_tail > q_head and queue[q_head] == lo:
                        q_head += 1
                    lo += 1
                if p > p_starts[e] and (lo, hi) == moved_from:  # same events: same values
                    for b in range(spec.shape[0]):
                        if b == a or (covered[a] and _leads(spec, a, b)):
                            out_i[b, p], valid[b, p] = out_i[b, p - 1], valid[b, p - 1]
                    continue
                if kind == QUEUE:  # the state of the window's best event
                    _reset(spec, a, s)
                    if q_tail > q_head:
                        best = queue[q_head]
                        add_event(spec, a, s, xi, xf, m, best, ts[best], created[best])
                elif kind == SET and gone:  # rebuilt from the distinct inputs left
                    _reset(spec, a, s)
                    for j in range(1, live[0] + 1):
                        i = slots[live[j], multiset.EVENT]
                        add_event(spec, a, s, xi, xf, m, i, ts[i], created[i])
                    gone = False
                elif kind == FIXED:
                    total = fixed_sum.value(limbs, 0, size, first) if totals else 0.0
                    spread = fixed_sum.scaled_minus_square(
                        n, limbs, 0, size, first, sq, size_sq, first_sq, scratch
                    ) if spreads else 0.0
                    for b in range(spec.shape[0]):
                        if b == a or (covered[a] and _leads(spec, a, b)):
                            finish_moments(spec, b, n, total, spread, p, out_i, out_f, valid)
                    continue
                finish(spec, a, s, p, out_i, out_f, valid)


@numba.njit(cache=True, nogil=True, inline="always")
def _leads(spec, a, b):  # type: ignore[no-untyped-def]
    """Whether b's value comes from a's pass: b is a, or a leads b's moments (Layout)."""
    return b == a or (spec[b, LEADER] == a and spec[a, LEADER] == a)
