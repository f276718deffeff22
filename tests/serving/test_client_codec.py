"""The client's encoding and decoding without a server: encode_request writes what the
generated message API writes field by field, and OnlineFeatures reads a response the same from
its bytes as from its message, each response by its own feature types (the per-shape work is
cached, keyed by names and types). The served path is tested end to end in test_server.py."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from featurestore import FeatureStoreError
from featurestore.definitions.types import Bool, Float64, Int64, String, Timestamp
from featurestore.serving.client import FeatureServiceSchema, OnlineFeatures, encode_request
from featurestore.serving.proto import pb

AS_OF = datetime(2025, 7, 1, 12, 30, 0, 250, tzinfo=UTC)
AS_OF_US = 1_751_373_000_000_250
SCHEMA = FeatureServiceSchema(
    "svc", features={}, entity_keys={"user_id": Int64, "merchant": String},
    request_inputs={"amount": Float64, "flag": Bool, "seen": Timestamp}, feature_views=[],
    version="", active=True)


def test_encode_request_writes_the_generated_apis_message() -> None:
    message = encode_request(
        "svc", entities={"user_id": np.array([3, -1], np.int32), "merchant": ["M1", "é"]},
        request={"amount": [2.5, None], "flag": [True, False],
                 "seen": [AS_OF, datetime(1970, 1, 1, tzinfo=UTC)]},
        as_of=AS_OF, version="abc123", schema=SCHEMA)
    want = pb.GetOnlineFeaturesRequest(feature_service="svc", as_of_us=AS_OF_US,
                                       feature_service_version="abc123")
    want.entities["user_id"].int64_values.extend([3, -1])
    want.entities["merchant"].string_values.extend(["M1", "é"])
    want.request_inputs["amount"].float64_values.extend([2.5, 0.0])
    want.request_inputs["amount"].nulls.extend([False, True])
    want.request_inputs["flag"].bool_values.extend([True, False])
    want.request_inputs["seen"].timestamp_values.extend([AS_OF_US, 0])
    assert message == want


def test_encode_request_without_a_schema_types_columns_by_their_values() -> None:
    message = encode_request(features=["user_profile:age", "is_foreign"],
                             entities={"user_id": [7]}, request={"amount": [1.0]},
                             as_of=AS_OF_US)
    assert list(message.features) == ["user_profile:age", "is_foreign"]
    assert message.feature_service == "" and message.as_of_us == AS_OF_US
    assert list(message.entities["user_id"].int64_values) == [7]
    assert list(message.request_inputs["amount"].float64_values) == [1.0]
    with pytest.raises(FeatureStoreError, match="'amount' \\(Float64\\) cannot hold"):
        encode_request("svc", request={"amount": ["x"]}, schema=SCHEMA)


def response(types: list[int]) -> pb.GetOnlineFeaturesResponse:
    """Two entities, features `a`, `b`, `c` of the given types, with every status."""
    message = pb.GetOnlineFeaturesResponse(
        num_entities=2, feature_names=["a", "b", "c"], feature_types=types, as_of_us=AS_OF_US,
        statuses=[0, 1, 0, 2, 3, 0], transform_errors={"c": 1})
    fills = {pb.INT64: ("int64_values", [5, 0]), pb.FLOAT64: ("float64_values", [-0.0, 0.0]),
             pb.STRING: ("string_values", ["x", ""])}
    for value_type in types:
        field, values = fills[value_type]
        getattr(message.values, field).extend(values)
    message.event_timestamps["v"].timestamp_values.extend([AS_OF_US, 0])
    return message


def test_a_response_reads_the_same_from_bytes_and_by_its_own_types() -> None:
    floats = response([pb.FLOAT64, pb.FLOAT64, pb.FLOAT64])
    from_bytes, from_message = OnlineFeatures(floats.SerializeToString()), OnlineFeatures(floats)
    assert from_bytes.to_dict(statuses=True) == from_message.to_dict(statuses=True)
    assert np.signbit(from_bytes.values["a"]).tolist() == [True, False]  # -0.0 kept
    assert from_bytes.to_dict(statuses=True) == {
        "a": [-0.0, None], "b": [-0.0, None], "c": [None, 0.0],
        "a__status": ["PRESENT", "NULL"], "b__status": ["PRESENT", "NOT_FOUND"],
        "c__status": ["OUTSIDE_TTL", "PRESENT"]}
    assert from_bytes.event_timestamps["v"].tolist() == [AS_OF_US, 0]
    assert from_bytes.transform_errors == {"c": 1} and from_bytes.as_of_us == AS_OF_US

    from_bytes.dtypes["a"] = String  # a result's own dict: the next one is not affected
    mixed = OnlineFeatures(response([pb.INT64, pb.STRING, pb.FLOAT64]).SerializeToString())
    assert mixed.dtypes == {"a": Int64, "b": String, "c": Float64}
    assert mixed.to_dict() == {"a": [5, None], "b": ["x", None], "c": [None, 0.0]}
    assert OnlineFeatures(floats).dtypes == {"a": Float64, "b": Float64, "c": Float64}
