"""GetOnlineFeaturesResponse written straight from NumPy arrays in protobuf's wire format.

Why by hand: filling the generated message costs ~45 us per 1,000 values (upb copies a
Python list element by element; extending from a NumPy array is slower still), while a packed
field of doubles, sfixed64s, bools or small enums is laid out on the wire exactly like the
little-endian array, so writing it is one copy. Strings go through one Numba loop. The bytes
are a valid serialization of the generated message (protobuf parsers take fields in any
order), which the tests check by parsing them with it. Field numbers are read from the
generated descriptors, so this module cannot drift from the .proto."""

from __future__ import annotations

import numba
import numpy as np

from featurestore.definitions.types import Bool, String
from featurestore.online.lookup import OnlineResult, Slots
from featurestore.plan import Selection
from featurestore.serving.proto import WIRE, pb
from featurestore.values.status import PRESENT
from featurestore.values.strings import Utf8Array

_RESPONSE = pb.GetOnlineFeaturesResponse.DESCRIPTOR.fields_by_name
_VALUES = pb.Values.DESCRIPTOR.fields_by_name
_RESPONSE_VALUES = _RESPONSE["values"].number
_RESPONSE_STATUSES = _RESPONSE["statuses"].number
_RESPONSE_EVENT_TS = _RESPONSE["event_timestamps"].number
_VALUES_TIMESTAMPS = _VALUES["timestamp_values"].number
_MAP_KEY, _MAP_VALUE = 1, 2  # the fields of every map entry
_LEN = 2  # wire type of length-delimited fields (packed arrays, strings, messages)
_ONE_BYTE = [bytes((v,)) for v in range(0x80)]
_NONE_MISSING = np.zeros((0, 0), np.bool_)
_NONE_MISSING.flags.writeable = False


def varint(value: int) -> bytes:
    if value < 0x80:  # field keys and short lengths: most calls
        return _ONE_BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited field: a packed array, a string or a nested message."""
    return varint(number << 3 | _LEN) + varint(len(payload)) + payload


class ResponseEncoder:
    """Encodes the responses of one selection from a read's matrices (see online.lookup.Slots):
    each fixed-width type's outputs are one block of rows there, already zero where missing,
    so a type's values are one copy and the stored strings one Numba call, whatever the
    number of features. What does not change between requests is worked out once."""

    def __init__(self, selection: Selection, slots: Slots):
        outputs = selection.outputs
        self.header = pb.GetOnlineFeaturesResponse(
            feature_names=[o.name for o in outputs],
            feature_types=[WIRE[o.dtype].value_type for o in outputs]).SerializeToString()
        self.fixed = [(varint(_VALUES[WIRE[t].field].number << 3 | _LEN), lo, hi, t is Bool)
                      for t, lo, hi in slots.groups]
        self.string_key = _read_only(np.frombuffer(
            varint(_VALUES[WIRE[String].field].number << 3 | _LEN), np.uint8))
        self.string_runs = slots.string_runs
        self.status_row = slots.status_row
        self.n_outputs = slots.n_outputs
        self.view_keys = {view: delimited(_MAP_KEY, view.encode()) for view in selection.views}

    def encode(self, result: OnlineResult, n: int, as_of_us: int) -> bytes:
        fixed = result.fixed
        values = []
        for key, lo, hi, boolean in self.fixed:
            block = (fixed[lo:hi] != 0).tobytes() if boolean else fixed[lo:hi].tobytes()
            values += (key, varint(len(block)), block)
        for run in self.string_runs:
            if isinstance(run, tuple):
                values.append(_encode_strings(
                    self.string_key, _read_only(result.strings.offsets[run[0]:run[1]]),
                    _read_only(result.strings.data), _NONE_MISSING).tobytes())
            else:
                values.append(_strings(self.string_key, result.computed[run].values,  # type: ignore[arg-type]
                                       result.status[self.status_row[run]] != PRESENT))
        scalars = pb.GetOnlineFeaturesResponse(
            num_entities=n, as_of_us=as_of_us,
            transform_errors=result.transform_errors).SerializeToString()
        return b"".join([
            self.header, scalars,
            delimited(_RESPONSE_VALUES, b"".join(values)),
            delimited(_RESPONSE_STATUSES, result.status[:self.n_outputs].tobytes()),  # 1 byte each
            *(delimited(_RESPONSE_EVENT_TS, self.view_keys[view] + delimited(
                _MAP_VALUE, delimited(_VALUES_TIMESTAMPS, ts.tobytes())))
              for view, ts in result.event_ts.items()),
        ])


def _strings(key: np.ndarray, column: Utf8Array, missing: np.ndarray) -> bytes:
    """A computed string output's entries (each led by the field's `key`); empty strings where
    the value is missing."""
    return _encode_strings(key, _read_only(column.offsets.reshape(1, -1)),
                           _read_only(column.data), _read_only(missing.reshape(1, -1))).tobytes()


def _read_only(array: np.ndarray) -> np.ndarray:
    """Numba compiles once per writability; stored and computed strings differ in it, and
    one compiled version (loaded from cache at warm-up) should serve both."""
    if array.flags.writeable:
        array = array.view()
        array.flags.writeable = False
    return array


@numba.njit(cache=True, nogil=True)
def _encode_strings(key, offsets, data, missing):  # type: ignore[no-untyped-def]
    """Entries of a repeated string field for several outputs, output after output: row k
    of `offsets` (outputs, n + 1) bounds each entity's string in `data`; `missing` (the
    same rows, or none) empties a value."""
    size = 0
    for k in range(offsets.shape[0]):
        for i in range(offsets.shape[1] - 1):
            gone = missing.shape[0] > 0 and missing[k, i]
            length = 0 if gone else offsets[k, i + 1] - offsets[k, i]
            size += len(key) + length + 1
            while length >= 0x80:
                size += 1
                length >>= 7
    out = np.empty(size, np.uint8)
    p = 0
    for k in range(offsets.shape[0]):
        for i in range(offsets.shape[1] - 1):
            gone = missing.shape[0] > 0 and missing[k, i]
            out[p:p + len(key)] = key
            p += len(key)
            length = 0 if gone else offsets[k, i + 1] - offsets[k, i]
            start = offsets[k, i]
            rest = length
            while rest >= 0x80:
                out[p] = rest & 0x7F | 0x80
                rest >>= 7
                p += 1
            out[p] = rest
            p += 1
            out[p:p + length] = data[start:start + length]
            p += length
    return out
