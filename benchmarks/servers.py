"""The servers the online benchmarks run against, each started on a free loopback port as a
process group of its own and returned once it answers: redis-server, `featurestore serve` and
the bare gRPC echo (echo.py). Each returns (group, address); the caller stops the group."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import redis
from echo import echo_call
from grpc_health.v1 import health_pb2, health_pb2_grpc
from processes import Group, free_port, start_group, wait_for

ECHO_SCRIPT = Path(__file__).resolve().with_name("echo.py")


def start_redis(workdir: Path) -> tuple[Group, str]:
    """redis-server without persistence; returns its redis:// URL (database 0)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH (Debian: apt-get install redis-server)")
    port = free_port()
    group = start_group("redis-server", [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(workdir)], workdir / "redis.log")
    client = redis.Redis(port=port)
    wait_for(group, "redis-server to answer PING", lambda: bool(client.ping()), timeout=10)
    client.close()
    return group, f"redis://127.0.0.1:{port}/0"


def health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service="")
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=2).status


def start_ours(repo: Path, workers: int, workdir: Path, options: Sequence[str] = ()
               ) -> tuple[Group, str]:
    """`featurestore serve` (with further command-line `options`), ready once every worker
    logged that it serves and health says SERVING (with several workers one may answer health
    while another still loads)."""
    port = free_port()
    group = start_group(f"featurestore serve --workers {workers}", [
        sys.executable, "-m", "featurestore.cli", "serve", "--repo", str(repo), "--port",
        str(port), "--workers", str(workers), *options], workdir / f"serve-{workers}w-{port}.log")
    target = f"127.0.0.1:{port}"
    wait_for(group, f"{target} to be SERVING", lambda: (
        group.log.read_text().count("serving feature repo") == workers
        and health(target) == health_pb2.HealthCheckResponse.SERVING))
    return group, target


def start_echo(reuse_port: bool, workdir: Path, port: int | None = None) -> tuple[Group, str]:
    """One echo server process; with `reuse_port`, start several on one `port` (SO_REUSEPORT,
    as our workers share theirs)."""
    port = port or free_port()
    command = [sys.executable, str(ECHO_SCRIPT), str(port)]
    group = start_group(f"echo server :{port}", command + (["--reuse-port"] if reuse_port else []),
                        workdir / f"echo-{port}-{time.monotonic_ns()}.log")
    target = f"127.0.0.1:{port}"

    def answers() -> bool:  # several may share the port: this one must have said it listens
        if "echo serving" not in group.log.read_text():
            return False
        with grpc.insecure_channel(target) as channel:
            return echo_call(channel)(b"ping", timeout=2) == b"ping"
    wait_for(group, f"echo server {target}", answers)
    return group, target
