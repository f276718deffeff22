"""A GetOnlineFeaturesRequest's columns checked and turned into the Columns a Lookup reads:
one NumPy array per column, never a Python object per value (except strings, which become
Redis keys and kernel inputs anyway)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pyarrow as pa

from featurestore.definitions.types import DType, Float64, Int64, String
from featurestore.plan import Selection
from featurestore.serving.proto import WIRE, pb, to_numpy
from featurestore.values.columns import Column
from featurestore.values.strings import Utf8Array

# Columns without nulls share one read-only all-true validity mask.
_VALID = np.ones(10_000, np.bool_)
_VALID.flags.writeable = False


class RequestError(Exception):
    """A request the server refuses, with the status code it is refused with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Call:
    """One call as the methods see it: the caller's deadline and grant, and what the methods
    report back for the access log and metrics."""

    time_remaining: float | None  # seconds until the caller's deadline; None: no deadline
    request_id: str = ""
    caller: str = ""  # the token's name when tokens are on
    service: str = ""  # the feature service (or "features" for a list), or the push source
    size: int = 0  # entities asked for, or events pushed


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def read_columns(request: pb.GetOnlineFeaturesRequest, selection: Selection, limit: int
                 ) -> tuple[int, dict[str, Column], dict[str, Column]]:
    """(number of entities, entity key columns, request input columns). Names, lengths and
    the batch limit are checked before any column is read, so an oversized batch costs
    nothing; a column's type is checked as it is read."""
    keys = _sent("entity key", request.entities, selection.join_keys)
    inputs = _sent("request input", request.request_inputs, selection.requests)
    n = _length(keys + inputs)
    if n > limit:
        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"{n} entities in one request; this server takes at most {limit} "
                           "(featurestore serve --max-batch): split the batch")
    valid = _VALID[:n] if n <= len(_VALID) else np.ones(n, np.bool_)
    return n, _read("entity key", keys, valid), _read("request input", inputs, valid)


# A column as sent: its name, type, the list it fills, that list's values and its nulls.
Sent = tuple[str, DType, str, Any, Any]


def _length(sent: list[Sent]) -> int:
    lengths = {len(values) for _, _, _, values, _ in sent}
    if len(lengths) > 1:
        raise invalid("columns of different lengths: "
                      + ", ".join(f"{name} {len(values)}" for name, _, _, values, _ in sent))
    return lengths.pop() if lengths else 0


def _read(role: str, sent: list[Sent], valid: np.ndarray) -> dict[str, Column]:
    return {name: Column(_array(dtype, field, values, name, role),
                         _validity(nulls, valid, name, role) if nulls else valid)
            for name, dtype, field, values, nulls in sent}


def _validity(nulls: Any, all_valid: np.ndarray, name: str, role: str) -> np.ndarray:
    if role == "entity key":
        raise invalid(f"entity key {name!r} has missing values; keys cannot be null")
    if len(nulls) != len(all_valid):
        raise invalid(f"{role} {name!r} has {len(nulls)} nulls flags for "
                      f"{len(all_valid)} values; send one per value")
    valid = ~to_numpy(nulls, np.dtype(np.bool_))
    valid.flags.writeable = False  # kernels take read-only inputs
    return valid


def _sent(role: str, given: Mapping[str, pb.Values], wanted: Mapping[str, DType]
          ) -> list[Sent]:
    """The columns `wanted` as sent, checked against it: names, and one list filled."""
    if len(given) != len(wanted) or not all(name in wanted for name in given):
        unknown = sorted(set(given) - set(wanted))
        if unknown:
            raise invalid(f"unknown {role} {', '.join(map(repr, unknown))}; this selection "
                          f"takes {_listing(wanted)}")
    sent = []
    for name, dtype in wanted.items():
        if name not in given:
            raise invalid(f"missing {role} {name!r} ({dtype}); this selection takes "
                          f"{_listing(wanted)}")
        column = given[name]
        fields = column.ListFields()
        nulls = column.nulls
        lists = [f for f in fields if f[0].name != "nulls"] if nulls else fields
        if len(lists) > 1:
            raise invalid(f"{role} {name!r} fills {len(lists)} lists "
                          f"({', '.join(f.name for f, _ in lists)}); fill only "
                          f"{WIRE[dtype].field}")
        field, values = (lists[0][0].name, lists[0][1]) if lists else (WIRE[dtype].field, ())
        sent.append((name, dtype, field, values, nulls))
    return sent


def _array(dtype: DType, field: str, values: Any, name: str, role: str
           ) -> np.ndarray | Utf8Array:
    wire = WIRE[dtype]
    if field == wire.field:
        if dtype is String:
            return Utf8Array.from_list(list(values))
        return to_numpy(values, wire.numpy)
    if dtype is Float64 and field == WIRE[Int64].field:  # integers are numbers, as in labels
        return to_numpy(values, np.dtype(np.float64))
    raise invalid(f"{role} {name!r} is {dtype}, but the request sends {field}; send {wire.field}")


def _listing(wanted: Mapping[str, DType]) -> str:
    return ", ".join(f"{name} ({dtype})" for name, dtype in wanted.items()) or "nothing"


_ARROW = {"int64_values": pa.int64(), "float64_values": pa.float64(), "bool_values": pa.bool_(),
          "string_values": pa.string(), "timestamp_values": pa.int64()}


def columns_table(columns: Mapping[str, pb.Values]) -> pa.Table:
    """A push's columns as an Arrow table, typed by the list each one fills."""
    arrays = {}
    for name, values in columns.items():
        fields = [f for f in values.ListFields() if f[0].name != "nulls"]
        if len(fields) != 1:
            raise invalid(f"column {name!r} fills {len(fields)} value lists; fill exactly one")
        field, data = fields[0][0].name, fields[0][1]
        mask = np.asarray(values.nulls, np.bool_) if values.nulls else None
        if mask is not None and len(mask) != len(data):
            raise invalid(f"column {name!r} has {len(mask)} nulls flags for {len(data)} values")
        array = pa.array(list(data), _ARROW[field], mask=mask)
        if field == "timestamp_values":
            array = array.cast(pa.timestamp("us", tz="UTC"))
        arrays[name] = array
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) > 1:
        raise invalid("columns of different lengths: "
                      + ", ".join(f"{n} {len(a)}" for n, a in arrays.items()))
    return pa.table(arrays)
