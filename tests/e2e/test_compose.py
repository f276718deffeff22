"""docker/compose.yaml and docker/Dockerfile without a Docker engine: each compose service runs
its command exactly as written there (the image's CMD when it names none), in dependency order,
outside a container; then the server is asked over gRPC for the example's profile features,
which must be PRESENT (the job generates data ending now, not in the past). The Dockerfile's
CMD and HEALTHCHECK are read from it and run as they are, and the host, port and volumes they
rely on are checked against the compose file, so the two files cannot drift apart.

From a container to this machine, the only liberties taken (`Mapping`):
- the image's WORKDIR (/app) is a temporary folder holding what the Dockerfile copies there
  (feature_repo/ without data, caches or push log, as docker/Dockerfile.dockerignore leaves
  it); every path under /app in a command or an environment value names the same path under
  that folder, which is also every command's working directory;
- a named volume is the folder it is mounted on inside that copy, which the job and the server
  share as they share the volume;
- a service run from a public image (redis) is a local stand-in (tests/redis_kit.py), and its
  `<service>:<port>` in a URL names the stand-in's address;
- the container port (published, served, health-checked) is a free port here, since another
  server may hold the published one on this machine;
- PATH starts with this interpreter's bin folder, which has `python` and `featurestore` as the
  image's PATH does.
The server binds 0.0.0.0, as in its container."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from redis_kit import RedisServer, free_port
from serving_kit import EXAMPLE, Server, stop_server, wait_for

from featurestore import Client
from featurestore.offline.event_log import LOG_DIR
from featurestore.repo import load_config
from featurestore.values.status import Status

DOCKER = Path(__file__).resolve().parents[2] / "docker"
REDIS_PORT = 6379  # where the redis image listens


@dataclass(frozen=True)
class Dockerfile:
    """The final stage of a Dockerfile, as far as running its image goes."""

    workdir: str
    expose: list[int]
    healthcheck: list[str]  # the command of HEALTHCHECK ... CMD [...]
    cmd: list[str]


def read_dockerfile(path: Path) -> Dockerfile:
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
            pending = ""
    final = instructions[max(i for i, (word, _) in enumerate(instructions) if word == "FROM"):]
    last = {word: rest for word, rest in final}
    health = last["HEALTHCHECK"]
    return Dockerfile(last["WORKDIR"], [int(p) for w, r in final if w == "EXPOSE"
                                        for p in r.split()],
                      json.loads(health[health.index(" CMD ") + 5:]), json.loads(last["CMD"]))


def option(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def dependency_order(services: dict[str, Any]) -> list[str]:
    """Service names, each after those it depends on (as compose starts them)."""
    done: list[str] = []

    def visit(name: str) -> None:
        for dependency in services[name].get("depends_on", {}):
            visit(dependency)
        if name not in done:
            done.append(name)
    for name in services:
        visit(name)
    return done


@dataclass(frozen=True)
class Mapping:
    """The rules of the module docstring, for one command argument or environment value."""

    workdir: str  # in the image
    root: Path  # here
    port: int  # in the container
    free_port: int  # here
    hosts: dict[str, str]  # "<service>:<port>" -> its stand-in's "host:port"

    def __call__(self, text: str) -> str:
        text = re.sub(rf"(?<![\w./]){re.escape(self.workdir)}(?=/|\s|$)", str(self.root), text)
        text = re.sub(rf"(?<![\w.]){self.port}(?!\d)", str(self.free_port), text)
        for name, address in self.hosts.items():
            text = re.sub(rf"(?<=[/@]){re.escape(name)}(?![\w.-])", address, text)
        return text

    def environment(self, service: dict[str, Any]) -> dict[str, str]:
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        env = {k: v for k, v in os.environ.items() if k != "FEATURESTORE_REDIS_URL"}
        return env | {"PATH": path} | {k: self(str(v)) for k, v in
                                       service.get("environment", {}).items()}


def command(service: dict[str, Any], image: Dockerfile) -> list[str]:
    """What a container of the service runs: compose's entrypoint and command, else the
    image's CMD (the image has no ENTRYPOINT)."""
    def argv(value: str | list[str]) -> list[str]:
        return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]
    return argv(service.get("entrypoint", [])) + argv(service.get("command", image.cmd))


def wait_healthy(name: str, server: Server, healthcheck: list[str], env: dict[str, str]) -> None:
    """Until the HEALTHCHECK command passes, as Docker runs it; fails if the server exits."""
    def healthy() -> bool:
        if server.process.poll() is not None:
            pytest.fail(f"{name} exited {server.process.returncode}:\n{server.log.read_text()}")
        return subprocess.run(healthcheck, env=env, capture_output=True).returncode == 0
    wait_for(f"{name} to pass its HEALTHCHECK", healthy, timeout=120)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def image() -> Dockerfile:
    return read_dockerfile(DOCKER / "Dockerfile")


def test_dockerfile_and_compose_agree(compose: dict[str, Any], image: Dockerfile) -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert "[dev" not in text and "FEATURESTORE_REPO" not in text  # runtime dependencies only
    services = compose["services"]
    server = services["server"]
    assert "command" not in server and "entrypoint" not in server  # it runs the image's CMD
    [published] = server["ports"]
    port = int(published.rsplit(":", 1)[1])
    assert image.cmd[:2] == ["featurestore", "serve"]
    assert option(image.cmd, "--host") == "0.0.0.0"  # 127.0.0.1 would be the container's own
    assert int(option(image.cmd, "--port")) == port and port in image.expose
    assert image.healthcheck == ["featurestore", "health", "--target", f"127.0.0.1:{port}"]
    repo = f"{image.workdir}/feature_repo"
    assert option(image.cmd, "--repo") == repo
    assert "healthcheck" not in server  # the image's
    assert services["materialize"]["healthcheck"] == {"disable": True}  # it runs no server

    example = load_config(EXAMPLE)
    shared = {f"{repo}/data", f"{repo}/{example.kernel_cache.relative_to(example.root)}",
              f"{repo}/{LOG_DIR}"}
    for name in ("materialize", "server"):
        mounts = dict(reversed(v.split(":")[:2]) for v in services[name]["volumes"])
        assert set(mounts) == shared, name
        assert all(mounts[path] in compose["volumes"] for path in shared)
        assert services[name]["environment"]["FEATURESTORE_REDIS_URL"] == \
            f"redis://redis:{REDIS_PORT}/0"
    assert services["materialize"]["volumes"] == server["volumes"]


def test_compose_serves_present_values(compose: dict[str, Any], image: Dockerfile,
                                       tmp_path: Path) -> None:
    root = tmp_path / "app"  # stands for the image's WORKDIR
    repo = root / "feature_repo"
    repo.mkdir(parents=True)
    for path in [*EXAMPLE.glob("*.py"), EXAMPLE / "featurestore.yaml"]:
        shutil.copy2(path, repo)
    shutil.copytree(EXAMPLE / "datagen", repo / "datagen",
                    ignore=shutil.ignore_patterns("__pycache__"))
    services = compose["services"]
    port = int(services["server"]["ports"][0].rsplit(":", 1)[1])
    redis = RedisServer(tmp_path)
    mapping = Mapping(image.workdir, root, port, free_port(),
                      {f"redis:{REDIS_PORT}": f"127.0.0.1:{redis.port}"})
    running: list[Server] = []
    try:
        for name in dependency_order(services):
            service = services[name]
            if "build" not in service:
                assert name == "redis" and service["image"].startswith("redis:"), name
                redis.start()
                continue
            for volume in service.get("volumes", []):
                Path(mapping(volume.split(":")[1])).mkdir(parents=True, exist_ok=True)
            argv = [mapping(arg) for arg in command(service, image)]
            env = mapping.environment(service)
            if service.get("healthcheck") == {"disable": True}:  # a job, run to its end
                job = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True,
                                     timeout=300)
                assert job.returncode == 0, f"{name}: {argv}\n{job.stdout}\n{job.stderr}"
                continue
            log = tmp_path / f"{name}.log"
            with log.open("w") as out:
                process = subprocess.Popen(argv, cwd=root, env=env, stdout=out, stderr=out)
            running.append(Server(f"127.0.0.1:{mapping.free_port}", process, log))
            wait_healthy(name, running[-1], [mapping(arg) for arg in image.healthcheck], env)

        [server] = running
        assert any((repo / ".featurestore" / "kernels").glob("k_*.py"))  # compiled by the job
        with Client(server.target) as client:
            users = client.get_online_features(features=["user_profile"],
                                               entities={"user_id": list(range(1, 301))})
            merchants = client.get_online_features(
                features=["merchant_profile"],
                entities={"merchant_id": [f"M{i:05d}" for i in range(1, 301)]})
        for result, feature in ((users, "is_premium"), (merchants, "risk_score")):
            present = float(np.mean(result.statuses[feature] == Status.PRESENT))
            assert present > 0.8, f"{feature}: {present:.0%} PRESENT"
    finally:
        outputs = [stop_server(server) for server in running if server.process.poll() is None]
        redis.stop()
    assert outputs[0].count("serving feature repo") == int(option(image.cmd, "--workers"))
    down = subprocess.run([mapping(arg) for arg in image.healthcheck], capture_output=True,
                          env=mapping.environment(services["server"]))
    assert down.returncode == 1
