"""Windowed views in Redis: one tile per entity, hop and view version holding the partial
aggregates of the events of that hop, stored a day of hops to a key (a block), and the raw
events of the newest hops.

    block b of hop h (online/keys.py: block_key)   tiles b*B .. b*B+B-1, B = a day of hops
    events of hop k (online/keys.py: events_key)   the raw events of the hop, appended

A read at T merges the full tiles of each window and the head tile K = floor(T/hop); when the
head holds events later than T (pushed with a future time, or a read as of the past) its raw
events are read instead, in a second round trip. A block expires one window after the later
of its last hop's end and its last write; a hop's raw events one hop after."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from featurestore.aggregation.events import Events
from featurestore.aggregation.layout import Layout, hops, span
from featurestore.aggregation.tiles import build_tiles, fold_tiles
from featurestore.online.keys import bases_of_table, block_key, events_key
from featurestore.online.tile_format import encode_tiles, pack_blocks, per_block, unpack_blocks
from featurestore.plan import ViewPlan
from featurestore.plan.plan import AggregatePlan

RAW_FIXED = 3  # ts, created, validity bits; then one int64 per aggregation


@dataclass(frozen=True)
class TileGroup:
    """The aggregations of one view sharing a hop, and so one set of tiles."""

    hop_us: int
    layout: Layout
    span: int  # tiles a read needs: the longest window's full tiles plus the head
    indices: tuple[int, ...]  # positions of its aggregations in the view's

    @property
    def per_block(self) -> int:
        return per_block(self.hop_us)

    def blocks(self, k_head: int) -> range:
        """The blocks holding tiles k_head - span + 1 .. k_head."""
        return range((k_head - self.span + 1) // self.per_block, k_head // self.per_block + 1)

    def block_expiry_ms(self, b: int, now_us: int) -> int:
        end = (b + 1) * self.per_block * self.hop_us
        return (max(end, now_us) + self.span * self.hop_us) // 1000 + 1

    def events_expiry_ms(self, k: int, now_us: int) -> int:
        return (max((k + 1) * self.hop_us, now_us) + self.hop_us) // 1000 + 1


def groups(aggregates: tuple[AggregatePlan, ...]) -> list[TileGroup]:
    out = []
    for hop, members in hops(aggregates).items():
        indices = tuple(aggregates.index(a) for a in members)
        out.append(TileGroup(hop, Layout.of(members), span(members), indices))
    return out


@numba.njit(cache=True, nogil=True)
def encode_events(spec, xi, m, ts, created, rows):  # type: ignore[no-untyped-def]
    """Raw events (indices `rows`) as int64 records: ts, created, validity bits, inputs."""
    a_count = spec.shape[0]
    out = np.zeros((rows.shape[0], RAW_FIXED + a_count), np.int64)
    for j in range(rows.shape[0]):
        i = rows[j]
        out[j, 0], out[j, 1] = ts[i], created[i]
        bits = np.int64(0)
        for a in range(a_count):
            if m[a, i]:
                bits |= np.int64(1) << np.int64(a)
            out[j, RAW_FIXED + a] = xi[a, i]
        out[j, 2] = bits
    return out


def raw_records(layout: Layout, xi: np.ndarray, xf: np.ndarray, m: np.ndarray, ts: np.ndarray,
                created: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Float inputs travel as their bits in the int64 record."""
    merged = xi.copy()
    floats = np.flatnonzero(layout.spec[:, 2])
    merged[floats] = xf[floats].view(np.int64)
    return encode_events(layout.spec, merged, m, ts, created, rows)


def decode_events(layout: Layout, blobs: list[bytes], rows: list[int]
                  ) -> tuple[np.ndarray, ...]:
    """(entity rows, xi, xf, m, ts, created) of the raw events in `blobs` (blob j belongs to
    entity rows[j])."""
    a_count = len(layout.aggregations)
    width = RAW_FIXED + a_count
    records = [np.frombuffer(b, np.int64).reshape(-1, width) for b in blobs]
    table = np.concatenate(records) if records else np.zeros((0, width), np.int64)
    owner = np.repeat(np.asarray(rows, np.int64), [len(r) for r in records])
    xi = np.ascontiguousarray(table[:, RAW_FIXED:].T)
    xf = xi.view(np.float64)
    bits = table[:, 2]
    m = np.array([(bits >> a) & 1 for a in range(a_count)], np.bool_).reshape(a_count, -1)
    return owner, xi, xf, m, table[:, 0].copy(), table[:, 1].copy()


@dataclass
class TileWrites:
    """One hop group's new tiles (per entity of `bases` and hop k) and head events."""

    group: TileGroup
    bases: list[str]
    entity: np.ndarray
    k: np.ndarray
    states: np.ndarray  # normalized tile rows
    event_keys: list[str]
    events: list[bytes]  # raw records of each event key
    event_expiry_ms: list[int]

    def block_keys(self) -> list[str]:
        """The blocks the tiles fall in, in order."""
        b = self.k // self.group.per_block
        first = np.ones(len(b), np.bool_)
        first[1:] = (self.entity[1:] != self.entity[:-1]) | (b[1:] != b[:-1])
        return [block_key(self.bases[e], self.group.hop_us, bb)
                for e, bb in zip(self.entity[first].tolist(), b[first].tolist(), strict=True)]

    def blocks(self, old: list[bytes | None], now: int) -> tuple[list[bytes], list[int]]:
        """Each block's bytes with its old tiles (`old`, per block_keys(), None for none)
        merged in, and its expiry."""
        g = self.group
        entity, k, states = self.entity, self.k, self.states
        if any(blob is not None for blob in old):
            entity, k, states = self._merged(old)
        buf, offsets = encode_tiles(states)
        data, block_offsets, _, block = pack_blocks(buf, offsets, entity, k, g.per_block)
        raw = data.tobytes()
        return ([raw[block_offsets[i]:block_offsets[i + 1]] for i in range(len(block))],
                [g.block_expiry_ms(b, now) for b in block.tolist()])

    def _merged(self, old: list[bytes | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        g = self.group
        b = self.k // g.per_block
        first = np.flatnonzero(np.r_[True, (self.entity[1:] != self.entity[:-1])
                                     | (b[1:] != b[:-1])])
        present = [i for i, blob in enumerate(old) if blob is not None]
        blobs = [old[i] or b"" for i in present]
        offsets = np.zeros(len(blobs) + 1, np.int64)
        np.cumsum([len(x) for x in blobs], out=offsets[1:])
        owner, k, rows = unpack_blocks(np.frombuffer(b"".join(blobs), np.uint8), offsets,
                                       b[first[present]], g.per_block, g.layout.width)
        entity = np.concatenate([self.entity, self.entity[first[present]][owner]])
        k = np.concatenate([self.k, k])
        order = np.lexsort((k, entity))
        return fold_tiles(g.layout.spec, entity[order], k[order],
                          np.concatenate([self.states, rows])[order])


def tile_writes(g: TileGroup, bases: list[str], events: Events, k_lo: int, k_hi: int,
                visible_at: int, now: int) -> TileWrites:
    """The tiles k_lo..k_hi of every entity in `events` from its events visible at
    `visible_at`, and the raw events of the hops a read at or after min(visible_at, now) can
    have as its head. Expiry counts from `now`, the wall clock."""
    xi, xf, m = g.layout.inputs(events.columns)
    entity, k, states = build_tiles(g.layout.spec, g.layout.width, g.hop_us, xi, xf, m,
                                    events.ts, events.created, events.starts, events.ends,
                                    k_lo, k_hi, visible_at)
    owner = np.repeat(np.arange(len(events.starts)), events.ends - events.starts)
    hop_of = events.ts // g.hop_us
    raw = np.flatnonzero((hop_of >= max(min(visible_at, now) // g.hop_us, k_lo))
                         & (hop_of <= k_hi)
                         & (events.ts <= visible_at) & (events.created <= visible_at))
    records = raw_records(g.layout, xi, xf, m, events.ts, events.created, raw)
    event_keys, blobs, event_expiry = [], [], []
    if len(raw):
        pairs = np.column_stack([owner[raw], hop_of[raw]])
        change = np.ones(len(raw), np.bool_)
        change[1:] = (pairs[1:] != pairs[:-1]).any(axis=1)
        bounds = np.append(np.flatnonzero(change), len(raw))
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            e, kk = int(pairs[lo, 0]), int(pairs[lo, 1])
            event_keys.append(events_key(bases[e], g.hop_us, kk))
            blobs.append(records[lo:hi].tobytes())
            event_expiry.append(g.events_expiry_ms(kk, now))
    return TileWrites(g, bases, entity, k, states, event_keys, blobs, event_expiry)


def view_tile_writes(project: str, view: ViewPlan, storage: str, events: Events,
                     oldest_head_us: int, newest_us: int, visible_at: int,
                     now: int) -> list[TileWrites]:
    """Every hop group's tiles of a windowed view from `events`, in `storage`: from the
    oldest tile a read at `oldest_head_us` covers to the hop of `newest_us`."""
    bases = bases_of_table(project, view.name, storage, view.entity, view.join_keys,
                           events.keys)
    out = []
    for g in groups(view.aggregates):
        first, last = oldest_head_us // g.hop_us - g.span + 1, newest_us // g.hop_us
        if last >= first:
            out.append(tile_writes(g, bases, events, first, last, visible_at, now))
    return out
