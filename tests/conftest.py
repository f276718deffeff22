"""Shared fixtures. Tests talk to a real Redis: FEATURESTORE_REDIS_URL if set, else a
redis-server from PATH started on a free loopback port for the session, else a testcontainers
Redis when a Docker engine is reachable, else the session fails saying how to get one."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from hypothesis import Phase, settings
from redis_kit import RedisCluster, RedisServer

# `make mutate` runs tests with --hypothesis-profile=mutation: a failing example is enough to
# kill a mutation, so it is not shrunk (shrinking a DuckDB-backed example takes minutes).
settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("FEATURESTORE_REDIS_URL"):
        yield os.environ["FEATURESTORE_REDIS_URL"]
        return
    if shutil.which("redis-server") is None and docker_reachable():
        from testcontainers.community.redis import RedisContainer

        with RedisContainer("redis:7") as container:
            yield (f"redis://{container.get_container_host_ip()}:"
                   f"{container.get_exposed_port(6379)}/0")
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))  # fails saying how to install one
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def docker_reachable() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real 3-master Redis Cluster on loopback ports, for the session (about 3 s to
    start): the tests that run against both backends ask for it through `online_url`."""
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def online_url(redis_url: str) -> str:
    """The online store a test writes to: one Redis; modules that also run against a Redis
    Cluster override it with redis_kit's `both_backends`."""
    return redis_url

