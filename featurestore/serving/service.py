"""The FeatureServing methods, free of gRPC plumbing: a request goes to its cached Lookup,
keys, one MGET, assemble (the same kernels as training sets), and response bytes.

Which version of each view is served is read from the online registry in Redis by a
background refresh (every second by default), which doubles as the health check: the
selections prepared for the old versions are dropped when the registry changes.

The same refresh reloads the repo's definitions when its files change (after `apply`), in a
thread, and keeps the definitions loaded before while a view is still served at their
version: a request is answered by the newest definitions whose views are all served, so
neither an `apply` nor the `materialize` that follows it fails a request."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version as package_version
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
from featurestore.push import warm_up as push_warm_up
from featurestore.repo import definition_files, load_plan
from featurestore.serving import metrics
from featurestore.serving.proto import SERVICE, WIRE, pb
from featurestore.serving.request import (
    Call,
    RequestError,
    columns_table,
    invalid,
    read_columns,
)
from featurestore.serving.samples import SUMMARY, Sampler, read_summary, samples_dir
from featurestore.serving.security import TlsFiles
from featurestore.serving.wire import ResponseEncoder
from featurestore.values.timestamps import MAX_TIME_US, MIN_TIME_US, now_us

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
    # for pushes, which run on a synchronous client in a thread; may hold a password
    redis_url: str | None = field(default=None, repr=False)
    max_future_us: int = DEFAULT_MAX_FUTURE_US  # how far ahead of now a pushed event may be
    tls: TlsFiles | None = None  # None: plain text
    tokens: Path | None = None  # the token file; None: no authentication
    reflection: bool = True
    metrics: bool = False  # record Prometheus metrics (someone scrapes them)
    access_log_sample: float = 0.0  # share of OK requests logged (failed ones always are)
    log_level: str = "info"
    log_format: str = "json"
    sample_rate: float = 0.0  # requests logged for `parity --from-log` (serving/samples.py)
    http_port: int | None = None  # Feast's HTTP API too, on this port (serving/feast_http.py)


@dataclass(frozen=True)
class Prepared:
    selection: Selection
    lookup: Lookup
    encoder: ResponseEncoder
    counter: metrics.ValueCounter


def definitions_fingerprint(root: Path) -> str:
    """Changes when a definition file or featurestore.yaml does."""
    digest = hashlib.sha256()
    for path in [root / "featurestore.yaml", *definition_files(root)]:
        digest.update(path.name.encode())
        try:
            digest.update(path.read_bytes())
        except OSError:  # removed while we looked: the next refresh sees the new set
            digest.update(b"\0")
    return digest.hexdigest()


class FeatureServer:
    def __init__(self, plan: Plan, reader: OnlineReader,
                 health_servicer: health.aio.HealthServicer, options: ServerOptions):
        self.plan, self.reader, self.health, self.options = plan, reader, health_servicer, options
        self._older: list[Plan] = []  # earlier definitions, while a view is served at them
        self._removed: dict[str, int] = {}  # feature services gone from the definitions: when
        self._root = options.repo_root
        self._fingerprint = definitions_fingerprint(self._root) if self._root else ""
        self._reload_lock = asyncio.Lock()
        self._started_us = self._loaded_us = now_us()
        self._registry: dict[bytes, bytes] | None = None
        self._served: dict[str, Served] | None = None
        self._prepared: dict[tuple[str, ...], Prepared] = {}
        self._healthy: bool | None = None
        self._health_detail = "starting"
        self._parity_stamp = 0
        self._pusher: OnlineStore | None = None
        self._sampler = Sampler(options.sample_rate, options.repo_root)

    async def refresh(self) -> None:
        """Reads the online registry (NOT_SERVING while Redis is unreachable) and reloads the
        definitions when their files changed."""
        try:
            registry, served = await self.reader.served(timeout=self.options.redis_timeout)
        except (OnlineUnavailable, OnlineStoreError) as exc:
            await self._set_health(False, str(exc))
            return
        if not served and self._served:  # it served views, and Redis holds none now
            await self._set_health(False, "the online store lost its data (no registry); run "
                                          "`featurestore materialize`")
            return
        reloaded = await self._reload()
        if reloaded or registry != self._registry:
            self._served, self._registry = served, registry
            self._older = [p for p in self._older if self._still_served(p)]
            self._prepared.clear()
        if self.options.metrics:
            await self._observe_freshness(served)
            self._observe_parity()
        await self._set_health(True, "online store reachable")

    async def _reload(self) -> bool:
        """Loads the repo's definitions again when their files changed; on a definition
        error, keeps serving what it has and says so once per change."""
        if self._root is None:
            return False
        async with self._reload_lock:
            fingerprint = await asyncio.to_thread(definitions_fingerprint, self._root)
            if fingerprint == self._fingerprint:
                return False
            self._fingerprint = fingerprint
            try:
                plan = await asyncio.to_thread(load_plan, self._root)
            except FeatureStoreError as exc:
                log.warning("the repo's definitions changed but do not load; still serving the "
                            "ones loaded before: %s", exc)
                return False
            if plan.project != self.plan.project:
                log.error("the repo's project changed from %r to %r: restart the server to "
                          "serve it", self.plan.project, plan.project)
                return False
            gone = set(self.plan.services) - set(plan.services)
            self._removed.update((name, now_us()) for name in gone)
            for name in plan.services:
                self._removed.pop(name, None)
            self._older.insert(0, self.plan)
            self.plan, self._loaded_us = plan, now_us()
            log.info("definitions reloaded", extra={"fields": {
                "services": sorted(plan.services), "removed": sorted(gone),
                "views": {v: p.version for v, p in plan.views.items()}}})
            return True

    def knows(self, name: str) -> bool:
        """A feature service or source of the definitions, "features" (a feature list), or
        "" (a method without one)."""
        return name in self.plan.services or name in self.plan.sources or \
            name in ("", "features")

    def _still_served(self, plan: Plan) -> bool:
        """Some view is served at this plan's version and not at the newest plan's."""
        served = self._served or {}
        return any(name in served and served[name].view.version == view.version and
                   (name not in self.plan.views or self.plan.views[name].version != view.version)
                   for name, view in plan.views.items())

    def _observe_parity(self) -> None:
        """Exports the latest `parity --from-log` summary when a run has replaced it."""
        if self._root is None:
            return
        folder = samples_dir(self._root)
        try:
            stamp = (folder / SUMMARY).stat().st_mtime_ns
        except OSError:
            return
        if stamp != self._parity_stamp:
            self._parity_stamp = stamp
            try:
                metrics.set_parity(read_summary(folder))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("cannot read the parity summary %s: %s", folder / SUMMARY, exc)

    async def _observe_freshness(self, served: dict[str, Served]) -> None:
        try:
            pushes = await self.reader.last_pushes(served, timeout=self.options.redis_timeout)
        except (OnlineUnavailable, OnlineStoreError):
            return  # health says it at the next refresh
        now = now_us()
        metrics.set_freshness({
            view: (None if s.created_us is None else (now - s.created_us) / 1e6,
                   None if pushes[view] is None else (now - pushes[view]) / 1e6)
            for view, s in served.items()})

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.refresh_interval)
            await self.refresh()

    async def warm_up(self) -> None:
        """Runs every feature service once on an empty batch, and builds a push's records
        when the server takes pushes, so that the first real requests do not pay for loading
        compiled functions from Numba's caches."""
        for name in self.plan.services:
            request = pb.GetOnlineFeaturesRequest(feature_service=name)
            selection = self.plan.select(service=name)
            for key in selection.join_keys:
                request.entities[key].SetInParent()
            for key in selection.requests:
                request.request_inputs[key].SetInParent()
            try:
                await self.online_features(request, Call(None))
            except RequestError as exc:  # e.g. not materialized yet: warms up on first use
                log.info("not warming up %s: %s", name, exc)
        if self.options.repo_root is not None and self.options.redis_url is not None:
            try:  # pushes: their records, built and packed
                await asyncio.to_thread(push_warm_up, self.plan)
            except Exception as exc:  # only the first push pays for what did not warm up
                log.warning("not warming up pushes: %s", exc)

    async def online_features(self, request: pb.GetOnlineFeaturesRequest, call: Call) -> bytes:
        prepared = self._prepare(request)
        if request.feature_service_version:
            self._check_version(request.feature_service, request.feature_service_version)
        n, entities, inputs = read_columns(request, prepared.selection, self.options.max_batch)
        call.size = n
        time_remaining = call.time_remaining
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
        if self.options.metrics:
            prepared.counter.count(result.status[:result.slots.n_outputs])
        response = prepared.encoder.encode(result, n, as_of_us)
        self._sampler.offer(request, prepared.lookup, self._served, entities, as_of_us, response)
        return response

    async def push_events(self, request: pb.PushEventsRequest, call: Call
                          ) -> pb.PushEventsResponse:
        root, url = self.options.repo_root, self.options.redis_url
        if root is None or url is None:
            raise RequestError(grpc.StatusCode.UNIMPLEMENTED, "this server takes no pushes")
        if not request.batch_id:
            raise invalid("batch_id is required: name the batch so that retries apply once")
        table = columns_table(request.columns)
        call.size = table.num_rows
        time_remaining = call.time_remaining
        if self._pusher is None:
            self._pusher = OnlineStore(url, self.plan.project, timeout=self.options.redis_timeout)
        try:
            deadline = None if time_remaining is None else time.monotonic() + time_remaining
            result = await asyncio.to_thread(push, self._plan_pushing(request.source), root,
                                             self._pusher, request.source,
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
        if self.options.metrics:
            counts = {"duplicate": result.rows} if result.duplicate else {
                "applied": result.rows - result.too_late, "too_late": result.too_late}
            for outcome, k in counts.items():
                metrics.PUSHED.labels(request.source, outcome).inc(k)
        return pb.PushEventsResponse(rows=result.rows, ingested_at_us=result.ingested_at_us,
                                     duplicate=result.duplicate, tiles=result.tiles,
                                     too_late=result.too_late)

    async def list_feature_services(self, request: pb.ListFeatureServicesRequest, call: Call
                                    ) -> pb.ListFeatureServicesResponse:
        return pb.ListFeatureServicesResponse(
            feature_services=[self._describe(name) for name in sorted(self.plan.services)])

    async def get_feature_service(self, request: pb.GetFeatureServiceRequest, call: Call
                                  ) -> pb.FeatureService:
        return self._describe(request.name)

    async def server_status(self, request: pb.GetServerStatusRequest, call: Call
                            ) -> pb.ServerStatus:
        served = self._served or {}
        try:
            pushes = await self.reader.last_pushes(served, timeout=self.options.redis_timeout)
        except (OnlineUnavailable, OnlineStoreError):
            pushes = {}
        views = []
        for name, view in sorted(self.plan.views.items()):
            s = served.get(name)
            views.append(pb.ViewStatus(
                name=name, version=view.version, storage=s.storage if s else "",
                active=s is not None and s.view.version == view.version,
                materialized_end_us=(s.end_us or 0) if s else 0,
                materialized_at_us=(s.created_us or 0) if s else 0,
                last_push_us=pushes.get(name) or 0))
        return pb.ServerStatus(
            project=self.plan.project, serving=bool(self._healthy),
            health_detail=self._health_detail, pid=os.getpid(), started_at_us=self._started_us,
            definitions_loaded_at_us=self._loaded_us, online_store=self.reader.where,
            feature_services=[self._describe(n) for n in sorted(self.plan.services)],
            feature_views=views, featurestore_version=package_version("featurestore"))

    def _active(self, selection: Selection, plan: Plan | None = None) -> bool:
        """Every view the selection reads is served at the version `plan` (default: the
        newest definitions) has."""
        plan = plan or self.plan
        served = self._served or {}
        return all(v in served and served[v].view.version == plan.views[v].version
                   for v in selection.views)

    def _plan_pushing(self, source: str) -> Plan:
        """The newest definitions whose windowed views over `source` are all served."""
        for plan in [self.plan, *self._older]:
            views = [v for v in plan.views.values() if v.source == source and v.windowed]
            if all(self._active_view(plan, v.name) for v in views):
                return plan
        return self.plan

    def _active_view(self, plan: Plan, view: str) -> bool:
        served = self._served or {}
        return view in served and served[view].view.version == plan.views[view].version

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
        self._refuse_removed(name)
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
        self._refuse_removed(service)
        try:  # the newest definitions say what exists; older ones answer until it is served
            plan, selection = self.plan, self.plan.select(service=service or None,
                                                          features=list(features) or None)
            if not self._active(selection):
                plan, selection = next(
                    ((p, s) for p in self._older
                     if (s := _select(p, service, features)) and self._active(s, p)),
                    (plan, selection))
            lookup = Lookup(plan.project, plan, selection, self._served)
        except NotAppliedError as exc:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from exc
        except FeatureStoreError as exc:  # unknown service or feature, clashing names
            raise invalid(str(exc)) from exc
        if len(self._prepared) >= MAX_PREPARED:
            self._prepared.clear()
        prepared = self._prepared[key] = Prepared(
            selection, lookup, ResponseEncoder(selection, lookup.slots),
            metrics.ValueCounter([o.ref for o in selection.outputs]))
        return prepared

    def _refuse_removed(self, service: str) -> None:
        if service in self._removed:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"feature service {service!r} was removed from the repo's definitions (this "
                f"server reloaded them at {_iso(self._removed[service])}); see "
                "ListFeatureServices or `featurestore list`")

    async def _set_health(self, healthy: bool, why: str) -> None:
        self._health_detail = why
        if healthy == self._healthy:
            return
        if self._healthy is not None or not healthy:
            log.warning("%s: %s", "SERVING" if healthy else "NOT_SERVING", why)
        self._healthy = healthy
        status = (health_pb2.HealthCheckResponse.SERVING if healthy
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE):
            await self.health.set(name, status)


def _select(plan: Plan, service: str, features: tuple[str, ...]) -> Selection | None:
    try:
        return plan.select(service=service or None, features=list(features) or None)
    except FeatureStoreError:
        return None


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat(timespec="seconds")
