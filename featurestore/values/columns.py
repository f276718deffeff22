"""The columnar currency between stores and kernels: a value array plus a validity mask.

Offline (DuckDB results) and online (Redis rows, gRPC requests) both convert through here, so a
value reaches a kernel as the same bits on either path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

from featurestore.definitions.types import Bool, DType, Float64, Int64, String, Timestamp
from featurestore.values.strings import Utf8Array

_FILL = {Int64: 0, Float64: 0.0, Bool: False, String: "", Timestamp: 0}


@dataclass(slots=True)  # not frozen: built per request online, and frozen init costs twice
class Column:
    """values[i] is meaningful only where valid[i]; elsewhere it holds a neutral filler.
    String values are a Utf8Array, every other type a NumPy array."""

    values: np.ndarray | Utf8Array
    valid: np.ndarray

    def __len__(self) -> int:
        return len(self.valid)


def from_arrow(array: pa.Array | pa.ChunkedArray, dtype: DType) -> Column:
    import pyarrow as pa  # here, not at import time: the serving client runs without Arrow
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if array.type != dtype.arrow:
        array = array.cast(dtype.arrow)
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    full = pc.fill_null(array, _FILL[dtype]) if array.null_count else array
    if dtype is String:
        return Column(Utf8Array.from_arrow(full), valid)
    if dtype is Timestamp:
        full = full.cast(pa.int64())
    return Column(full.to_numpy(zero_copy_only=False), valid)


def to_arrow(column: Column, dtype: DType) -> pa.Array:
    import pyarrow as pa

    if dtype is String:
        assert isinstance(column.values, Utf8Array)
        return column.values.to_arrow(~column.valid)
    mask = None if column.valid.all() else ~column.valid  # no mask: no bitmap to build
    if dtype is Timestamp:
        return pa.array(column.values, pa.int64(), mask=mask).cast(dtype.arrow)
    return pa.array(column.values, dtype.arrow, mask=mask)


def empty(dtype: DType) -> Column:
    if dtype is String:
        return Column(Utf8Array.from_list([]), np.empty(0, np.bool_))
    return Column(np.empty(0, dtype.numpy), np.empty(0, np.bool_))


def filled(column: Column, default: object) -> Column:
    """A missing input replaced by a transform's declared default."""
    everywhere = np.ones(len(column), np.bool_)
    if isinstance(column.values, Utf8Array):
        strings = column.values.to_list()
        merged = [s if ok else default for s, ok in zip(strings, column.valid, strict=True)]
        return Column(Utf8Array.from_list(merged), everywhere)
    values = np.where(column.valid, column.values, np.asarray(default, column.values.dtype))
    return Column(values, everywhere)
