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
    roles = [("entity key", request.entities, selection.join_keys),
             ("request input", request.request_inputs, selection.requests)]
    sent = [_sent(role, given, wanted) for role, given, wanted in roles]
    lengths = {name: len(values) for columns in sent for name, (_, values) in columns.items()}
    if len(set(lengths.values())) > 1:
        raise invalid("columns of different lengths: "
                      + ", ".join(f"{name} {n}" for name, n in lengths.items()))
    n = next(iter(lengths.values()), 0)
    if n > limit:
        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"{n} entities in one request; this server takes at most {limit} "
                           "(featurestore serve --max-batch): split the batch")
    valid = _VALID[:n] if n <= len(_VALID) else np.ones(n, np.bool_)
    entities, inputs = (
        {name: Column(_array(wanted[name], field, values, name, role),
                      _validity(given[name], valid, name, role))
         for name, (field, values) in columns.items()}
        for columns, (role, given, wanted) in zip(sent, roles, strict=True))
    return n, entities, inputs


def _validity(values: pb.Values, all_valid: np.ndarray, name: str, role: str) -> np.ndarray:
    if not values.nulls:
        return all_valid
    if role == "entity key":
        raise invalid(f"entity key {name!r} has missing values; keys cannot be null")
    if len(values.nulls) != len(all_valid):
        raise invalid(f"{role} {name!r} has {len(values.nulls)} nulls flags for "
                      f"{len(all_valid)} values; send one per value")
    valid = ~to_numpy(values.nulls, np.dtype(np.bool_))
    valid.flags.writeable = False  # kernels take read-only inputs
    return valid


def _sent(role: str, given: Mapping[str, pb.Values], wanted: Mapping[str, DType]
          ) -> dict[str, tuple[str, Any]]:
    """Column name -> (the list it fills, the list's values), checked against `wanted`."""
    unknown = sorted(set(given) - set(wanted))
    if unknown:
        raise invalid(f"unknown {role} {', '.join(map(repr, unknown))}; this selection takes "
                      f"{_listing(wanted)}")
    sent = {}
    for name, dtype in wanted.items():
        if name not in given:
            raise invalid(f"missing {role} {name!r} ({dtype}); this selection takes "
                          f"{_listing(wanted)}")
        fields = [f for f in given[name].ListFields() if f[0].name != "nulls"]
        if len(fields) > 1:
            raise invalid(f"{role} {name!r} fills {len(fields)} lists "
                          f"({', '.join(f.name for f, _ in fields)}); fill only "
                          f"{WIRE[dtype].field}")
        sent[name] = (fields[0][0].name, fields[0][1]) if fields else (WIRE[dtype].field, ())
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
