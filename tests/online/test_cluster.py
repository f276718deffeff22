"""The Redis Cluster transport of the serving reader (online/cluster.py) on its own cluster:
a key whose slot moved to another node is still read (MOVED: the slot map is read again),
and a node down is OnlineUnavailable, never values. The store's contract runs on a cluster
in test_store_contract.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import redis
import redis.crc
from hypothesis import given, settings
from hypothesis import strategies as st
from redis_kit import RedisCluster
from test_store_contract import NOW, plan_with, rows_batch

from featurestore import Entity, FeatureView, Field, Source
from featurestore.definitions import Definitions
from featurestore.definitions.types import Float64, Int64
from featurestore.errors import (
    FeatureStoreError,
    OnlineDataLost,
    OnlineUnavailable,
    RegistryMoved,
)
from featurestore.online.cluster import key_slot, key_slots
from featurestore.online.keys import registry_key
from featurestore.online.lookup import Lookup
from featurestore.online.reader import OnlineReader
from featurestore.online.store import OnlineStore
from featurestore.online.urls import parse
from featurestore.plan import Plan, ViewPlan, build_plan
from featurestore.values.columns import from_arrow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A cluster of the test's own, for tests that move slots, stop or flush nodes (others
    use the session's `cluster_url`)."""
    own = RedisCluster(tmp_path)
    try:
        own.start()
        yield own
    finally:
        own.stop()


def served_rows(url: str, users: list[int]) -> tuple[OnlineStore, Lookup]:
    plan = plan_with()
    online, view = OnlineStore(url, plan.project), plan.views["rows"]
    storage = online.new_storage(view)
    online.write_rows(view, storage, rows_batch(users, [(1, 1, 0)] * len(users),
                                                [u / 4 for u in users]), fresh=True)
    online.flush()
    online.activate(view, storage, NOW, len(users), None)
    return online, Lookup(plan.project, plan, plan.select(features=["rows:x"]), online.served())


def read(runner: asyncio.Runner, reader: OnlineReader, lookup: Lookup, users: list[int]
         ) -> list[float | None]:
    """One read on the test's event loop (the reader's connections live on it)."""
    entities = {"user_id": from_arrow(pa.array(users, pa.int64()), Int64)}
    result = runner.run(reader.read(lookup, entities, {}, NOW, timeout=5.0))
    (x,) = result.features
    return [v if s == 0 else None for v, s in zip(x.column.values.tolist(), x.status.tolist(),
                                                  strict=True)]


def test_a_key_moved_to_another_node_is_still_read(cluster: RedisCluster) -> None:
    users = list(range(1, 40))
    online, lookup = served_rows(cluster.url, users)
    reader, runner = OnlineReader(cluster.url, online.project), asyncio.Runner()
    assert read(runner, reader, lookup, users) == [u / 4 for u in users]
    key = lookup.start({"user_id": from_arrow(pa.array([7], pa.int64()), Int64)}, NOW).keys[-1]
    slot = key_slot(key)
    source = cluster.node_of_slot(slot)
    target = next(p for p in cluster.ports if p != source)
    cluster.move_slot(slot, source, target)
    assert cluster.node_of_slot(slot) == target
    # the reader's slot map still names the old node: it answers MOVED, the map is read again
    assert read(runner, reader, lookup, users) == [u / 4 for u in users]
    online.close()
    runner.close()


def test_a_node_down_is_unavailable_never_values(cluster: RedisCluster) -> None:
    users = list(range(1, 40))
    online, lookup = served_rows(cluster.url, users)
    reader, runner = OnlineReader(cluster.url, online.project), asyncio.Runner()
    assert read(runner, reader, lookup, users) == [u / 4 for u in users]
    cluster.stop_node(cluster.ports[1])
    with pytest.raises(OnlineUnavailable):
        read(runner, reader, lookup, users)
    fresh = OnlineReader(cluster.url, online.project)  # a reader starting now fails the same
    with pytest.raises(OnlineUnavailable):
        read(runner, fresh, lookup, users)
    online.close()
    runner.close()


def test_a_node_that_lost_its_data_is_refused_never_read_as_missing_rows(
        cluster: RedisCluster) -> None:
    """A master restarted empty (or flushed) while the registry's node kept its data: its
    rows would read as NOT_FOUND, but the slot markers read with them are gone too."""
    users = list(range(1, 40))
    online, lookup = served_rows(cluster.url, users)
    reader, runner = OnlineReader(cluster.url, online.project), asyncio.Runner()
    registry_node = cluster.node_of_slot(key_slot(registry_key(online.project)))
    lost = next(p for p in cluster.ports if p != registry_node)
    with redis.Redis(host="127.0.0.1", port=lost) as client:
        client.flushall()
    entities = {"user_id": from_arrow(pa.array(users, pa.int64()), Int64)}
    with pytest.raises(OnlineDataLost, match=f"127.0.0.1:{lost} lost the online store's keys"):
        read(runner, reader, lookup, users)
    with pytest.raises(OnlineDataLost, match="run `featurestore materialize`"):
        online.read(lookup, entities, {}, NOW)
    elsewhere = [u for u in users if cluster.node_of_slot(key_slot(f"{{user|{u}}}")) != lost]
    assert read(runner, reader, lookup, elsewhere) == [u / 4 for u in elsewhere]
    online.close()
    runner.close()


def test_after_a_node_lost_its_data_a_new_storage_serves_and_old_reads_are_flips(
        cluster: RedisCluster) -> None:
    """A materialization after a node's loss writes the markers again with a new token: the
    new storage reads everywhere, and a lookup prepared before it (its storage's token is
    the old one) raises RegistryMoved, so the server prepares it again, not a loss."""
    users = list(range(1, 40))
    online, stale = served_rows(cluster.url, users)
    registry_node = cluster.node_of_slot(key_slot(registry_key(online.project)))
    with redis.Redis(host="127.0.0.1", port=next(
            p for p in cluster.ports if p != registry_node)) as client:
        client.flushall()
    view = stale.rows[0].view
    storage = online.new_storage(view)
    online.write_rows(view, storage, rows_batch(users, [(2, 2, 0)] * len(users),
                                                [u / 8 for u in users]), fresh=True)
    online.flush()
    online.activate(view, storage, NOW, len(users), stale.rows[0].storage)
    reader, runner = OnlineReader(cluster.url, online.project), asyncio.Runner()
    entities = {"user_id": from_arrow(pa.array(users, pa.int64()), Int64)}
    with pytest.raises(RegistryMoved):
        read(runner, reader, stale, users)
    with pytest.raises(RegistryMoved):
        online.read(stale, entities, {}, NOW)
    fresh = Lookup(online.project, stale.plan, stale.selection, online.served())
    assert read(runner, reader, fresh, users) == [u / 8 for u in users]
    online.close()
    runner.close()


def test_a_view_not_materialized_since_a_node_lost_its_data_is_refused(
        cluster: RedisCluster) -> None:
    """Two row views; a node loses its data; only one view is materialized again, which
    writes every marker anew: the other view's rows on that node are gone though its slots
    have markers again, so its reads are refused (its storage's token is the old one)."""
    users = list(range(1, 40))
    plan = two_row_views()
    online = OnlineStore(cluster.url, plan.project)
    for name in ("a", "b"):
        materialize(online, plan.views[name], users, None)
    registry_node = cluster.node_of_slot(key_slot(registry_key(online.project)))
    lost = next(p for p in cluster.ports if p != registry_node)
    with redis.Redis(host="127.0.0.1", port=lost) as client:
        client.flushall()
    materialize(online, plan.views["a"], users, online.served()["a"].storage)
    reader, runner = OnlineReader(cluster.url, online.project), asyncio.Runner()
    on_lost = [u for u in users if cluster.node_of_slot(key_slot(f"{{user|{u}}}")) == lost]
    a = Lookup(plan.project, plan, plan.select(features=["a:x"]), online.served())
    assert read(runner, reader, a, on_lost) == [u / 4 for u in on_lost]
    b = Lookup(plan.project, plan, plan.select(features=["b:x"]), online.served())
    with pytest.raises(OnlineDataLost, match=f"127.0.0.1:{lost} lost the online store's keys"):
        read(runner, reader, b, on_lost)
    online.close()
    runner.close()


def two_row_views() -> Plan:
    user = Entity("user", join_keys={"user_id": Int64})
    src = Source("src", path="unused.parquet", timestamp="ts")
    views = {name: FeatureView(name, entity=user, source=src, fields=[Field("x", Float64)])
             for name in ("a", "b")}
    return build_plan(f"clustertwo{time.monotonic_ns()}", Definitions(
        entities={"user": user}, sources={"src": src}, views=views), kernel_cache=None)


def materialize(online: OnlineStore, view: ViewPlan, users: list[int], expected: str | None
                ) -> None:
    storage = online.new_storage(view)
    online.write_rows(view, storage, rows_batch(users, [(1, 1, 0)] * len(users),
                                                [u / 4 for u in users]), fresh=True)
    online.flush()
    online.activate(view, storage, NOW, len(users), expected)


@settings(deadline=None)  # the first example compiles (or loads) the kernel
@given(st.lists(st.text(alphabet="ab{}|%é", max_size=8), min_size=1, max_size=20))
def test_compiled_slots_are_redis_slots(keys: list[str]) -> None:
    """The compiled slots of a read's keys are Redis's (redis-py's reference), hash tags
    included: empty, unclosed, several."""
    encoded = [k.encode() for k in keys]
    offsets = np.zeros(len(keys) + 1, np.int64)
    np.cumsum([len(k) for k in encoded], out=offsets[1:])
    expected = [redis.crc.key_slot(k) for k in encoded]
    assert key_slots(np.frombuffer(b"".join(encoded), np.uint8), offsets).tolist() == expected
    assert [key_slot(k) for k in keys] == expected


def test_cluster_urls_are_read_with_clear_errors() -> None:
    settings = parse("redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001?ssl_cert_reqs=none"
                     .replace("redis+", "rediss+"))
    assert settings.cluster == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert settings.password == "p@ss" and settings.username == "u" and settings.tls
    assert settings.where == "rediss+cluster://u:***@10.0.0.1:7000,10.0.0.2:7001"
    for url, problem in [("redis+cluster://", "no nodes"), ("redis+cluster://h:1,,h:2", "no nodes"),
                         ("redis+cluster://h:1/2", "only database 0"),
                         ("redis+cluster://h:port", "redis\\+cluster://.*port is not a number")]:
        with pytest.raises(FeatureStoreError, match=problem):
            parse(url)


def test_an_unreachable_cluster_is_unavailable_without_its_password() -> None:
    url = "redis+cluster://:s3cret@127.0.0.1:1,127.0.0.1:2"
    with pytest.raises(OnlineUnavailable, match=r"redis\+cluster://:\*\*\*@127") as caught:
        OnlineStore(url, "p", timeout=0.5)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(OnlineUnavailable, match="no node of the Redis Cluster"):
        asyncio.run(OnlineReader(url, "p").served(timeout=2.0))
