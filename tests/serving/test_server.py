"""A real `featurestore serve` process over a real socket and a real Redis: served values and
statuses equal the training set's bit for bit, errors carry their documented status codes,
health follows Redis through an outage, and reflection describes the service."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import polars as pl
import pytest
import redis
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from repo_kit import PROFILE_DEFS, T0, write_repo
from serving_kit import (
    END,
    NOT_SERVING,
    SERVING,
    Example,
    OnlineStore,
    Server,
    cli,
    health,
    start_server,
    stop_server,
    wait_for,
)

from featurestore import Client, FeatureStore, FeatureStoreError
from featurestore.online.managed import ManagedRedis
from featurestore.serving.client import ServingError
from featurestore.serving.proto import SERVICE, method, pb
from featurestore.values.status import Status

VIEW_FEATURES = ["age", "country", "credit_limit", "is_premium", "account_opened_at", "category",
                 "avg_ticket", "risk_score", "is_online", "n_prior_txns", "last_txn_at",
                 "chargebacks"]
TRANSFORMS = ["amount_to_limit", "amount_vs_merchant_avg", "is_foreign",
              "seconds_since_last_visit", "account_age_days", "pair_chargeback_rate"]
WINDOWED = ["amount_sum_7d", "amount_count_1d", "amount_max_1h", "amount_stddev_7d",
            "merchant_id_count_distinct_1d"]
UNSEEN_USER, UNSEEN_MERCHANT = 10**9, "M99999"


def labels(repo: Path) -> pl.DataFrame:
    """Pairs with history, random pairs and never-seen entities, all as of END, with request
    inputs that include NaN, -0.0, infinities, subnormals and non-ASCII text."""
    rng = np.random.default_rng(7)
    history = (pl.read_parquet(repo / "data" / "user_merchant_daily.parquet")
               .select("user_id", "merchant_id").unique().sort("user_id", "merchant_id").head(150))
    n = 250
    random_pairs = pl.DataFrame({
        "user_id": np.append(rng.integers(1, 301, n - 2), [UNSEEN_USER, 1]),
        "merchant_id": [*(f"M{i:05d}" for i in rng.integers(1, 51, n - 2)), "M00001",
                        UNSEEN_MERCHANT]})
    keys = pl.concat([history, random_pairs])
    amounts = [9.5, 120.0, -0.0, 0.0, math.nan, math.inf, 5e-324, 3000.0]
    # Some amounts are missing: online requests send them as nulls, labels hold nulls.
    missing = pl.Series(np.arange(keys.height) % 9 == 4)
    return keys.with_columns(
        event_timestamp=pl.lit(END),
        amount=pl.when(missing).then(None).otherwise(pl.Series(rng.choice(amounts, keys.height))),
        txn_country=pl.Series(rng.choice(["US", "BR", "DE", "日本", ""], keys.height)),
        txn_ts=pl.Series([END - timedelta(seconds=int(s))
                          for s in rng.integers(0, 400 * 86_400, keys.height)]),
    )


def asked(frame: pl.DataFrame) -> dict[str, Any]:
    """The get_online_features arguments asking fraud_v1 for the labels' rows as of END."""
    return dict(service="fraud_v1",
                entities={"user_id": frame["user_id"].to_list(),
                          "merchant_id": frame["merchant_id"].to_list()},
                request={"amount": frame["amount"].to_list(),
                         "txn_country": frame["txn_country"].to_list(),
                         "txn_ts": frame["txn_ts"].to_list()},
                as_of=END)


def served(client: Client, frame: pl.DataFrame) -> pl.DataFrame:
    return client.get_online_features(**asked(frame)).to_polars(statuses=True)


def assert_same(online: pl.DataFrame, offline: pl.DataFrame) -> None:
    for name in VIEW_FEATURES + TRANSFORMS:
        status = f"{name}__status"
        assert online[status].cast(pl.String).to_list() == \
            offline[status].cast(pl.String).to_list(), status
        got, want = online[name], offline[name]
        assert got.dtype == want.dtype, name
        assert got.is_null().to_list() == want.is_null().to_list(), name
        if got.dtype == pl.Float64:  # bit patterns: NaN, -0.0 and subnormals included
            assert got.fill_null(0.0).to_numpy().view(np.int64).tolist() == \
                want.fill_null(0.0).to_numpy().view(np.int64).tolist(), name
        else:
            assert got.to_list() == want.to_list(), name


def test_served_values_equal_the_training_set(example: Example, server: Server) -> None:
    frame = labels(example.repo)
    offline = example.store.training_set(frame, service="fraud_v1", statuses=True)
    with Client(server.target) as client:
        online = served(client, frame)
        assert_same(online, offline)
        # the keys asked for lead the result, as the label columns lead a training set
        assert online.columns[:2] == ["user_id", "merchant_id"]
        assert online.select("user_id", "merchant_id").equals(frame.select("user_id",
                                                                           "merchant_id"))
        for i in range(3):  # a batch of one reads the same as a row of a large batch
            assert_same(served(client, frame[i:i + 1]), offline[i:i + 1])
    seen = set(pl.concat([online[f"{f}__status"].cast(pl.String) for f in VIEW_FEATURES]))
    assert seen == {"PRESENT", "NULL", "NOT_FOUND", "OUTSIDE_TTL"}, "data misses a case"


def test_never_seen_entity_is_not_found(server: Server) -> None:
    with Client(server.target) as client:
        result = client.get_online_features(
            service="fraud_v1", entities={"user_id": [UNSEEN_USER], "merchant_id": ["nobody"]},
            request={"amount": [1.0], "txn_country": ["US"], "txn_ts": [END]}, as_of=END)
    assert {n: int(result.statuses[n][0]) for n in VIEW_FEATURES} == \
        dict.fromkeys(VIEW_FEATURES, Status.NOT_FOUND)
    assert {n: int(result.statuses[n][0]) for n in TRANSFORMS} == \
        dict.fromkeys(TRANSFORMS, Status.NULL)
    row = result.to_dicts()[0]
    assert list(row)[:2] == ["user_id", "merchant_id"]
    assert (row["user_id"], row["merchant_id"]) == (UNSEEN_USER, "nobody")
    assert {row[n] for n in VIEW_FEATURES + TRANSFORMS} == {None}
    # Windows without events: counts and sums are 0, the rest NULL.
    assert {n: (row[n], int(result.statuses[n][0])) for n in WINDOWED} == {
        "amount_sum_7d": (0.0, Status.PRESENT), "amount_count_1d": (0, Status.PRESENT),
        "amount_max_1h": (None, Status.NULL), "amount_stddev_7d": (None, Status.NULL),
        "merchant_id_count_distinct_1d": (0, Status.PRESENT)}
    assert {v: ts.tolist() for v, ts in result.event_timestamps.items()} == \
        {"user_profile": [0], "merchant_profile": [0], "user_merchant_history": [0]}


def test_feature_lists_take_types_from_the_values(server: Server) -> None:
    """Without a service schema the client infers types: an int amount goes as int64, which
    the server takes for a Float64 input, as training-set labels may hold integers."""
    with Client(server.target) as client:
        listed = client.get_online_features(
            features=["user_profile:credit_limit", "amount_to_limit"], entities={"user_id": [7]},
            request={"amount": [250]}, as_of=END).to_dict()
        full = client.get_online_features(
            service="fraud_v1", entities={"user_id": [7], "merchant_id": ["M00001"]},
            request={"amount": [250.0], "txn_country": ["US"], "txn_ts": [END]}, as_of=END)
        with pytest.raises(FeatureStoreError, match="'user_id' \\(Int64\\) cannot hold"):
            client.get_online_features(service="fraud_v1", entities={"user_id": ["7"]})
    assert listed == {k: full.to_dict()[k] for k in ("user_id", "credit_limit", "amount_to_limit")}


def raw_request(n: int = 1, **changes: Any) -> pb.GetOnlineFeaturesRequest:
    """A valid fraud_v1 request for n entities, with `changes` applied."""
    fields: dict[str, Any] = {
        "feature_service": "fraud_v1",
        "entities": {"user_id": pb.Values(int64_values=[1] * n),
                     "merchant_id": pb.Values(string_values=["M00001"] * n)},
        "request_inputs": {"amount": pb.Values(float64_values=[9.5] * n),
                           "txn_country": pb.Values(string_values=["US"] * n),
                           "txn_ts": pb.Values(timestamp_values=[0] * n)},
        **changes}
    return pb.GetOnlineFeaturesRequest(**fields)


def call(target: str, request: pb.GetOnlineFeaturesRequest, timeout: float = 5.0
         ) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(method("GetOnlineFeatures"),
                                   request_serializer=pb.GetOnlineFeaturesRequest.SerializeToString,
                                   response_deserializer=pb.GetOnlineFeaturesResponse.FromString)
        try:
            stub(request, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
        return grpc.StatusCode.OK, ""


INVALID = grpc.StatusCode.INVALID_ARGUMENT
ERRORS = {
    "unknown service": (raw_request(feature_service="fraud_v9"), INVALID, "'fraud_v9'"),
    "unknown feature": (raw_request(feature_service="", features=["user_profile:wealth"]),
                        INVALID, "'user_profile:wealth'"),
    "service and features": (raw_request(features=["user_profile"]), INVALID,
                             "exactly one of feature_service and features"),
    "key of the wrong type": (raw_request(entities={
        "user_id": pb.Values(string_values=["1"]),
        "merchant_id": pb.Values(string_values=["M00001"])}), INVALID,
        "'user_id' is Int64, but the request sends string_values"),
    "missing key": (raw_request(entities={"user_id": pb.Values(int64_values=[1])}), INVALID,
                    "missing entity key 'merchant_id'"),
    "unknown input": (raw_request(request_inputs={"amount": pb.Values(float64_values=[1.0]),
                                                  "amout": pb.Values(float64_values=[1.0])}),
                      INVALID, "unknown request input 'amout'"),
    "columns of different lengths": (raw_request(request_inputs={
        "amount": pb.Values(float64_values=[1.0, 2.0]),
        "txn_country": pb.Values(string_values=["US"]),
        "txn_ts": pb.Values(timestamp_values=[0])}), INVALID, "different lengths"),
    "batch over the limit": (raw_request(10_001), grpc.StatusCode.RESOURCE_EXHAUSTED,
                             "10001 entities"),
    "as_of after 9999": (raw_request(as_of_us=253_402_300_800_000_000), INVALID,
                         "as_of_us 253402300800000000 is outside 0001-01-01 .. 9999-12-31"),
    "as_of before 0001": (raw_request(as_of_us=-2**63), INVALID, "is outside 0001-01-01"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_errors(server: Server, case: str) -> None:
    request, code, message = ERRORS[case]
    got, details = call(server.target, request)
    assert (got, message in details) == (code, True), details


def test_a_malformed_message_is_invalid_and_logged_in_one_line(server: Server) -> None:
    """Garbage bytes get INVALID_ARGUMENT and one JSON access-log line each (a warning with the
    request id, method, status and error), never a traceback."""
    before = len(server.log.read_text().splitlines())
    with grpc.insecure_channel(server.target) as channel:
        stub = channel.unary_unary(method("GetOnlineFeatures"))
        for garbage in (b"\xff\xff\xff", b"\x0a\x05ab"):
            with pytest.raises(grpc.RpcError) as caught:
                stub(garbage, timeout=5)
            assert caught.value.code() == INVALID, caught.value.details()
            assert "malformed featurestore.v1.GetOnlineFeaturesRequest" in caught.value.details()
    lines = [json.loads(line) for line in server.log.read_text().splitlines()[before:]]
    bad = [line for line in lines if "malformed" in line.get("error", "")]
    assert len(bad) == 2, lines
    for line in bad:
        assert (line["level"], line["logger"], line["method"], line["status"]) == (
            "warning", "featurestore.access", "GetOnlineFeatures", "INVALID_ARGUMENT"), line
        assert line["request_id"] and line["latency_ms"] >= 0
    assert bad[0]["request_id"] != bad[1]["request_id"]
    assert "Traceback" not in server.log.read_text()


def test_integer_amounts_are_numbers_and_the_limit_is_inclusive(server: Server) -> None:
    # Without the windowed view: its 182 tiles per entity make 10,000 entities 1.8M keys.
    request = raw_request(10_000, feature_service="", features=[
        "user_profile", "merchant_profile", "user_merchant_history", *TRANSFORMS])
    request.request_inputs["amount"].Clear()
    request.request_inputs["amount"].int64_values.extend([9] * 10_000)
    assert call(server.target, request) == (grpc.StatusCode.OK, "")


def test_feature_service_schema(example: Example, server: Server) -> None:
    selection = example.store.plan.select(service="fraud_v1")
    with Client(server.target) as client:
        schema = client.feature_service("fraud_v1")
        assert [s.name for s in client.list_feature_services()] == ["fraud_v1"]
        with pytest.raises(ServingError) as raised:
            client.feature_service("nope")
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert schema.features == {o.name: o.dtype for o in selection.outputs}
    assert schema.entity_keys == selection.join_keys
    assert schema.request_inputs == selection.requests
    assert schema.feature_views == list(selection.views)
    assert schema.version == example.store.plan.services["fraud_v1"].hash[:12]
    assert schema.active


def test_requests_for_a_version_that_is_not_active_fail(example: Example, server: Server) -> None:
    version = example.store.plan.services["fraud_v1"].hash[:12]
    keys = {"user_id": [1], "merchant_id": ["M00001"]}
    inputs = {"amount": [1.0], "txn_country": ["US"], "txn_ts": [END]}
    with Client(server.target) as client:
        served = client.get_online_features(service="fraud_v1", entities=keys, request=inputs,
                                            as_of=END, version=version)
        assert served.num_entities == 1
        with pytest.raises(ServingError) as raised:
            client.get_online_features(service="fraud_v1", entities=keys, request=inputs,
                                       as_of=END, version="0123456789ab")
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"version 0123456789ab is not active on this server: its version here is {version}" \
        in raised.value.details


def test_health_and_reflection(server: Server) -> None:
    assert health(server.target) == SERVING
    assert health(server.target, SERVICE) == SERVING
    with grpc.insecure_channel(server.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} \
            <= set(database.get_services())
        service = DescriptorPool(database).FindServiceByName(SERVICE)
        assert [m.name for m in service.methods] == ["GetOnlineFeatures", "ListFeatureServices",
                                                      "GetFeatureService", "PushEvents",
                                                      "GetServerStatus"]
        assert service.file.name == "featurestore/v1/serving.proto"


@pytest.fixture
def own_redis(online_store: OnlineStore, server: Server) -> Iterator[OnlineStore]:
    """Outage tests stop or pause Redis: only one these tests started."""
    if online_store.server is None:
        pytest.skip("FEATURESTORE_REDIS_URL names a Redis these tests must not stop or pause")
    yield online_store
    wait_for("SERVING again", lambda: health(server.target) == SERVING, timeout=15)


def test_deadline_is_honoured_when_redis_stalls(server: Server, own_redis: OnlineStore) -> None:
    redis.Redis.from_url(own_redis.url).execute_command("CLIENT", "PAUSE", "1000", "ALL")
    start = time.monotonic()
    code, details = call(server.target, raw_request(), timeout=0.3)
    elapsed = time.monotonic() - start
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED, details
    assert elapsed < 0.5, f"answered after {elapsed:.2f} s, past the 0.3 s deadline"
    wait_for("requests answered after the pause",
             lambda: call(server.target, raw_request()) == (grpc.StatusCode.OK, ""), timeout=10)


def test_redis_outage_then_recovery(server: Server, own_redis: OnlineStore) -> None:
    assert own_redis.server is not None
    before = call(server.target, raw_request())
    redis.Redis.from_url(own_redis.url).save()  # the restarted server loads this snapshot
    own_redis.server.stop()
    try:
        start = time.monotonic()
        code, details = call(server.target, raw_request(), timeout=2.0)
        assert code == grpc.StatusCode.UNAVAILABLE, details
        assert time.monotonic() - start < 2.0
        wait_for("NOT_SERVING", lambda: health(server.target) == NOT_SERVING, timeout=5)
    finally:
        own_redis.server.start()
    wait_for("SERVING after Redis returned", lambda: health(server.target) == SERVING, timeout=10)
    assert call(server.target, raw_request()) == before == (grpc.StatusCode.OK, "")


def test_cli_get(example: Example, server: Server) -> None:
    args = ["get", "--service", "fraud_v1", "--entity", f"user_id=1,{UNSEEN_USER}",
            "--entity", f"merchant_id=M00001,{UNSEEN_MERCHANT}", "--request", "amount=9.5,120",
            "--request", "txn_country=US,FR", "--request",
            "txn_ts=2025-06-30T00:00:00Z,2025-06-30T00:00:00+02:00",
            "--as-of", END.isoformat(), "--target", server.target]
    table = cli(*args).stdout
    assert "1, M00001" in table and "NOT_FOUND" in table and "amount_to_limit" in table
    rows = pl.read_csv(cli(*args, "--format", "csv", "--statuses").stdout.encode())
    assert rows["user_id"].to_list() == [1, UNSEEN_USER]
    assert rows["age__status"].to_list()[1] == "NOT_FOUND"
    missing = cli("get", "--service", "fraud_v9", "--entity", "user_id=1", "--target",
                  server.target, expect=1)
    assert "unknown feature service 'fraud_v9'" in missing.stderr


def test_cli_materialize_incremental_and_naive_times(example: Example) -> None:
    out = cli("materialize-incremental", "--repo", example.repo, "--end", END.isoformat()).stdout
    assert "user_profile" in out and "merchant_profile" in out
    naive = cli("materialize", "--repo", example.repo, "--end", "2025-07-01T00:00:00", expect=1)
    assert "has a time of day but no zone" in naive.stderr


def test_workers_share_a_port_and_stop_their_managed_redis(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo")  # online_store: managed
    env = {k: v for k, v in os.environ.items() if k != "FEATURESTORE_REDIS_URL"}
    running = start_server(root, tmp_path / "serve.log", workers=2, env=env)
    managed = ManagedRedis(root)
    try:
        assert managed.running()
        code, details = call(running.target, pb.GetOnlineFeaturesRequest(
            feature_service="fraud_v1", entities={"user_id": pb.Values(int64_values=[1])},
            request_inputs={"amount": pb.Values(float64_values=[1.0])}))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "materialize" in details
    finally:
        output = stop_server(running)
    assert output.count("serving feature repo") == 2, output
    assert not managed.running()


def test_a_new_version_serves_only_once_materialized(tmp_path: Path,
                                                     online_store: OnlineStore) -> None:
    """After a definition change is applied but not materialized, the old version keeps
    serving and the new service version is reported inactive; materializing activates it."""
    root = write_repo(tmp_path, project=f"versions{os.getpid()}")
    config = root / "featurestore.yaml"
    config.write_text(config.read_text() + f"online_store: {online_store.url}\n")
    store = FeatureStore(root)
    store.apply()
    store.materialize(end=T0 + timedelta(days=3))
    (root / "features.py").write_text(PROFILE_DEFS.replace("days=10", "days=20"))
    store.apply()
    new_version = store.plan.services["fraud_v1"].hash[:12]
    running = start_server(root, tmp_path / "serve.log")
    try:
        with Client(running.target) as client:
            assert not client.feature_service("fraud_v1").active
            old = client.get_online_features(service="fraud_v1", entities={"user_id": [1]},
                                             request={"amount": [10.0]}, as_of=T0 + timedelta(days=3))
            assert old.to_dict()["age"] == [31]  # the old version's row still serves
            with pytest.raises(ServingError) as raised:
                client.get_online_features(service="fraud_v1", entities={"user_id": [1]},
                                           request={"amount": [10.0]}, version=new_version)
            assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "not all materialized" in raised.value.details
            store.materialize(end=T0 + timedelta(days=3))
            wait_for("the new version to be served",  # the registry is re-read every second
                     lambda: client.list_feature_services()[0].active, timeout=10)
            fresh = client.get_online_features(service="fraud_v1", entities={"user_id": [1]},
                                               request={"amount": [10.0]}, version=new_version,
                                               as_of=T0 + timedelta(days=3))
            assert fresh.to_dict()["age"] == [31]
    finally:
        stop_server(running)


def test_entity_keys_cannot_be_null(server: Server) -> None:
    with Client(server.target) as client, pytest.raises(ServingError) as raised:
        client.get_online_features(service="fraud_v1",
                                   entities={"user_id": [1, None], "merchant_id": ["M00001"] * 2},
                                   request={"amount": [1.0, 2.0], "txn_country": ["US", "US"],
                                            "txn_ts": [END, END]}, as_of=END)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "entity key 'user_id' has missing values" in raised.value.details


def test_in_process_lookups_answer_what_the_server_answers(example: Example,
                                                            server: Server) -> None:
    frame = labels(example.repo)
    arguments = asked(frame)
    local = example.store.get_online_features(**arguments)
    with Client(server.target) as client:
        remote = client.get_online_features(**arguments)
        listed = client.get_online_features(features=["user_profile:credit_limit"],
                                            entities={"user_id": [1, UNSEEN_USER]}, as_of=END)
    assert repr(local.to_dict(statuses=True)) == repr(remote.to_dict(statuses=True))  # NaN too
    assert local.event_timestamps.keys() == remote.event_timestamps.keys()
    in_process = example.store.get_online_features(
        features=["user_profile:credit_limit"], entities={"user_id": [1, UNSEEN_USER]}, as_of=END)
    assert in_process.to_dict(statuses=True) == listed.to_dict(statuses=True)
    with pytest.raises(FeatureStoreError, match="unknown feature service 'fraud_v9'"):
        example.store.get_online_features(service="fraud_v9", entities={"user_id": [1]})
    with pytest.raises(FeatureStoreError, match="missing entity key 'merchant_id'"):
        example.store.get_online_features(service="fraud_v1", entities={"user_id": [1]},
                                          request=arguments["request"])
