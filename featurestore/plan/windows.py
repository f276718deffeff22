"""Windowed aggregations over events and tiles, for every path.

A window of length w with hop h, evaluated at T, covers the events with event time in
[floor(T, h) - w, T] that were visible at T (created <= T). Tile k of hop h holds the partial
aggregate of the events with event time in [k*h, (k+1)*h), so the window at T is exactly the
w/h full tiles before K = floor(T/h) plus the events of tile K up to T (the head).

- `evaluate` runs the accumulators over the raw events, per (entity, T): training sets and
  backfill.
- `build_tiles` folds events into tiles: materialization and pushes.
- `merge_windows` folds tiles (and head events) into values: online lookups.
All three use the same accumulators, whose states do not depend on event order, so the values
agree bit for bit."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa

from featurestore.definitions.types import Bool, Float64
from featurestore.plan.accumulators import (
    CODES,
    COUNT_DISTINCT,
    FUNC,
    HOP,
    LAST,
    MAX,
    MIN,
    OFFSET,
    SPEC_WIDTH,
    WINDOW,
    add_event,
    finish,
    input_row,
    key_floats,
    later,
    lower_bound,
    merge_state,
    normalize_state,
    remove_event,
    state_width,
    subtractable,
)
from featurestore.plan.columns import Column
from featurestore.plan.plan import AggregatePlan
from featurestore.plan.strings import Utf8Array

MAX_TS = 0  # slot 0 of a tile row: the latest event time it holds


@dataclass
class Events:
    """Events grouped by entity and sorted by event time; entity e's are [starts[e], ends[e]).
    `keys` holds each entity's join key values, in entity order."""

    keys: pa.Table
    ts: np.ndarray
    created: np.ndarray
    columns: dict[str, Column]
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    def entities(self, first: int, stop: int) -> Events:
        """The events of entities first .. stop - 1, renumbered from 0."""
        lo = self.starts[first] if first < len(self.starts) else len(self.ts)
        hi = self.ends[stop - 1] if stop > first else lo
        return Events(self.keys.slice(first, stop - first), self.ts[lo:hi], self.created[lo:hi],
                      {c: Column(col.values.rows(lo, hi) if isinstance(col.values, Utf8Array)
                                 else col.values[lo:hi], col.valid[lo:hi])
                       for c, col in self.columns.items()},
                      self.starts[first:stop] - lo, self.ends[first:stop] - lo)


@dataclass(frozen=True)
class Layout:
    """Aggregations laid out in a state row: slot 0 is MAX_TS, then each one's state."""

    aggregations: tuple[AggregatePlan, ...]
    spec: np.ndarray  # int64 [A, SPEC_WIDTH]
    width: int

    @classmethod
    def of(cls, aggregations: tuple[AggregatePlan, ...]) -> Layout:
        spec = np.zeros((len(aggregations), SPEC_WIDTH), np.int64)
        offset = 1
        for a, agg in enumerate(aggregations):
            code = CODES[agg.function]
            is_float = agg.dtype is Float64
            spec[a] = (code, offset, is_float, agg.window_us, agg.hop_us)
            offset += state_width(code, is_float)
        spec.flags.writeable = False
        return cls(aggregations, spec, offset)

    @property
    def columns(self) -> list[str]:
        return sorted({a.column for a in self.aggregations})

    def inputs(self, columns: dict[str, Column]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xi, xf, m): each aggregation's input column as a row of int64 or float64 values
        and a validity row."""
        n = len(next(iter(columns.values()))) if columns else 0
        xi = np.zeros((len(self.aggregations), n), np.int64)
        xf = np.zeros((len(self.aggregations), n), np.float64)
        m = np.zeros((len(self.aggregations), n), np.bool_)
        for a, agg in enumerate(self.aggregations):
            column = columns[agg.column]
            ints, floats = input_row(CODES[agg.function], column.values, agg.dtype is Float64)
            if ints is not None:
                xi[a] = ints
            if floats is not None:
                xf[a] = floats
            m[a] = column.valid
        return xi, xf, m

    def outputs(self, out_i: np.ndarray, out_f: np.ndarray, valid: np.ndarray) -> list[Column]:
        """The finished values as Columns of each aggregation's output type."""
        columns = []
        for a, agg in enumerate(self.aggregations):
            if agg.output is Float64:
                values = (out_f[a] if CODES[agg.function] in _FLOAT_RESULTS or
                          agg.dtype is not Float64 else key_floats(out_i[a]))
            elif agg.output is Bool:
                values = out_i[a] != 0
            else:
                values = out_i[a]
            columns.append(Column(np.where(valid[a], values, values.dtype.type(0)), valid[a]))
        return columns


_FLOAT_RESULTS = {CODES[f] for f in ("sum", "mean", "var", "stddev")}


def empty_outputs(layout: Layout, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = len(layout.aggregations)
    return np.zeros((a, n), np.int64), np.zeros((a, n), np.float64), np.zeros((a, n), np.bool_)


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
def change_points(ts, created, starts, ends, hops, windows):  # type: ignore[no-untyped-def]
    """Per entity, in time order, the hop boundaries at which some aggregate can change: where
    an event becomes visible (rounded up to each hop in `hops`) and where it leaves each
    window ((hop, window) rows of `windows`). Between two of them every value stays put."""
    per_event = hops.shape[0] + windows.shape[0]
    out_e = np.empty(ts.shape[0] * per_event, np.int64)
    out_t = np.empty(ts.shape[0] * per_event, np.int64)
    n = 0
    for e in range(starts.shape[0]):
        points = np.empty((ends[e] - starts[e]) * per_event, np.int64)
        c = 0
        for i in range(starts[e], ends[e]):
            for h in hops:
                points[c] = -((-created[i]) // h) * h
                c += 1
            for j in range(windows.shape[0]):
                h, w = windows[j, 0], windows[j, 1]
                points[c] = ((ts[i] + w) // h + 1) * h
                c += 1
        points.sort()
        for j in range(c):
            if j == 0 or points[j] != points[j - 1]:
                out_e[n], out_t[n] = e, points[j]
                n += 1
    return out_e[:n].copy(), out_t[:n].copy()


@numba.njit(cache=True, nogil=True)
def _better(spec, a, xi, ts, created, i, j):  # type: ignore[no-untyped-def]
    """Whether event i beats event j for a min/max/first/last aggregation."""
    f = spec[a, FUNC]
    if f == MIN:
        return xi[a, i] < xi[a, j]
    if f == MAX:
        return xi[a, i] > xi[a, j]
    return later(ts[i], created[i], xi[a, i], ts[j], created[j], xi[a, j]) == (f == LAST)


@numba.njit(cache=True, nogil=True, parallel=True)
def sweep(spec, width, xi, xf, m, ts, created, starts, ends, p_starts, p_ends, p_ts,
          out_i, out_f, valid):  # type: ignore[no-untyped-def]
    """Every aggregation at each entity's increasing times p_ts[p_starts[e]:p_ends[e]]: the
    same values as `evaluate`, found by sliding each window over the events instead of
    re-reading it. Sums and counts add entering and subtract leaving events (exactly); min,
    max, first and last keep a monotonic queue; distinct counts and entities with events
    visible only after their event time (created later) are evaluated directly."""
    for e in numba.prange(starts.shape[0]):
        s = np.zeros(width, np.int64)
        queue = np.empty(ends[e] - starts[e], np.int64)
        lo_e, hi_e = starts[e], ends[e]
        late = False
        for i in range(lo_e, hi_e):
            late |= created[i] > ts[i]
        for a in range(spec.shape[0]):
            f, off = spec[a, FUNC], spec[a, OFFSET]
            direct = late or f == COUNT_DISTINCT
            _reset(spec, a, s)
            lo, hi, q_head, q_tail = lo_e, lo_e, 0, 0
            for p in range(p_starts[e], p_ends[e]):
                t = p_ts[p]
                if direct:
                    _direct(spec, a, s, xi, xf, m, ts, created, lo_e, hi_e, t)
                    finish(spec, a, s, p, out_i, out_f, valid)
                    continue
                tail = (t // spec[a, HOP]) * spec[a, HOP] - spec[a, WINDOW]
                moved_from = (lo, hi)
                while hi < hi_e and ts[hi] <= t:
                    if subtractable(f):
                        add_event(spec, a, s, xi, xf, m, hi, ts[hi], created[hi])
                    elif m[a, hi]:
                        while q_tail > q_head and _better(spec, a, xi, ts, created, hi,
                                                          queue[q_tail - 1]):
                            q_tail -= 1
                        queue[q_tail] = hi
                        q_tail += 1
                    hi += 1
                while lo < hi and ts[lo] < tail:
                    if subtractable(f):
                        remove_event(spec, a, s, xi, xf, m, lo)
                    elif q_tail > q_head and queue[q_head] == lo:
                        q_head += 1
                    lo += 1
                if p > p_starts[e] and (lo, hi) == moved_from:  # same events: same value
                    out_i[a, p], out_f[a, p] = out_i[a, p - 1], out_f[a, p - 1]
                    valid[a, p] = valid[a, p - 1]
                    continue
                if not subtractable(f):
                    _reset(spec, a, s)
                    if q_tail > q_head:
                        best = queue[q_head]
                        s[off] = 1
                        if f in (MIN, MAX):
                            s[off + 1] = xi[a, best]
                        else:
                            s[off + 1], s[off + 2], s[off + 3] = ts[best], created[best], \
                                xi[a, best]
                finish(spec, a, s, p, out_i, out_f, valid)


@numba.njit(cache=True, nogil=True)
def build_tiles(spec, width, hop, xi, xf, m, ts, created, starts, ends, k_lo, k_hi,
                visible_at):  # type: ignore[no-untyped-def]
    """The tiles k_lo..k_hi of hop `hop` of every entity, from its events visible at
    `visible_at`: (entity index, k, state rows), in entity then k order, normalized."""
    count = 0
    for e in range(starts.shape[0]):
        last = k_lo - 1
        for i in range(starts[e], ends[e]):
            k = ts[i] // hop
            if k_lo <= k <= k_hi and created[i] <= visible_at and ts[i] <= visible_at \
                    and k != last:
                count += 1
                last = k
    entity = np.empty(count, np.int64)
    tile = np.empty(count, np.int64)
    states = np.zeros((count, width), np.int64)
    j = -1
    for e in range(starts.shape[0]):
        last = k_lo - 1
        for i in range(starts[e], ends[e]):
            k = ts[i] // hop
            if not (k_lo <= k <= k_hi and created[i] <= visible_at and ts[i] <= visible_at):
                continue
            if k != last:
                j += 1
                entity[j], tile[j], last = e, k, k
                states[j, MAX_TS] = ts[i]
            s = states[j]
            s[MAX_TS] = max(s[MAX_TS], ts[i])
            for a in range(spec.shape[0]):
                add_event(spec, a, s, xi, xf, m, i, ts[i], created[i])
    for j in range(count):
        for a in range(spec.shape[0]):
            normalize_state(spec, a, states[j])
    return entity, tile, states


@numba.njit(cache=True, nogil=True)
def merge_tile(spec, s, o):  # type: ignore[no-untyped-def]
    """Merges tile row o into tile row s (both of one layout, both holding events) and
    normalizes s."""
    s[MAX_TS] = max(s[MAX_TS], o[MAX_TS])
    for a in range(spec.shape[0]):
        merge_state(spec, a, s, o)
        normalize_state(spec, a, s)


# ---------------------------------------------------------------------------------------------
# Tile bytes: the nonzero slots of a normalized row as (gap, zigzag value) varint pairs, so
# equal states are equal bytes and a tile holding a few events stays a few dozen bytes.


@numba.njit(cache=True, nogil=True)
def _put_varint(buf, pos, v):  # type: ignore[no-untyped-def]
    u = np.uint64(v)
    while u >= np.uint64(0x80):
        buf[pos] = np.uint8((u & np.uint64(0x7F)) | np.uint64(0x80))
        u >>= np.uint64(7)
        pos += 1
    buf[pos] = np.uint8(u)
    return pos + 1


@numba.njit(cache=True, nogil=True)
def _get_varint(buf, pos):  # type: ignore[no-untyped-def]
    u = np.uint64(0)
    shift = np.uint64(0)
    while True:
        b = np.uint64(buf[pos])
        pos += 1
        u |= (b & np.uint64(0x7F)) << shift
        if b < np.uint64(0x80):
            return np.int64(u), pos
        shift += np.uint64(7)


@numba.njit(cache=True, nogil=True)
def _varint_size(v):  # type: ignore[no-untyped-def]
    u, size = np.uint64(v), 1
    while u >= np.uint64(0x80):
        u >>= np.uint64(7)
        size += 1
    return size


@numba.njit(cache=True, nogil=True)
def encode_tiles(states):  # type: ignore[no-untyped-def]
    """(bytes, offsets): row j's encoding is bytes[offsets[j]:offsets[j + 1]]."""
    n, width = states.shape
    offsets = np.zeros(n + 1, np.int64)
    for j in range(n):
        size, last = 0, -1
        for slot in range(width):
            v = states[j, slot]
            if v != 0:
                size += _varint_size(slot - last)
                size += _varint_size((v << np.int64(1)) ^ (v >> np.int64(63)))
                last = slot
        offsets[j + 1] = offsets[j] + size
    buf = np.empty(offsets[n], np.uint8)
    for j in range(n):
        pos, last = offsets[j], -1
        for slot in range(width):
            v = states[j, slot]
            if v != 0:
                pos = _put_varint(buf, pos, slot - last)
                pos = _put_varint(buf, pos, (v << np.int64(1)) ^ (v >> np.int64(63)))
                last = slot
    return buf, offsets


@numba.njit(cache=True, nogil=True)
def decode_tile(buf, lo, hi, s, touched):  # type: ignore[no-untyped-def]
    """Decodes buf[lo:hi] into the zeroed row s; the slots written go to `touched` (for
    zeroing them again: rows are wide, tiles sparse). Returns how many."""
    pos, slot, count = lo, -1, 0
    while pos < hi:
        gap, pos = _get_varint(buf, pos)
        z, pos = _get_varint(buf, pos)
        slot += gap
        s[slot] = np.int64(np.uint64(z) >> np.uint64(1)) ^ -(z & np.int64(1))
        touched[count] = slot
        count += 1
    return count


@numba.njit(cache=True, nogil=True)
def pack_blocks(buf, offsets, entity, k, per_block):  # type: ignore[no-untyped-def]
    """Tiles (encoded in buf/offsets, sorted by entity then k) packed into blocks of
    `per_block` consecutive hops: each block is its tiles as (k - first k of the block,
    length, bytes), in k order, so equal tiles make equal blocks. Returns the blocks' bytes,
    offsets, entity and block number."""
    n = entity.shape[0]
    count = 0
    for j in range(n):
        if j == 0 or entity[j] != entity[j - 1] or k[j] // per_block != k[j - 1] // per_block:
            count += 1
    out = np.empty(buf.shape[0] + 20 * n + 1, np.uint8)
    out_offsets = np.empty(count + 1, np.int64)
    block_entity = np.empty(count, np.int64)
    block = np.empty(count, np.int64)
    pos, b = 0, -1
    for j in range(n):
        if j == 0 or entity[j] != entity[j - 1] or k[j] // per_block != k[j - 1] // per_block:
            b += 1
            out_offsets[b] = pos
            block_entity[b], block[b] = entity[j], k[j] // per_block
        pos = _put_varint(out, pos, k[j] - block[b] * per_block)
        length = offsets[j + 1] - offsets[j]
        pos = _put_varint(out, pos, length)
        out[pos:pos + length] = buf[offsets[j]:offsets[j + 1]]
        pos += length
    out_offsets[count] = pos
    return out[:pos].copy(), out_offsets, block_entity, block


@numba.njit(cache=True, nogil=True)
def index_blocks(buf, offsets, n, blocks, first_block, first_k, span, per_block
                 ):  # type: ignore[no-untyped-def]
    """Where each tile first_k .. first_k + span - 1 of n entities lies in their blocks
    (entity r's block i is buf[offsets[r * blocks + i]:offsets[r * blocks + i + 1]]):
    (lo, hi) per (entity, tile), equal where the tile is absent."""
    lo = np.zeros(n * span, np.int64)
    hi = np.zeros(n * span, np.int64)
    for r in range(n):
        for i in range(blocks):
            pos, end = offsets[r * blocks + i], offsets[r * blocks + i + 1]
            while pos < end:
                j, pos = _get_varint(buf, pos)
                length, pos = _get_varint(buf, pos)
                t = (first_block + i) * per_block + j - first_k
                if 0 <= t < span:
                    lo[r * span + t], hi[r * span + t] = pos, pos + length
                pos += length
    return lo, hi


@numba.njit(cache=True, nogil=True)
def unpack_blocks(buf, offsets, block, per_block, width):  # type: ignore[no-untyped-def]
    """Every tile of the blocks buf[offsets[i]:offsets[i + 1]] (block numbers `block`):
    (block index i, k, decoded rows)."""
    count = 0
    for i in range(block.shape[0]):
        pos = offsets[i]
        while pos < offsets[i + 1]:
            _, pos = _get_varint(buf, pos)
            length, pos = _get_varint(buf, pos)
            pos += length
            count += 1
    owner = np.empty(count, np.int64)
    k = np.empty(count, np.int64)
    rows = np.zeros((count, width), np.int64)
    touched = np.empty(width, np.int64)
    t = 0
    for i in range(block.shape[0]):
        pos = offsets[i]
        while pos < offsets[i + 1]:
            j, pos = _get_varint(buf, pos)
            length, pos = _get_varint(buf, pos)
            decode_tile(buf, pos, pos + length, rows[t], touched)
            owner[t], k[t] = i, block[i] * per_block + j
            pos += length
            t += 1
    return owner, k, rows


@numba.njit(cache=True, nogil=True)
def fold_tiles(spec, entity, k, rows):  # type: ignore[no-untyped-def]
    """Tiles sorted by (entity, k) with the rows of equal keys merged into one."""
    n = entity.shape[0]
    keep = np.ones(n, np.bool_)
    first = 0
    for j in range(1, n):
        if entity[j] == entity[first] and k[j] == k[first]:
            merge_tile(spec, rows[first], rows[j])
            keep[j] = False
        else:
            first = j
    return entity[keep], k[keep], rows[keep]


@numba.njit(cache=True, nogil=True)
def head_max_ts(buf, lo, hi, n, span):  # type: ignore[no-untyped-def]
    """The latest event time in each entity's head tile (the last of its span); 0 if none."""
    out = np.zeros(n, np.int64)
    for r in range(n):
        start, end = lo[r * span + span - 1], hi[r * span + span - 1]
        if start < end:
            gap, pos = _get_varint(buf, start)
            if gap == 1:  # slot MAX_TS is the first nonzero one
                z, pos = _get_varint(buf, pos)
                out[r] = np.int64(np.uint64(z) >> np.uint64(1)) ^ -(z & np.int64(1))
    return out


@numba.njit(cache=True, nogil=True)
def merge_windows(spec, width, k_head, buf, tile_lo, tile_hi, n, span, head_ok
                  ):  # type: ignore[no-untyped-def]
    """Window states of n entities from their tiles k_head - span + 1 .. k_head: tile j of
    entity r is buf[tile_lo[r * span + j]:tile_hi[r * span + j]] (empty: no events). The
    head tile is merged only where head_ok[r]; elsewhere the caller adds the head's events
    (`add_head_events`) before `finish_rows`."""
    acc = np.zeros((n, width), np.int64)
    tile = np.zeros(width, np.int64)
    touched = np.empty(width, np.int64)
    for r in range(n):
        for j in range(span):
            lo, hi = tile_lo[r * span + j], tile_hi[r * span + j]
            if lo == hi:
                continue
            k = k_head - span + 1 + j
            count = decode_tile(buf, lo, hi, tile, touched)
            for a in range(spec.shape[0]):
                first_full = k_head - spec[a, WINDOW] // spec[a, HOP]
                if (first_full <= k < k_head) or (k == k_head and head_ok[r]):
                    merge_state(spec, a, acc[r], tile)
            for t in range(count):
                tile[touched[t]] = 0
    return acc


@numba.njit(cache=True, nogil=True)
def add_head_events(spec, acc, rows, xi, xf, m, ts, created, as_of):  # type: ignore[no-untyped-def]
    """Adds head events (those of tile k_head, event i belonging to entity rows[i]) that are
    visible at as_of to the window states."""
    for i in range(rows.shape[0]):
        if ts[i] <= as_of and created[i] <= as_of:
            for a in range(spec.shape[0]):
                add_event(spec, a, acc[rows[i]], xi, xf, m, i, ts[i], created[i])


@numba.njit(cache=True, nogil=True)
def finish_rows(spec, acc, out_i, out_f, valid):  # type: ignore[no-untyped-def]
    for r in range(acc.shape[0]):
        for a in range(spec.shape[0]):
            finish(spec, a, acc[r], r, out_i, out_f, valid)


def hops(aggregations: tuple[AggregatePlan, ...]) -> dict[int, tuple[AggregatePlan, ...]]:
    """Aggregations grouped by hop: each group shares one set of tiles."""
    out: dict[int, list[AggregatePlan]] = {}
    for agg in aggregations:
        out.setdefault(agg.hop_us, []).append(agg)
    return {hop: tuple(group) for hop, group in sorted(out.items())}


def per_block(hop_us: int) -> int:
    """Hops per Redis block: a day's worth, so a 7-day window reads 8 keys, not 169."""
    return max(1, 86_400_000_000 // hop_us)


def span(aggregations: tuple[AggregatePlan, ...]) -> int:
    """Tiles a group's window reads: its longest window's full tiles plus the head."""
    return max(a.window_us // a.hop_us for a in aggregations) + 1

