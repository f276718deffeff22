"""A representative part of the serving tests, run again with the online store on a
3-master Redis Cluster (the session's `cluster_url`): the same test functions, collected here
with this module's fixtures. The gRPC server's values equal the training set bit for bit and
the in-process lookups'; `featurestore get` and `featurestore parity` work; a push through
the server is served at once and applied once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serving_kit import Example, OnlineStore, Server, build_example, start_server, stop_server
from test_parity_cli import test_parity_holds_at_the_materialization_time
from test_push import (
    env,
    test_a_batch_id_pushed_twice_through_the_server_applies_once,
    test_serves_fresh_windowed_features_after_a_push,
)
from test_server import (
    test_cli_get,
    test_in_process_lookups_answer_what_the_server_answers,
    test_never_seen_entity_is_not_found,
    test_served_values_equal_the_training_set,
)

__all__ = ["env", "test_a_batch_id_pushed_twice_through_the_server_applies_once",
           "test_cli_get", "test_in_process_lookups_answer_what_the_server_answers",
           "test_never_seen_entity_is_not_found", "test_parity_holds_at_the_materialization_time",
           "test_served_values_equal_the_training_set",
           "test_serves_fresh_windowed_features_after_a_push"]


@pytest.fixture(scope="module")
def redis_url(cluster_url: str) -> str:
    """The push tests' store (test_push.env reads it)."""
    return cluster_url


@pytest.fixture(scope="module")
def online_store(cluster_url: str) -> OnlineStore:
    return OnlineStore(cluster_url, None)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory, online_store: OnlineStore) -> Example:
    return build_example(tmp_path_factory.mktemp("serving-cluster"), online_store.url)


@pytest.fixture(scope="module")
def server(example: Example) -> Iterator[Server]:
    running = start_server(example.repo, example.repo.parent / "serve.log")
    yield running
    stop_server(running)
