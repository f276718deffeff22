"""The bytes of tiles in Redis: each normalized tile row as (gap, zigzag value) varint pairs
of its nonzero slots, so equal states are equal bytes and a tile holding a few events stays a
few dozen bytes; a day of one hop's tiles packed into one block (one key). Reading merges the
tiles of a window straight from these bytes with the accumulators."""

from __future__ import annotations

import numba
import numpy as np

from featurestore.aggregation.accumulators import HOP, WINDOW, merge_state
from featurestore.values.varints import get_varint, put_varint, varint_size


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
                size += varint_size(slot - last)
                size += varint_size((v << np.int64(1)) ^ (v >> np.int64(63)))
                last = slot
        offsets[j + 1] = offsets[j] + size
    buf = np.empty(offsets[n], np.uint8)
    for j in range(n):
        pos, last = offsets[j], -1
        for slot in range(width):
            v = states[j, slot]
            if v != 0:
                pos = put_varint(buf, pos, slot - last)
                pos = put_varint(buf, pos, (v << np.int64(1)) ^ (v >> np.int64(63)))
                last = slot
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
        pos = put_varint(out, pos, k[j] - block[b] * per_block)
        length = offsets[j + 1] - offsets[j]
        pos = put_varint(out, pos, length)
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
                j, pos = get_varint(buf, pos)
                length, pos = get_varint(buf, pos)
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
            _, pos = get_varint(buf, pos)
            length, pos = get_varint(buf, pos)
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
            j, pos = get_varint(buf, pos)
            length, pos = get_varint(buf, pos)
            decode_tile(buf, pos, pos + length, rows[t], touched)
            owner[t], k[t] = i, block[i] * per_block + j
            pos += length
            t += 1
    return owner, k, rows


@numba.njit(cache=True, nogil=True)
def head_max_ts(buf, lo, hi, n, span):  # type: ignore[no-untyped-def]
    """The latest event time in each entity's head tile (the last of its span); 0 if none."""
    out = np.zeros(n, np.int64)
    for r in range(n):
        start, end = lo[r * span + span - 1], hi[r * span + span - 1]
        if start < end:
            gap, pos = get_varint(buf, start)
            if gap == 1:  # slot MAX_TS is the first nonzero one
                z, pos = get_varint(buf, pos)
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




def per_block(hop_us: int) -> int:
    """Hops per Redis block: a day's worth, so a 7-day window reads 8 keys, not 169."""
    return max(1, 86_400_000_000 // hop_us)


