"""The repo's managed redis-server (`online_store: managed`), seen and driven from the CLI:
`featurestore redis status|start|stop`, and the line a command prints when it starts one,
which then outlives the command (also when the command fails). Real redis-server processes in
temporary repos, each stopped at the end of its test."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from repo_kit import T0, write_repo
from serving_kit import cli

from featurestore.online.managed import ManagedRedis, socket_path

# An empty FEATURESTORE_REDIS_URL leaves the repo's own `online_store: managed` in force.
MANAGED = {"FEATURESTORE_REDIS_URL": ""}
STARTED = re.compile(r"^started the repo's managed redis-server \(pid (\d+), socket (\S+)\); it "
                     r"keeps running: stop it with `featurestore redis stop --repo (\S+)`$", re.M)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    root = write_repo(tmp_path / "repo")  # no online_store line: managed
    yield root
    ManagedRedis(root).stop()


def featurestore(*args: str | Path, expect: int = 0) -> tuple[str, str]:
    proc = cli(*args, expect=expect, env=MANAGED)
    return proc.stdout, proc.stderr


def status(repo: Path) -> dict[str, str]:
    """`redis status` as {row name: value}."""
    out, _ = featurestore("redis", "status", "--repo", repo)
    return dict(re.findall(r"^(state|pid|socket|memory|keys|version|data dir)\s+(.+)$", out,
                           re.M))


def is_redis_server(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z" and Path(f"/proc/{pid}/comm").read_text().strip() == "redis-server"
    except FileNotFoundError:
        return False


def test_status_start_and_stop(repo: Path) -> None:
    data_dir = repo / ".featurestore" / "redis"
    assert status(repo)["state"] == "not running"

    out, _ = featurestore("redis", "start", "--repo", repo)
    pid = int(re.fullmatch(r"started managed redis-server, pid (\d+), socket \S+; stop it with "
                           rf"`featurestore redis stop --repo {repo}`\n", out)[1])  # type: ignore[index]
    assert is_redis_server(pid)
    shown = status(repo)
    assert shown["state"] == "running" and shown["pid"] == str(pid)
    assert shown["socket"] == str(ManagedRedis(repo).socket)
    assert shown["data dir"].startswith(f"{data_dir} (")
    assert re.fullmatch(r"[\d.]+[KMG]? used", shown["memory"]) and shown["keys"] == "0"

    out, _ = featurestore("redis", "start", "--repo", repo)
    assert out.startswith(f"already running: managed redis-server, pid {pid},")

    out, _ = featurestore("redis", "stop", "--repo", repo)
    assert out == f"stopped managed redis-server (pid {pid}); its data stays in {data_dir}\n"
    assert not is_redis_server(pid)  # stop returns once it has exited
    assert status(repo)["state"] == "not running"
    out, _ = featurestore("redis", "stop", "--repo", repo)
    assert out == "managed redis-server is not running\n"


def test_data_stays_across_stop_and_start(repo: Path) -> None:
    managed = ManagedRedis(repo)
    featurestore("redis", "start", "--repo", repo)
    with redis.Redis(unix_socket_path=str(managed.socket)) as client:
        client.mset({"a": 1, "b": 2, "c": 3})
    assert status(repo)["keys"] == "3"
    featurestore("redis", "stop", "--repo", repo)
    featurestore("redis", "start", "--repo", repo)
    with redis.Redis(unix_socket_path=str(managed.socket)) as client:
        assert client.mget("a", "b", "c") == [b"1", b"2", b"3"]


@pytest.mark.parametrize("command", ["materialize", "materialize-incremental"])
def test_materialize_says_it_started_the_managed_redis(repo: Path, command: str) -> None:
    featurestore("apply", "--repo", repo)
    end = (T0 + timedelta(days=3)).isoformat()
    _, err = featurestore(command, "--repo", repo, "--end", end)
    [(pid, socket, named)] = STARTED.findall(err)
    assert socket == str(ManagedRedis(repo).socket) and named == str(repo)
    assert status(repo)["pid"] == pid  # still running after the command
    _, err = featurestore(command, "--repo", repo, "--end", end)
    assert "started" not in err  # it was running: nothing to say


def test_a_failing_materialize_still_says_it_started_one(repo: Path) -> None:
    featurestore("apply", "--repo", repo)
    _, err = featurestore("materialize", "--repo", repo, "--view", "nope", expect=1)
    assert "unknown feature view(s) ['nope']" in err
    [(pid, _, _)] = STARTED.findall(err)
    assert status(repo)["pid"] == pid


def test_a_bad_argument_starts_nothing(repo: Path) -> None:
    _, err = featurestore("materialize", "--repo", repo, "--end", "2025-07-01T00:00:00", expect=1)
    assert "has a time of day but no zone" in err and "started" not in err
    assert not ManagedRedis(repo).running()


@pytest.mark.parametrize("command", ["status", "start", "stop"])
def test_a_repo_with_a_redis_url_has_no_managed_server(tmp_path: Path, command: str) -> None:
    root = write_repo(tmp_path / "repo")
    config = root / "featurestore.yaml"
    config.write_text(config.read_text() + "online_store: redis://app:s3cret@db.internal:6379/0\n")
    _, err = featurestore("redis", command, "--repo", root, expect=1)
    assert f"{config}: online_store is a Redis URL, not 'managed'" in err
    assert "s3cret" not in err
    assert not (root / ".featurestore" / "redis").exists()


def test_a_repo_too_deep_for_a_unix_socket_path_gets_a_short_one(tmp_path: Path) -> None:
    """A socket path must fit in 108 bytes: a deep repo's managed redis-server listens in this
    user's private temp folder instead, and every command of the repo finds it there."""
    short = Path("/srv/repo/.featurestore/redis")
    assert socket_path(short) == short / "redis.sock"
    root = write_repo(tmp_path / ("deep" * 25) / "repo")
    assert len(str(root / ".featurestore" / "redis" / "redis.sock")) > 108
    try:
        featurestore("redis", "start", "--repo", root)
        socket = Path(status(root)["socket"])
        assert len(str(socket)) <= 100 and root not in socket.parents
        assert socket == ManagedRedis(root).socket and socket.is_socket()
        assert (socket.parent.stat().st_mode & 0o777) == 0o700
        assert status(root)["state"] == "running"
        featurestore("apply", "--repo", root)
        featurestore("materialize", "--repo", root, "--end", (T0 + timedelta(days=1)).isoformat())
        assert redis.Redis(unix_socket_path=str(socket)).dbsize() > 0
    finally:
        ManagedRedis(root).stop()
    assert status(root)["state"] == "not running"
