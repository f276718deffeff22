"""One serving process: a grpc.aio server with FeatureServing, health checking and reflection
on one port, until SIGTERM or SIGINT stops it gracefully (health NOT_SERVING first, then
in-flight requests get `grace` seconds).

FeatureServing's method table is written here rather than generated (*_pb2_grpc.py): the hot
method returns bytes that featurestore.serving.wire already encoded, which needs a
response serializer of its own."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
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
from featurestore.serving.proto import SERVICE, pb
from featurestore.serving.request import RequestError
from featurestore.serving.service import FeatureServer, ServerOptions

log = logging.getLogger("featurestore.serving")

Method = Callable[[Any, float | None], Awaitable[Any]]


def _unary(method: Method, request_type: Any, serializer: Callable[[Any], bytes] | None
           ) -> grpc.RpcMethodHandler:
    async def behaviour(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = request_type.FromString(raw)
        except DecodeError as exc:  # a client's bug: one line in the log, no traceback
            log.warning("malformed %s from %s: %s", request_type.DESCRIPTOR.name, context.peer(),
                        exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"malformed {request_type.DESCRIPTOR.full_name}: {exc}")
        try:
            return await method(request, context.time_remaining())
        except RequestError as exc:
            await context.abort(exc.code, str(exc))

    return grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=None, response_serializer=serializer)


def method_handlers(service: FeatureServer) -> dict[str, grpc.RpcMethodHandler]:
    return {
        "GetOnlineFeatures": _unary(service.online_features, pb.GetOnlineFeaturesRequest,
                                    None),  # already bytes
        "ListFeatureServices": _unary(service.list_feature_services,
                                      pb.ListFeatureServicesRequest,
                                      pb.ListFeatureServicesResponse.SerializeToString),
        "GetFeatureService": _unary(service.get_feature_service, pb.GetFeatureServiceRequest,
                                    pb.FeatureService.SerializeToString),
        "PushEvents": _unary(service.push_events, pb.PushEventsRequest,
                             pb.PushEventsResponse.SerializeToString),
    }


async def run(plan: Plan, redis_url: str, address: str, options: ServerOptions,
              stop: asyncio.Event) -> None:
    """Serves on `address` until `stop` is set."""
    reader = OnlineReader(redis_url, plan.project)
    health_servicer = health.aio.HealthServicer()
    service = FeatureServer(plan, reader, health_servicer, options)
    # gRPC sets SO_REUSEPORT by default: a lone server turns it off, so that a second server
    # started on its port fails instead of silently taking half of its connections.
    server = grpc.aio.server(options=[("grpc.so_reuseport", int(options.reuse_port))])
    methods = method_handlers(service)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
    server.add_registered_method_handlers(SERVICE, methods)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME],
                                        server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise FeatureStoreError(f"cannot listen on {address}: {exc}") from exc
    await service.refresh()
    await service.warm_up()
    await server.start()
    refresher = asyncio.create_task(service.refresh_forever())
    log.info("serving feature repo project %r on port %d; online store %s", plan.project, port,
             reader.where)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: NOT_SERVING, then up to %.1f s for in-flight requests",
                 options.grace)
        await health_servicer.enter_graceful_shutdown()
        await server.stop(options.grace)
        refresher.cancel()
        reader.reset()


def serve(plan: Plan, redis_url: str, address: str, options: ServerOptions) -> None:
    """Blocks until SIGTERM or SIGINT, then stops gracefully."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(message)s")

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
