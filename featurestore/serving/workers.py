"""`featurestore serve`: one serving process, or N sharing one port (gRPC sets SO_REUSEPORT on
Linux, so the kernel spreads connections over them), plus the repo's managed redis-server when
the repo asks for one, stopped on exit when this command started it.

The port must be free before anything starts: SO_REUSEPORT would as well let the workers share
it with any other server that sets it (another `serve --workers`, of any project), and the
kernel would then split connections between the two at random.

Workers are spawned, not forked: gRPC and Numba's runtime do not survive a fork, and each
worker loads the compiled kernels from the on-disk cache the parent has just filled."""

from __future__ import annotations

import errno
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from dataclasses import replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from featurestore.errors import FeatureStoreError
from featurestore.online.managed import ManagedRedis
from featurestore.repo import RepoConfig, load_config, load_plan
from featurestore.serving.metrics import serve_metrics, worker_files
from featurestore.serving.server import exit_on_sigterm, serve, serve_repo
from featurestore.serving.service import ServerOptions


def run(repo: Path, host: str, port: int, workers: int, options: ServerOptions,
        metrics_port: int | None = None) -> None:
    """`metrics_port`: answer Prometheus scrapes there (on `host`), for all workers."""
    exit_on_sigterm()
    if workers < 1:
        raise FeatureStoreError(f"--workers must be at least 1, got {workers}")
    if workers > 1 and port == 0:
        raise FeatureStoreError("--port 0 would give each worker its own port; name the port "
                                "the workers share")
    if port != 0:
        check_port_free(host, port)
    config = load_config(repo)
    plan = load_plan(config.root)  # definition errors surface here, before anything starts
    url, managed = _online_store(config)
    address = f"{host}:{port}"
    options = replace(options, reuse_port=workers > 1, repo_root=config.root, redis_url=url,
                      metrics=metrics_port is not None)
    try:
        if workers == 1:
            if metrics_port is not None:
                serve_metrics(host, metrics_port)
            serve(plan, url, address, options)
        else:
            with worker_files():
                if metrics_port is not None:
                    serve_metrics(host, metrics_port)
                spawn = multiprocessing.get_context("spawn")
                _supervise([spawn.Process(target=serve_repo, args=(config.root, url, address,
                                                                  options),
                                          name=f"worker-{i + 1}") for i in range(workers)])
    finally:
        if managed is not None:
            managed.stop()


def _online_store(config: RepoConfig) -> tuple[str, ManagedRedis | None]:
    """The Redis URL, and the managed redis-server if this call started it (to stop at exit)."""
    url = config.online_url
    if url != "managed":
        return url, None
    managed = ManagedRedis(config.root)
    if not managed.start():
        return managed.url, None
    print(f"started the repo's managed redis-server (pid {managed.pid()}, socket "
          f"{managed.socket}); it stops when this server stops", file=sys.stderr, flush=True)
    return managed.url, managed


def check_port_free(host: str, port: int) -> None:
    """Fails unless nothing listens on host:port: a plain bind (no SO_REUSEPORT; SO_REUSEADDR,
    so that an earlier server's connections in TIME_WAIT do not count) is refused while any
    socket listens there. A server that starts listening between this check and the workers'
    own bind is not caught."""
    try:
        addresses = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise FeatureStoreError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    for family, kind, proto, _, address in addresses:
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:  # e.g. IPv6 disabled: gRPC will not listen there either
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise FeatureStoreError(
                        f"port {port} is already in use on {host}: another server listens there "
                        "(perhaps of another project); stop it or pass another --port") from exc
                raise FeatureStoreError(f"cannot listen on {host}:{port}: {exc.strerror}"
                                        ) from exc


def _supervise(workers: list[BaseProcess]) -> None:
    """Runs the workers to their end. SIGTERM or SIGINT is passed on to them, and one worker
    failing stops the others."""

    def stop(*_: Any) -> None:
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for worker in workers:
            worker.start()
        while running := [w for w in workers if w.exitcode is None]:
            multiprocessing.connection.wait([w.sentinel for w in running])
            if any(w.exitcode for w in workers):
                stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    failed = [w.name for w in workers if w.exitcode]
    if failed:
        raise FeatureStoreError(f"serving worker(s) {', '.join(failed)} failed; see the messages "
                                "above")
