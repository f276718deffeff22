"""Serving processes as an operator meets them: a server never shares its port with a server
that is not its own (workers share it through SO_REUSEPORT, which another `serve --workers`
would set too), `serve` says when it starts the repo's managed redis-server, and
`featurestore health` answers for the server as a container health check asks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_kit import free_port
from repo_kit import PROFILE_DEFS, write_repo
from serving_kit import NOT_SERVING, SERVING, Server, cli, health, start_server, stop_server, wait_for

from featurestore import Client
from featurestore.online.managed import ManagedRedis
from featurestore.serving.proto import SERVICE

MANAGED = {k: v for k, v in os.environ.items() if k != "FEATURESTORE_REDIS_URL"}


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """A 2-worker server of project `first` with its own managed redis-server."""
    root = write_repo(tmp_path_factory.mktemp("first") / "repo", project="first")
    server = start_server(root, root.parent / "serve.log", workers=2, env=MANAGED)
    yield server, root
    stop_server(server)


def run_to_end(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs the CLI in its own process group, so that a server which should have failed but
    serves is stopped with its workers."""
    with subprocess.Popen([sys.executable, "-m", "featurestore.cli", *map(str, args)],
                          env=MANAGED, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.communicate(timeout=20)
            pytest.fail(f"`featurestore {' '.join(map(str, args))}` was still running after "
                        f"{timeout:.0f} s")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("workers", [2, 1])
def test_a_second_server_on_a_used_port_fails(first: tuple[Server, Path], tmp_path: Path,
                                              workers: int) -> None:
    server, _ = first
    port = server.target.rsplit(":", 1)[1]
    other = write_repo(tmp_path / "repo", PROFILE_DEFS.replace('"fraud_v1"', '"other_v1"'),
                       project="second")
    second = run_to_end("serve", "--repo", other, "--port", port, "--workers", str(workers))
    assert second.returncode == 1, second.stderr
    assert f"port {port} is already in use on 127.0.0.1" in second.stderr
    assert "pass another --port" in second.stderr
    assert not ManagedRedis(other).running()  # it failed before starting anything
    for _ in range(20):  # fresh connections, which SO_REUSEPORT would spread over both
        with Client(server.target) as client:
            assert [s.name for s in client.list_feature_services()] == ["fraud_v1"]
    assert health(server.target) == SERVING


def test_serve_says_it_started_the_managed_redis(first: tuple[Server, Path]) -> None:
    server, root = first
    managed = ManagedRedis(root)
    line = (f"started the repo's managed redis-server (pid {managed.pid()}, socket "
            f"{managed.socket}); it stops when this server stops")
    assert server.log.read_text().count(line) == 1


def test_health_command(first: tuple[Server, Path]) -> None:
    server, root = first
    assert cli("health", "--target", server.target).stdout == f"{server.target}: SERVING\n"
    assert cli("health", "--target", server.target, "--service", SERVICE).stdout == \
        f"{server.target} {SERVICE}: SERVING\n"
    unknown = cli("health", "--target", server.target, "--service", "nope", expect=1)
    assert unknown.stdout == f"{server.target} nope: SERVICE_UNKNOWN\n"

    managed = ManagedRedis(root)
    managed.stop()  # the online store is gone: the server stays up but is NOT_SERVING
    try:
        wait_for("NOT_SERVING", lambda: health(server.target) == NOT_SERVING, timeout=10)
        assert cli("health", "--target", server.target, expect=1).stdout == \
            f"{server.target}: NOT_SERVING\n"
    finally:
        managed.start()
    wait_for("SERVING again", lambda: health(server.target) == SERVING, timeout=10)

    nobody = f"127.0.0.1:{free_port()}"  # a port just found free: nothing listens there
    down = cli("health", "--target", nobody, expect=1).stderr
    assert "UNAVAILABLE" in down and f"(server {nobody})" in down, down
