"""A redis-server the tests own: started on a free loopback port, and stoppable and
restartable (on the same port and data directory) by tests of outages."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from featurestore.online.store import OnlineStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server process the tests own, so they can also stop and restart it."""

    def __init__(self, workdir: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run `make test` (it installs Debian's "
                        "redis-server) or set FEATURESTORE_REDIS_URL to a Redis 7 server")
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

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
