"""Protobuf's base-128 varints, for the Numba code that writes wire bytes (responses) and
tile bytes (Redis): values are taken as unsigned 64-bit, so a negative int64 takes ten bytes,
as protobuf writes an int64."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def put_varint(buf, pos, v):  # type: ignore[no-untyped-def]
    """Writes v at buf[pos]; returns the position after it."""
    u = np.uint64(v)
    while u >= np.uint64(0x80):
        buf[pos] = np.uint8((u & np.uint64(0x7F)) | np.uint64(0x80))
        u >>= np.uint64(7)
        pos += 1
    buf[pos] = np.uint8(u)
    return pos + 1


@numba.njit(cache=True, nogil=True)
def get_varint(buf, pos):  # type: ignore[no-untyped-def]
    """The varint at buf[pos] (as int64) and the position after it."""
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
def varint_size(v):  # type: ignore[no-untyped-def]
    u, size = np.uint64(v), 1
    while u >= np.uint64(0x80):
        u >>= np.uint64(7)
        size += 1
    return size
