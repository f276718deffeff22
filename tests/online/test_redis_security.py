"""Online store credentials and TLS, against real redis-server processes: one URL parser behind
redis-py and the serving reader (password, ACL user, rediss:// with a CA and a client
certificate), clear errors for bad URLs, refused passwords and untrusted certificates; and no
password in any gRPC error, server log line or CLI output, with a real `featurestore serve`."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import pytest
import redis
from certs import Authority, make_authority
from push_kit import MINUTE, SERVICE, now_us, tx_events, write_repo
from redis.connection import parse_url
from redis_kit import RedisServer
from serving_kit import NOT_SERVING, cli, health, start_server, stop_server, wait_for

from featurestore import Client, FeatureStoreError
from featurestore.errors import OnlineUnavailable
from featurestore.online.keys import applied_key
from featurestore.online.redis_async import AsyncRedis
from featurestore.online.store import OnlineStore
from featurestore.online.urls import parse
from featurestore.repo import load_config
from featurestore.serving.client import ServingError

MARKERS = ("Zq7s3cr3t", "w0rd")  # no output may hold either, in any encoding
PASSWORD = "Zq7s3cr3t/p@ss:w0rd%"  # characters a URL must percent-encode
ENCODED = quote(PASSWORD, safe="")
WRONG = quote("Zq7s3cr3t-wrong-w0rd", safe="")
VARIABLE = "FS_TEST_REDIS_PASSWORD"
servers = itertools.count()


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for marker in MARKERS:
            assert marker not in text, f"{marker!r} leaked in:\n{text}"


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return make_authority(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def untrusted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The certificate of a CA that signed nothing the servers here present."""
    return make_authority(tmp_path_factory.mktemp("other-certs"), "another CA").ca


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Starts redis-servers (RedisServer's options); every one is stopped after the test."""
    started: list[RedisServer] = []

    def start(**options: Any) -> RedisServer:
        folder = tmp_path / f"redis{next(servers)}"
        folder.mkdir()
        started.append(RedisServer(folder, **options))
        started[-1].start()
        return started[-1]
    yield start
    for server in started:
        server.stop()


async def ask(url: str, *command: str) -> Any:
    client = AsyncRedis(url)
    try:
        return await client.execute(*command, timeout=2.0)
    finally:
        client.reset()


# --- one parser ----------------------------------------------------------------------------

def url_forms(a: Authority) -> list[tuple[str, dict[str, Any]]]:
    tls = f"ssl_ca_certs={a.ca}&ssl_certfile={a.client.cert}&ssl_keyfile={a.client.key}"
    return [
        (f"redis://:{ENCODED}@cache.internal:6380/2",
         {"where": "redis://:***@cache.internal:6380/2", "host": "cache.internal", "port": 6380,
          "db": 2, "username": None, "password": PASSWORD, "tls": None,
          "auth": ("AUTH", PASSWORD)}),
        (f"redis://app:{ENCODED}@10.0.0.5",
         {"where": "redis://app:***@10.0.0.5/0", "port": 6379, "db": 0, "username": "app",
          "auth": ("AUTH", "app", PASSWORD)}),
        ("redis://app@10.0.0.5/0",  # an ACL user without a password (nopass)
         {"where": "redis://app@10.0.0.5/0", "auth": ("AUTH", "app", "")}),
        (f"rediss://app:{ENCODED}@[::1]:6390/0?{tls}",
         {"where": "rediss://app:***@[::1]:6390/0", "host": "::1", "port": 6390,
          "tls.ca_certs": str(a.ca), "tls.certfile": str(a.client.cert),
          "tls.keyfile": str(a.client.key), "tls.cert_reqs": "required",
          "tls.check_hostname": True}),
        ("rediss://cache.internal?ssl_cert_reqs=none",
         {"where": "rediss://cache.internal/0", "tls.cert_reqs": "none",
          "tls.check_hostname": False, "auth": None}),
        (f"rediss://cache.internal/0?ssl_ca_certs={a.ca}&ssl_check_hostname=false",
         {"tls.cert_reqs": "required", "tls.check_hostname": False}),
        ("unix:///run/redis/redis.sock?db=3",
         {"where": "unix:///run/redis/redis.sock?db=3", "path": "/run/redis/redis.sock",
          "db": 3, "tls": None, "auth": None}),
    ]


def field(settings: Any, name: str) -> Any:
    if name == "auth":
        return settings.auth()
    for part in name.split("."):
        settings = getattr(settings, part)
    return settings


def test_url_forms(authority: Authority) -> None:
    for url, expected in url_forms(authority):
        settings = parse(url)
        assert {name: field(settings, name) for name in expected} == expected, url
        assert_no_secret(settings.where, repr(settings))


def test_scrub_removes_the_password_decoded_and_as_written() -> None:
    """What a Redis or socket error would echo, in either spelling, never leaves."""
    settings = parse(f"redis://app:{ENCODED}@h/0")
    text = settings.scrub(f"ERR with args beginning with: '{PASSWORD}' (URL form {ENCODED})")
    assert text == "ERR with args beginning with: '***' (URL form ***)"
    assert parse("redis://h/0").scrub(text) == text


def test_redis_py_reads_every_url_as_we_do(authority: Authority) -> None:
    """Our settings are what redis-py itself would make of the same URL."""
    for url, _ in url_forms(authority):
        ours, theirs = parse(url).redis_py(), parse_url(url)
        kind = getattr(theirs.pop("connection_class", None), "__name__", "Connection")
        assert ours.get("ssl", False) == (kind == "SSLConnection"), url
        if kind == "UnixDomainSocketConnection":
            theirs["unix_socket_path"] = theirs.pop("path")
        if "username" in theirs and "password" not in theirs:
            theirs["password"] = ""  # what redis-py sends for a nopass user (AUTH app "")
        assert {k: ours[k] for k in theirs} == theirs, url


@pytest.mark.parametrize("url, problem", [
    ("redis://:{pw}@h/0?ssl_ca_certs={ca}",
     "option 'ssl_ca_certs' is a TLS option: use a rediss:// URL"),
    ("redis://:{pw}@h/0?socket_timeout=1", "unknown option 'socket_timeout'; the options are"),
    ("redis://h/0?password={pw}", "unknown option 'password'"),
    ("rediss://:{pw}@h/0?ssl_cert_reqs=maybe", "must be one of none, optional, required"),
    ("rediss://:{pw}@h/0?ssl_keyfile={ca}", "'ssl_keyfile' needs 'ssl_certfile'"),
    ("rediss://:{pw}@h/0?ssl_ca_certs=/no/such/ca.pem", "there is no file /no/such/ca.pem"),
    ("rediss://:{pw}@h/0?ssl_cert_reqs=none&ssl_check_hostname=true",
     "needs a verified certificate"),
    ("rediss://:{pw}@h?db=1&db=2", "option 'db' is given twice"),
    ("redis://:{pw}@h/1?db=2", "the database is given twice"),
    ("redis://:{pw}@h/zero", "must be a database number"),
    ("redis://:{pw}@h:63x9/0", "the port is not a number"),
    ("redis://:Zq7s3cr3t/w0rd@h/0", "percent-encode"),
    ("redis://:Zq7s3cr3t?w0rd@h/0", "percent-encode"),
    ("redis://:Zq7s3cr3t#w0rd@h/0", "percent-encode"),
    ("redis://:{pw}@[::1/0", "the host is not a name or an address"),
    ("htps://:{pw}@h/0", "must start with redis://, rediss://, unix:// or redis+cluster://, got htps://"),
    (":{pw}@h:6379", "got a value without scheme"),
])
def test_bad_urls_are_refused_naming_the_problem(authority: Authority, url: str,
                                                 problem: str) -> None:
    with pytest.raises(FeatureStoreError) as raised:
        parse(url.format(pw=ENCODED, ca=authority.ca))
    assert problem in str(raised.value)
    assert_no_secret(str(raised.value))


def test_the_password_can_come_from_the_environment(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEATURESTORE_REDIS_URL", raising=False)
    monkeypatch.delenv(VARIABLE, raising=False)
    (tmp_path / "featurestore.yaml").write_text(
        f"project: p\nonline_store: redis://app:${{{VARIABLE}}}@10.0.0.5:6390/0\n")
    config = load_config(tmp_path)  # commands that never reach Redis do not need it
    with pytest.raises(FeatureStoreError) as raised:
        config.online_url  # noqa: B018
    assert f"refers to ${{{VARIABLE}}}, but the environment variable {VARIABLE} is not set" \
        in str(raised.value)
    monkeypatch.setenv(VARIABLE, PASSWORD)
    assert config.online_url == f"redis://app:{ENCODED}@10.0.0.5:6390/0"
    assert parse(config.online_url).password == PASSWORD
    monkeypatch.setenv("FEATURESTORE_REDIS_URL", "redis://10.0.0.6/1")
    assert config.online_url == "redis://10.0.0.6/1"

    (tmp_path / "featurestore.yaml").write_text(f"project: p\nonline_store: htps://:{ENCODED}@h\n")
    with pytest.raises(FeatureStoreError) as raised:
        load_config(tmp_path)
    assert "online_store must be 'managed' or a redis://" in str(raised.value)
    assert_no_secret(str(raised.value))


# --- both clients against real servers -----------------------------------------------------

CONNECTIONS = {
    "password": {"password": PASSWORD},
    "acl user": {"password": PASSWORD, "user": "app"},
    "tls": {"tls": True},
    "tls, client certificate required, acl user": {"tls": True, "client_certs": "yes",
                                                   "password": PASSWORD, "user": "app"},
}


@pytest.mark.parametrize("case", CONNECTIONS)
def test_both_clients_connect(case: str, authority: Authority,
                              start_redis: Callable[..., RedisServer]) -> None:
    options = dict(CONNECTIONS[case])
    if options.pop("tls", False):
        options["tls"] = authority
    server = start_redis(**options)
    with OnlineStore(server.url, "secure") as store:
        store.mark_applied("v", "s1", {"batch-1": 7})
        assert store.applied("v", "s1") == {"batch-1"}
    assert asyncio.run(ask(server.url, "ZSCORE", applied_key("secure", "v", "s1"),
                           "batch-1")) == b"7"
    assert asyncio.run(ask(server.url, "ACL", "WHOAMI")) == \
        options.get("user", "default").encode()


REFUSALS = {
    # server options, the client's URL made from the server's and the untrusted CA, what both
    # clients' errors say
    "wrong password": ({"password": PASSWORD}, lambda url, ca: url.replace(ENCODED, WRONG),
                       "invalid username-password pair"),
    "wrong password of an acl user": ({"password": PASSWORD, "user": "app"},
                                      lambda url, ca: url.replace(ENCODED, WRONG),
                                      "invalid username-password pair"),
    "no password": ({"password": PASSWORD}, lambda url, ca: url.replace(f":{ENCODED}@", ""),
                    "Authentication required"),
    "untrusted certificate": ({"tls": True, "password": PASSWORD},
                              lambda url, ca: url.split("?")[0] + f"?ssl_ca_certs={ca}",
                              "CERTIFICATE_VERIFY_FAILED"),
    "no client certificate": ({"tls": True, "client_certs": "yes", "password": PASSWORD},
                              lambda url, ca: url.split("&")[0], "rediss://:***@127.0.0.1"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_are_clear_and_keep_the_password(case: str, authority: Authority,
                                                  untrusted: Path,
                                                  start_redis: Callable[..., RedisServer]
                                                  ) -> None:
    options, change, says = REFUSALS[case]
    options = dict(options)
    if options.pop("tls", False):
        options["tls"] = authority
    server = start_redis(**options)
    url = change(server.url, untrusted)
    with pytest.raises(OnlineUnavailable) as sync, OnlineStore(url, "secure") as store:
        store.applied("v", "s1")
    with pytest.raises(OnlineUnavailable) as reader:
        asyncio.run(ask(url, "PING"))
    for raised in (sync, reader):
        assert says in str(raised.value) and f"127.0.0.1:{server.port}" in str(raised.value)
        assert_no_secret(str(raised.value))


# --- no secret in any output ---------------------------------------------------------------

@pytest.fixture
def no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """The repos here name their own Redis: FEATURESTORE_REDIS_URL must not replace it."""
    monkeypatch.delenv("FEATURESTORE_REDIS_URL", raising=False)


def sum_1h(client: Client, user: int) -> float:
    result = client.get_online_features(service=SERVICE, entities={"user_id": [user]})
    return float(result.to_dicts()[0]["sum_1h"])


def refused(call: Callable[[], Any]) -> str:
    """The details of a call the server must answer UNAVAILABLE."""
    with pytest.raises(ServingError) as raised:
        call()
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE, raised.value.details
    return raised.value.details


def test_no_password_in_any_error_log_line_or_cli_output(
        tmp_path: Path, start_redis: Callable[..., RedisServer], no_override: None) -> None:
    """A repo whose featurestore.yaml holds the password in its URL; the server's Redis then
    refuses the password, and then goes away. Every gRPC error detail, every line the server
    logged and everything the CLI printed is free of the password."""
    redis_server = start_redis(password=PASSWORD)
    root = tmp_path / "repo"
    root.mkdir()
    t0 = now_us()
    store = write_repo(root, "secrets", redis_server.url, tx_events([(1, 2.0, t0 - MINUTE)]))
    store.materialize(views=["spend"])
    events = tmp_path / "events.parquet"
    tx_events([(1, 3.0, now_us() - MINUTE)]).write_parquet(events)
    printed: list[str] = []

    def run(*args: str | Path) -> str:
        proc = cli(*args, expect=1)
        printed.extend([proc.stdout, proc.stderr])
        return proc.stderr

    server = start_server(root, tmp_path / "serve.log")
    try:
        with Client(server.target) as client:
            assert sum_1h(client, 1) == 2.0
            admin = redis.Redis.from_url(redis_server.url)
            admin.config_set("requirepass", "a-new-password")  # the repo's password is wrong now
            admin.client_kill_filter(_type="normal", skipme=True)
            admin.close()
            wait_for("NOT_SERVING", lambda: health(server.target) == NOT_SERVING, timeout=10)
            details = [refused(lambda: sum_1h(client, 1)),
                       refused(lambda: client.push("tx", tx_events([(1, 1.0, now_us())]),
                                                   "through-the-server"))]
            assert "refused AUTH: WRONGPASS" in details[0] and "redis://:***@" in details[0]
            assert "invalid username-password pair" in details[1]
            assert "UNAVAILABLE" in run("get", "--service", SERVICE, "--entity", "user_id=1",
                                        "--target", server.target)
            assert "invalid username-password pair" in run("push", "tx", events, "--repo", root)
            assert "invalid username-password pair" in run("materialize", "--repo", root)

            redis_server.stop()
            details += [refused(lambda: sum_1h(client, 1)),
                        refused(lambda: client.push("tx", tx_events([(1, 1.0, now_us())]),
                                                    "through-the-server"))]
            assert "Connection refused" in run("materialize", "--repo", root)
    finally:
        log = stop_server(server)
    assert "NOT_SERVING: Redis at redis://:***@127.0.0.1" in log, log
    assert f"online store redis://:***@127.0.0.1:{redis_server.port}/0" in log, log
    assert all("***" in text for text in printed[1::2]), printed
    assert_no_secret(log, *details, *printed)


def test_a_server_reads_redis_over_tls_with_an_acl_user_and_a_client_certificate(
        tmp_path: Path, authority: Authority, start_redis: Callable[..., RedisServer],
        no_override: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end over TLS only, the password in the environment, not in featurestore.yaml:
    materialize (redis-py), serve (the reader's own client), a push through the server."""
    redis_server = start_redis(password=PASSWORD, user="app", tls=authority, client_certs="yes")
    monkeypatch.setenv(VARIABLE, PASSWORD)
    root = tmp_path / "repo"
    root.mkdir()
    t0 = now_us()
    store = write_repo(root, "tls", redis_server.url.replace(ENCODED, f"${{{VARIABLE}}}"),
                       tx_events([(1, 2.0, t0 - MINUTE)]))
    assert PASSWORD not in (root / "featurestore.yaml").read_text()
    store.materialize(views=["spend"])
    server = start_server(root, tmp_path / "serve.log")
    try:
        with Client(server.target) as client:
            assert sum_1h(client, 1) == 2.0
            reply = client.push("tx", tx_events([(1, 3.0, now_us() - MINUTE)]), "over-tls")
            assert reply.rows == 1 and reply.tiles > 0
            assert sum_1h(client, 1) == 5.0
    finally:
        log = stop_server(server)
    assert f"online store rediss://app:***@127.0.0.1:{redis_server.port}/0" in log, log
    assert_no_secret(log)
