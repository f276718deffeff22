"""The online row codec: one Redis value per (view version, entity), decoded for a whole batch
by one Numba call (online/lookup.py reads every row view of a request in one), never value by
value in Python.

Layout (little-endian):
    header   3 x int64   event_ts, created_ts, seq: the point-in-time order of the row, which
                         the write-if-newer script compares
    validity ceil(n/8)   bit i set when feature i is non-null
    fixed    8 bytes per non-string feature, in schema order (Float64 as its IEEE bits,
                         Bool as 0/1, Timestamp as epoch microseconds)
    strings  per string feature, in schema order: uint32 byte length + UTF-8 bytes
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numba
import numpy as np

from featurestore.definitions.types import DType, String
from featurestore.values.columns import Column
from featurestore.values.strings import Utf8Array

HEADER_BYTES = 24


@dataclass(frozen=True)
class RowSchema:
    """Which features a row holds, in order; derived from a view version's features."""

    features: tuple[tuple[str, DType], ...]

    @cached_property
    def fixed(self) -> list[int]:
        return [i for i, (_, t) in enumerate(self.features) if t is not String]

    @cached_property
    def strings(self) -> list[int]:
        return [i for i, (_, t) in enumerate(self.features) if t is String]

    @cached_property
    def position(self) -> list[int]:
        """Feature i's row in the fixed or the string outputs."""
        return [(self.strings if t is String else self.fixed).index(i)
                for i, (_, t) in enumerate(self.features)]

    @cached_property
    def access(self) -> list[tuple[DType, int]]:
        """Feature i's type and row in the fixed or the string outputs."""
        return [(t, p) for (_, t), p in zip(self.features, self.position, strict=True)]

    @property
    def bitmap_bytes(self) -> int:
        return (len(self.features) + 7) // 8


def encode(schema: RowSchema, header: np.ndarray, columns: list[Column]) -> tuple[np.ndarray, np.ndarray]:
    """Rows for a batch: (bytes buffer, offsets) with row i at buffer[offsets[i]:offsets[i+1]].
    `header` is an (n, 3) int64 array of event_ts, created_ts, seq."""
    n = len(header)
    fixed_idx, string_idx = schema.fixed, schema.strings
    fixed = np.zeros((n, len(fixed_idx)), np.int64)
    for j, i in enumerate(fixed_idx):
        values = columns[i].values
        assert isinstance(values, np.ndarray)
        fixed[:, j] = values.view(np.int64) if values.dtype == np.float64 else values.astype(np.int64)
    valid = np.zeros((n, max(len(columns), 1)), np.bool_)
    for i, column in enumerate(columns):
        valid[:, i] = column.valid
    bitmap = np.packbits(valid, axis=1, bitorder="little")[:, : schema.bitmap_bytes]
    str_offsets = np.zeros((len(string_idx), n + 1), np.int64)
    str_data = []
    for j, i in enumerate(string_idx):
        values = columns[i].values
        assert isinstance(values, Utf8Array)
        str_offsets[j] = values.offsets - values.offsets[0]
        str_data.append(values.data[values.offsets[0]: values.offsets[-1]])
    data = np.concatenate(str_data) if str_data else np.empty(0, np.uint8)
    data_starts = np.zeros(len(string_idx) + 1, np.int64)
    data_starts[1:] = np.cumsum([len(d) for d in str_data])
    return _encode(np.ascontiguousarray(header, np.int64), np.ascontiguousarray(bitmap), fixed,
                   str_offsets, data, data_starts)


@numba.njit(cache=True, nogil=True)
def _encode(header, bitmap, fixed, str_offsets, data, data_starts):  # type: ignore[no-untyped-def]
    n = header.shape[0]
    n_str = str_offsets.shape[0]
    row_fixed = HEADER_BYTES + bitmap.shape[1] + 8 * fixed.shape[1]
    offsets = np.empty(n + 1, np.int64)
    offsets[0] = 0
    for r in range(n):
        size = row_fixed + 4 * n_str
        for s in range(n_str):
            size += str_offsets[s, r + 1] - str_offsets[s, r]
        offsets[r + 1] = offsets[r] + size
    out = np.empty(offsets[n], np.uint8)
    for r in range(n):
        p = offsets[r]
        out[p: p + HEADER_BYTES] = header[r].view(np.uint8)
        p += HEADER_BYTES
        out[p: p + bitmap.shape[1]] = bitmap[r]
        p += bitmap.shape[1]
        out[p: p + 8 * fixed.shape[1]] = fixed[r].view(np.uint8)
        p += 8 * fixed.shape[1]
        for s in range(n_str):
            a = data_starts[s] + str_offsets[s, r]
            length = str_offsets[s, r + 1] - str_offsets[s, r]
            out[p: p + 4] = np.array([length], np.uint32).view(np.uint8)
            p += 4
            out[p: p + length] = data[a: a + length]
            p += length
    return out, offsets


@numba.njit(cache=True, nogil=True, inline="always")
def int64_at(buffer, p):  # type: ignore[no-untyped-def]
    """The little-endian int64 at byte p: assembled from bytes, as a `.view` of a slice per
    field made decoding a batch of rows four times slower (a view per row is fine)."""
    value = np.int64(0)
    for b in range(8):
        value |= np.int64(buffer[p + b]) << np.int64(8 * b)
    return value


@numba.njit(cache=True, nogil=True, inline="always")
def uint32_at(buffer, p):  # type: ignore[no-untyped-def]
    value = np.int64(0)
    for b in range(4):
        value |= np.int64(buffer[p + b]) << np.int64(8 * b)
    return value
