"""A redis-server the tests own: started on a free loopback port, and stoppable and
restartable (on the same port and data directory) by tests of outages; optionally with a
password, an ACL user, and TLS only (with client certificates optional or required)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import pytest
import redis
from certs import Authority

from featurestore.online.store import OnlineStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server process the tests own, so they can also stop and restart it.

    `password` alone protects the default user; with `user`, the default user is turned off and
    only `user` with `password` gets in. `tls`: the server listens only for TLS, with the
    authority's server certificate, and asks clients for one of its certificates as
    `client_certs` says. `url` connects with all of it."""

    def __init__(self, workdir: Path, password: str | None = None, user: str | None = None,
                 tls: Authority | None = None,
                 client_certs: Literal["no", "optional", "yes"] = "no"):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run `make test` (it installs Debian's "
                        "redis-server) or set FEATURESTORE_REDIS_URL to a Redis 7 server")
        if user is not None and password is None:
            raise ValueError("an ACL user needs a password here")
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.password, self.user, self.tls, self.client_certs = password, user, tls, client_certs
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        credentials = ""
        if self.password is not None:
            credentials = f"{self.user or ''}:{quote(self.password, safe='')}@"
        if self.tls is None:
            return f"redis://{credentials}127.0.0.1:{self.port}/0"
        url = f"rediss://{credentials}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca}"
        if self.client_certs == "yes":
            url += f"&ssl_certfile={self.tls.client.cert}&ssl_keyfile={self.tls.client.key}"
        return url

    def arguments(self) -> list[str]:
        args = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
                str(self.workdir)]
        if self.user is not None:
            args += ["--user", "default", "off",
                     "--user", self.user, "on", f">{self.password}", "~*", "&*", "+@all"]
        elif self.password is not None:
            args += ["--requirepass", self.password]
        if self.tls is None:
            return [*args, "--port", str(self.port)]
        return [*args, "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.server.cert),
                "--tls-key-file", str(self.tls.server.key),
                "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", self.client_certs]

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, *self.arguments()],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _ping(redis.Redis.from_url(self.url))  # redis-py's own reading of the URL

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def online_of(client: redis.Redis | redis.RedisCluster, project: str) -> OnlineStore:
    """The online store a test's redis-py client points at (tests inspect Redis directly;
    reads and writes go through the store's face)."""
    if isinstance(client, redis.RedisCluster):
        node = client.get_default_node()
        return OnlineStore(f"redis+cluster://{node.host}:{node.port}", project)
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return OnlineStore(f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}", project)
    return OnlineStore(f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/"
                       f"{kwargs.get('db', 0)}", project)


class RedisCluster:
    """A Redis Cluster of `masters` redis-server processes (no replicas) on free loopback
    ports, created with `redis-cli --cluster create`; `url` is its redis+cluster:// URL.
    Tests may stop one node (`stop_node`) to see what a read says then."""

    def __init__(self, workdir: Path, masters: int = 3):
        self.binary, self.cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if self.binary is None or self.cli is None:
            pytest.fail("redis-server and redis-cli are not installed: run `make redis` (it "
                        "installs Debian's redis-server and redis-tools)")
        self.workdir = workdir
        self.ports = [_cluster_port() for _ in range(masters)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> None:
        for port in self.ports:
            folder = self.workdir / str(port)
            folder.mkdir(exist_ok=True)
            self.processes[port] = subprocess.Popen(
                [self.binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder),
                 "--save", "", "--appendonly", "no", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.ports:
            _ping(redis.Redis(host="127.0.0.1", port=port))
        subprocess.run([self.cli, "--cluster", "create",
                        *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        for port in self.ports:
            client = redis.Redis(host="127.0.0.1", port=port)
            while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the cluster's node {port} is not ok after 30 s")
                time.sleep(0.05)
            client.close()

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.ports[0])

    def node_of_slot(self, slot: int) -> int:
        """The port of the node serving `slot`."""
        with redis.Redis(host="127.0.0.1", port=self.ports[0]) as client:
            for first, last, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    return int(master[1])
        raise KeyError(slot)

    def move_slot(self, slot: int, source: int, target: int) -> None:
        """Moves one slot and its keys between masters, as a resharding does (IMPORTING,
        MIGRATING, MIGRATE, then SETSLOT NODE on every node)."""
        clients = {p: redis.Redis(host="127.0.0.1", port=p) for p in self.ports}
        try:
            ids = {p: c.execute_command("CLUSTER", "MYID").decode() for p, c in clients.items()}
            clients[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
            clients[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
            while keys := clients[source].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                clients[source].execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000,
                                                "KEYS", *keys)
            for client in clients.values():
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        finally:
            for client in clients.values():
                client.close()

    def stop_node(self, port: int) -> None:
        process = self.processes.pop(port)
        process.terminate()
        process.wait(10)

    def stop(self) -> None:
        for port in list(self.processes):
            self.stop_node(port)


def _cluster_port() -> int:
    """A free port whose cluster bus port (10000 above it) is free too."""
    while True:
        port = free_port()
        if port + 10000 <= 65535:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def _ping(client: redis.Redis) -> None:
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
    finally:
        client.close()


def redis_client(url: str) -> redis.Redis | redis.RedisCluster:
    """A redis-py client of the test's online store, a cluster client for a cluster URL
    (tests look at keys directly)."""
    if url.startswith("redis+cluster://"):
        host, port = url.removeprefix("redis+cluster://").split(",")[0].split(":")
        return redis.RedisCluster(host=host, port=int(port))
    return redis.Redis.from_url(url)


def both_backends(request: pytest.FixtureRequest) -> str:
    """An `online_url` fixture body for modules that run against one Redis and a Redis
    Cluster: `online_url = pytest.fixture(params=["redis", "cluster"])(both_backends)`."""
    return str(request.getfixturevalue("redis_url" if request.param == "redis" else
                                       "cluster_url"))
