"""The bytes of windowed views in Redis. A tile (a normalized state row) is (gap, zigzag
value) varint pairs of its nonzero slots, so equal states are equal bytes and a tile holding a
few events stays a few dozen bytes. One entity's tiles of one hop group live in one value, its
window key:

    header   16 bytes: int64 length and int64 expiry (ms) as its last rewrite wrote it
             (reads skip it)
    records  varint tag, varint length, payload; tag = zigzag(k) * 4 + kind
             TILE    the tile of hop k
             EVENT   zigzag(created) varint, then the tile of that one event of hop k: an
                     event written before it was visible, counted only from then on
             COARSE  the tile of hops k*C .. k*C + C - 1 (C: the group's coarse hops): the
                     merge of the TILE records of those hops, so a read merges a few coarse
                     tiles where the window covers them whole, and hop tiles at its tail
             LOOSE   the tile of hop k that no COARSE record holds (a push's): a read
                     counts it wherever its window covers hop k

A hop (or coarse hop) may have several records: a push appends its own (LOOSE and EVENT
only, so each pushed tile is written once), and they merge like any tiles. A rewrite
(materialization, compaction) holds one per hop, merges LOOSE tiles and visible EVENT tiles
into their hop's and coarse hop's, and drops the hops no read can need. Reading merges a
window straight from these bytes (a window key's value followed by its push key's records,
online/tiles.py)."""

from __future__ import annotations

import numba
import numpy as np

from featurestore.aggregation.accumulators import (
    HOP,
    WINDOW,
    add_event,
    finish,
    merge_state,
    normalize_state,
)
from featurestore.aggregation.layout import ADD, BY_UNIT, MAX, MAX_TS
from featurestore.aggregation.tiles import merge_tile
from featurestore.values.varints import get_varint, put_varint, varint_size

HEADER = 16  # bytes: length after the last rewrite, expiry in ms (both int64, little-endian)
TILE, EVENT, COARSE, LOOSE = 0, 1, 2, 3


@numba.njit(cache=True, nogil=True)
def _zigzag(v):  # type: ignore[no-untyped-def]
    return (v << np.int64(1)) ^ (v >> np.int64(63))


@numba.njit(cache=True, nogil=True)
def _unzigzag(z):  # type: ignore[no-untyped-def]
    return np.int64(np.uint64(z) >> np.uint64(1)) ^ -(z & np.int64(1))


@numba.njit(cache=True, nogil=True)
def _row_size(row):  # type: ignore[no-untyped-def]
    size, last = 0, -1
    for slot in range(row.shape[0]):
        v = row[slot]
        if v != 0:
            size += varint_size(slot - last) + varint_size(_zigzag(v))
            last = slot
    return size


@numba.njit(cache=True, nogil=True)
def _put_row(buf, pos, row):  # type: ignore[no-untyped-def]
    last = -1
    for slot in range(row.shape[0]):
        v = row[slot]
        if v != 0:
            pos = put_varint(buf, pos, slot - last)
            pos = put_varint(buf, pos, _zigzag(v))
            last = slot
    return pos


@numba.njit(cache=True, nogil=True)
def encode_tiles(states):  # type: ignore[no-untyped-def]
    """(bytes, offsets): row j's encoding is bytes[offsets[j]:offsets[j + 1]]."""
    n = states.shape[0]
    offsets = np.zeros(n + 1, np.int64)
    for j in range(n):
        offsets[j + 1] = offsets[j] + _row_size(states[j])
    buf = np.empty(offsets[n], np.uint8)
    for j in range(n):
        _put_row(buf, offsets[j], states[j])
    return buf, offsets


@numba.njit(cache=True, nogil=True)
def decode_tile(buf, lo, hi, s, touched):  # type: ignore[no-untyped-def]
    """Decodes buf[lo:hi] into the zeroed row s; the slots written go to `touched` (for
    zeroing them again: rows are wide, tiles sparse). Returns how many."""
    pos, slot, count = lo, -1, 0
    while pos < hi:
        gap, pos = get_varint(buf, pos)
        z, pos = get_varint(buf, pos)
        slot += gap
        s[slot] = _unzigzag(z)
        touched[count] = slot
        count += 1
    return count


@numba.njit(cache=True, nogil=True)
def _put_int64(buf, pos, v):  # type: ignore[no-untyped-def]
    for i in range(8):
        buf[pos + i] = np.uint8((v >> np.int64(8 * i)) & np.int64(0xFF))


@numba.njit(cache=True, nogil=True)
def _get_int64(buf, pos):  # type: ignore[no-untyped-def]
    v = np.int64(0)
    for i in range(8):
        v |= np.int64(buf[pos + i]) << np.int64(8 * i)
    return v


@numba.njit(cache=True, nogil=True)
def _ensure(buf, pos, size):  # type: ignore[no-untyped-def]
    """buf, grown if pos + size bytes do not fit."""
    if pos + size <= buf.shape[0]:
        return buf
    bigger = np.empty(2 * (pos + size), np.uint8)
    bigger[:pos] = buf[:pos]
    return bigger


@numba.njit(cache=True, nogil=True)
def _put_tile(buf, pos, row, lo, hi, j):  # type: ignore[no-untyped-def]
    """Appends row's encoding to buf and zeroes the row, in one pass over it (rows are wide
    and mostly zero); records its bounds as record j. Returns (buf, pos)."""
    buf = _ensure(buf, pos, 12 * row.shape[0])
    lo[j] = pos
    last = -1
    for slot in range(row.shape[0]):
        v = row[slot]
        if v != 0:
            pos = put_varint(buf, pos, slot - last)
            pos = put_varint(buf, pos, _zigzag(v))
            last = slot
            row[slot] = 0
    hi[j] = pos
    return buf, pos


@numba.njit(cache=True, nogil=True)
def build_encoded(spec, width, hop, coarse, xi, xf, m, ts, created, starts, ends, k_lo, k_hi,
                  visible_at):  # type: ignore[no-untyped-def]
    """The TILE records of hops k_lo..k_hi of every entity from its events visible at
    `visible_at`, and (coarse > 1) the COARSE records of the coarse hops they fall in,
    encoded as they are built: one state row at a time, for rows are wide. Returns the
    bytes, each record's bounds in them, entity, k and kind, in entity order."""
    n = 0
    for i in range(ts.shape[0]):
        if k_lo <= ts[i] // hop <= k_hi and ts[i] <= visible_at and created[i] <= visible_at:
            n += 1
    lo = np.empty(2 * n, np.int64)
    hi = np.empty(2 * n, np.int64)
    entity = np.empty(2 * n, np.int64)
    key = np.empty(2 * n, np.int64)
    kind = np.empty(2 * n, np.int64)
    buf = np.empty(64 + 64 * n, np.uint8)
    row = np.zeros(width, np.int64)
    wide = np.zeros(width, np.int64)  # the coarse hop being built, once it has two tiles
    touched = np.empty(width, np.int64)
    pos, j, tiles, first = 0, 0, 0, 0
    for e in range(starts.shape[0]):
        last, c_last = k_lo - 1, np.int64(0)
        for i in range(starts[e], ends[e] + 1):
            k = k_lo - 1
            if i < ends[e]:
                k = ts[i] // hop
                if not (k_lo <= k <= k_hi and ts[i] <= visible_at and created[i] <= visible_at):
                    continue
            if k != last and last >= k_lo:  # the tile of hop `last` is complete
                for a in range(spec.shape[0]):
                    normalize_state(spec, a, row)
                if coarse > 1:
                    if tiles == 0:
                        first = j
                    else:
                        if tiles == 1:
                            decode_tile(buf, lo[first], hi[first], wide, touched)
                        merge_tile(spec, wide, row)
                    tiles, c_last = tiles + 1, last // coarse
                buf, pos = _put_tile(buf, pos, row, lo, hi, j)
                entity[j], key[j], kind[j] = e, last, TILE
                j += 1
                if coarse > 1 and (i == ends[e] or k // coarse != c_last):
                    if tiles == 1:  # a coarse hop of one tile is that tile's bytes
                        lo[j], hi[j] = lo[first], hi[first]
                    else:
                        buf, pos = _put_tile(buf, pos, wide, lo, hi, j)
                    entity[j], key[j], kind[j] = e, c_last, COARSE
                    j += 1
                    tiles = 0
            if i == ends[e]:
                break
            if k != last:
                row[MAX_TS] = ts[i]
                last = k
            row[MAX_TS] = max(row[MAX_TS], ts[i])
            for a in range(spec.shape[0]):
                add_event(spec, a, row, xi, xf, m, i, ts[i], created[i])
    return buf[:pos].copy(), lo[:j].copy(), hi[:j].copy(), entity[:j].copy(), key[:j].copy(), \
        kind[:j].copy()


@numba.njit(cache=True, nogil=True)
def pack_records(buf, lo, hi, owner, k, kind, created, expiry, header
                 ):  # type: ignore[no-untyped-def]
    """Records (record j's tile encoded in buf[lo[j]:hi[j]], grouped by owner) packed into
    one value per owner, with a header (expiry[i] for the i-th owner) when `header`, else
    bare (records a push appends). Returns the bytes and each value's offsets."""
    n = owner.shape[0]
    count = 0
    for j in range(n):
        if j == 0 or owner[j] != owner[j - 1]:
            count += 1
    size = 0
    for j in range(n):
        size += hi[j] - lo[j] + 30
    out = np.empty(size + HEADER * count + 1, np.uint8)
    out_offsets = np.empty(count + 1, np.int64)
    pos, v = 0, -1
    for j in range(n):
        if j == 0 or owner[j] != owner[j - 1]:
            if header and v >= 0:
                _put_int64(out, out_offsets[v], pos - out_offsets[v])
            v += 1
            out_offsets[v] = pos
            if header:
                _put_int64(out, pos + 8, expiry[v])
                pos += HEADER
        pos = _put_record(out, pos, buf, lo[j], hi[j], k[j], kind[j], created[j])
    if header and v >= 0:
        _put_int64(out, out_offsets[v], pos - out_offsets[v])
    out_offsets[count] = pos
    return out[:pos].copy(), out_offsets


@numba.njit(cache=True, nogil=True)
def _put_record(out, pos, buf, lo, hi, k, kind, created):  # type: ignore[no-untyped-def]
    pos = put_varint(out, pos, _zigzag(k) * 4 + kind)
    length = hi - lo
    if kind == EVENT:
        pos = put_varint(out, pos, length + varint_size(_zigzag(created)))
        pos = put_varint(out, pos, _zigzag(created))
    else:
        pos = put_varint(out, pos, length)
    out[pos:pos + length] = buf[lo:hi]
    return pos + length


@numba.njit(cache=True, nogil=True)
def _head_ts(buf, pos, end):  # type: ignore[no-untyped-def]
    """Slot MAX_TS of the tile encoded in buf[pos:end] (the first nonzero slot, or 0)."""
    if pos == end:
        return np.int64(0)
    gap, pos = get_varint(buf, pos)
    if gap != 1:
        return np.int64(0)
    z, pos = get_varint(buf, pos)
    return _unzigzag(z)


@numba.njit(cache=True, nogil=True)
def compact_values(spec, width, coarse, buf, offsets, k_min, visible_at
                   ):  # type: ignore[no-untyped-def]
    """Window key values buf[offsets[i]:offsets[i + 1]] rewritten (empty ones stay empty),
    each keeping its expiry: records of hops before k_min dropped, LOOSE records and EVENT
    records visible at `visible_at` made TILE (and COARSE) records, the records of each hop
    merged into one (a hop's lone record is copied as it is). Returns the bytes and each value's offsets."""
    n = offsets.shape[0] - 1
    out = np.empty(2 * buf.shape[0] + 64 * n + 64, np.uint8)
    out_offsets = np.zeros(n + 1, np.int64)
    acc = np.zeros(width, np.int64)
    tile = np.zeros(width, np.int64)
    touched = np.empty(width, np.int64)
    pos = 0
    for i in range(n):
        lo_v, hi_v = offsets[i], offsets[i + 1]
        out_offsets[i] = pos
        if lo_v == hi_v:
            out_offsets[i + 1] = pos
            continue
        count, p = 0, lo_v + HEADER
        while p < hi_v:
            _, p = get_varint(buf, p)
            length, p = get_varint(buf, p)
            p += length
            count += 2  # room for an event made a tile: its hop and its coarse hop
        key = np.empty(count, np.int64)  # 4k + kind
        created = np.zeros(count, np.int64)
        start = np.empty(count, np.int64)
        stop = np.empty(count, np.int64)
        p, j = lo_v + HEADER, 0
        while p < hi_v:
            tag, p = get_varint(buf, p)
            length, p = get_varint(buf, p)
            stop[j] = p + length
            k, kind = _unzigzag(tag >> np.int64(2)), tag & np.int64(3)
            if kind == EVENT:
                z, p = get_varint(buf, p)
                created[j] = _unzigzag(z)
                if _head_ts(buf, p, stop[j]) <= visible_at and created[j] <= visible_at:
                    kind = LOOSE
            if kind == LOOSE:  # a tile of its hop and of its coarse hop from now on
                kind = TILE
                if coarse > 1:
                    key[j + 1], start[j + 1], stop[j + 1] = 4 * (k // coarse) + COARSE, p, stop[j]
                    key[j], start[j] = 4 * k + kind, p
                    p = stop[j]
                    j += 2
                    continue
            key[j], start[j] = 4 * k + kind, p
            p = stop[j]
            j += 1
        count = j
        order = np.argsort(key[:count], kind="mergesort")
        out = _ensure(out, pos, HEADER)
        first = pos
        _put_int64(out, pos + 8, _get_int64(buf, lo_v + 8))
        pos += HEADER
        j = 0
        while j < count:
            a = order[j]
            k, kind = key[a] >> np.int64(2), key[a] & np.int64(3)
            e = j + 1
            if kind != EVENT:
                while e < count and key[order[e]] == key[a]:
                    e += 1
            if (k * coarse if kind == COARSE else k) < k_min:
                j = e
                continue
            if e == j + 1:
                out = _ensure(out, pos, stop[a] - start[a] + 30)
                pos = _put_record(out, pos, buf, start[a], stop[a], k, kind, created[a])
            else:
                out = _ensure(out, pos, 12 * width + 20)
                acc[:] = 0
                decode_tile(buf, start[a], stop[a], acc, touched)
                for t in range(j + 1, e):
                    b = order[t]
                    used = decode_tile(buf, start[b], stop[b], tile, touched)
                    merge_tile(spec, acc, tile)
                    for u in range(used):
                        tile[touched[u]] = 0
                pos = put_varint(out, pos, _zigzag(k) * 4 + kind)
                pos = put_varint(out, pos, _row_size(acc))
                pos = _put_row(out, pos, acc)
            j = e
        _put_int64(out, first, pos - first)
        out_offsets[i + 1] = pos
    return out[:pos].copy(), out_offsets


@numba.njit(cache=True, nogil=True)
def merge_windows(spec, slots, coarse, k_head, as_of, buf, offsets, n, span, out_i, out_f,
                  valid):  # type: ignore[no-untyped-def]
    """The values at as_of (head hop k_head) of n entities from their window keys (entity
    r's value is buf[offsets[r]:offsets[r + 1]], empty when absent), into column r of the
    outputs: per aggregation, the COARSE tiles its window covers whole, the TILE records of
    the other hops it covers, the LOOSE records of every hop it covers and the EVENT records
    visible at as_of. `spec` and `slots` are the layout's `merging`: slots that merge slot by
    slot are merged as a tile is decoded, the others decoded into a row for their unit's
    merge. Returns how many tiles hold an event after as_of (none can: the fence refuses such
    reads)."""
    width, aggregations = slots.shape[0], spec.shape[0]
    acc = np.zeros(width, np.int64)
    tile = np.zeros(width, np.int64)
    touched = np.empty(width, np.int64)
    first_full = np.empty(aggregations, np.int64)
    use = np.zeros(aggregations, np.bool_)
    by_unit = np.zeros(aggregations, np.bool_)
    for slot in range(width):
        if slots[slot] >= 0 and slots[slot] & 3 == BY_UNIT:
            by_unit[slots[slot] >> 2] = True
    first_any = latest_first = k_head - span + 1
    for a in range(aggregations):
        first_full[a] = k_head - spec[a, WINDOW] // spec[a, HOP]
        latest_first = max(latest_first, first_full[a])
    ahead = 0
    for r in range(n):
        acc[:] = 0
        merged = 0
        pos, end = offsets[r] + HEADER, offsets[r + 1]
        if offsets[r + 1] == offsets[r]:
            pos = end
        while pos < end:
            tag, pos = get_varint(buf, pos)
            length, pos = get_varint(buf, pos)
            stop = pos + length
            k, kind = _unzigzag(tag >> np.int64(2)), tag & np.int64(3)
            start_hop = k * coarse if kind == COARSE else k
            if kind == COARSE:
                needed = first_any <= start_hop <= k_head
            elif kind == TILE and coarse > 1:
                needed = first_any <= k <= k_head and (k // coarse) * coarse < latest_first
            else:  # a LOOSE or EVENT tile, or any hop tile without coarse ones
                needed = first_any <= k
            created = np.int64(-(2 ** 62))
            if needed and kind == EVENT:
                z, pos = get_varint(buf, pos)
                created = _unzigzag(z)
            if needed and (_head_ts(buf, pos, stop) > as_of or created > as_of):
                needed = False
                if kind != EVENT:  # an event merely waits
                    ahead += 1
            if needed:
                needed = False
                for a in range(aggregations):
                    if kind == COARSE:
                        use[a] = start_hop >= first_full[a]
                    elif kind == TILE and coarse > 1:
                        use[a] = first_full[a] <= k <= k_head and \
                            (k // coarse) * coarse < first_full[a]
                    else:
                        use[a] = first_full[a] <= k <= k_head
                    needed |= use[a]
            if not needed:
                pos = stop
                continue
            count = _merge_decoded(buf, pos, stop, slots, use, acc, tile, touched)
            pos = stop
            for a in range(aggregations):
                if by_unit[a] and use[a]:
                    merge_state(spec, a, acc, tile)
            for t in range(count):
                tile[touched[t]] = 0
            merged += 1
            if merged % 512 == 0:  # slot-by-slot sums of exact sums: carry before any limb
                for a in range(aggregations):  # can near overflow (each tile's < 2**53)
                    normalize_state(spec, a, acc)
        for a in range(aggregations):
            finish(spec, a, acc, r, out_i, out_f, valid)
    return ahead


@numba.njit(cache=True, nogil=True, inline="always")
def _merge_decoded(buf, pos, stop, slots, use, acc, tile, touched
                   ):  # type: ignore[no-untyped-def]
    """Decodes the tile in buf[pos:stop], merging into acc the slots of the aggregations in
    `use` that merge slot by slot, and writing into the zeroed row `tile` those their unit
    merges (their slots go to `touched`, for zeroing them again). Returns how many."""
    slot, count = -1, 0
    while pos < stop:
        gap, pos = get_varint(buf, pos)
        z, pos = get_varint(buf, pos)
        slot += gap
        plan = slots[slot]
        if plan < 0 or not use[plan >> 2]:
            continue
        how, v = plan & 3, _unzigzag(z)
        if how == ADD:
            acc[slot] += v
        elif how == MAX:
            acc[slot] = max(acc[slot], v)
        else:
            tile[slot] = v
            touched[count] = slot
            count += 1
    return count
