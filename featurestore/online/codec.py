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


@dataclass(frozen=True)
class RowInputs:
    """A batch of rows to encode, row-major so that each row is written from contiguous
    memory: valid[r, i] says whether feature i is non-null, fixed[r, j] holds the 8-byte
    value of feature schema.fixed[j], and string feature schema.strings[s] of row r is
    str_data[str_start[r, s]:][:str_len[r, s]]. A null is encoded as 0 or the empty string
    whatever its slot holds."""

    header: np.ndarray  # (n, 3) int64: event_ts, created_ts, seq
    valid: np.ndarray  # (n, features) bool
    fixed: np.ndarray  # (n, fixed features) int64
    str_start: np.ndarray  # (n, string features) int64
    str_len: np.ndarray  # (n, string features) int64
    str_data: np.ndarray  # uint8

    def encode(self, schema: RowSchema) -> tuple[np.ndarray, np.ndarray]:
        """(bytes buffer, offsets) with row i at buffer[offsets[i]:offsets[i+1]]."""
        return _encode(*self.kernel_args(schema))

    def kernel_args(self, schema: RowSchema) -> tuple[np.ndarray, ...]:
        """The arguments `row_size` and `write_row` take after the row index."""
        return (self.header, self.valid, self.fixed, np.array(schema.fixed, np.int64),
                self.str_start, self.str_len, np.array(schema.strings, np.int64), self.str_data)


def encode(schema: RowSchema, header: np.ndarray, columns: list[Column]) -> tuple[np.ndarray, np.ndarray]:
    """Rows for a batch: (bytes buffer, offsets) with row i at buffer[offsets[i]:offsets[i+1]].
    `header` is an (n, 3) int64 array of event_ts, created_ts, seq."""
    n = len(header)
    fixed = np.zeros((n, len(schema.fixed)), np.int64)
    for j, i in enumerate(schema.fixed):
        values = columns[i].values
        assert isinstance(values, np.ndarray)
        fixed[:, j] = values.view(np.int64) if values.dtype == np.float64 else values
    strings: list[Utf8Array] = []
    for i in schema.strings:
        values = columns[i].values
        assert isinstance(values, Utf8Array)
        strings.append(values)
    str_start = np.zeros((n, len(strings)), np.int64)
    str_len = np.zeros((n, len(strings)), np.int64)
    base = 0
    for s, v in enumerate(strings):
        str_start[:, s] = v.offsets[:-1] + base
        str_len[:, s] = np.diff(v.offsets)
        base += len(v.data)
    data = np.concatenate([v.data for v in strings]) if strings else np.empty(0, np.uint8)
    valid = np.zeros((n, len(columns)), np.bool_)
    for i, column in enumerate(columns):
        valid[:, i] = column.valid
    return RowInputs(np.ascontiguousarray(header, np.int64), valid, fixed, str_start, str_len,
                     data).encode(schema)


@numba.njit(cache=True, nogil=True)
def _encode(header, valid, fixed, fixed_features, str_start, str_len, string_features,  # type: ignore[no-untyped-def]
            str_data):
    n = header.shape[0]
    offsets = np.empty(n + 1, np.int64)
    offsets[0] = 0
    for r in range(n):
        offsets[r + 1] = offsets[r] + row_size(r, header, valid, fixed, fixed_features, str_start,
                                               str_len, string_features, str_data)
    out = np.empty(offsets[n], np.uint8)
    for r in range(n):
        write_row(out, offsets[r], r, header, valid, fixed, fixed_features, str_start, str_len,
                  string_features, str_data)
    return out, offsets


@numba.njit(cache=True, nogil=True, inline="always")
def row_size(r, header, valid, fixed, fixed_features, str_start, str_len, string_features,  # type: ignore[no-untyped-def]
             str_data):
    """The encoded size of row r of RowInputs.kernel_args."""
    size = HEADER_BYTES + (valid.shape[1] + 7) // 8 + 8 * fixed.shape[1]
    for s in range(string_features.shape[0]):
        size += 4 + (str_len[r, s] if valid[r, string_features[s]] else 0)
    return size


@numba.njit(cache=True, nogil=True, inline="always")
def _copy(out, p, data, start, length):  # type: ignore[no-untyped-def]
    """out[p:p + length] = data[start:start + length], as a plain loop: a slice assignment
    costs more than the copy of a few bytes."""
    for b in range(length):
        out[p + b] = data[start + b]


@numba.njit(cache=True, nogil=True, inline="always")
def write_row(out, p, r, header, valid, fixed, fixed_features, str_start, str_len,  # type: ignore[no-untyped-def]
              string_features, str_data):
    """Writes row r of RowInputs.kernel_args at out[p:]; returns the position after it."""
    _copy(out, p, header[r].view(np.uint8), 0, HEADER_BYTES)
    p += HEADER_BYTES
    n_features = valid.shape[1]
    for b in range((n_features + 7) // 8):
        bits = 0
        for i in range(8 * b, min(8 * b + 8, n_features)):
            if valid[r, i]:
                bits |= 1 << (i - 8 * b)
        out[p + b] = bits
    p += (n_features + 7) // 8
    width = 8 * fixed.shape[1]
    _copy(out, p, fixed[r].view(np.uint8), 0, width)
    for j in range(fixed.shape[1]):
        if not valid[r, fixed_features[j]]:
            out[p + 8 * j: p + 8 * j + 8] = 0
    p += width
    for s in range(string_features.shape[0]):
        length = str_len[r, s] if valid[r, string_features[s]] else 0
        for b in range(4):
            out[p + b] = (length >> (8 * b)) & 0xFF
        p += 4
        start = str_start[r, s]
        _copy(out, p, str_data, start, length)
        p += length
    return p


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
