"""Fixtures for serving tests: a real redis-server these tests may stop and restart, the example
repo on small generated data applied and materialized at END, and a real `featurestore serve`
process on a free port, stopped with SIGTERM (and required to exit cleanly) at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from redis_kit import RedisServer
from serving_kit import (
    END,
    EXAMPLE,
    SMALL_DATA,
    Example,
    OnlineStore,
    Server,
    cli,
    start_server,
    stop_server,
)

from featurestore import FeatureStore


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
    repo = tmp_path_factory.mktemp("serving") / "feature_repo"
    repo.mkdir()
    for path in EXAMPLE.glob("*.py"):
        shutil.copy2(path, repo)
    config = (EXAMPLE / "featurestore.yaml").read_text()
    (repo / "featurestore.yaml").write_text(
        config.replace("online_store: managed", f"online_store: {online_store.url}"))
    shutil.copytree(EXAMPLE / "datagen", repo / "datagen",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, repo / "datagen" / "generate.py", "--out", repo / "data",
                    *SMALL_DATA], check=True, capture_output=True)
    store = FeatureStore(repo)
    store.apply()
    proc = cli("materialize", "--repo", repo, "--end", END.isoformat())
    assert "user_profile" in proc.stdout and "merchant_profile" in proc.stdout, proc.stdout
    return Example(repo, store)


@pytest.fixture(scope="session")
def server(example: Example) -> Iterator[Server]:
    running = start_server(example.repo, example.repo.parent / "serve.log")
    yield running
    stop_server(running)
