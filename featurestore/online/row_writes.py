"""A batch of rows to write online, from Arrow to Redis commands in compiled code: the columns
are read from their Arrow buffers (no Python object per value), and each row's key, encoded row
(online/codec.py) and expiry are written straight into one buffer of SET commands, or into
keys and rows for the write-if-newer script."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numba
import numpy as np
import pyarrow as pa

from featurestore.definitions.types import Bool, DType, String
from featurestore.online.cluster import key_slots
from featurestore.online.codec import RowInputs, RowSchema, row_size, write_row
from featurestore.online.keys import EXPIRY_MARGIN_US, base_head, bases, tag_size, write_tag
from featurestore.online.resp import (
    bulk_head_size,
    decimal_size,
    write_bulk_head,
    write_bytes,
    write_crlf,
    write_decimal,
)
from featurestore.plan import ViewPlan
from featurestore.values.timestamps import now_us

HEADER_COLUMNS = ("__event_ts", "__created", "__seq")  # a row's point-in-time order


@dataclass(frozen=True)
class Keys:
    """Join key values for `keys.write_tag`, key by key in the entity's order."""

    is_string: np.ndarray  # (keys,) bool
    ints: np.ndarray  # (n, keys) int64
    starts: np.ndarray  # (n, keys) int64
    lengths: np.ndarray  # (n, keys) int64
    data: np.ndarray  # uint8

    @classmethod
    def of(cls, table: pa.Table | pa.RecordBatch, join_keys: tuple[tuple[str, DType], ...]
           ) -> Keys:
        """The join key columns of a table or batch, one row per entity."""
        n = table.num_rows
        columns = [_Column.of(_array(table.column(k)), t) for k, t in join_keys]
        data, starts = _strings(columns)
        return cls(np.array([c.data is not None for c in columns], np.bool_),
                   _stacked([c.ints for c in columns], np.int64, n),
                   _stacked(starts, np.int64, n),
                   _stacked([c.lengths for c in columns], np.int64, n), data)


@dataclass(frozen=True)
class RowBatch:
    """One batch of a view's rows, ready for the compiled packers."""

    head: np.ndarray  # uint8: `base_head` of the storage
    keys: Keys
    rows: RowInputs
    schema: RowSchema
    expire_ms: np.ndarray  # (n,) int64: PXAT of each key, 0 for none

    @classmethod
    def of(cls, view: ViewPlan, storage: str, project: str, batch: pa.RecordBatch) -> RowBatch:
        n = batch.num_rows
        features = [_Column.of(batch.column(f), t) for f, t in view.features]
        header = np.empty((n, 3), np.int64)
        for k, name in enumerate(HEADER_COLUMNS):
            header[:, k] = _Column.of(batch.column(name), None).ints
        schema = RowSchema(view.features)
        data, starts = _strings([features[i] for i in schema.strings])
        rows = RowInputs(header, _stacked([c.valid for c in features], np.bool_, n),
                         _stacked([features[i].ints for i in schema.fixed], np.int64, n),
                         _stacked(starts, np.int64, n),
                         _stacked([features[i].lengths for i in schema.strings], np.int64, n),
                         data)
        keys = Keys.of(batch, view.join_keys)
        head = np.frombuffer(base_head(project, view.name, storage, view.entity).encode(),
                             np.uint8)
        return cls(head, keys, rows, schema, expiry_ms(view, header[:, 0]))

    def set_commands(self) -> np.ndarray:
        """One SET per row (with PXAT where the key expires), packed as RESP bytes."""
        k = self.keys
        return _pack_sets(self.head, k.is_string, k.ints, k.starts, k.lengths, k.data,
                          self.expire_ms, *self.rows.kernel_args(self.schema))

    def slots(self) -> np.ndarray:
        """Each row's Redis Cluster slot (that of its entity's hash tag)."""
        k = self.keys
        data, offsets = bases(self.head, True, k.is_string, k.ints, k.starts, k.lengths, k.data)
        return key_slots(data, offsets)

    def take(self, positions: np.ndarray) -> RowBatch:
        """The rows at `positions` (their strings stay in the shared buffers)."""
        k, r = self.keys, self.rows
        keys = Keys(k.is_string, k.ints[positions], k.starts[positions], k.lengths[positions],
                    k.data)
        rows = RowInputs(r.header[positions], r.valid[positions], r.fixed[positions],
                         r.str_start[positions], r.str_len[positions], r.str_data)
        return RowBatch(self.head, keys, rows, self.schema, self.expire_ms[positions])

    def __len__(self) -> int:
        return len(self.expire_ms)

    def keys_and_rows(self) -> tuple[list[bytes], list[bytes]]:
        """Each row's key and encoded row, as the write-if-newer script takes them."""
        k = self.keys
        keys = bases(self.head, True, k.is_string, k.ints, k.starts, k.lengths, k.data)
        return _split(*keys), _split(*self.rows.encode(self.schema))


def expiry_ms(view: ViewPlan, event_ts: np.ndarray) -> np.ndarray:
    """Keys expire ttl (plus EXPIRY_MARGIN_US) after the later of their event time and now,
    so a value goes on reporting OUTSIDE_TTL for a while before Redis reclaims it (then it is
    NOT_FOUND). 0: the view has no ttl, its keys never expire."""
    if view.ttl_us is None:
        return np.zeros(len(event_ts), np.int64)
    return (np.maximum(event_ts, now_us()) + view.ttl_us + EXPIRY_MARGIN_US) // 1000 + 1


@dataclass(frozen=True)
class _Column:
    """An Arrow column's values: `ints` (8-byte values) or, for strings, `data` with each
    value's `starts` and `lengths`; any value where not `valid`."""

    valid: np.ndarray
    ints: np.ndarray | None = None
    data: np.ndarray | None = None
    starts: np.ndarray | None = None
    lengths: np.ndarray | None = None

    @classmethod
    def of(cls, array: pa.Array, dtype: DType | None) -> _Column:
        """`dtype` None: a column read as int64 (the header's times and seq)."""
        n = len(array)
        arrow = pa.int64() if dtype is None else dtype.arrow
        if array.type != arrow:
            array = array.cast(arrow)
        offset = array.offset
        buffers = array.buffers()
        valid = (np.ones(n, np.bool_) if array.null_count == 0 else
                 _bits(buffers[0], offset, n))
        if dtype is String:
            ends = np.frombuffer(buffers[1], np.int32)[offset: offset + n + 1].astype(np.int64)
            data = (np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else
                    np.empty(0, np.uint8))
            return cls(valid, data=data, starts=ends[:-1], lengths=np.diff(ends))
        if dtype is Bool:
            return cls(valid, ints=_bits(buffers[1], offset, n).astype(np.int64))
        return cls(valid, ints=np.frombuffer(buffers[1], np.int64)[offset: offset + n])


def _array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _bits(buffer: pa.Buffer, offset: int, n: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(buffer, np.uint8), bitorder="little")
    return bits[offset: offset + n].view(np.bool_)


def _stacked(arrays: list[np.ndarray | None], dtype: type, n: int) -> np.ndarray:
    """Per-column arrays as one row-major (n, columns) array; a column without one holds
    zeros."""
    out = np.zeros((n, len(arrays)), dtype)
    for k, values in enumerate(arrays):
        if values is not None:
            out[:, k] = values
    return out


def _strings(columns: list[_Column]) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """The string columns' data as one buffer, and each string column's starts in it."""
    datas = [c.data for c in columns if c.data is not None]
    merged = np.concatenate(datas) if datas else np.empty(0, np.uint8)
    starts: list[np.ndarray | None] = []
    base = 0
    for c in columns:
        if c.data is None or c.starts is None:
            starts.append(None)
            continue
        starts.append(c.starts + base)
        base += len(c.data)
    return merged, starts


def _split(data: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    raw, ends = data.tobytes(), offsets.tolist()
    return [raw[a:b] for a, b in pairwise(ends)]


_SET = np.frombuffer(b"$3\r\nSET\r\n", np.uint8)
_PXAT = np.frombuffer(b"$4\r\nPXAT\r\n", np.uint8)
_ARRAY_3 = np.frombuffer(b"*3\r\n", np.uint8)
_ARRAY_5 = np.frombuffer(b"*5\r\n", np.uint8)


@numba.njit(cache=True, nogil=True)
def _pack_sets(head, is_string, ints, starts, lengths, key_data, expire_ms,  # type: ignore[no-untyped-def]
               header, valid, fixed, fixed_features, str_start, str_len, string_features,
               str_data):
    n = header.shape[0]
    key_size = np.empty(n, np.int64)
    value_size = np.empty(n, np.int64)
    total = 0
    for r in range(n):
        key_size[r] = head.shape[0] + tag_size(r, is_string, ints, starts, lengths,
                                                key_data) + 1
        value_size[r] = row_size(r, header, valid, fixed, fixed_features, str_start, str_len,
                                 string_features, str_data)
        total += (4 + _SET.shape[0] + bulk_head_size(key_size[r]) + key_size[r]
                  + bulk_head_size(value_size[r]) + value_size[r])
        if expire_ms[r]:
            total += _PXAT.shape[0] + bulk_head_size(decimal_size(expire_ms[r])) \
                + decimal_size(expire_ms[r])
    out = np.empty(total, np.uint8)
    p = 0
    for r in range(n):
        p = write_bytes(out, p, _ARRAY_5 if expire_ms[r] else _ARRAY_3)
        p = write_bytes(out, p, _SET)
        p = write_bulk_head(out, p, key_size[r])
        p = write_bytes(out, p, head)
        p = write_tag(out, p, r, is_string, ints, starts, lengths, key_data)
        out[p] = 125  # '}'
        p = write_crlf(out, p + 1)
        p = write_bulk_head(out, p, value_size[r])
        p = write_row(out, p, r, header, valid, fixed, fixed_features, str_start, str_len,
                      string_features, str_data)
        p = write_crlf(out, p)
        if expire_ms[r]:
            p = write_bytes(out, p, _PXAT)
            p = write_bulk_head(out, p, decimal_size(expire_ms[r]))
            p = write_decimal(out, p, expire_ms[r])
            p = write_crlf(out, p)
    return out
