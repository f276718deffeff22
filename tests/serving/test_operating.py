"""Operating a server, tried with real processes: TLS and mutual TLS with certificates made
here, bearer tokens and their scopes, reflection turned off, Prometheus metrics scraped over
HTTP from two workers, JSON access logs, the status command, and definitions reloaded under
load without a failed request."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

import grpc
import push_kit
import pytest
import yaml
from certs import Authority, make_authority
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from redis_kit import free_port
from repo_kit import PROFILE_DEFS, T0, write_repo
from serving_kit import (
    END,
    SERVING,
    Example,
    OnlineStore,
    Server,
    channel,
    cli,
    health,
    scrape,
    start_server,
    stop_server,
    wait_for,
)

from featurestore import Client, FeatureStore, FeatureStoreError
from featurestore.serving.client import ServingError
from featurestore.serving.proto import method, pb
from featurestore.serving.security import Tokens, token_hash
from featurestore.values.status import Status

UNSEEN_USER = 999_999
REQUEST = {"amount": [9.5, 120.0], "txn_country": ["US", "FR"],
           "txn_ts": [END - timedelta(days=1)] * 2}
ENTITIES = {"user_id": [1, UNSEEN_USER], "merchant_id": ["M00001", "M00002"]}
TOKENS = {"reader": "reader-secret-7f3a", "pusher": "pusher-secret-91bc",
          "admin": "admin-secret-c0de"}


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return make_authority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens.yaml"
    path.write_text(yaml.safe_dump({"tokens": [
        {"name": "reader", "sha256": token_hash(TOKENS["reader"]), "read": ["fraud_v1"]},
        {"name": "pusher", "sha256": token_hash(TOKENS["pusher"]), "push": ["transactions"]},
        {"name": "admin", "sha256": token_hash(TOKENS["admin"]), "read": "*", "admin": True},
    ]}))
    return path


def tls(authority: Authority, mutual: bool = False) -> grpc.ChannelCredentials:
    key = authority.client.key.read_bytes() if mutual else None
    cert = authority.client.cert.read_bytes() if mutual else None
    return grpc.ssl_channel_credentials(authority.ca.read_bytes(), key, cert)


@pytest.fixture(scope="module")
def secured(example: Example, authority: Authority, token_file: Path) -> Server:
    running = start_server(
        example.repo, example.repo.parent / "secured.log", "--tls-cert", str(authority.server.cert),
        "--tls-key", str(authority.server.key), "--tokens", str(token_file), "--no-reflection",
        "--access-log-sample", "1", credentials=tls(authority))
    yield running
    stop_server(running)


def code_of(fn: object) -> grpc.StatusCode:
    with pytest.raises(ServingError) as raised:
        fn()  # type: ignore[operator]
    return raised.value.code


def test_tls_tokens_and_scopes(example: Example, secured: Server, authority: Authority) -> None:
    target = secured.target.replace("127.0.0.1", "localhost")

    def client(token: str | None = None, **kwargs: object) -> Client:
        return Client(target, token=token, ca_cert=authority.ca, **kwargs)  # type: ignore[arg-type]

    def read(c: Client, service: str | None = None, features: list[str] | None = None) -> object:
        if features:
            return c.get_online_features(features=features, as_of=END,
                                         entities={"user_id": ENTITIES["user_id"]})
        return c.get_online_features(service=service, entities=ENTITIES, request=REQUEST,
                                     as_of=END)

    with Client(secured.target, token=TOKENS["reader"]) as plain:  # no TLS: no connection
        assert code_of(lambda: read(plain, service="fraud_v1")) == grpc.StatusCode.UNAVAILABLE
    with client() as anonymous:
        assert code_of(lambda: read(anonymous, service="fraud_v1")) == \
            grpc.StatusCode.UNAUTHENTICATED
    with client("not-a-token") as stranger:
        assert code_of(lambda: stranger.list_feature_services()) == \
            grpc.StatusCode.UNAUTHENTICATED
    with client(TOKENS["reader"]) as reader:
        result = read(reader, service="fraud_v1")
        assert result.statuses["age"].tolist() == [Status.PRESENT, Status.NOT_FOUND]
        assert code_of(lambda: read(reader, features=["user_profile:age"])) == \
            grpc.StatusCode.PERMISSION_DENIED  # a feature list needs read: "*"
        assert code_of(lambda: reader.push("transactions", {"user_id": [1]}, "b1")) == \
            grpc.StatusCode.PERMISSION_DENIED
        assert code_of(reader.server_status) == grpc.StatusCode.PERMISSION_DENIED
    with client(TOKENS["pusher"]) as pusher:
        assert code_of(lambda: read(pusher, service="fraud_v1")) == \
            grpc.StatusCode.PERMISSION_DENIED
    with client(TOKENS["admin"]) as admin:
        status = admin.server_status()
        assert status.serving and status.project == example.store.plan.project
        assert read(admin, features=["user_profile:age"]).statuses["age"].tolist() == \
            [Status.PRESENT, Status.NOT_FOUND]
    # health stays open to orchestrators; reflection is off
    assert health(secured.target, credentials=tls(authority)) == SERVING
    with channel(secured.target, tls(authority)) as opened:
        stub = reflection_pb2_grpc.ServerReflectionStub(opened)
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
                list_services="")]), timeout=5))
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    log = secured.log.read_text()
    assert not any(secret in log for secret in TOKENS.values())
    denied = [json.loads(line) for line in log.splitlines() if "PERMISSION_DENIED" in line]
    assert {(d["caller"], d["method"]) for d in denied} >= {
        ("reader", "GetOnlineFeatures"), ("reader", "PushEvents"), ("pusher", "GetOnlineFeatures")}


def test_cli_commands_take_tls_and_a_token_file(secured: Server, authority: Authority,
                                                tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKENS["admin"] + "\n")
    target = secured.target.replace("127.0.0.1", "localhost")
    got = cli("get", "--service", "fraud_v1", "--entity", "user_id=1", "--entity",
              "merchant_id=M00001", "--request", "amount=9.5", "--request", "txn_country=US",
              "--request", "txn_ts=2025-06-30T00:00:00Z", "--as-of", END.isoformat(),
              "--target", target, "--tls-ca", authority.ca, "--token-file", token,
              "--format", "json")
    assert json.loads(got.stdout.splitlines()[0])["user_id"] == 1  # one JSON object per entity
    status = json.loads(cli("status", "--target", target, "--tls-ca", authority.ca,
                            "--format", "json", env={"FEATURESTORE_TOKEN": TOKENS["admin"]}
                            ).stdout)
    assert status["serving"] and {v["name"] for v in status["featureViews"]} >= {
        "user_profile", "merchant_profile"}
    assert cli("health", "--target", target, "--tls-ca", authority.ca).stdout == \
        f"{target}: SERVING\n"  # no token needed
    refused = cli("status", "--target", target, "--tls-ca", authority.ca, expect=1,
                  env={"FEATURESTORE_TOKEN": TOKENS["reader"]})
    assert "PERMISSION_DENIED" in refused.stderr and "admin" not in refused.stdout


def test_mutual_tls(example: Example, authority: Authority, tmp_path: Path) -> None:
    running = start_server(
        example.repo, tmp_path / "mtls.log", "--tls-cert", str(authority.server.cert),
        "--tls-key", str(authority.server.key), "--tls-client-ca", str(authority.ca),
        credentials=tls(authority, mutual=True))
    try:
        target = running.target.replace("127.0.0.1", "localhost")
        with Client(target, ca_cert=authority.ca) as no_certificate:
            assert code_of(no_certificate.list_feature_services) == grpc.StatusCode.UNAVAILABLE
        with Client(target, ca_cert=authority.ca, client_cert=authority.client.cert,
                    client_key=authority.client.key) as holder:
            assert [s.name for s in holder.list_feature_services()] == ["fraud_v1"]
    finally:
        stop_server(running)


def access_pids(log: Path) -> set[int]:
    """The processes that wrote access log lines so far."""
    return {json.loads(line)["pid"] for line in log.read_text().splitlines()
            if '"featurestore.access"' in line}


def test_metrics_and_access_logs_across_two_workers(example: Example, tmp_path: Path) -> None:
    metrics_port = free_port()
    running = start_server(example.repo, tmp_path / "metrics.log", "--metrics-port",
                           str(metrics_port), "--access-log-sample", "1", workers=2)
    try:
        served: Counter[tuple[str, str]] = Counter()
        refs = [o.ref for o in example.store.plan.select(service="fraud_v1").outputs]
        rounds = 0
        # a connection each, until both workers took some (the kernel spreads connections
        # over them by a hash: 12 can all land on one)
        while rounds < 12 or (len(access_pids(running.log)) < 2 and rounds < 60):
            rounds += 1
            with Client(running.target) as client:
                result = client.get_online_features(service="fraud_v1", entities=ENTITIES,
                                                    request=REQUEST, as_of=END)
                for name, ref in zip(result.names, refs, strict=True):
                    view = ref.split(":")[0] if ":" in ref else "transforms"
                    for status in result.statuses[name].tolist():
                        served[view, Status(status).name] += 1
                with pytest.raises(ServingError):
                    client.get_online_features(features=["nope:x"], entities={"user_id": [1]})
                with pytest.raises(ServingError):  # a name the server does not know
                    client.feature_service(f"nope-{rounds}")
        samples = scrape(metrics_port)
    finally:
        stop_server(running)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    assert value("featurestore_requests_total", method="GetOnlineFeatures", service="fraud_v1",
                 code="OK") == rounds
    assert value("featurestore_requests_total", method="GetOnlineFeatures", service="features",
                 code="INVALID_ARGUMENT") == rounds
    # names callers make up are not labels (each would be a new time series)
    assert value("featurestore_requests_total", method="GetFeatureService", service="unknown",
                 code="NOT_FOUND") == rounds
    assert value("featurestore_request_seconds_count", method="GetOnlineFeatures") == 2 * rounds
    assert value("featurestore_request_entities_count", method="GetOnlineFeatures") == rounds
    assert value("featurestore_request_entities_sum", method="GetOnlineFeatures") == 2 * rounds
    for (view, status), count in served.items():
        assert value("featurestore_values_total", view=view, status=status) == count, (view, status)
    assert value("featurestore_values_total", view="user_profile", status="NOT_FOUND") > 0
    assert value("featurestore_redis_round_trips_total", outcome="ok") >= rounds
    age = value("featurestore_view_materialized_age_seconds", view="user_profile")
    assert 0 < age < 3600
    lines = [json.loads(line) for line in running.log.read_text().splitlines()
             if '"featurestore.access"' in line]
    ok = [line for line in lines if line["status"] == "OK" and line["method"] ==
          "GetOnlineFeatures"]
    assert len(ok) == rounds and all(line["size"] == 2 and line["service"] == "fraud_v1"
                                 for line in ok)
    assert len({line["pid"] for line in lines}) == 2  # both workers answered and logged


def test_status_of_a_running_server(example: Example, server: Server) -> None:
    table = cli("status", "--target", server.target).stdout
    assert "SERVING" in table and "user_profile" in table and "fraud_v1" in table
    status = json.loads(cli("status", "--target", server.target, "--format", "json").stdout)
    plan = example.store.plan
    views = {v["name"]: v for v in status["featureViews"]}
    assert set(views) == set(plan.views)
    for name, view in views.items():
        assert view["version"] == plan.views[name].version and view["active"], name
        assert int(view["materializedEndUs"]) == int(END.timestamp() * 1_000_000), name


def test_token_command_makes_an_entry_the_server_loads(tmp_path: Path) -> None:
    made = cli("token", "model-a", "--read", "fraud_v1", "--push", "transactions")
    secret = made.stdout.strip()
    entries = yaml.safe_load(made.stderr[made.stderr.index("- name"):])
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump({"tokens": entries}))
    grant = Tokens(path).check([("authorization", f"Bearer {secret}")])
    assert (grant.name, grant.may_read("fraud_v1"), grant.may_read("other"),
            grant.may_push("transactions"), grant.admin) == ("model-a", True, False, True, False)
    assert secret not in path.read_text()
    path.write_text("tokens:\n  - name: x\n    sha256: " + secret + "\n")
    refused = cli("serve", "--repo", tmp_path, "--tokens", path, expect=1)
    assert "sha256" in refused.stderr and "entry 1" in refused.stderr


def reloads(server: Server, service: str, removed: str = "") -> int:
    """Workers that logged reloading definitions which hold `service` (or dropped `removed`)."""
    lines = [json.loads(line) for line in server.log.read_text().splitlines()
             if '"definitions reloaded"' in line]
    return len({line["pid"] for line in lines
                if (not service or service in line["services"])
                and (not removed or removed in line["removed"])})


RELOAD_DEFS = PROFILE_DEFS + """
@transform(inputs={"age": user_profile["age"]}, output=Int64)
def age_next_year(age):
    return age + 1

fraud_v2 = FeatureService("fraud_v2", features=[user_profile, age_next_year])
"""


def test_definitions_reload_under_load_without_a_failed_request(
        tmp_path: Path, online_store: OnlineStore) -> None:
    """apply + materialize of a changed view and a new service while requests flow to two
    workers: every request succeeds with the old or the new version's values (never a mix), the new
    service appears, and a removed one gets NOT_FOUND saying so."""
    root = write_repo(tmp_path / "repo", project=f"reload{os.getpid()}")
    config = root / "featurestore.yaml"
    config.write_text(config.read_text() + f"online_store: {online_store.url}\n")
    store = FeatureStore(root)
    store.apply()
    end = T0 + timedelta(days=3)
    store.materialize(end=end)
    running = start_server(root, tmp_path / "serve.log", workers=2)
    as_of = T0 + timedelta(days=15)  # user 2's row (day 1) is inside a 20-day ttl, not a 10-day
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():  # a connection per few requests: both workers take some
            with Client(running.target) as client:
                for _ in range(5):
                    try:
                        got = client.get_online_features(service="fraud_v1",
                                                         entities={"user_id": [2]},
                                                         request={"amount": [10.0]}, as_of=as_of)
                        outcomes[Status(int(got.statuses["age"][0])).name] += 1
                    except ServingError as exc:
                        failures.append(str(exc))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        wait_for("requests to flow", lambda: sum(outcomes.values()) > 20)
        assert set(outcomes) == {"OUTSIDE_TTL"}  # the 10-day ttl
        (root / "features.py").write_text(RELOAD_DEFS.replace("days=10", "days=20"))
        store = FeatureStore(root)
        store.apply()
        store.materialize(end=end)
        wait_for("both workers to load fraud_v2", lambda: reloads(running, "fraud_v2") == 2)
        with Client(running.target) as client:
            wait_for("fraud_v2 to be served", lambda: any(
                s.name == "fraud_v2" and s.active for s in client.list_feature_services()))
            seen = outcomes["PRESENT"]
            wait_for("the 20-day ttl to serve", lambda: outcomes["PRESENT"] > seen + 40)
            v2 = client.get_online_features(service="fraud_v2", entities={"user_id": [2]},
                                            as_of=as_of)
            assert v2.to_dict()["age_next_year"] == [41]
        stop.set()
        worker.join()
        assert failures == [] and set(outcomes) == {"OUTSIDE_TTL", "PRESENT"}, (failures,
                                                                               outcomes)
        (root / "features.py").write_text(PROFILE_DEFS.replace("days=10", "days=20"))
        FeatureStore(root).apply()
        wait_for("both workers to drop fraud_v2", lambda: reloads(running, "", "fraud_v2") == 2)
        for _ in range(6):  # a connection each: both workers refuse it
            with Client(running.target) as client, pytest.raises(ServingError) as raised:
                client.get_online_features(service="fraud_v2", entities={"user_id": [2]})
            assert raised.value.code == grpc.StatusCode.NOT_FOUND
            assert "removed from the repo's definitions" in raised.value.details
    finally:
        stop.set()
        worker.join()
        log = stop_server(running)
    assert log.count('"definitions reloaded"') == 2 * 2  # each worker, after each apply


def test_a_callers_request_id_names_its_log_line_and_comes_back(server: Server) -> None:
    with channel(server.target) as opened:
        stub = opened.unary_unary(method("GetOnlineFeatures"))
        with pytest.raises(grpc.RpcError) as raised:
            stub(pb.GetOnlineFeaturesRequest(features=["nope:x"]).SerializeToString(),
                 timeout=5, metadata=(("x-request-id", "checkout-42"),))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("x-request-id", "checkout-42") in tuple(raised.value.trailing_metadata())
    lines = [json.loads(line) for line in server.log.read_text().splitlines()
             if "checkout-42" in line]
    assert [(line["request_id"], line["status"]) for line in lines] == [
        ("checkout-42", "INVALID_ARGUMENT")]


def test_push_metrics_freshness_and_log_level(tmp_path: Path, online_store: OnlineStore) -> None:
    """Pushed events by outcome (applied, duplicate, too late) and the age of the latest push
    reach the metrics; --log-level warning keeps sampled OK requests out of the log and the
    refused ones in."""
    start = push_kit.now_us()
    store = push_kit.write_repo(tmp_path / "repo", f"pushmetrics{os.getpid()}", online_store.url,
                                push_kit.tx_events([(1, 5.0, start - push_kit.HOUR)]))
    store.materialize(end=push_kit.at(start))
    metrics_port = free_port()
    running = start_server(store.config.root, tmp_path / "serve.log", "--metrics-port",
                           str(metrics_port), "--access-log-sample", "1", "--log-level", "warning",
                           ready="SERVING")
    try:
        now = push_kit.now_us()
        batch = push_kit.tx_events([(1, 2.0, now - push_kit.MINUTE), (2, 3.0, now),
                                    (3, 1.0, now - 3 * push_kit.DAY)])  # the last: too late
        with Client(running.target) as client:
            first = client.push("tx", batch, "b-1")
            again = client.push("tx", batch, "b-1")
            assert (first.rows, first.too_late, again.duplicate) == (3, 1, True)
            client.get_online_features(service=push_kit.SERVICE, entities={"user_id": [1]})
            with pytest.raises(ServingError):
                client.push("tx", batch.drop("amount"), "b-2")
        wait_for("the push to show in the freshness gauge", lambda: 0 <= dict(
            (dict(k[1]).get("view"), v) for k, v in scrape(metrics_port).items()
            if k[0] == "featurestore_view_last_push_age_seconds").get("spend", -1) < 60)
        samples = scrape(metrics_port)
    finally:
        log = stop_server(running)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    assert value("featurestore_pushed_events_total", source="tx", outcome="applied") == 2
    assert value("featurestore_pushed_events_total", source="tx", outcome="too_late") == 1
    assert value("featurestore_pushed_events_total", source="tx", outcome="duplicate") == 3
    assert value("featurestore_requests_total", method="PushEvents", service="tx",
                 code="INVALID_ARGUMENT") == 1
    assert value("featurestore_request_entities_sum", method="PushEvents") == 3 * 3
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert {line["level"] for line in lines} <= {"warning", "error"}, lines
    assert [line["method"] for line in lines if line.get("status")] == ["PushEvents"]


@pytest.mark.parametrize(("args", "message"), [
    (["--tls-cert", "server.crt"], "--tls-cert and --tls-key go together"),
    (["--tls-client-ca", "ca.crt"], "--tls-client-ca needs --tls-cert and --tls-key"),
    (["--log-level", "loud"], "--log-level must be one of debug, info, warning, error"),
    (["--log-format", "xml"], "--log-format must be one of json, text"),
    (["--access-log-sample", "1.5"], "--access-log-sample must be between 0 and 1"),
    (["--metrics-port", "70000"], "--metrics-port must be 1..65535"),
    (["--tls-cert", "missing.crt", "--tls-key", "missing.key"], "--tls-cert missing.crt: cannot "
                                                                "read it"),
])
def test_bad_serve_options_are_refused_before_anything_starts(
        tmp_path: Path, args: list[str], message: str) -> None:
    root = write_repo(tmp_path / "repo")  # online_store: managed, which must not start
    proc = cli("serve", "--repo", root, "--port", str(free_port()), *args, expect=1, env={
        "FEATURESTORE_REDIS_URL": ""})
    assert message in proc.stderr, proc.stderr
    assert not (root / ".featurestore" / "redis").exists()


def test_a_client_certificate_needs_its_key(authority: Authority) -> None:
    with pytest.raises(FeatureStoreError, match="both a client certificate and its key"):
        Client("localhost:1", ca_cert=authority.ca, client_cert=authority.client.cert)
    with pytest.raises(FeatureStoreError, match="cannot read the CA certificate"):
        Client("localhost:1", ca_cert=authority.ca.parent / "nope.crt")


def test_an_unreadable_token_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    missing = tmp_path / "no-token"
    monkeypatch.delenv("FEATURESTORE_TOKEN", raising=False)
    monkeypatch.setenv("FEATURESTORE_TOKEN_FILE", str(missing))
    with pytest.raises(FeatureStoreError, match=r"FEATURESTORE_TOKEN_FILE .*no-token: cannot read"):
        Client("localhost:1")
    proc = cli("get", "--service", "fraud_v1", "--entity", "user_id=1", "--target",
               "localhost:1", "--token-file", missing, expect=1)
    assert f"--token-file {missing}: cannot read it" in proc.stderr, proc.stderr
