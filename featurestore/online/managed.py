"""`online_store: managed`: a redis-server owned by the repo, listening on a unix socket under
<repo>/.featurestore/redis/ with its data kept there (append-only file), started on demand.

It outlives the command that started it (except `serve`, which stops what it started), so
its state is readable (`status`) and it can be started and stopped on purpose: `featurestore
redis status|start|stop`."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from featurestore.errors import FeatureStoreError

STOP_TIMEOUT_S = 30.0  # SHUTDOWN fsyncs the append-only file, which a large store takes a while
# A unix socket's path must fit in 108 bytes (with its final NUL) on Linux, 104 elsewhere.
SOCKET_PATH_MAX = 103


@dataclass(frozen=True)
class ManagedStatus:
    """The managed redis-server as `featurestore redis status` shows it; pid, memory, keys and
    version are None when it is not running."""

    running: bool
    socket: Path
    dir: Path
    disk_bytes: int  # the data dir's files: the append-only file, the log
    pid: int | None = None
    memory: str | None = None  # Redis's used_memory_human, e.g. "1.05M"
    keys: int | None = None
    version: str | None = None


def socket_path(data_dir: Path) -> Path:
    """`<data dir>/redis.sock`, or, for a repo so deep that this path is too long for a unix
    socket, a socket in this user's private folder of the temp dir, named by the data dir's
    absolute path, so that every command of the repo finds the same one."""
    socket = data_dir / "redis.sock"
    if len(os.fsencode(socket.absolute())) <= SOCKET_PATH_MAX:
        return socket
    private = Path(tempfile.gettempdir()) / f"featurestore-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    info = private.lstat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077 or not private.is_dir():
        raise FeatureStoreError(
            f"the managed redis-server of {data_dir} needs a short socket path, and {private} is "
            "not a folder private to this user: remove it, or move the repo to a shorter path")
    digest = hashlib.sha256(os.fsencode(data_dir.resolve())).hexdigest()[:24]
    return private / f"{digest}.sock"


class ManagedRedis:
    def __init__(self, root: Path):
        self.dir = root / ".featurestore" / "redis"
        self.socket = socket_path(self.dir)
        self.pidfile = self.dir / "redis.pid"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _client(self, timeout: float | None = 0.5) -> redis.Redis:
        # No retries: redis-py's default backoff spends ~4 s finding a stopped server stopped.
        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=timeout,
                           retry=Retry(NoBackoff(), 0))

    def _info(self) -> dict[str, object] | None:
        """INFO of the running server, None when it does not answer."""
        try:
            return dict(self._client().info())
        except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
            return None

    def running(self) -> bool:
        try:
            return bool(self._client().ping())
        except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
            return False

    def status(self) -> ManagedStatus:
        disk = sum(p.stat().st_size for p in self.dir.rglob("*") if p.is_file()) \
            if self.dir.is_dir() else 0
        info = self._info()
        if info is None:
            return ManagedStatus(False, self.socket, self.dir, disk)
        keys = sum(int(db["keys"]) for name, db in info.items()  # type: ignore[index]
                   if name.startswith("db") and isinstance(db, dict))
        return ManagedStatus(True, self.socket, self.dir, disk, int(str(info["process_id"])),
                             str(info["used_memory_human"]), keys, str(info["redis_version"]))

    def pid(self) -> int | None:
        return self.status().pid

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
             "--pidfile", str(self.pidfile), "--logfile", str(self.dir / "redis.log")],
            check=True, capture_output=True)
        deadline = time.monotonic() + 10
        while not self.running():
            if time.monotonic() > deadline:
                raise FeatureStoreError(f"managed redis-server did not start; see {self.dir}/redis.log")
            time.sleep(0.02)
        return True

    def stop(self) -> bool:
        """Stop it if it runs, and return once it has exited (so its files can be moved or
        removed); True when it was running."""
        pid = self.pid()
        if pid is None:
            return False
        self._client(timeout=None).shutdown(nosave=False)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        # Redis removes its pid file once its data is on disk, just before it exits; waiting for
        # either also ends when nobody reaps the exited process (a container's init-less pid 1).
        while _alive(pid) and self.pidfile.exists():
            if time.monotonic() > deadline:
                raise FeatureStoreError(f"managed redis-server (pid {pid}) did not exit within "
                                        f"{STOP_TIMEOUT_S:.0f} s of SHUTDOWN; see "
                                        f"{self.dir}/redis.log")
            time.sleep(0.02)
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # PermissionError: another user's by now
        return False
    return True
