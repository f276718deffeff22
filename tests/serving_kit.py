"""Helpers of the serving tests: running the CLI, starting and stopping a real `featurestore
serve` process, and asking it for its health."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from redis_kit import RedisServer, free_port

from featurestore import FeatureStore

EXAMPLE = Path(__file__).resolve().parents[1] / "feature_repo"
END = datetime(2025, 7, 1, tzinfo=UTC)  # where the generator's transactions end
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SMALL_DATA = ["--users", "300", "--merchants", "50", "--transactions", "3000", "--seed", "3",
              "--end", END.isoformat()]


@dataclass(frozen=True)
class OnlineStore:
    url: str
    server: RedisServer | None  # None: FEATURESTORE_REDIS_URL's server, not ours to restart


@dataclass(frozen=True)
class Example:
    repo: Path
    store: FeatureStore


@dataclass(frozen=True)
class Server:
    target: str
    process: subprocess.Popen[bytes]
    log: Path


def cli(*args: str | Path, expect: int = 0, env: dict[str, str] | None = None,
        cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "featurestore.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=cwd, input=stdin,
                          env={**os.environ, "COLUMNS": "250", "NO_COLOR": "1", **(env or {})})
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def channel(target: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    return (grpc.secure_channel(target, credentials) if credentials is not None
            else grpc.insecure_channel(target))


def health(target: str, service: str = "", credentials: grpc.ChannelCredentials | None = None
           ) -> int:
    with channel(target, credentials) as opened:
        stub = health_pb2_grpc.HealthStub(opened)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    """Polls `check()` until it is true; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def start_server(repo: Path, log: Path, *args: str, workers: int = 1,
                 env: dict[str, str] | None = None,
                 credentials: grpc.ChannelCredentials | None = None,
                 ready: str = "logged") -> Server:
    """Returns once every worker logged that it serves (unless `ready` is "SERVING": a log
    level above info hides that line) and health says SERVING. `env`: the server's whole
    environment (default: the tests'); `credentials`: TLS to ask health with."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "featurestore.cli", "serve", "--repo", str(repo), "--port",
             str(port), "--workers", str(workers), *args], env=env, stdout=out, stderr=out)
    target = f"127.0.0.1:{port}"

    def serving() -> bool:
        if process.poll() is not None:
            pytest.fail(f"featurestore serve exited {process.returncode}:\n{log.read_text()}")
        logged = ready == "SERVING" or log.read_text().count("serving feature repo") == workers
        return logged and health(target, credentials=credentials) == SERVING

    wait_for(f"server {target} to be SERVING", serving)
    return Server(target, process, log)


def stop_server(server: Server) -> str:
    """SIGTERM, as an orchestrator stops it: it must exit 0 within its grace period. Returns
    what it logged."""
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=20)
    output = server.log.read_text()
    assert server.process.returncode == 0, output
    return output


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A Prometheus scrape over HTTP: (sample name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def build_example(folder: Path, url: str) -> Example:
    """The example repo in `folder` with its online store at `url`, applied, and
    materialized at END through the CLI."""
    repo = folder / "feature_repo"
    repo.mkdir()
    for path in EXAMPLE.glob("*.py"):
        shutil.copy2(path, repo)
    config = (EXAMPLE / "featurestore.yaml").read_text()
    (repo / "featurestore.yaml").write_text(config.replace("online_store: managed",
                                                           f"online_store: {url}"))
    shutil.copytree(EXAMPLE / "datagen", repo / "datagen",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, repo / "datagen" / "generate.py", "--out", repo / "data",
                    *SMALL_DATA], check=True, capture_output=True)
    store = FeatureStore(repo)
    store.apply()
    proc = cli("materialize", "--repo", repo, "--end", END.isoformat())
    assert "user_profile" in proc.stdout and "merchant_profile" in proc.stdout, proc.stdout
    return Example(repo, store)
