"""The wire contract's Python side: the generated messages, the service's method paths, and how
featurestore types travel (their ValueType and their list in a `Values` message).

The generated module is built by `make install`; when it is missing (a fresh checkout used
without make), it is generated on first import if grpcio-tools is installed, and the import
fails with the command to run if it is not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from featurestore.definitions.types import Bool, DType, Float64, Int64, String, Timestamp
from featurestore.serving import codegen

if not (codegen.OUT / "serving_pb2.py").is_file():
    codegen.generate()

from featurestore.serving._proto import serving_pb2 as pb

SERVICE: str = pb.DESCRIPTOR.services_by_name["FeatureServing"].full_name


def method(name: str) -> str:
    """The path a method is called by, e.g. /featurestore.v1.FeatureServing/GetOnlineFeatures."""
    return f"/{SERVICE}/{name}"


@dataclass(frozen=True)
class WireType:
    dtype: DType
    value_type: int  # pb.ValueType
    field: str  # the list of a Values message holding values of this type
    numpy: np.dtype | None  # the array dtype matching the field's wire layout; None for strings


WIRE: dict[DType, WireType] = {
    Int64: WireType(Int64, pb.INT64, "int64_values", np.dtype("<i8")),
    Float64: WireType(Float64, pb.FLOAT64, "float64_values", np.dtype("<f8")),
    Bool: WireType(Bool, pb.BOOL, "bool_values", np.dtype(np.bool_)),
    String: WireType(String, pb.STRING, "string_values", None),
    Timestamp: WireType(Timestamp, pb.TIMESTAMP, "timestamp_values", np.dtype("<i8")),
}
BY_VALUE_TYPE: dict[int, WireType] = {w.value_type: w for w in WIRE.values()}


def to_numpy(values: Any, dtype: np.dtype) -> np.ndarray:
    """A repeated field as an array: element by element for a few values (0.5 us for one),
    through the buffer protocol beyond (a flat ~3 us, whatever the length)."""
    n = len(values)
    return np.fromiter(values, dtype, n) if n <= 64 else np.array(values, dtype)
