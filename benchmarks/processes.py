"""The processes a benchmark owns: commands started in their own process group, waited for
until ready and stopped with everything they spawned; and Python functions run in spawned
processes (client processes) that send their result back over a pipe."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import grpc
import redis
from harness import log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Group:
    """A subprocess started in its own session, so that it and everything it spawns (serving
    workers, multiprocessing's helpers) can be stopped together by process group."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    stopped: bool = False

    @property
    def pgid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to the leader (`featurestore serve` passes it on to its workers), then
        SIGKILL to whatever is left of the group (once: the group id is not ours after)."""
        if self.stopped:
            return
        self.stopped = True
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop within {grace:.0f} s; killing it")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)
        self.process.wait()


def start_group(name: str, command: list[str], log_path: Path, cwd: Path | None = None
                ) -> Group:
    """Starts `command` in a new session, stdout and stderr to `log_path`, without the
    environment's FEATURESTORE_REDIS_URL (a benchmark's repo names its own Redis)."""
    env = {k: v for k, v in os.environ.items() if k != "FEATURESTORE_REDIS_URL"}
    with log_path.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True, cwd=cwd)
    return Group(name, process, log_path)


def wait_for(group: Group, what: str, ready: Callable[[], bool], timeout: float = 120.0) -> None:
    """Polls ready() until true. A group that never gets ready is stopped here, since the
    caller has nothing to stop yet."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            if not group.alive():
                raise RuntimeError(f"{group.name} exited {group.process.returncode} before "
                                   f"{what}:\n{group.log.read_text()[-3000:]}")
            with contextlib.suppress(grpc.RpcError, redis.ConnectionError):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; see {group.log}")
            time.sleep(0.05)
    except BaseException:
        group.stop()
        raise


@contextlib.contextmanager
def owned(started: tuple[Group, str]) -> Iterator[tuple[Group, str]]:
    """For a server just started, as (group, address): stops the group when the block ends,
    errors included."""
    try:
        yield started
    finally:
        started[0].stop()


def _child_main(pipe: Connection, fn: Callable[..., Any], args: tuple[Any, ...],
                converse: bool) -> None:
    try:
        pipe.send(("ok", fn(pipe, *args) if converse else fn(*args)))
    except Exception as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


@dataclass
class Child:
    """A function running in a spawned process. What it returns (or the error it raised, as
    text) comes back over `pipe`, which a conversing function also gets as its first argument
    to exchange messages with the parent before that."""

    name: str
    process: BaseProcess
    pipe: Connection

    def result(self, timeout: float) -> Any:
        if not self.pipe.poll(timeout):
            raise RuntimeError(f"{self.name} sent nothing within {timeout:.0f} s")
        status, payload = self.pipe.recv()
        if status != "ok":
            raise RuntimeError(f"{self.name} failed: {payload}")
        return payload

    def stop(self, grace: float = 10.0) -> None:
        """Waits `grace` seconds for the process to end, then kills it."""
        self.process.join(grace)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def spawn(fn: Callable[..., Any], *args: Any, converse: bool = False) -> Child:
    """Starts fn(*args) (fn(pipe, *args) if `converse`) in a spawned process: a fresh
    interpreter, so it shares no state (gRPC, DuckDB, Numba) with the parent."""
    context = mp.get_context("spawn")
    pipe, child_end = context.Pipe()
    process = context.Process(target=_child_main, args=(child_end, fn, args, converse),
                              daemon=True)
    process.start()
    return Child(fn.__name__, process, pipe)


def in_process(fn: Callable[..., Any], *args: Any, timeout: float = 1800.0) -> Any:
    """Runs fn(*args) in a spawned process and returns what it returned."""
    child = spawn(fn, *args)
    try:
        return child.result(timeout)
    finally:
        child.stop()
