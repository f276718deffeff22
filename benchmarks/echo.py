"""The bare gRPC echo server, the floor that online latency and throughput are measured against.

A grpc.aio server like ours (generic and registered handlers, no reflection or health on the
hot path) whose one unary method returns its request bytes unparsed. servers.start_echo runs
it as

    python benchmarks/echo.py PORT [--reuse-port]

and it serves until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc

ECHO_METHOD = "/bench.Echo/Echo"


def echo_call(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
    """The echo method on a raw channel: bytes in, the same bytes back."""
    return channel.unary_unary(ECHO_METHOD, _registered_method=True)


def serve(port: int, reuse_port: bool) -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", int(reuse_port))])
        handlers = {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo",
                                                                              handlers),))
        server.add_registered_method_handlers("bench.Echo", handlers)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print(f"echo serving on port {port}", flush=True)
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await stop.wait()
        await server.stop(1.0)

    asyncio.run(main())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--reuse-port", action="store_true",
                        help="SO_REUSEPORT, so that several echo processes share the port")
    args = parser.parse_args()
    serve(args.port, args.reuse_port)
