"""featurestore.Client: a thin synchronous client of a featurestore server.

    client = featurestore.Client("127.0.0.1:6566")
    result = client.get_online_features(service="fraud_v1", entities={"user_id": [1, 2]},
                                        request={"amount": [9.5, 120.0]})
    result.to_polars(statuses=True)

Column types come from the feature service's schema (fetched once per service), or, for a
feature list, from the Python values (bool, int, float, str, datetime, or NumPy arrays)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

if TYPE_CHECKING:  # loaded by the methods that convert: a serving system may never need them
    import polars as pl
    import pyarrow as pa

from featurestore.definitions.types import Bool, DType, Float64, Int64, String, Timestamp
from featurestore.errors import FeatureStoreError
from featurestore.serving.proto import BY_VALUE_TYPE, WIRE, WireType, method, pb, to_numpy
from featurestore.values.columns import Column, to_arrow
from featurestore.values.status import STATUS_NAMES, Status, status_dtype
from featurestore.values.strings import Utf8Array
from featurestore.values.timestamps import EPOCH, to_micros


class ServingError(FeatureStoreError):
    """The server refused or failed a request; `code` is its gRPC status code."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


@dataclass(frozen=True)
class FeatureServiceSchema:
    name: str
    features: dict[str, DType]  # in response order
    entity_keys: dict[str, DType]
    request_inputs: dict[str, DType]
    feature_views: list[str]
    version: str
    active: bool

    @classmethod
    def from_proto(cls, message: pb.FeatureService) -> FeatureServiceSchema:
        def fields(items: Any) -> dict[str, DType]:
            return {f.name: BY_VALUE_TYPE[f.type].dtype for f in items}
        return cls(message.name, fields(message.features), fields(message.entity_keys),
                   fields(message.request_inputs), list(message.feature_views), message.version,
                   message.active)


class OnlineFeatures:
    """One response. Per feature: `values[name]` (a NumPy array, or a list of str; a neutral
    0, False or "" where the value is missing) and `statuses[name]` (uint8 Status codes);
    `entities`: the entity key columns asked for (from Client.get_online_features), which
    lead every conversion (to_polars, to_arrow, to_dict, to_dicts), as in a training set.

    Built from the response message or its bytes, as received. A response costs a few NumPy
    calls per value type and an array view per feature, nothing per value: what depends only
    on which features it holds (their types, which of them share a list) is worked out once
    per feature service."""

    def __init__(self, message: pb.GetOnlineFeaturesResponse | bytes,
                 entities: Mapping[str, Any] | None = None):
        response = (pb.GetOnlineFeaturesResponse.FromString(message)
                    if isinstance(message, bytes) else message)
        self.entities: dict[str, list[Any]] = {
            k: v.tolist() if hasattr(v, "tolist") else list(v) for k, v in (entities or {}).items()}
        n = self.num_entities = response.num_entities
        names = tuple(response.feature_names)
        dtypes, groups = _layout(names, tuple(response.feature_types))
        self.names: list[str] = list(names)
        self.dtypes: dict[str, DType] = dict(dtypes)  # the cached one stays unchanged
        statuses = to_numpy(response.statuses, np.dtype(np.uint8)).reshape(len(self.names), n)
        self.statuses: dict[str, np.ndarray] = dict(zip(self.names, statuses, strict=True))
        self.values: dict[str, np.ndarray | list[str]] = {}
        for wire, of_type in groups:
            raw = getattr(response.values, wire.field)
            if wire.numpy is None:
                strings = list(raw)
                self.values.update((name, strings[k * n:(k + 1) * n])
                                   for k, name in enumerate(of_type))
            else:
                self.values.update(zip(
                    of_type, to_numpy(raw, wire.numpy).reshape(len(of_type), n), strict=True))
        self.event_timestamps: dict[str, np.ndarray] = {
            view: to_numpy(v.timestamp_values, np.dtype(np.int64))
            for view, v in response.event_timestamps.items()}
        self.transform_errors: dict[str, int] = dict(response.transform_errors)
        self.as_of_us: int = response.as_of_us

    def __len__(self) -> int:
        return self.num_entities

    def to_arrow(self, statuses: bool = False) -> pa.Table:
        """Missing values as nulls, typed as in training sets (Timestamp: timestamp[us, UTC])."""
        import pyarrow as pa

        columns: dict[str, Any] = {k: pa.array(v) for k, v in self.entities.items()}
        for name in self.names:
            values = self.values[name]
            data = Utf8Array.from_list(values) if isinstance(values, list) else values
            present = self.statuses[name] == Status.PRESENT
            columns[name] = to_arrow(Column(data, present), self.dtypes[name])
        table = pa.table(columns)
        if statuses:
            for name in self.names:
                table = table.append_column(
                    f"{name}__status", pa.array(np.asarray(STATUS_NAMES)[self.statuses[name]]))
        return table

    def to_polars(self, statuses: bool = False) -> pl.DataFrame:
        """One column per feature, like a training set's; with statuses=True also a
        `<feature>__status` column per feature (PRESENT, NULL, NOT_FOUND, OUTSIDE_TTL)."""
        import polars as pl

        frame = pl.from_arrow(self.to_arrow(statuses))
        assert isinstance(frame, pl.DataFrame)
        if statuses:
            frame = frame.with_columns(pl.col(f"{n}__status").cast(status_dtype()) for n in self.names)
        return frame

    def to_dict(self, statuses: bool = False) -> dict[str, list[Any]]:
        """Feature -> one plain Python value per entity (None where missing; Timestamps as
        UTC datetimes); the columns of to_polars(), without building a DataFrame."""
        out: dict[str, list[Any]] = dict(self.entities)
        for name in self.names:
            values = self.values[name]
            listed = values if isinstance(values, list) else values.tolist()
            if self.dtypes[name] is Timestamp:
                listed = [EPOCH + timedelta(microseconds=us) for us in listed]
            present = (self.statuses[name] == Status.PRESENT).tolist()
            out[name] = [v if ok else None for v, ok in zip(listed, present, strict=True)]
        if statuses:
            out.update((f"{name}__status", [STATUS_NAMES[s] for s in self.statuses[name]])
                       for name in self.names)
        return out

    def to_dicts(self, statuses: bool = False) -> list[dict[str, Any]]:
        """One dict per entity: feature -> plain Python value (None where missing)."""
        columns = self.to_dict(statuses)
        return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


@lru_cache(maxsize=256)  # one entry per feature service or feature list a process asks for
def _layout(names: tuple[str, ...], value_types: tuple[int, ...]
            ) -> tuple[dict[str, DType], list[tuple[WireType, list[str]]]]:
    """What a response's feature names and types imply: each feature's type, and per type
    the features whose values share its list in `values`, in response order."""
    wires = [BY_VALUE_TYPE[t] for t in value_types]
    groups: dict[int, tuple[WireType, list[str]]] = {}
    for name, wire in zip(names, wires, strict=True):
        groups.setdefault(wire.value_type, (wire, []))[1].append(name)
    return {name: w.dtype for name, w in zip(names, wires, strict=True)}, list(groups.values())


DEFAULT_PORT = 6566


def server_address(target: str) -> str:
    """HOST:PORT, with DEFAULT_PORT when `target` names no port (gRPC alone would use 443),
    and a clear error for a port that is not one. Other gRPC target forms (unix:, dns:///,
    ...) pass unchanged."""
    if "://" in target or target.startswith(("unix:", "unix-abstract:", "vsock:", "ipv4:",
                                              "ipv6:", "dns:")):
        return target
    if target.startswith("["):  # [IPv6] or [IPv6]:PORT
        host, _, rest = target.partition("]")
        host, port = host + "]", rest.removeprefix(":")
        if not rest:
            return f"{host}:{DEFAULT_PORT}"
        if not rest.startswith(":"):
            port = ""  # refused below
    elif target.count(":") > 1:  # a bare IPv6 address
        return f"[{target}]:{DEFAULT_PORT}"
    else:
        host, colon, port = target.partition(":")
        if not colon:
            return f"{target}:{DEFAULT_PORT}"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise FeatureStoreError(f"server address {target!r}: the port must be 1-65535, as in "
                                f"host:{DEFAULT_PORT}")
    if host in ("", "[]"):
        raise FeatureStoreError(f"server address {target!r} names no host; write HOST:PORT, "
                                f"e.g. 127.0.0.1:{DEFAULT_PORT}")
    return f"{host}:{port}"


class Client:
    """A thin synchronous client over one gRPC channel; use one per thread or process and
    close it (or use it as a context manager) when done."""

    def __init__(self, target: str = "127.0.0.1:6566", timeout: float | None = 5.0, *,
                 token: str | None = None, tls: bool = False, ca_cert: str | Path | None = None,
                 client_cert: str | Path | None = None, client_key: str | Path | None = None):
        """`timeout`: the default deadline of each call, in seconds. `token`: the bearer token
        to send (default: FEATURESTORE_TOKEN, or the file FEATURESTORE_TOKEN_FILE names).
        TLS when `tls` or a certificate is given: `ca_cert` is the CA to trust (default: the
        system's), `client_cert` and `client_key` the certificate for mutual TLS. A target
        without a port gets the server's default port (see `server_address`)."""
        target = server_address(target)
        self.target, self.timeout = target, timeout
        options = [("grpc.max_receive_message_length", -1)]  # large batches, large responses
        if tls or ca_cert or client_cert or client_key:
            if bool(client_cert) != bool(client_key):
                raise FeatureStoreError("mutual TLS needs both a client certificate and its key")
            credentials = grpc.ssl_channel_credentials(
                _pem(ca_cert, "CA certificate"), _pem(client_key, "client key"),
                _pem(client_cert, "client certificate"))
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        token = token or _token_from_environment()
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._schemas: dict[str, FeatureServiceSchema] = {}

        def unary(name: str, request_type: Any, response_type: Any) -> Any:
            return self._channel.unary_unary(
                method(name), request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString if response_type else None,
                _registered_method=True)
        # its response as bytes, which OnlineFeatures parses: one path, whoever receives them
        self._get_online_features = unary("GetOnlineFeatures", pb.GetOnlineFeaturesRequest, None)
        self._list_feature_services = unary("ListFeatureServices", pb.ListFeatureServicesRequest,
                                            pb.ListFeatureServicesResponse)
        self._get_feature_service = unary("GetFeatureService", pb.GetFeatureServiceRequest,
                                          pb.FeatureService)
        self._push_events = unary("PushEvents", pb.PushEventsRequest, pb.PushEventsResponse)
        self._server_status = unary("GetServerStatus", pb.GetServerStatusRequest,
                                    pb.ServerStatus)

    def get_online_features(
        self,
        service: str | None = None,
        features: Sequence[str] | None = None,
        entities: Mapping[str, Any] | None = None,
        request: Mapping[str, Any] | None = None,
        as_of: datetime | int | None = None,
        timeout: float | None = None,
        version: str | None = None,
    ) -> OnlineFeatures:
        """Values for a batch of entities: `entities` maps each join key, and `request` each
        request input, to one value per entity. `as_of` (a zone-aware datetime, or UTC epoch
        microseconds) defaults to now. `version`: fail unless the service is active at it."""
        schema = self.feature_service(service) if service else None
        message = encode_request(service, features, entities, request, as_of, version, schema)
        return OnlineFeatures(self._call(self._get_online_features, message, timeout), entities)

    def push(self, source: str, events: Any, batch_id: str,
             timeout: float | None = None) -> pb.PushEventsResponse:
        """Pushes a batch of events (a Polars or pandas frame, an Arrow table, or a dict of
        column -> values) to a source; retrying with the same batch_id applies it once."""
        import polars as pl
        import pyarrow as pa

        table = events if isinstance(events, pa.Table) else (
            pa.table(events) if isinstance(events, dict) else pl.DataFrame(events).to_arrow())
        message = pb.PushEventsRequest(source=source, batch_id=batch_id)
        for name in table.column_names:
            column = table.column(name)
            values = column.to_pylist() if column.null_count else column.to_numpy(
                zero_copy_only=False)
            _fill(message.columns[name], name, values, _ARROW_TYPES.get(str(column.type)))
        return self._call(self._push_events, message, timeout)

    def feature_service(self, name: str) -> FeatureServiceSchema:
        """A feature service's schema (fetched once per client)."""
        if name not in self._schemas:
            self._schemas[name] = FeatureServiceSchema.from_proto(
                self._call(self._get_feature_service, pb.GetFeatureServiceRequest(name=name)))
        return self._schemas[name]

    def list_feature_services(self) -> list[FeatureServiceSchema]:
        response = self._call(self._list_feature_services, pb.ListFeatureServicesRequest())
        return [FeatureServiceSchema.from_proto(s) for s in response.feature_services]

    def health(self, service: str = "", timeout: float | None = None) -> str:
        """The gRPC health status of the server, or of one of its services: SERVING,
        NOT_SERVING or SERVICE_UNKNOWN. Health needs no token."""
        from grpc_health.v1 import health_pb2

        check = self._channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        try:
            reply = self._call(check, health_pb2.HealthCheckRequest(service=service), timeout)
        except ServingError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:  # how health says it has no such service
                return "SERVICE_UNKNOWN"
            raise
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def server_status(self) -> pb.ServerStatus:
        """What the server process that answers serves (an admin token when tokens are on)."""
        return self._call(self._server_status, pb.GetServerStatusRequest())

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, stub: Any, message: Any, timeout: float | None = None) -> Any:
        try:
            return stub(message, timeout=timeout if timeout is not None else self.timeout,
                        metadata=self._metadata)
        except grpc.RpcError as exc:
            raise ServingError(exc.code(), f"{exc.details()} (server {self.target})") from exc


def encode_request(service: str | None = None, features: Sequence[str] | None = None,
                   entities: Mapping[str, Any] | None = None,
                   request: Mapping[str, Any] | None = None, as_of: datetime | int | None = None,
                   version: str | None = None, schema: FeatureServiceSchema | None = None
                   ) -> pb.GetOnlineFeaturesRequest:
    """The request Client.get_online_features sends (arguments as there). `schema`, the
    service's (Client.feature_service), types the columns; without it their values do."""
    message = pb.GetOnlineFeaturesRequest(
        feature_service=service or "", features=list(features or []),
        feature_service_version=version or "",
        as_of_us=0 if as_of is None else as_of if isinstance(as_of, int) else to_micros(as_of))
    for target, given, declared in [
            (message.entities, entities or {}, schema.entity_keys if schema else {}),
            (message.request_inputs, request or {}, schema.request_inputs if schema else {})]:
        for name, values in given.items():
            _fill(target[name], name, values, declared.get(name))
    return message


def _pem(path: str | Path | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise FeatureStoreError(f"cannot read the {what} {path}: {exc.strerror}") from exc


def _token_from_environment() -> str | None:
    """FEATURESTORE_TOKEN, or the first line of the file FEATURESTORE_TOKEN_FILE names."""
    if os.environ.get("FEATURESTORE_TOKEN"):
        return os.environ["FEATURESTORE_TOKEN"].strip()
    path = os.environ.get("FEATURESTORE_TOKEN_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError as exc:
        raise FeatureStoreError(f"FEATURESTORE_TOKEN_FILE {path}: cannot read it "
                                f"({exc.strerror})") from exc


_ARROW_TYPES = {"int64": Int64, "int32": Int64, "double": Float64, "float": Float64,
                "bool": Bool, "string": String, "large_string": String,
                "timestamp[us, tz=UTC]": Timestamp}
_NEUTRAL: dict[DType, Any] = {Int64: 0, Float64: 0.0, Bool: False, String: "", Timestamp: 0}


def _fill(target: pb.Values, name: str, values: Any, dtype: DType | None) -> None:
    """Writes one column into its typed list; `dtype` None: inferred from the values. None
    values are sent as missing (`nulls`)."""
    nulls: list[bool] = []
    if not isinstance(values, np.ndarray):
        values = list(values)
        nulls = [v is None for v in values]
        if any(nulls):
            dtype = dtype or _infer(np.asarray([v for v in values if v is not None]))
            if dtype is None:
                raise FeatureStoreError(f"column {name!r} holds only None; send its type's "
                                        "values, or leave the column out of feature lists")
            values = [_NEUTRAL[dtype] if missing else v for v, missing in zip(values, nulls,
                                                                               strict=True)]
        else:
            nulls = []
    array = np.asarray(values)
    dtype = dtype or _infer(array)
    if dtype is None:  # no values: an empty column of any type
        return
    wire = WIRE[dtype]
    try:
        if dtype is Timestamp:
            data = _micros(array)
        elif dtype is String:
            data = array.tolist()
        else:
            data = array.astype(wire.numpy, casting="same_kind").tolist()
        getattr(target, wire.field).extend(data)
        if nulls:
            target.nulls.extend(nulls)
    except (TypeError, ValueError) as exc:
        raise FeatureStoreError(f"column {name!r} ({dtype}) cannot hold {values!r}: {exc}") from exc


_BY_KIND = {"b": Bool, "i": Int64, "u": Int64, "f": Float64, "U": String, "M": Timestamp}
_BY_CLASS = [(bool, Bool), (int, Int64), (float, Float64), (str, String), (datetime, Timestamp)]


def _infer(array: np.ndarray) -> DType | None:
    """The type of a column given as Python values or an array; None for no values."""
    if array.size == 0:
        return None
    first = array.flat[0]
    dtype = _BY_KIND.get(array.dtype.kind) if array.dtype.kind != "O" else next(
        (d for cls, d in _BY_CLASS if isinstance(first, cls)), None)
    if dtype is None:
        raise FeatureStoreError(f"cannot tell the type of values like {first!r}; use bool, "
                                "int, float, str or zone-aware datetime values")
    return dtype


def _micros(array: np.ndarray) -> list[int]:
    """Timestamps as UTC epoch microseconds: zone-aware datetimes, datetime64 or integers."""
    if array.dtype.kind == "M":
        return array.astype("datetime64[us]").astype(np.int64).tolist()
    if array.dtype.kind in "iu":
        return array.astype(np.int64).tolist()
    return [v if isinstance(v, int) else to_micros(v) for v in array.tolist()]
