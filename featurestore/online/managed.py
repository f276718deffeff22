"""`online_store: managed`: a redis-server owned by the repo, listening on a unix socket under
<repo>/.featurestore/redis/ with its data kept there (append-only file), started on demand."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from featurestore.errors import FeatureStoreError


class ManagedRedis:
    def __init__(self, root: Path):
        self.dir = root / ".featurestore" / "redis"
        self.socket = self.dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _client(self, timeout: float | None = 0.5) -> redis.Redis:
        # No retries: redis-py's default backoff spends ~4 s finding a stopped server stopped.
        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=timeout,
                           retry=Retry(NoBackoff(), 0))

    def running(self) -> bool:
        try:
            return bool(self._client().ping())
        except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
            return False

    def start(self) -> bool:
        """Start it unless it runs already; True when this call started it."""
        if self.running():
            return False
        binary = shutil.which("redis-server")
        if binary is None:
            raise FeatureStoreError(
                "online_store is 'managed' but redis-server is not installed: install it "
                "(Debian: apt-get install redis-server; `make test` does) or set online_store "
                "to a redis:// URL")
        self.dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--dir", str(self.dir), "--appendonly", "yes", "--save", "", "--daemonize", "yes",
             "--pidfile", str(self.dir / "redis.pid"), "--logfile", str(self.dir / "redis.log")],
            check=True, capture_output=True)
        deadline = time.monotonic() + 10
        while not self.running():
            if time.monotonic() > deadline:
                raise FeatureStoreError(f"managed redis-server did not start; see {self.dir}/redis.log")
            time.sleep(0.02)
        return True

    def stop(self) -> None:
        if self.running():
            self._client(timeout=None).shutdown(nosave=False)  # may fsync a large file
