"""Windowed views in Redis: one window key per entity and hop group (online/keys.py:
window_key) holding the entity's tiles (the partial aggregate of one hop each) and its pushed
events that are not visible yet, in the bytes of online/tile_format.py, and beside it a push
key (keys.py push_key) holding the records pushed since the window key was last written
whole. The two read as one value: the window key's bytes, then the push key's records.

A read at T merges the coarse and hop tiles of each window and the held events visible at T:
two keys per entity and hop group, one round trip. A push appends its own tiles and events to
the push keys (it reads nothing, and never grows a window key, which would make Redis copy
it); a rewrite (materialization, or a push's compaction once a push key outgrew its window
key) merges the tiles of equal hops, drops the hops no read can need and empties the push
key. Each key expires one window after the later of its last hop and its last write (rounded
up to the hop): what it holds is of no use to any read after that."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise

import numpy as np

from featurestore.aggregation.events import Events
from featurestore.aggregation.layout import Layout, hops, span
from featurestore.aggregation.tiles import event_tiles
from featurestore.online.keys import bases, push_key, window_head, window_key
from featurestore.online.row_writes import Keys
from featurestore.online.tile_format import (
    COARSE,
    EVENT,
    HEADER,
    LOOSE,
    build_encoded,
    compact_values,
    encode_tiles,
    pack_records,
)
from featurestore.plan import ViewPlan
from featurestore.plan.plan import AggregatePlan

DAY_US = 86_400_000_000


@dataclass(frozen=True)
class TileGroup:
    """The aggregations of one view sharing a hop, and so one set of tiles."""

    hop_us: int
    layout: Layout
    span: int  # tiles a read needs: the longest window's full tiles plus the head
    indices: tuple[int, ...]  # positions of its aggregations in the view's
    coarse: int  # hops per COARSE tile (tile_format.py); under 2: none

    def expiry_ms(self, k_last: np.ndarray, now_us: int) -> np.ndarray:
        """Expiry of keys whose last hop is k_last, written at now_us."""
        last = np.maximum(k_last, now_us // self.hop_us) + 1
        return (last + self.span) * self.hop_us // 1000 + 1


def coarse_hops(hop_us: int, span: int) -> int:
    """A day's hops for windows of days, else about the square root of the span (none
    under 16), so that a read merges at most about twice that many tiles, not the span's."""
    day = DAY_US // hop_us
    if day >= 2 and span >= 3 * day:
        return day
    return math.isqrt(span) if span >= 16 else 0


def groups(aggregates: tuple[AggregatePlan, ...]) -> list[TileGroup]:
    out = []
    for hop, members in hops(aggregates).items():
        indices = tuple(aggregates.index(a) for a in members)
        n = span(members)
        out.append(TileGroup(hop, Layout.of(members), n, indices, coarse_hops(hop, n)))
    return out


@dataclass(frozen=True)
class Bases:
    """Entities' base keys (online/keys.py) in one buffer: entity e's is
    data[offsets[e]:offsets[e + 1]], so keys are written without a string per entity."""

    data: np.ndarray  # uint8
    offsets: np.ndarray  # int64, entities + 1

    @classmethod
    def of_events(cls, project: str, view: ViewPlan, storage: str, events: Events) -> Bases:
        head = np.frombuffer(window_head(project, view.name, storage, view.entity).encode(),
                             np.uint8)
        k = Keys.of(events.keys, view.join_keys)
        return cls(*bases(head, False, k.is_string, k.ints, k.starts, k.lengths, k.data))

    @classmethod
    def of_strings(cls, names: list[str]) -> Bases:
        encoded = [n.encode() for n in names]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), np.uint8), offsets)

    def text(self, entity: int) -> str:
        return self.data[self.offsets[entity]:self.offsets[entity + 1]].tobytes().decode()


@dataclass
class WindowWrites:
    """One hop group's records for the window keys of some entities: whole values (a
    rewrite, with their header) or records to append (a push). Key i is the window key of
    entity owners[i] (of `bases`); its value is data[offsets[i]:offsets[i + 1]]."""

    group: TileGroup
    bases: Bases
    owners: np.ndarray  # int64
    data: np.ndarray  # uint8
    offsets: np.ndarray  # int64, keys + 1
    expiry: np.ndarray  # int64, ms

    @cached_property
    def keys(self) -> list[str]:
        return [self.key(i) for i in range(len(self.owners))]

    def key(self, i: int) -> str:
        return window_key(self.bases.text(int(self.owners[i])), self.group.hop_us)

    def push_key(self, i: int) -> str:
        return push_key(self.key(i))

    @cached_property
    def values(self) -> list[bytes]:
        raw = self.data.tobytes()
        return [raw[a:b] for a, b in pairwise(self.offsets.tolist())]

    @property
    def expiry_ms(self) -> list[int]:
        return self.expiry.tolist()


def window_writes(g: TileGroup, bases: Bases, events: Events, k_lo: int, k_hi: int,
                  visible_at: int, now: int, whole: bool) -> WindowWrites:
    """The records of hops k_lo..k_hi of every entity in `events`: tiles of its events
    visible at `visible_at`, and each later event on its own. Expiry counts from `now`.
    `whole`: the keys' whole values (hop and coarse tiles, with a header); else records to
    append, the hop tiles as LOOSE ones (tile_format.py: no coarse copy of each)."""
    xi, xf, m = g.layout.inputs(events.columns)
    spec, width = g.layout.spec, g.layout.width
    buf, lo, hi, owner, k, kind = build_encoded(
        spec, width, g.hop_us, g.coarse if whole else 0, xi, xf, m, events.ts, events.created,
        events.starts, events.ends, k_lo, k_hi, visible_at)
    if not whole:
        kind[:] = LOOSE
    created = np.zeros(len(k), np.int64)
    hop_of = events.ts // g.hop_us
    later = np.flatnonzero((hop_of >= k_lo) & (hop_of <= k_hi) & (
        (events.ts > visible_at) | (events.created > visible_at)))
    if len(later):  # rare: events ahead of the clock
        held, offsets = encode_tiles(event_tiles(spec, width, xi, xf, m, events.ts,
                                                 events.created, later))
        event_owner = np.repeat(np.arange(len(events.starts)), events.ends - events.starts)
        order = np.argsort(np.r_[owner, event_owner[later]], kind="stable")
        lo, hi = (np.r_[x, y + len(buf)][order] for x, y in ((lo, offsets[:-1]),
                                                              (hi, offsets[1:])))
        owner = np.r_[owner, event_owner[later]][order]
        k = np.r_[k, hop_of[later]][order]
        kind = np.r_[kind, np.full(len(later), EVENT)][order]
        created = np.r_[created, events.created[later]][order]
        buf = np.concatenate([buf, held])
    owners = np.unique(owner)
    k_last = np.full(len(events.starts), np.iinfo(np.int64).min)
    hops_only = kind != COARSE
    np.maximum.at(k_last, owner[hops_only], k[hops_only])
    expiry = g.expiry_ms(k_last[owners], now)
    data, offsets = pack_records(buf, lo, hi, owner, k, kind, created, expiry, whole)
    return WindowWrites(g, bases, owners.astype(np.int64), data, offsets, expiry)


def view_window_writes(project: str, view: ViewPlan, storage: str, events: Events,
                       oldest_head_us: int, newest_us: int, visible_at: int, now: int,
                       whole: bool) -> list[WindowWrites]:
    """Every hop group's records of a windowed view from `events`, in `storage`: from the
    oldest tile a read at `oldest_head_us` covers to the hop of `newest_us`."""
    keys = Bases.of_events(project, view, storage, events)
    out = []
    for g in groups(view.aggregates):
        first, last = oldest_head_us // g.hop_us - g.span + 1, newest_us // g.hop_us
        if last >= first:
            out.append(window_writes(g, keys, events, first, last, visible_at, now, whole))
    return out


def stored_values(windows: list[bytes | None], pushed: list[bytes | None]
                  ) -> list[bytes | None]:
    """Each entity's value as reads and rewrites see it: its window key's bytes followed by
    its push key's records (a push key without its window key: behind an empty header).
    None where neither exists."""
    return [w if p is None else (w or bytes(HEADER)) + p
            for w, p in zip(windows, pushed, strict=True)]


def compacted(g: TileGroup, values: list[bytes | None], oldest_head_us: int, visible_at: int
              ) -> list[bytes | None]:
    """Window keys rewritten (tile_format.compact_values): for reads at `oldest_head_us` or
    later that see every event visible at `visible_at`. None stays None."""
    parts = [v or b"" for v in values]
    offsets = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    data, out = compact_values(g.layout.spec, g.layout.width, g.coarse,
                               np.frombuffer(b"".join(parts), np.uint8), offsets,
                               oldest_head_us // g.hop_us - g.span + 1, visible_at)
    raw = data.tobytes()
    return [None if v is None else raw[out[i]:out[i + 1]] for i, v in enumerate(values)]
