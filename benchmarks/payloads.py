"""GetOnlineFeatures requests encoded ahead of time, for raw gRPC channels: sent to our server
without featurestore.Client's encoding (responses not parsed), or to the echo as bytes of the
same size."""

from __future__ import annotations

from featurestore.serving.proto import method, pb

OURS_METHOD = method("GetOnlineFeatures")


def encode_request(service: str, entities: dict[str, list[int]],
                   inputs: dict[str, list[float]], as_of_us: int | None = None) -> bytes:
    """What featurestore.Client sends for these Int64 entity columns and Float64 request
    inputs (and as_of, if given)."""
    message = pb.GetOnlineFeaturesRequest(feature_service=service)
    if as_of_us is not None:
        message.as_of_us = as_of_us
    for name, keys in entities.items():
        message.entities[name].int64_values.extend(keys)
    for name, values in inputs.items():
        message.request_inputs[name].float64_values.extend(values)
    return message.SerializeToString()
