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

from featurestore.definitions.types import Bool
from featurestore.online.lookup import OnlineResult, Slots
from featurestore.plan import Selection
from featurestore.serving.proto import WIRE, pb
from featurestore.values.varints import put_varint, varint_size

_RESPONSE = pb.GetOnlineFeaturesResponse.DESCRIPTOR.fields_by_name
_VALUES = pb.Values.DESCRIPTOR.fields_by_name


class ResponseEncoder:
    """Encodes the responses of one selection from a read's matrices (see online.lookup.Slots):
    each fixed-width type's outputs are one block of rows there and the string outputs the
    first rows of the strings, all already zero or empty where missing, so one Numba call
    writes the whole response after its constant head (feature names and types), whatever the
    number of features and views."""

    def __init__(self, selection: Selection, slots: Slots):
        outputs = selection.outputs
        self.header = pb.GetOnlineFeaturesResponse(
            feature_names=[o.name for o in outputs],
            feature_types=[WIRE[o.dtype].value_type for o in outputs]).SerializeToString()
        self.groups = _read_only(np.array(
            [(_VALUES[WIRE[t].field].number, lo, hi, t is Bool) for t, lo, hi in slots.groups],
            np.int64).reshape(-1, 4))
        self.n_outputs, self.n_strings = slots.n_outputs, slots.n_string_outputs
        self._views: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}

    def encode(self, result: OnlineResult, n: int, as_of_us: int) -> bytes:
        names, offsets = self._views.get(result.row_views) or self._view_names(result.row_views)
        body = _encode(n, as_of_us, result.fixed, self.groups,
                       _read_only(result.strings.offsets[:self.n_strings]),
                       _read_only(result.strings.data), result.status[:self.n_outputs],
                       result.event_matrix, names, offsets, _FIELDS)
        if result.transform_errors:
            errors = pb.GetOnlineFeaturesResponse(transform_errors=result.transform_errors)
            return self.header + body.tobytes() + errors.SerializeToString()
        return self.header + body.tobytes()

    def _view_names(self, views: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        encoded = [v.encode() for v in views]
        offsets = np.zeros(len(views) + 1, np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        pair = (_read_only(np.frombuffer(b"".join(encoded), np.uint8)), _read_only(offsets))
        self._views[views] = pair
        return pair


def _read_only(array: np.ndarray) -> np.ndarray:
    """Numba compiles once per writability; one compiled version (loaded from cache at
    warm-up) should serve every caller."""
    if array.flags.writeable:
        array = array.view()
        array.flags.writeable = False
    return array


# The field numbers _encode writes, from the generated descriptors.
_FIELDS = _read_only(np.array([
    _RESPONSE["num_entities"].number, _RESPONSE["values"].number, _RESPONSE["statuses"].number,
    _RESPONSE["event_timestamps"].number, _RESPONSE["as_of_us"].number,
    _VALUES["string_values"].number, _VALUES["timestamp_values"].number], np.int64))


@numba.njit(cache=True, nogil=True, inline="always")
def _put_key(out, p, number, size):  # type: ignore[no-untyped-def]
    """A length-delimited field's key and length."""
    p = put_varint(out, p, number << 3 | 2)
    return put_varint(out, p, size)


@numba.njit(cache=True, nogil=True)
def _encode(n, as_of_us, fixed, groups, offsets, data, status, event_ts, names, name_offsets,
            fields):  # type: ignore[no-untyped-def]
    """The response after its head: num_entities, values (each type's block, then the
    strings, output after output), statuses, event_timestamps (one map entry per row view)
    and as_of_us, in protobuf's wire format."""
    f_entities, f_values, f_statuses, f_events, f_as_of, f_strings, f_ts = fields
    values = 0
    for g in range(groups.shape[0]):
        size = (groups[g, 2] - groups[g, 1]) * n * (1 if groups[g, 3] else 8)
        values += varint_size(groups[g, 0] << 3 | 2) + varint_size(size) + size
    for k in range(offsets.shape[0]):
        for i in range(n):
            length = offsets[k, i + 1] - offsets[k, i]
            values += varint_size(f_strings << 3 | 2) + varint_size(length) + length
    ts_field = varint_size(f_ts << 3 | 2) + varint_size(8 * n) + 8 * n
    total = 0
    if n:
        total += varint_size(f_entities << 3) + varint_size(n)
    total += varint_size(f_values << 3 | 2) + varint_size(values) + values
    total += varint_size(f_statuses << 3 | 2) + varint_size(status.size) + status.size
    for v in range(event_ts.shape[0]):
        name = name_offsets[v + 1] - name_offsets[v]
        entry = 1 + varint_size(name) + name + 1 + varint_size(ts_field) + ts_field
        total += varint_size(f_events << 3 | 2) + varint_size(entry) + entry
    if as_of_us:
        total += varint_size(f_as_of << 3) + varint_size(as_of_us)
    out = np.empty(total, np.uint8)
    p = 0
    if n:
        p = put_varint(out, p, f_entities << 3)
        p = put_varint(out, p, n)
    p = _put_key(out, p, f_values, values)
    for g in range(groups.shape[0]):
        lo, hi = groups[g, 1], groups[g, 2]
        if groups[g, 3]:  # bools: one byte each
            p = _put_key(out, p, groups[g, 0], (hi - lo) * n)
            for j in range(lo, hi):
                for i in range(n):
                    out[p] = 1 if fixed[j, i] != 0 else 0
                    p += 1
        else:
            p = _put_key(out, p, groups[g, 0], (hi - lo) * n * 8)
            block = fixed[lo:hi].ravel().view(np.uint8)
            out[p:p + block.size] = block
            p += block.size
    for k in range(offsets.shape[0]):
        for i in range(n):
            a, b = offsets[k, i], offsets[k, i + 1]
            p = _put_key(out, p, f_strings, b - a)
            out[p:p + b - a] = data[a:b]
            p += b - a
    p = _put_key(out, p, f_statuses, status.size)
    out[p:p + status.size] = status.ravel()
    p += status.size
    for v in range(event_ts.shape[0]):
        a, b = name_offsets[v], name_offsets[v + 1]
        entry = 1 + varint_size(b - a) + (b - a) + 1 + varint_size(ts_field) + ts_field
        p = _put_key(out, p, f_events, entry)
        p = _put_key(out, p, 1, b - a)  # the map key: the view's name
        out[p:p + b - a] = names[a:b]
        p += b - a
        p = _put_key(out, p, 2, ts_field)  # the map value: Values{timestamp_values}
        p = _put_key(out, p, f_ts, 8 * n)
        row = event_ts[v].view(np.uint8)
        out[p:p + row.size] = row
        p += row.size
    if as_of_us:
        p = put_varint(out, p, f_as_of << 3)
        p = put_varint(out, p, as_of_us)
    return out
