"""The FeatureServing methods, free of gRPC plumbing: a request goes to its cached Lookup,
keys, one MGET, assemble (the same kernels as training sets), and response bytes.

Which version of each view is served is read from the online registry in Redis by a
background refresh (every second by default), which doubles as the health check: the
selections prepared for the old versions are dropped when the registry changes."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2

from featurestore.definitions.types import DType
from featurestore.errors import (
    DeadlineExceeded,
    FeatureStoreError,
    NotAppliedError,
    OnlineDataLost,
    OnlineStoreError,
    OnlineTimeout,
    OnlineUnavailable,
    PastReadRefused,
    RegistryMoved,
)
from featurestore.online.lookup import Lookup
from featurestore.online.reader import OnlineReader
from featurestore.online.registry import Served
from featurestore.online.store import OnlineStore
from featurestore.plan import Plan, Selection
from featurestore.plan.hashing import version_of
from featurestore.push import DEFAULT_MAX_FUTURE_US, push
from featurestore.serving.proto import SERVICE, WIRE, pb
from featurestore.serving.request import RequestError, columns_table, invalid, read_columns
from featurestore.serving.samples import Sampler
from featurestore.serving.wire import ResponseEncoder
from featurestore.values.timestamps import MAX_TIME_US, MIN_TIME_US

log = logging.getLogger("featurestore.serving")

# Feature lists are chosen by clients, so the cache of prepared selections is bounded.
MAX_PREPARED = 1024


@dataclass(frozen=True)
class ServerOptions:
    max_batch: int = 10_000  # entities per request
    refresh_interval: float = 1.0  # seconds between reads of the online registry
    redis_timeout: float = 1.0  # longest wait for Redis (less when the deadline is nearer)
    grace: float = 5.0  # seconds in-flight requests may finish in at shutdown
    reuse_port: bool = False  # share the port (SO_REUSEPORT) with other worker processes
    repo_root: Path | None = None  # where pushed batches are logged; None refuses pushes
    redis_url: str | None = None  # for pushes, which run on a synchronous client in a thread
    max_future_us: int = DEFAULT_MAX_FUTURE_US  # how far ahead of now a pushed event may be
    sample_rate: float = 0.0  # requests logged for `parity --from-log` (serving/samples.py)


@dataclass(frozen=True)
class Prepared:
    selection: Selection
    lookup: Lookup
    encoder: ResponseEncoder


class FeatureServer:
    def __init__(self, plan: Plan, reader: OnlineReader,
                 health_servicer: health.aio.HealthServicer, options: ServerOptions):
        self.plan, self.reader, self.health, self.options = plan, reader, health_servicer, options
        self._registry: dict[bytes, bytes] | None = None
        self._served: dict[str, Served] | None = None
        self._prepared: dict[tuple[str, ...], Prepared] = {}
        self._healthy: bool | None = None
        self._pusher: OnlineStore | None = None
        self._sampler = Sampler(plan, options.sample_rate, options.repo_root)

    async def refresh(self) -> None:
        """Reads the online registry; marks the server NOT_SERVING while Redis is unreachable."""
        try:
            registry, served = await self.reader.served(timeout=self.options.redis_timeout)
        except (OnlineUnavailable, OnlineStoreError) as exc:
            await self._set_health(False, str(exc))
            return
        if not served and self._served:  # it served views, and Redis holds none now
            await self._set_health(False, "the online store lost its data (no registry); run "
                                          "`featurestore materialize`")
            return
        if registry != self._registry:
            self._served, self._registry = served, registry
            self._prepared.clear()
        await self._set_health(True, "online store reachable")

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.refresh_interval)
            await self.refresh()

    async def warm_up(self) -> None:
        """Runs every feature service once on an empty batch, so that the first real requests
        do not pay for loading compiled functions from Numba's caches."""
        for name in self.plan.services:
            request = pb.GetOnlineFeaturesRequest(feature_service=name)
            selection = self.plan.select(service=name)
            for key in selection.join_keys:
                request.entities[key].SetInParent()
            for key in selection.requests:
                request.request_inputs[key].SetInParent()
            try:
                await self.online_features(request, None)
            except RequestError as exc:  # e.g. not materialized yet: warms up on first use
                log.info("not warming up %s: %s", name, exc)

    async def online_features(self, request: pb.GetOnlineFeaturesRequest,
                              time_remaining: float | None) -> bytes:
        prepared = self._prepare(request)
        if request.feature_service_version:
            self._check_version(request.feature_service, request.feature_service_version)
        n, entities, inputs = read_columns(request, prepared.selection, self.options.max_batch)
        if not MIN_TIME_US <= request.as_of_us <= MAX_TIME_US:
            raise invalid(f"as_of_us {request.as_of_us} is outside 0001-01-01 .. 9999-12-31 "
                          "(microseconds since 1970-01-01 UTC; 0 means now)")
        as_of_us = request.as_of_us or time.time_ns() // 1000
        timeout = self.options.redis_timeout
        bound = time_remaining is not None and time_remaining * 0.9 < timeout
        if time_remaining is not None:  # answer before the caller's deadline
            timeout = min(timeout, time_remaining * 0.9)
        try:
            try:
                result = await self.reader.read(prepared.lookup, entities, inputs, as_of_us,
                                                timeout)
            except RegistryMoved:  # a materialization flipped a view: read the new storage
                await self.refresh()
                prepared = self._prepare(request)
                result = await self.reader.read(prepared.lookup, entities, inputs, as_of_us,
                                                timeout)
        except RegistryMoved as exc:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, f"{exc}; retry") from exc
        except OnlineTimeout as exc:
            if bound:
                raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                   f"the deadline passed while waiting for Redis: {exc}") from exc
            raise RequestError(grpc.StatusCode.UNAVAILABLE, f"online store unavailable: {exc}") \
                from exc
        except OnlineDataLost as exc:
            await self._set_health(False, str(exc))
            raise RequestError(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc
        except PastReadRefused as exc:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from exc
        except OnlineUnavailable as exc:  # health follows at the next refresh, not per request
            raise RequestError(grpc.StatusCode.UNAVAILABLE, f"online store unavailable: {exc}") \
                from exc
        except OnlineStoreError as exc:
            raise RequestError(grpc.StatusCode.INTERNAL, f"online store error: {exc}") from exc
        response = prepared.encoder.encode(result, n, as_of_us)
        self._sampler.offer(request, prepared.lookup, self._served, entities, as_of_us, response)
        return response

    async def push_events(self, request: pb.PushEventsRequest,
                          time_remaining: float | None) -> pb.PushEventsResponse:
        root, url = self.options.repo_root, self.options.redis_url
        if root is None or url is None:
            raise RequestError(grpc.StatusCode.UNIMPLEMENTED, "this server takes no pushes")
        if not request.batch_id:
            raise invalid("batch_id is required: name the batch so that retries apply once")
        table = columns_table(request.columns)
        if self._pusher is None:
            self._pusher = OnlineStore(url, self.plan.project, timeout=self.options.redis_timeout)
        try:
            deadline = None if time_remaining is None else time.monotonic() + time_remaining
            result = await asyncio.to_thread(push, self.plan, root, self._pusher, request.source,
                                             table, request.batch_id, self.options.max_future_us,
                                             deadline=deadline)
        except DeadlineExceeded as exc:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)) from exc
        except NotAppliedError as exc:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from exc
        except (OnlineUnavailable, OnlineStoreError) as exc:
            raise RequestError(grpc.StatusCode.UNAVAILABLE,
                               f"{exc}; retry with the same batch_id") from exc
        except FeatureStoreError as exc:
            raise invalid(str(exc)) from exc
        return pb.PushEventsResponse(rows=result.rows, ingested_at_us=result.ingested_at_us,
                                     duplicate=result.duplicate, tiles=result.tiles,
                                     too_late=result.too_late)

    async def list_feature_services(self, request: pb.ListFeatureServicesRequest,
                                    time_remaining: float | None
                                    ) -> pb.ListFeatureServicesResponse:
        return pb.ListFeatureServicesResponse(
            feature_services=[self._describe(name) for name in sorted(self.plan.services)])

    async def get_feature_service(self, request: pb.GetFeatureServiceRequest,
                                  time_remaining: float | None) -> pb.FeatureService:
        return self._describe(request.name)

    def _active(self, selection: Selection) -> bool:
        """Every view the selection reads is served at the version the loaded plan has."""
        served = self._served or {}
        return all(v in served and served[v].view.version == self.plan.views[v].version
                   for v in selection.views)

    def _check_version(self, service: str, wanted: str) -> None:
        if not service:
            raise invalid("feature_service_version needs feature_service")
        version = version_of(self.plan.services[service].hash)
        if wanted != version or not self._active(self.plan.select(service=service)):
            state = ("is active" if self._active(self.plan.select(service=service)) else
                     "is applied but its views are not all materialized at its version yet")
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"feature service {service!r} version {wanted} is not active on this server: its "
                f"version here is {version}, which {state}")

    def _describe(self, name: str) -> pb.FeatureService:
        try:
            selection = self.plan.select(service=name)
        except FeatureStoreError as exc:
            raise RequestError(grpc.StatusCode.NOT_FOUND, str(exc)) from exc

        def fields(items: list[tuple[str, DType]]) -> list[pb.Field]:
            return [pb.Field(name=n, type=WIRE[t].value_type) for n, t in items]
        return pb.FeatureService(
            name=name, features=fields([(o.name, o.dtype) for o in selection.outputs]),
            entity_keys=fields(list(selection.join_keys.items())),
            request_inputs=fields(list(selection.requests.items())),
            feature_views=list(selection.views),
            version=version_of(self.plan.services[name].hash), active=self._active(selection))

    def _prepare(self, request: pb.GetOnlineFeaturesRequest) -> Prepared:
        service, features = request.feature_service, tuple(request.features)
        if bool(service) == bool(features):
            raise invalid("set exactly one of feature_service and features")
        key = (service,) if service else ("", *features)
        prepared = self._prepared.get(key)
        if prepared is not None:
            return prepared
        if self._served is None:
            raise RequestError(grpc.StatusCode.UNAVAILABLE,
                               "the online store has not been reached since the server started")
        try:
            selection = self.plan.select(service=service or None, features=list(features) or None)
            lookup = Lookup(self.plan.project, self.plan, selection, self._served)
        except NotAppliedError as exc:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from exc
        except FeatureStoreError as exc:  # unknown service or feature, clashing names
            raise invalid(str(exc)) from exc
        if len(self._prepared) >= MAX_PREPARED:
            self._prepared.clear()
        prepared = self._prepared[key] = Prepared(selection, lookup, ResponseEncoder(selection))
        return prepared

    async def _set_health(self, healthy: bool, why: str) -> None:
        if healthy == self._healthy:
            return
        if self._healthy is not None or not healthy:
            log.warning("%s: %s", "SERVING" if healthy else "NOT_SERVING", why)
        self._healthy = healthy
        status = (health_pb2.HealthCheckResponse.SERVING if healthy
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE):
            await self.health.set(name, status)
