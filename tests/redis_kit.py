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
        client = redis.Redis.from_url(self.url)  # redis-py's own reading of the URL
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

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def online_of(client: redis.Redis, project: str) -> OnlineStore:
    """The online store a test's redis-py client points at (tests inspect Redis directly;
    reads and writes go through the store's face)."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return OnlineStore(f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}", project)
    return OnlineStore(f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/"
                       f"{kwargs.get('db', 0)}", project)
