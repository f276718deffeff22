"""The hand-written response encoding against the generated protobuf code: what the server
writes must parse into exactly the message the slow, obvious construction builds, and the
client must read back every value bit for bit."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from featurestore.definitions.types import Bool, Float64, Int64, String, Timestamp
from featurestore.online.lookup import FeatureValues, OnlineResult, Slots
from featurestore.plan import Selection
from featurestore.plan.plan import OutputFeature
from featurestore.serving.client import OnlineFeatures
from featurestore.serving.proto import WIRE, pb
from featurestore.serving.wire import ResponseEncoder, varint
from featurestore.values.columns import Column
from featurestore.values.status import STATUS_NAMES, Status
from featurestore.values.strings import Utf8Array

AS_OF = 1_751_328_000_000_000
LONG = "é" * 200  # 400 bytes: a two-byte length prefix


def sample(n: int, seed: int) -> list[FeatureValues]:
    """Two features of every type, with edge values and every status."""
    rng = np.random.default_rng(seed)
    status = rng.integers(0, 4, (10, n)).astype(np.uint8)
    floats = np.array([math.nan, -0.0, 0.0, math.inf, -math.inf, 5e-324, 1.5, -2.25])
    strings = ["", "a", "日本", "😀", LONG, "x|y{z}%"]
    values = {
        Int64: lambda: rng.choice(np.array([-(2**63), 2**63 - 1, 0, -1, 7]), n),
        Float64: lambda: rng.choice(floats, n),
        Bool: lambda: rng.integers(0, 2, n).astype(np.bool_),
        String: lambda: Utf8Array.from_list([strings[i] for i in rng.integers(0, 6, n)]),
        Timestamp: lambda: rng.integers(-(2**50), 2**52, n),
    }
    out = []
    for k, (dtype, make) in enumerate([*values.items(), *values.items()]):
        present = status[k] == Status.PRESENT
        out.append(FeatureValues(f"{dtype.name.lower()}_{k}", dtype, Column(make(), present),
                                 status[k]))
    return out


def reference(features: list[FeatureValues], n: int, event_ts: dict[str, np.ndarray],
              errors: dict[str, int]) -> pb.GetOnlineFeaturesResponse:
    """The response built field by field through the generated message API."""
    message = pb.GetOnlineFeaturesResponse(
        num_entities=n, as_of_us=AS_OF, feature_names=[f.name for f in features],
        feature_types=[WIRE[f.dtype].value_type for f in features],
        statuses=[int(s) for f in features for s in f.status], transform_errors=errors)
    for wire in WIRE.values():
        for f in (f for f in features if f.dtype is wire.dtype):
            values = (f.column.values.to_list() if isinstance(f.column.values, Utf8Array)
                      else f.column.values.tolist())
            neutral = "" if wire.dtype is String else type(values[0])(0) if values else 0
            getattr(message.values, wire.field).extend(
                v if ok else neutral for v, ok in zip(values, f.column.valid, strict=True))
    for view, ts in event_ts.items():
        message.event_timestamps[view].timestamp_values.extend(ts.tolist())
    return message


def online_result(features: list[FeatureValues], selection: Selection, n: int,
                  stored_strings: bool, event_ts: dict[str, np.ndarray],
                  errors: dict[str, int]) -> OnlineResult:
    """A read's result holding `features`: strings as a row view's stored strings (one
    matrix, empty where missing) or as computed columns (a transform's)."""
    stored = {f.name for f in features if f.dtype is String} if stored_strings else set()
    slots = Slots(None, selection, stored)  # type: ignore[arg-type]  # no views to look up
    texts = [[v if ok else "" for v, ok in zip(f.column.values.to_list(), f.column.valid,
                                                strict=True)]
             for f in features if f.name in stored]  # type: ignore[union-attr]
    lengths = [len(t.encode()) for row in texts for t in row]
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    matrix = np.array([offsets[k * n:(k + 1) * n + 1] for k in range(len(texts))],
                      np.int64).reshape(len(texts), n + 1)
    data = np.frombuffer("".join(t for row in texts for t in row).encode(), np.uint8)
    result = OnlineResult(slots, np.zeros((len(slots.fixed_row), n), np.int64),
                          Utf8Array(matrix, data), {}, np.zeros((len(slots.refs), n), np.uint8),
                          event_ts, errors)
    for f in features:
        if f.name not in stored:
            result[f.name] = f.column
        result.status[slots.status_row[f.name]] = f.status
    return result


@pytest.mark.parametrize("stored_strings", [True, False], ids=["stored", "computed"])
@pytest.mark.parametrize("n", [0, 1, 3, 200])
def test_encoding_parses_into_the_reference_message(n: int, stored_strings: bool) -> None:
    features = sample(n, seed=n)
    selection = Selection(
        outputs=[OutputFeature(f.name, f.dtype, f.name) for f in features],
        views={"v1": [], "v2": []}, transforms=[], requests={}, join_keys={})
    event_ts = {"v1": np.arange(n, dtype=np.int64) * 1_000_003, "v2": np.zeros(n, np.int64)}
    errors = {"some_transform": 2} if n else {}
    result = online_result(features, selection, n, stored_strings, event_ts, errors)
    assert [f.status.tolist() for f in result.features] == [f.status.tolist() for f in features]
    raw = ResponseEncoder(selection, result.slots).encode(result, n, AS_OF)
    parsed = pb.GetOnlineFeaturesResponse.FromString(raw)
    assert parsed == reference(features, n, event_ts, errors)

    result = OnlineFeatures(parsed)
    assert result.names == [f.name for f in features] and len(result) == n
    for f in features:
        assert result.statuses[f.name].tolist() == f.status.tolist()
        got, want = result.values[f.name], f.column.values
        if isinstance(want, Utf8Array):
            assert got == [s if ok else "" for s, ok in zip(want.to_list(), f.column.valid,
                                                             strict=True)]
        else:
            assert isinstance(got, np.ndarray)
            bits = np.where(f.column.valid, want, 0).astype(got.dtype)
            assert got.view(np.uint8).tobytes() == bits.view(np.uint8).tobytes(), f.name
    frame = result.to_polars(statuses=True)
    columns = frame.with_columns(pl.selectors.enum().cast(pl.String)).to_dict(as_series=False)
    plain = result.to_dict(statuses=True)
    assert list(plain) == list(columns)
    for name, values in plain.items():  # the same values, floats bit for bit
        assert [repr(v) if isinstance(v, float) else v for v in values] == \
            [repr(v) if isinstance(v, float) else v for v in columns[name]], name
    assert list(map(repr, result.to_dicts())) == [
        repr(dict(zip(result.names, row, strict=True)))
        for row in zip(*(plain[n] for n in result.names), strict=True)]
    for f in features:
        assert frame[f.name].null_count() == int((f.status != Status.PRESENT).sum())
        assert frame[f"{f.name}__status"].cast(str).to_list() == [STATUS_NAMES[s] for s in f.status]


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**35])
def test_varint(value: int) -> None:
    assert pb.GetOnlineFeaturesResponse.FromString(b"\x08" + varint(value)).num_entities == value
