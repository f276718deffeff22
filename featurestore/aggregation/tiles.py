"""Tiles: the partial aggregate of one entity's events in one hop (or one event kept apart),
merged with each other. Storage-free: online/tile_format.py builds, holds and reads their
bytes in Redis."""

from __future__ import annotations

import numba
import numpy as np

from featurestore.aggregation.accumulators import add_event, merge_state, normalize_state
from featurestore.aggregation.layout import MAX_TS


@numba.njit(cache=True, nogil=True)
def merge_tile(spec, s, o):  # type: ignore[no-untyped-def]
    """Merges tile row o into tile row s (both of one layout, both holding events) and
    normalizes s."""
    s[MAX_TS] = max(s[MAX_TS], o[MAX_TS])
    for a in range(spec.shape[0]):
        merge_state(spec, a, s, o)
        normalize_state(spec, a, s)


@numba.njit(cache=True, nogil=True)
def event_tiles(spec, width, xi, xf, m, ts, created, rows):  # type: ignore[no-untyped-def]
    """One normalized tile per event (indices `rows`): events kept apart until visible."""
    states = np.zeros((rows.shape[0], width), np.int64)
    for j in range(rows.shape[0]):
        i = rows[j]
        states[j, MAX_TS] = ts[i]
        for a in range(spec.shape[0]):
            add_event(spec, a, states[j], xi, xf, m, i, ts[i], created[i])
            normalize_state(spec, a, states[j])
    return states
