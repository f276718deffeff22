"""Operation under concurrency and failure, with real processes, a Redis of this module's own
and a real server: pushes while materializations run; `featurestore materialize`, a CLI push,
a library push and the server in the middle of a push killed by SIGKILL at seeded points (the
killed pushes retried with their batch id, as a producer does); Redis restarted with and
without its data, or its keys deleted. After each, `featurestore parity`'s check finds no value
where serving and the training set disagree, and every batch id is logged once. Event times
follow the wall clock (tiles expire by it)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2
from push_kit import SECOND, SERVICE, drop_project, now_us, tx_events, write_repo
from redis_kit import RedisServer, online_of
from serving_kit import Server, cli, health, start_server, stop_server, wait_for

from featurestore import Client, FeatureStore, materialization
from featurestore.materialization import RECLAIM_GRACE_MS
from featurestore.offline import event_log
from featurestore.online.keys import lock_key
from featurestore.parity import check
from featurestore.serving.client import ServingError

USERS = 400


@dataclass(frozen=True)
class Env:
    root: Path
    project: str
    store: FeatureStore
    redis: redis.Redis
    server: Server


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server these tests may stop, restart and empty."""
    server = RedisServer(tmp_path_factory.mktemp("chaos-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, own_redis: RedisServer) -> Iterator[Env]:
    redis_url = own_redis.url
    root = tmp_path_factory.mktemp("chaos")
    project = f"chaos{os.getpid()}"
    rng, t0 = random.Random(7), now_us()
    store = write_repo(root, project, redis_url, tx_events(
        [(u, round(rng.uniform(-50, 50), 2), t0 - rng.randrange(1, 20 * 3600) * SECOND)
         for u in range(USERS) for _ in range(30)]))
    store.materialize(views=["spend"])
    server = start_server(root, root.parent / f"{root.name}-serve.log")
    r = redis.Redis.from_url(redis_url)
    try:
        yield Env(root, project, store, r, server)
    finally:
        stop_server(server)
        drop_project(r, project)
        r.close()


def assert_parity(env: Env) -> None:
    with Client(env.server.target) as client:
        report = check(env.store, client, SERVICE, sample=USERS, as_of_us=now_us())
    assert report.values > 0
    assert report.mismatches == [], report.mismatches[:3]


def batch_files(env: Env, batch_id: str) -> list[Path]:
    return [p for p in (env.root / "pushed" / "tx").glob("*.parquet")
            if p.name.split("-", 1)[1] == f"{batch_id}.parquet"]


def logged_once(env: Env, batch_ids: list[str]) -> None:
    names = [p.name.split("-", 1)[1] for p in (env.root / "pushed" / "tx").glob("*.parquet")]
    assert sorted(b for b in names if b.removesuffix(".parquet") in set(batch_ids)) == \
        sorted(f"{b}.parquet" for b in batch_ids)


def test_pushes_during_materializations_are_neither_lost_nor_doubled(env: Env) -> None:
    """Observation 1: pushes acknowledged while materializations rebuild the tiles all count
    online, once (they were lost: the rebuild wrote over them)."""
    acked: list[str] = []
    stop = threading.Event()

    def pusher() -> None:
        store, rng = FeatureStore(env.root), random.Random(11)
        while not stop.is_set() or len(acked) < 10:
            t = now_us()
            batch = tx_events([(rng.randrange(USERS), float(rng.randrange(1, 9)), t - SECOND)
                               for _ in range(5)])
            acked.append(store.push("tx", batch, batch_id=f"during-{len(acked)}").batch_id)
    thread = threading.Thread(target=pusher)
    thread.start()
    try:
        for _ in range(3):
            env.store.materialize(views=["spend"])
    finally:
        stop.set()
        thread.join(60)
    assert len(acked) >= 10
    logged_once(env, acked)
    assert_parity(env)
    with Client(env.server.target) as client:  # `featurestore parity`'s default time
        report = check(env.store, client, SERVICE, sample=USERS)
    assert report.as_of_us == env.store.offline.last_push_us("tx")
    assert report.values > 0 and report.mismatches == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_killed_materialization_changes_nothing_served(env: Env, seed: int) -> None:
    """Observation 3: SIGKILL of `featurestore materialize` at a seeded point leaves the
    served values as they were; the next run succeeds and reclaims what the killed one left."""
    online = online_of(env.redis, env.project)
    before = online.served()["spend"].storage
    delay = random.Random(seed).uniform(0.3, 3.0)
    proc = subprocess.Popen([sys.executable, "-m", "featurestore.cli", "materialize", "--repo",
                             str(env.root), "--view", "spend"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    print(f"killed materialize after {delay:.2f} s")
    served = online.served()["spend"].storage
    assert_parity(env)  # whichever storage is served (the old, or the new if it had flipped)
    env.redis.delete(lock_key(env.project, "spend"))  # what an operator does for a dead run
    env.store.materialize(views=["spend"])
    now = online.served()["spend"].storage
    assert now not in (before, served)
    for storage in online.storages()["spend"] - {now}:
        for key in env.redis.scan_iter(match=f"{env.project}:spend:{storage}:*", count=1000):
            # -1 (no expiry) or more than the grace fails. Reclaimed when this materialize
            # began, a key may be in its last millisecond (0) or gone since the scan (-2)
            # when the run took about the grace (a loaded machine)
            ttl = env.redis.pttl(key)
            assert ttl != -1 and ttl <= RECLAIM_GRACE_MS, (key, ttl)
    assert_parity(env)


def test_a_running_materialization_holds_the_view(env: Env) -> None:
    online = online_of(env.redis, env.project)
    with online.lock("spend"), pytest.raises(Exception, match="another materialization"):
        env.store.materialize(views=["spend"])


def test_lost_online_data_is_refused_not_served(env: Env) -> None:
    """Observation 4: with the project's keys gone (Redis restarted without its data), no
    request is answered with values; health goes NOT_SERVING and comes back by itself after
    a materialization."""
    drop_project(env.redis, env.project)
    with Client(env.server.target) as client:
        with pytest.raises(ServingError) as caught:
            client.get_online_features(service=SERVICE, entities={"user_id": [1, 2]})
        assert caught.value.code in (grpc.StatusCode.UNAVAILABLE,
                                     grpc.StatusCode.FAILED_PRECONDITION)
        assert "materialize" in str(caught.value)
        wait_for("health NOT_SERVING", lambda: health(env.server.target)
                 == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=10)
        env.store.materialize(views=["spend"])
        wait_for("health SERVING", lambda: health(env.server.target)
                 == health_pb2.HealthCheckResponse.SERVING, timeout=10)
    assert_parity(env)


def test_redis_restarted_with_its_data_serves_again(env: Env, own_redis: RedisServer) -> None:
    env.redis.save()  # what persistence gives: the restarted server loads this snapshot
    own_redis.stop()
    own_redis.start()
    wait_for("health SERVING", lambda: health(env.server.target)
             == health_pb2.HealthCheckResponse.SERVING, timeout=15)
    assert_parity(env)


def test_redis_restarted_without_its_data_is_refused_until_materialized(
        env: Env, own_redis: RedisServer) -> None:
    own_redis.stop()
    (own_redis.workdir / "dump.rdb").unlink(missing_ok=True)
    own_redis.start()
    assert env.redis.dbsize() == 0
    with Client(env.server.target) as client:
        wait_for("requests refused, never answered from an empty Redis",
                 lambda: refused(client), timeout=15)
        wait_for("health NOT_SERVING", lambda: health(env.server.target)
                 == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=10)
        env.store.materialize(views=["spend"])
        wait_for("health SERVING", lambda: health(env.server.target)
                 == health_pb2.HealthCheckResponse.SERVING, timeout=10)
    assert_parity(env)


def refused(client: Client) -> bool:
    """A request right after the restart: refused, or (still reconnecting) unavailable; an
    OK answer from the empty Redis fails the test."""
    try:
        client.get_online_features(service=SERVICE, entities={"user_id": [1, 2]})
    except ServingError as exc:
        return exc.code == grpc.StatusCode.UNAVAILABLE and "materialize" in str(exc)
    pytest.fail("an empty Redis was served with OK")


PUSH_SCRIPT = """
import sys
from featurestore import FeatureStore
FeatureStore(sys.argv[1]).push("tx", sys.argv[2], batch_id=sys.argv[3])
"""


@pytest.mark.parametrize(("how", "seed"), [("cli", 1), ("cli", 2), ("library", 3),
                                           ("library", 4)])
def test_a_killed_push_retried_counts_once(env: Env, tmp_path: Path, how: str,
                                           seed: int) -> None:
    """SIGKILL of a pushing process at a seeded point, then the producer's retry with the
    same batch id: the batch is logged once and counted once, online and offline."""
    rng, batch_id = random.Random(seed), f"killed-{how}-{seed}"
    path = tmp_path / "batch.parquet"
    tx_events([(rng.randrange(USERS), float(rng.randrange(1, 99)), now_us() - SECOND)
               for _ in range(50)]).write_parquet(path)
    command = (["-m", "featurestore.cli", "push", "tx", str(path), "--repo", str(env.root),
                "--batch-id", batch_id] if how == "cli"
               else ["-c", PUSH_SCRIPT, str(env.root), str(path), batch_id])
    proc = subprocess.Popen([sys.executable, *command], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    delay = rng.uniform(0.5, 2.5)  # the interpreter's start, then the push
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    killed_while_running = proc.wait() == -signal.SIGKILL
    print(f"{how} push killed after {delay:.2f} s (still running: {killed_while_running}, "
          f"batch logged: {bool(batch_files(env, batch_id))})")
    retry = env.store.push("tx", path, batch_id=batch_id)
    assert retry.rows == 50
    logged_once(env, [batch_id])
    assert_parity(env)


def test_a_server_killed_during_a_push_then_retried_counts_once(env: Env,
                                                                 tmp_path: Path) -> None:
    """SIGKILL of `featurestore serve` while it handles a push; the retry through another
    server applies the batch once."""
    server = start_server(env.root, tmp_path / "doomed.log")
    rng, batch_id = random.Random(5), "server-killed"
    events = tx_events([(rng.randrange(USERS), 1.0, now_us() - SECOND) for _ in range(20_000)])
    outcome: list[object] = []

    def send() -> None:
        try:
            with Client(server.target) as client:
                outcome.append(client.push("tx", events, batch_id))
        except ServingError as exc:
            outcome.append(exc)
    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(rng.uniform(0.05, 0.4))
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    sender.join(30)
    print(f"push through the killed server: {outcome}, batch logged: "
          f"{bool(batch_files(env, batch_id))}")
    with Client(env.server.target) as client:
        retry = client.push("tx", events, batch_id)
    assert retry.rows == 20_000
    logged_once(env, [batch_id])
    assert_parity(env)


def test_redis_memory_does_not_grow_across_rematerializations(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each materialization writes a new storage; the superseded one is reclaimed (here at
    once instead of after the read grace), so ten re-materializations leave Redis as one."""
    monkeypatch.setattr(materialization, "RECLAIM_GRACE_MS", 0)
    env.store.materialize(views=["spend"])
    keys, memory = env.redis.dbsize(), env.redis.info("memory")["used_memory"]
    for _ in range(10):
        env.store.materialize(views=["spend"])
    after = env.redis.info("memory")["used_memory"]
    print(f"used_memory {memory} -> {after} bytes over 10 re-materializations; {keys} keys")
    assert env.redis.dbsize() == keys
    assert after < memory * 1.1
    assert_parity(env)


def test_a_compacted_log_keeps_parity_and_exactly_once(env: Env) -> None:
    """`featurestore compact-log` merges the batch files pushed so far; materializing from
    the compacted log keeps parity, and retries of compacted batch ids stay duplicates."""
    env.store.push("tx", tx_events([(1, 2.0, now_us() - SECOND)]), batch_id="to-compact")
    before = len(list((env.root / "pushed" / "tx").glob("*.parquet")))
    time.sleep(1.1)
    proc = cli("compact-log", "--repo", env.root, "--older-than", "1s")
    assert f"tx: {before} batches merged" in proc.stdout, proc.stdout
    assert list((env.root / "pushed" / "tx").glob("*.parquet")) == []
    env.store.materialize(views=["spend"])
    assert_parity(env)
    retry = env.store.push("tx", tx_events([(1, 1.0, now_us())]), batch_id="to-compact")
    assert retry.duplicate
    assert sum(b == "to-compact" for path in event_log.files(env.root, "tx")
               for b in event_log.batches(path)) == 1
