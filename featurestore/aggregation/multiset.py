"""The int64 inputs in a sliding window, each counted, for the sweep of SET units (whose state
depends only on the set of distinct inputs): which inputs are in the window at least once, and
one event that carries each, so that a state that cannot lose an input can be rebuilt.

A multiset is (slots, live): slots[j] = (input, count, position in live, event) with count -1
for an empty slot, open-addressed; live[0] is how many inputs are in the window, live[1:]
their slots. Inputs are never deleted from the slots (a count of 0 means gone), so one
multiset holds at most the inputs of the events it was made for."""

import numba
import numpy as np

KEY, COUNT, AT, EVENT = range(4)


@numba.njit(cache=True, nogil=True)
def make(n):  # type: ignore[no-untyped-def]
    """An empty multiset for at most n distinct inputs (a quarter to a half full)."""
    size = 4
    while size < 2 * n:
        size *= 2
    slots = np.empty((size, 4), np.int64)
    slots[:, COUNT] = -1
    return slots, np.zeros(n + 1, np.int64)


@numba.njit(cache=True, nogil=True)
def clear(slots, live):  # type: ignore[no-untyped-def]
    slots[:, COUNT] = -1
    live[0] = 0


@numba.njit(cache=True, nogil=True)
def _slot(slots, key):  # type: ignore[no-untyped-def]
    """The slot holding key, or the empty one where it belongs."""
    mask = np.int64(slots.shape[0] - 1)
    j = ((key * np.int64(-7046029254386353131)) >> np.int64(29)) & mask  # Fibonacci hashing
    while slots[j, COUNT] >= 0 and slots[j, KEY] != key:
        j = (j + 1) & mask
    return j


@numba.njit(cache=True, nogil=True)
def enter(slots, live, key, event):  # type: ignore[no-untyped-def]
    """Counts one more event with input key; whether key was not in the window."""
    j = _slot(slots, key)
    if slots[j, COUNT] < 0:
        slots[j, KEY], slots[j, COUNT] = key, 0
    slots[j, COUNT] += 1
    if slots[j, COUNT] > 1:
        return False
    live[0] += 1
    live[live[0]] = j
    slots[j, AT], slots[j, EVENT] = live[0], event
    return True


@numba.njit(cache=True, nogil=True)
def leave(slots, live, key):  # type: ignore[no-untyped-def]
    """Counts one event with input key less; whether key is no longer in the window."""
    j = _slot(slots, key)
    slots[j, COUNT] -= 1
    if slots[j, COUNT] > 0:
        return False
    last = live[live[0]]
    live[slots[j, AT]] = last
    slots[last, AT] = slots[j, AT]
    live[0] -= 1
    return True
