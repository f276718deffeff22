"""Tiles: the partial aggregate of one entity's events in one hop, built from events, merged
with each other and finished into values. Storage-free: online/tile_format.py holds their
bytes in Redis."""

from __future__ import annotations

import numba
import numpy as np

from featurestore.aggregation.accumulators import add_event, finish, merge_state, normalize_state
from featurestore.aggregation.layout import MAX_TS


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


