"""Feature value types. Each knows its NumPy, Arrow and DuckDB spelling, so the offline and
online paths convert values the same way."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class DType:
    name: str
    numpy: np.dtype
    duckdb: str

    @property
    def arrow(self) -> pa.DataType:
        return _arrow()[self.name]

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> tuple[object, tuple[str]]:
        """Unpickled as the same object (code compares types with `is`): plans travel to
        Spark executors pickled."""
        return dtype_by_name, (self.name,)


Int64 = DType("Int64", np.dtype(np.int64), "BIGINT")
Float64 = DType("Float64", np.dtype(np.float64), "DOUBLE")
Bool = DType("Bool", np.dtype(np.bool_), "BOOLEAN")
String = DType("String", np.dtype("U"), "VARCHAR")
# Timestamps are UTC epoch microseconds inside kernels; UTC-zoned everywhere outside.
Timestamp = DType("Timestamp", np.dtype(np.int64), "TIMESTAMPTZ")


@cache
def _arrow() -> dict[str, pa.DataType]:
    """Arrow is loaded on first use: the serving client works without it."""
    import pyarrow as pa

    return {"Int64": pa.int64(), "Float64": pa.float64(), "Bool": pa.bool_(),
            "String": pa.string(), "Timestamp": pa.timestamp("us", tz="UTC")}

ALL_TYPES: dict[str, DType] = {t.name: t for t in (Int64, Float64, Bool, String, Timestamp)}
KEY_TYPES = (Int64, String)


def dtype_by_name(name: str) -> DType:
    return ALL_TYPES[name]
