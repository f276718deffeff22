"""Shared fixtures. Tests talk to a real Redis: FEATURESTORE_REDIS_URL if set, else a
redis-server from PATH started on a free loopback port for the session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from redis_kit import RedisServer


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("FEATURESTORE_REDIS_URL"):
        yield os.environ["FEATURESTORE_REDIS_URL"]
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
