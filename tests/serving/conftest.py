"""Fixtures for serving tests: a real redis-server these tests may stop and restart, the example
repo on small generated data applied and materialized at END, and a real `featurestore serve`
process on a free port, stopped with SIGTERM (and required to exit cleanly) at the end."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from redis_kit import RedisServer
from serving_kit import (
    Example,
    OnlineStore,
    Server,
    build_example,
    start_server,
    stop_server,
)


@pytest.fixture(scope="session")
def online_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnlineStore]:
    if os.environ.get("FEATURESTORE_REDIS_URL"):
        yield OnlineStore(os.environ["FEATURESTORE_REDIS_URL"], None)
        return
    server = RedisServer(tmp_path_factory.mktemp("serving-redis"))
    server.start()
    try:
        yield OnlineStore(server.url, server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def example(tmp_path_factory: pytest.TempPathFactory, online_store: OnlineStore) -> Example:
    """The example repo with its online store pointed at the test Redis, applied, and
    materialized at END through the CLI."""
    return build_example(tmp_path_factory.mktemp("serving"), online_store.url)


@pytest.fixture(scope="session")
def server(example: Example) -> Iterator[Server]:
    running = start_server(example.repo, example.repo.parent / "serve.log")
    yield running
    stop_server(running)
