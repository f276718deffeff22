"""One serving process: a grpc.aio server with FeatureServing, health checking and (unless
turned off) reflection on one port, over TLS when given a certificate, until SIGTERM or SIGINT
stops it gracefully (health NOT_SERVING first, then in-flight requests get `grace` seconds).

Every method goes through one wrapper: it parses the request, checks the caller's token and
scope, and records the call in the metrics and the access log.

FeatureServing's method table is written here rather than generated (*_pb2_grpc.py): the hot
method returns bytes that featurestore.serving.wire already encoded, which needs a
response serializer of its own."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from featurestore.errors import FeatureStoreError
from featurestore.online.reader import OnlineReader
from featurestore.plan import Plan
from featurestore.repo import load_plan
from featurestore.serving import feast_http
from featurestore.serving.logs import AccessLog
from featurestore.serving.logs import configure as configure_logs
from featurestore.serving.metrics import BATCH, LATENCY, REQUESTS, count_round_trip
from featurestore.serving.proto import SERVICE, pb
from featurestore.serving.request import Call, RequestError, invalid
from featurestore.serving.security import Grant, Refused, Tokens
from featurestore.serving.service import FeatureServer, ServerOptions

log = logging.getLogger("featurestore.serving")

Method = Callable[[Any, Call], Awaitable[Any]]
Scope = Callable[[Grant, Any], bool]


@dataclass(frozen=True)
class Spec:
    """One method: its request type, how its response is serialized (None: already bytes),
    what a token needs to call it, and what names its service in logs and metrics."""

    request_type: Any
    serializer: Callable[[Any], bytes] | None
    scope: Scope
    label: Callable[[Any], str] = lambda request: ""


_SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE,
                  grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}


def _unary(name: str, method: Method, spec: Spec, tokens: Tokens | None, access: AccessLog,
           metrics: bool, known: Callable[[str], bool]) -> grpc.RpcMethodHandler:
    """`known(label)`: whether a service label names something of the repo (names callers
    make up are counted as "unknown", so that they cannot make endless time series)."""
    request_type = spec.request_type
    latency = LATENCY.labels(name)
    batch = BATCH.labels(name)

    async def behaviour(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        call = Call(context.time_remaining())
        code, message = grpc.StatusCode.OK, ""
        try:
            try:
                request = request_type.FromString(raw)
            except DecodeError as exc:  # a client's bug: one line in the log, no traceback
                raise invalid(f"malformed {request_type.DESCRIPTOR.full_name}: {exc}") from exc
            call.service = spec.label(request)
            if tokens is not None:
                grant = tokens.check(context.invocation_metadata())
                call.caller = grant.name
                if not spec.scope(grant, request):
                    raise Refused(grpc.StatusCode.PERMISSION_DENIED,
                                  f"token {grant.name!r} may not call {name}"
                                  + (f" for {call.service!r}" if call.service else "")
                                  + f"; its grants are in {tokens.path.name}")
            return await method(request, call)
        except (RequestError, Refused) as exc:
            code, message = exc.code, str(exc)
        except Exception as exc:  # a bug: the caller gets INTERNAL, the log one line
            code, message = grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__})"
            call.request_id = access.request_id(context.invocation_metadata())
            log.error("%s failed", name, exc_info=exc,
                      extra={"fields": {"request_id": call.request_id}})
        finally:
            elapsed = time.perf_counter() - started
            if metrics:
                REQUESTS.labels(name, call.service if known(call.service) else "unknown",
                                code.name).inc()
                latency.observe(elapsed)
                if call.size:
                    batch.observe(call.size)
            if code is not grpc.StatusCode.OK or access.sample:
                call.request_id = call.request_id or access.request_id(
                    context.invocation_metadata())
                fields = {"request_id": call.request_id, "method": name,
                          "service": call.service, "size": call.size, "status": code.name,
                          "latency_ms": round(elapsed * 1000, 3), "peer": context.peer()}
                if call.caller:
                    fields["caller"] = call.caller
                if message:
                    fields["error"] = message
                access.record(fields, code is grpc.StatusCode.OK, code in _SERVER_FAULTS)
        context.set_trailing_metadata((("x-request-id", call.request_id),))
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=None, response_serializer=spec.serializer)


def _any(grant: Grant, request: Any) -> bool:
    return True


SPECS: dict[str, Spec] = {
    "GetOnlineFeatures": Spec(pb.GetOnlineFeaturesRequest, None,  # already bytes
                              lambda g, r: g.may_read(r.feature_service),
                              lambda r: r.feature_service or "features"),
    "ListFeatureServices": Spec(pb.ListFeatureServicesRequest,
                                pb.ListFeatureServicesResponse.SerializeToString, _any),
    "GetFeatureService": Spec(pb.GetFeatureServiceRequest, pb.FeatureService.SerializeToString,
                              _any, lambda r: r.name),
    "PushEvents": Spec(pb.PushEventsRequest, pb.PushEventsResponse.SerializeToString,
                       lambda g, r: g.may_push(r.source), lambda r: r.source),
    "GetServerStatus": Spec(pb.GetServerStatusRequest, pb.ServerStatus.SerializeToString,
                            lambda g, r: g.admin),
}


def method_handlers(service: FeatureServer, tokens: Tokens | None = None,
                    access: AccessLog | None = None) -> dict[str, grpc.RpcMethodHandler]:
    methods: dict[str, Method] = {
        "GetOnlineFeatures": service.online_features,
        "ListFeatureServices": service.list_feature_services,
        "GetFeatureService": service.get_feature_service,
        "PushEvents": service.push_events,
        "GetServerStatus": service.server_status,
    }
    access = access or AccessLog(0.0)
    return {name: _unary(name, methods[name], SPECS[name], tokens, access,
                         service.options.metrics, service.knows) for name in SPECS}


async def run(plan: Plan, redis_url: str, address: str, options: ServerOptions,
              stop: asyncio.Event) -> None:
    """Serves on `address` until `stop` is set."""
    tokens = Tokens(options.tokens) if options.tokens else None
    credentials = options.tls.server_credentials() if options.tls else None
    reader = OnlineReader(redis_url, plan.project,
                          observe=count_round_trip if options.metrics else None)
    health_servicer = health.aio.HealthServicer()
    service = FeatureServer(plan, reader, health_servicer, options)
    # gRPC sets SO_REUSEPORT by default: a lone server turns it off, so that a second server
    # started on its port fails instead of silently taking half of its connections.
    server = grpc.aio.server(options=[("grpc.so_reuseport", int(options.reuse_port))])
    methods = method_handlers(service, tokens, AccessLog(options.access_log_sample))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
    server.add_registered_method_handlers(SERVICE, methods)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if options.reflection:
        reflection.enable_server_reflection(
            [SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    try:
        port = (server.add_secure_port(address, credentials) if credentials is not None
                else server.add_insecure_port(address))
    except RuntimeError as exc:
        raise FeatureStoreError(f"cannot listen on {address}: {exc}") from exc
    if tokens is not None and credentials is None:
        log.warning("tokens are checked but travel in plain text: serve with --tls-cert and "
                    "--tls-key unless every caller is on this machine")
    await service.refresh()
    await service.warm_up()
    gc.collect()  # what loading and warming up made stays: later full collections skip it
    gc.freeze()
    await server.start()
    http = None if options.http_port is None else await feast_http.start(
        service, tokens, address.rsplit(":", 1)[0].strip("[]"), options.http_port,
        options.reuse_port)
    refresher = asyncio.create_task(service.refresh_forever())
    log.info("serving feature repo project %r on port %d; online store %s", plan.project, port,
             reader.where, extra={"fields": {
                 "tls": "mutual" if options.tls and options.tls.client_ca else
                        "on" if options.tls else "off",
                 "tokens": len(tokens.grants) if tokens else 0,
                 "reflection": options.reflection}})
    try:
        await stop.wait()
    finally:
        log.info("shutting down: NOT_SERVING, then up to %.1f s for in-flight requests",
                 options.grace)
        await health_servicer.enter_graceful_shutdown()
        await server.stop(options.grace)
        if http is not None:
            http.close()
        refresher.cancel()
        reader.reset()


def serve(plan: Plan, redis_url: str, address: str, options: ServerOptions) -> None:
    """Blocks until SIGTERM or SIGINT, then stops gracefully."""
    configure_logs(options.log_level, options.log_format)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run(plan, redis_url, address, options, stop)

    asyncio.run(main())


def exit_on_sigterm() -> None:
    """Until the event loop takes SIGTERM over, a stop while starting up is a clean exit that
    runs `finally` blocks (which stop a managed redis-server), not Python's default death."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def serve_repo(repo: Path, redis_url: str, address: str, options: ServerOptions) -> None:
    """A worker process's entry point: it compiles (or loads from cache) its own Plan."""
    exit_on_sigterm()
    try:
        serve(load_plan(repo), redis_url, address, options)
    except FeatureStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
