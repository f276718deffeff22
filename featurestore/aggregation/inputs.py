"""How a column becomes an aggregation's input row: int64 order keys (floats in their total
order), float64 values, or distinct-count hashes."""

from __future__ import annotations

import numba
import numpy as np

from featurestore.aggregation.unit import FLOATS, HASHES
from featurestore.values.strings import Utf8Array

_MASK63 = np.int64(0x7FFFFFFFFFFFFFFF)
CANONICAL_NAN = np.int64(0x7FF8000000000000)


@numba.njit(cache=True, nogil=True)
def _splitmix(x):  # type: ignore[no-untyped-def]
    z = np.uint64(x) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return np.int64(z ^ (z >> np.uint64(31)))


@numba.njit(cache=True, nogil=True)
def float_keys(values):  # type: ignore[no-untyped-def]
    """Float64 -> int64 keys whose signed order is the total order -inf < ... < -0.0 < 0.0 <
    ... < inf < NaN, with every NaN made the one canonical NaN."""
    bits = values.view(np.int64)
    out = np.empty(values.shape[0], np.int64)
    for i in range(values.shape[0]):
        if np.isnan(values[i]):
            out[i] = CANONICAL_NAN
        elif bits[i] < 0:
            out[i] = bits[i] ^ _MASK63
        else:
            out[i] = bits[i]
    return out


@numba.njit(cache=True, nogil=True)
def key_float(key):  # type: ignore[no-untyped-def]
    """The float64 whose float_keys key is `key`."""
    return np.int64(key ^ _MASK63 if key < 0 else key).view(np.float64)


@numba.njit(cache=True, nogil=True)
def hash_keys(keys, is_float):  # type: ignore[no-untyped-def]
    """Distinct-count hashes of int64 values (floats as float_keys, with -0.0 equal to 0.0)."""
    out = np.empty(keys.shape[0], np.int64)
    for i in range(keys.shape[0]):
        k = keys[i]
        if is_float and k == -1:  # -0.0 after float_keys
            k = 0
        out[i] = _splitmix(k)
    return out


@numba.njit(cache=True, nogil=True)
def hash_utf8(offsets, data):  # type: ignore[no-untyped-def]
    """Distinct-count hashes of strings: FNV-1a over the UTF-8 bytes, then mixed."""
    n = offsets.shape[0] - 1
    out = np.empty(n, np.int64)
    for i in range(n):
        h = np.uint64(0xCBF29CE484222325)
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * np.uint64(0x100000001B3)
        out[i] = _splitmix(np.int64(h))
    return out


def encode(kind: int, values: np.ndarray | Utf8Array, is_float: bool
           ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(int64 row, float64 row) of a column encoded as `kind` (KEYS, FLOATS or HASHES); strings
    are always hashed."""
    if isinstance(values, Utf8Array):
        return hash_utf8(values.offsets, values.data), None
    if kind == FLOATS:
        return None, np.asarray(values, np.float64)
    keys = float_keys(values) if is_float else np.asarray(values, np.int64)
    return (hash_keys(keys, is_float) if kind == HASHES else keys), None
