"""Streaming pushes through the library, the gRPC server and the CLI, against a real Redis and
a real `featurestore serve` process: bad batches are refused whole (no log file, no Redis
change, no training-set change), a push before materialization says to materialize, a batch
id applies once, and served windowed values after a push equal the training set at the
as-of time the server used.

Event times are relative to the wall clock, which online tile expiry follows."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import polars as pl
import pyarrow as pa
import pytest
import redis
from push_kit import (
    DAY,
    FEATURES,
    HOUR,
    MINUTE,
    SECOND,
    SERVICE,
    at,
    clicks_events,
    drop_project,
    now_us,
    tx_events,
    write_repo,
)
from redis_kit import online_of, redis_client
from serving_kit import Server, cli, start_server, stop_server

from featurestore import Client, FeatureStore, FeatureStoreError
from featurestore.definitions.types import Int64
from featurestore.errors import DeadlineExceeded, NotAppliedError
from featurestore.offline.event_log import content_id, read_events_table
from featurestore.online.lookup import Lookup
from featurestore.push import push
from featurestore.serving.client import ServingError
from featurestore.values.columns import from_arrow, to_arrow


@dataclass(frozen=True)
class Env:
    root: Path
    project: str
    store: FeatureStore
    redis: redis.Redis
    server: Server
    client: Client  # a gRPC client of `server`


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Env]:
    """A windowed repo with a little history (users 1 and 2), `spend` materialized now and
    `activity` not, and one server for the whole module. Each test pushes its own users."""
    root = tmp_path_factory.mktemp("push")
    project = f"push{os.getpid()}{root.name.replace('-', '_')}"
    r = redis_client(redis_url)
    drop_project(r, project)
    t0 = now_us()
    store = write_repo(root, project, redis_url, tx_events([
        (1, 2.0, t0 - 20 * MINUTE), (1, 4.0, t0 - 3 * HOUR), (1, 8.0, t0 - 2 * DAY),
        (2, 1.5, t0 - 40 * MINUTE)]))
    store.materialize(views=["spend"])
    server = start_server(root, root.parent / f"{root.name}-serve.log")
    try:
        with Client(server.target) as client:
            yield Env(root, project, store, r, server, client)
    finally:
        stop_server(server)
        drop_project(r, project)
        r.close()


# --- what a push leaves behind ---------------------------------------------------------------

def redis_state(env: Env) -> dict[bytes, tuple[bytes | None, int]]:
    """Every key of the project: its serialized value and its expiry time (ms, -1 for none)."""
    return {key: (env.redis.dump(key), env.redis.execute_command("PEXPIRETIME", key))
            for key in env.redis.scan_iter(match=f"{env.project}:*")}


def assert_redis_unchanged(before: dict[bytes, tuple[bytes | None, int]],
                           after: dict[bytes, tuple[bytes | None, int]]) -> None:
    """Equal, except for keys that expired meanwhile (tiles expire by the wall clock)."""
    now_ms = time.time_ns() // 1_000_000
    expected = {k: v for k, v in before.items()
                if k in after or not (v[0] is None or 0 < v[1] <= now_ms)}
    after = {k: v for k, v in after.items() if v[0] is not None or k in expected}
    assert after.keys() == expected.keys(), (
        f"keys added: {sorted(after.keys() - expected.keys())[:5]}, "
        f"removed: {sorted(expected.keys() - after.keys())[:5]}")
    changed = [k for k in after if after[k] != expected[k]]
    assert not changed, f"values or expiries changed: {changed[:5]}"


def log_files(root: Path, source: str) -> list[str]:
    """Everything in the source's pushed-event log, temporary files included."""
    directory = root / "pushed" / source
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def batch_files(root: Path, source: str, batch_id: str) -> list[str]:
    """The log files of exactly this batch id (`<ingest time>-<batch id>.parquet`)."""
    return [name for name in log_files(root, source)
            if name.split("-", 1)[-1] == f"{batch_id}.parquet"]


# --- reading features --------------------------------------------------------------------------

def offline(store: FeatureStore, users: list[int], as_of_us: int) -> list[dict[str, Any]]:
    labels = pl.DataFrame({"user_id": users, "event_timestamp": [at(as_of_us)] * len(users)},
                          schema={"user_id": pl.Int64, "event_timestamp": pl.Datetime("us", "UTC")})
    return store.training_set(labels, service=SERVICE).select(FEATURES).to_dicts()


def served(env: Env, users: list[int], as_of_us: int | None = None
           ) -> tuple[list[dict[str, Any]], int]:
    """Through the server: one dict of features per user, and the as-of time it used."""
    result = env.client.get_online_features(service=SERVICE, entities={"user_id": users},
                                            as_of=as_of_us)
    return [{f: row[f] for f in FEATURES} for row in result.to_dicts()], result.as_of_us


def expect(sum_1h: float, count_1h: int, sum_1d: float, count_1d: int) -> dict[str, Any]:
    return {"sum_1h": sum_1h, "count_1h": count_1h, "sum_1d": sum_1d, "count_1d": count_1d}


# --- 1. bad batches are refused whole ----------------------------------------------------------

AT_FAULT = [1, 10, 11]  # the users of the batches below: 1 has history, 10 and 11 have none


def good_batch(now: int) -> pl.DataFrame:
    return tx_events([(10, 5.0, now - 2 * MINUTE), (10, 7.0, now - MINUTE),
                      (11, 1.0, now - 3 * MINUTE), (1, 100.0, now - 4 * MINUTE)])


def with_column(name: str, values: list[Any], dtype: Any = None) -> Callable[[int], pl.DataFrame]:
    return lambda now: good_batch(now).with_columns(pl.Series(name, values, dtype))


def future_times(now: int) -> pl.DataFrame:
    ahead = pl.Series("event_ts", [at(now - MINUTE), at(now + 10 * MINUTE), at(now + HOUR),
                                   at(now)], pl.Datetime("us", "UTC"))
    return good_batch(now).with_columns(ahead)


# case -> (batch for the wall-clock time given, push arguments, what the message must say)
BAD_BATCHES: dict[str, tuple[Callable[[int], Any], dict[str, Any], list[str]]] = {
    "unknown source": (good_batch, {"source": "payments"},
                       ["unknown source 'payments'", "sources: clicks, tx"]),
    "missing amount column": (lambda now: good_batch(now).drop("amount"), {},
                              ["no column(s) amount", "it has user_id, event_ts"]),
    "missing timestamp column": (lambda now: good_batch(now).drop("event_ts"), {},
                                 ["no column(s) event_ts", "it has user_id, amount"]),
    "strings in a Float64 column": (with_column("amount", ["5.0", "seven", "1", "100"]), {},
                                    ["column 'amount'", "Float64", "'seven'"]),
    "null entity key": (with_column("user_id", [10, None, 11, None], pl.Int64), {},
                        ["column 'user_id' is null in row(s) 1, 3"]),
    "null event timestamp": (lambda now: good_batch(now).with_columns(pl.Series(
        "event_ts", [at(now), at(now), None, at(now)], pl.Datetime("us", "UTC"))), {},
        ["column 'event_ts' is null in row(s) 2"]),
    "event time beyond the future skew": (future_times, {},
                                          ["row(s) 1, 2 have an event time more than 300 s"]),
    "naive timestamps": (lambda now: good_batch(now).with_columns(
        pl.col("event_ts").dt.replace_time_zone(None)), {},
        ["column 'event_ts' holds timestamps without a time zone"]),
    "naive timestamps from pandas": (lambda now: good_batch(now).with_columns(
        pl.col("event_ts").dt.replace_time_zone(None)).to_pandas(), {},
        ["column 'event_ts' holds timestamps without a time zone"]),
    "invalid batch id": (good_batch, {"batch_id": "a b/c"}, ["batch id 'a b/c'"]),
    "event time at the int64 minimum": (lambda now: ancient_times(now), {},
                                        ["row(s) 1 have an event time before 0001-01-01"]),
}


def ancient_times(now: int) -> pa.Table:
    table = good_batch(now).to_arrow()
    ts = pa.array([now, -2**63 + 1, now, now], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return table.set_column(table.schema.get_field_index("event_ts"), "event_ts", ts)


def assert_refused_whole(env: Env, attempt: Callable[[], Any],
                         error: type[Exception] = FeatureStoreError) -> Exception:
    """Runs a push that must fail, and checks it changed nothing: no log file under any
    source, no Redis key or value of the project, no training-set value at a later time (at
    which any event the push had logged would be visible)."""
    later = now_us() + MINUTE
    files = {s: log_files(env.root, s) for s in ("tx", "clicks", "payments")}
    state = redis_state(env)
    training = offline(env.store, AT_FAULT, later)
    with pytest.raises(error) as raised:
        attempt()
    assert_redis_unchanged(state, redis_state(env))
    assert {s: log_files(env.root, s) for s in files} == files
    assert offline(env.store, AT_FAULT, later) == training
    return raised.value


@pytest.mark.parametrize("case", BAD_BATCHES)
def test_bad_batches_are_refused_whole(env: Env, case: str) -> None:
    build, args, messages = BAD_BATCHES[case]
    kwargs = {"source": "tx", "batch_id": f"bad-{case.replace(' ', '_')}", **args}
    events = build(now_us())
    exc = assert_refused_whole(env, lambda: env.store.push(events=events, **kwargs))
    assert not isinstance(exc, NotAppliedError), exc
    for message in messages:
        assert message in str(exc), str(exc)


def test_a_push_whose_deadline_passed_before_logging_keeps_nothing(env: Env) -> None:
    """The log is the point of no return: a deadline already past refuses the push whole."""
    with online_of(env.redis, env.project) as online:
        exc = assert_refused_whole(env, lambda: push(
            env.store.plan, env.root, online, "tx", good_batch(now_us()).to_arrow(), "late-one",
            deadline=time.monotonic() - 0.001), DeadlineExceeded)
    assert "nothing was kept, retry with the same batch_id" in str(exc)


def test_bad_batches_without_a_batch_id_are_refused_whole(env: Env) -> None:
    """The default id is a content hash; that path validates the same way."""
    events = good_batch(now_us()).with_columns(pl.Series("user_id", [None, 10, 11, 1], pl.Int64))
    exc = assert_refused_whole(env, lambda: env.store.push("tx", events))
    assert "column 'user_id' is null in row(s) 0" in str(exc)


def test_a_bad_batch_to_an_unmaterialized_view_is_refused_as_bad(env: Env) -> None:
    """The batch is checked before the online state: a bad batch for a view that is not
    materialized yet is reported (and refused whole) for what is wrong with it."""
    exc = assert_refused_whole(env, lambda: env.store.push(
        "clicks", clicks_events([(1, 1, now_us())]).drop("clicks"), batch_id="bad-clicks"))
    assert "no column(s) clicks" in str(exc) and not isinstance(exc, NotAppliedError)


def test_max_future_lets_events_ahead_of_the_clock_through(env: Env) -> None:
    now = now_us()
    events = tx_events([(12, 3.0, now + 10 * MINUTE), (12, 1.0, now - MINUTE)])
    exc = assert_refused_whole(env, lambda: env.store.push("tx", events, batch_id="ahead"))
    assert "row(s) 0 have an event time more than 300 s after now" in str(exc)
    result = env.store.push("tx", events, batch_id="ahead", max_future=3600)
    assert (result.rows, result.duplicate) == (2, False) and result.tiles > 0
    assert len(batch_files(env.root, "tx", "ahead")) == 1
    # Now only the past event counts; once its time has come, the future one too.
    as_of = now_us()
    assert served(env, [12], as_of)[0] == offline(env.store, [12], as_of) == [expect(1.0, 1, 1.0, 1)]
    later = now + 11 * MINUTE
    assert offline(env.store, [12], later) == [expect(4.0, 2, 4.0, 2)]
    assert served(env, [12], later)[0] == [expect(4.0, 2, 4.0, 2)]


# the gRPC subset: case -> (source, batch for the wall-clock time given, batch id, message)
BAD_PUSHES: dict[str, tuple[str, Callable[[int], pl.DataFrame], str, str]] = {
    "unknown source": ("payments", good_batch, "grpc-bad-source", "unknown source 'payments'"),
    "null entity key": ("tx", with_column("user_id", [10, None, 11, None], pl.Int64),
                        "grpc-bad-key", "column 'user_id' is null in row(s) 1, 3"),
    "event time beyond the future skew": ("tx", future_times, "grpc-bad-future",
                                          "row(s) 1, 2 have an event time more than 300 s"),
    "missing batch id": ("tx", good_batch, "", "batch_id is required"),
}


@pytest.mark.parametrize("case", BAD_PUSHES)
def test_bad_pushes_through_the_server_are_refused_whole(env: Env, case: str) -> None:
    source, build, batch_id, message = BAD_PUSHES[case]
    events = build(now_us())
    exc = assert_refused_whole(env, lambda: env.client.push(source, events, batch_id),
                               ServingError)
    assert isinstance(exc, ServingError)
    assert exc.code == grpc.StatusCode.INVALID_ARGUMENT, exc
    assert message in exc.details, exc.details


# --- 2. pushing before the windowed view is materialized ---------------------------------------

def test_push_before_materialization_asks_to_materialize(env: Env) -> None:
    events = clicks_events([(1, 2, now_us() - MINUTE)])
    state = redis_state(env)
    with pytest.raises(NotAppliedError) as raised:
        env.store.push("clicks", events, batch_id="early-lib")
    assert "feature view 'activity'" in str(raised.value)
    assert "run `featurestore materialize`" in str(raised.value)
    with pytest.raises(ServingError) as refused:
        env.client.push("clicks", events, "early-grpc")
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION, refused.value
    assert "run `featurestore materialize`" in refused.value.details
    assert_redis_unchanged(state, redis_state(env))  # no tile, no batch mark


# --- 3. a batch id applies once ----------------------------------------------------------------

def idempotency_batch(user: int, now: int) -> pl.DataFrame:
    return tx_events([(user, 5.0, now - 7 * MINUTE), (user, 2.5, now - 50 * MINUTE),
                      (user, 40.0, now - 3 * HOUR)])


def test_a_batch_id_pushed_twice_through_the_library_applies_once(env: Env) -> None:
    events = idempotency_batch(20, now_us())
    first = env.store.push("tx", events, batch_id="idem-lib")
    assert (first.rows, first.duplicate, first.too_late) == (3, False, 0) and first.tiles > 0
    as_of = now_us()
    values = served(env, [20], as_of)[0]
    assert values == [expect(7.5, 2, 47.5, 3)]
    state = redis_state(env)
    again = env.store.push("tx", events, batch_id="idem-lib")
    assert (again.duplicate, again.tiles, again.ingested_at_us) == (True, 0, first.ingested_at_us)
    assert_redis_unchanged(state, redis_state(env))
    # the server takes the same id for the same batch
    reply = env.client.push("tx", events, "idem-lib")
    assert (reply.duplicate, reply.tiles, reply.ingested_at_us) == (True, 0, first.ingested_at_us)
    assert served(env, [20], as_of)[0] == values
    assert len(batch_files(env.root, "tx", "idem-lib")) == 1
    assert offline(env.store, [20], as_of) == values


def test_a_batch_id_pushed_twice_through_the_server_applies_once(env: Env) -> None:
    events = idempotency_batch(21, now_us())
    first = env.client.push("tx", events, "idem-grpc")
    assert (first.rows, first.duplicate, first.too_late) == (3, False, 0) and first.tiles > 0
    as_of = now_us()
    values = served(env, [21], as_of)[0]
    assert values == [expect(7.5, 2, 47.5, 3)]
    state = redis_state(env)
    again = env.client.push("tx", events, "idem-grpc")
    assert (again.duplicate, again.tiles, again.rows) == (True, 0, 3)
    assert again.ingested_at_us == first.ingested_at_us
    assert_redis_unchanged(state, redis_state(env))
    assert served(env, [21], as_of)[0] == values
    assert len(batch_files(env.root, "tx", "idem-grpc")) == 1
    assert offline(env.store, [21], as_of) == values


def test_identical_content_without_a_batch_id_applies_once(env: Env) -> None:
    events = idempotency_batch(22, now_us())
    first = env.store.push("tx", events)
    assert first.batch_id == content_id(events.to_arrow()) and not first.duplicate
    as_of = now_us()
    values = served(env, [22], as_of)[0]
    assert values == [expect(7.5, 2, 47.5, 3)]
    again = env.store.push("tx", events.clone())
    assert (again.batch_id, again.duplicate, again.tiles) == (first.batch_id, True, 0)
    assert served(env, [22], as_of)[0] == values
    assert len(batch_files(env.root, "tx", first.batch_id)) == 1
    # other content is another batch
    other = env.store.push("tx", events.with_columns(pl.col("amount") + 1.0))
    assert other.batch_id != first.batch_id and not other.duplicate
    after = now_us()
    assert served(env, [22], after)[0] == offline(env.store, [22], after) == \
        [expect(17.0, 4, 98.0, 6)]


# --- 4. the CLI --------------------------------------------------------------------------------

def test_cli_push(env: Env, tmp_path: Path) -> None:
    now = now_us()
    path = tmp_path / "events.parquet"
    tx_events([(30, 4.0, now - 5 * MINUTE), (30, 6.0, now - 2 * HOUR)]).write_parquet(path)
    batch_id = content_id(read_events_table(path))
    pushed = cli("push", "tx", path, "--repo", env.root).stdout
    assert f"2 events pushed to tx (batch {batch_id})" in pushed, pushed
    again = cli("push", "tx", path, "--repo", env.root).stdout
    assert f"2 events already applied to tx (batch {batch_id})" in again, again
    assert len(batch_files(env.root, "tx", batch_id)) == 1
    as_of = now_us()
    assert served(env, [30], as_of)[0] == offline(env.store, [30], as_of) == \
        [expect(4.0, 1, 10.0, 2)]

    bad = tmp_path / "bad.parquet"
    tx_events([(30, 1.0, now - MINUTE)]).drop("amount").write_parquet(bad)
    files, state = log_files(env.root, "tx"), redis_state(env)
    failed = cli("push", "tx", bad, "--repo", env.root, expect=1)
    assert "error:" in failed.stderr and "no column(s) amount" in failed.stderr, failed.stderr
    assert "pushed" not in failed.stdout
    assert log_files(env.root, "tx") == files
    assert_redis_unchanged(state, redis_state(env))

    remote = tmp_path / "remote.parquet"
    tx_events([(31, 2.0, now - 5 * MINUTE), (31, 3.0, now - 3 * HOUR)]).write_parquet(remote)
    through = cli("push", "tx", remote, "--repo", env.root, "--server", env.server.target).stdout
    assert f"2 events pushed to tx through {env.server.target}" in through, through
    assert len(batch_files(env.root, "tx", content_id(read_events_table(remote)))) == 1
    as_of = now_us()
    assert served(env, [31], as_of)[0] == offline(env.store, [31], as_of) == \
        [expect(2.0, 1, 5.0, 2)]


# --- 5. fresh windowed features after a push ---------------------------------------------------

def test_serves_fresh_windowed_features_after_a_push(env: Env) -> None:
    users = [1, 2, 40, 999]
    before, _ = served(env, users)
    assert before[0] == expect(2.0, 1, 6.0, 2)  # user 1's history
    now = now_us()
    reply = env.client.push("tx", tx_events([
        (40, 12.5, now - 3 * MINUTE), (40, 0.5, now - 30 * MINUTE), (1, 10.0, now - MINUTE),
        (40, 99.0, now - 30 * HOUR)]), "fresh-1")  # older than every window: never counted
    assert (reply.rows, reply.duplicate, reply.too_late) == (4, False, 1) and reply.tiles > 0
    lo = now_us()
    values, as_of = served(env, users)
    assert lo <= as_of <= now_us() and as_of >= reply.ingested_at_us
    assert values[0] == expect(12.0, 2, 16.0, 3)
    assert values[1] == before[1]
    assert values[2] == expect(13.0, 2, 13.0, 2)
    assert values == offline(env.store, users, as_of)


# --- library bugs, kept as strict expected failures --------------------------------------------

def test_a_batch_id_ending_another_is_a_batch_of_its_own(env: Env) -> None:
    now = now_us()
    env.store.push("tx", tx_events([(50, 1.0, now - MINUTE)]), batch_id="suffix-clash")
    env.store.push("tx", tx_events([(50, 2.0, now - MINUTE)]), batch_id="clash")
    as_of = now_us()
    assert served(env, [50], as_of)[0] == offline(env.store, [50], as_of)
    assert len(batch_files(env.root, "tx", "clash")) == 1


def scratch(root: Path, redis_url: str, history: pl.DataFrame) -> tuple[FeatureStore, redis.Redis]:
    project = f"pushscratch{os.getpid()}{root.name.replace('-', '_')}"
    client = redis_client(redis_url)
    drop_project(client, project)
    return write_repo(root, project, redis_url, history), client


def direct_read(store: FeatureStore, client: redis.Redis, users: list[int], as_of: int
                ) -> list[dict[str, Any]]:
    """An online read without a server."""
    plan = store.plan
    with online_of(client, plan.project) as online:
        lookup = Lookup(plan.project, plan, plan.select(service=SERVICE), online.served())
        result = online.read(lookup, {"user_id": from_arrow(pa.array(users, pa.int64()), Int64)},
                             {}, as_of)
    columns = {f.name: to_arrow(f.column, f.dtype).to_pylist() for f in result.features}
    return [{f: columns[f][i] for f in FEATURES} for i in range(len(users))]


def test_materializing_again_keeps_pushed_events(tmp_path: Path, redis_url: str) -> None:
    hop_start = (now_us() - 15 * MINUTE) // (5 * MINUTE) * (5 * MINUTE)  # one 5m and 1h tile
    store, client = scratch(tmp_path, redis_url, tx_events([(1, 1.0, hop_start + SECOND)]))
    try:
        store.materialize()
        store.push("tx", tx_events([(1, 10.0, hop_start + 2 * SECOND)]), batch_id="b1")
        store.materialize()
        as_of = now_us()
        assert direct_read(store, client, [1], as_of) == offline(store, [1], as_of)
    finally:
        drop_project(client, store.plan.project)
        client.close()


def test_retrying_a_push_refused_before_materialization_counts_it_once(
        tmp_path: Path, redis_url: str) -> None:
    now = now_us()
    store, client = scratch(tmp_path, redis_url, tx_events([(1, 1.0, now - 30 * MINUTE)]))
    events = tx_events([(1, 10.0, now - 10 * MINUTE)])
    try:
        with pytest.raises(NotAppliedError, match="run `featurestore materialize` before pushing"):
            store.push("tx", events, batch_id="b1")
        offline(store, [1], now_us())
        store.materialize()
        store.push("tx", events, batch_id="b1")
        as_of = now_us()
        assert direct_read(store, client, [1], as_of) == offline(store, [1], as_of)
    finally:
        drop_project(client, store.plan.project)
        client.close()
