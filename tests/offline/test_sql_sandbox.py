"""Analysts' SQL reaches the store's objects and the transforms, nothing else: every way out
an operator found (reading, listing and writing files, other databases, extensions, settings)
is refused with one clear line, through `FeatureStore.sql` and `featurestore sql` alike, and
nothing is read or written. What analysts are promised still reads as through a plain
connection (transforms and `_asof` macros over temporary views: tests/test_sql.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
from repo_kit import T0, write_repo
from serving_kit import cli
from test_busy import HOLD

from featurestore import FeatureStore
from featurestore.errors import OfflineStoreBusy, ReadOnlyError
from featurestore.offline import event_log
from featurestore.values.timestamps import to_micros

LIMIT = "SQL is limited to reading the store's objects (sources.*, features.*, transform functions)"


@dataclass(frozen=True)
class Attack:
    sql: str  # {repo}: the feature repo (also the working directory), {out}: a folder outside
    refused: str  # what the message must name
    creates: str | None = None  # what a working attack would have written


ATTACKS = {
    "read_csv": Attack("SELECT * FROM read_csv('/etc/passwd')", "(/etc/passwd)"),
    "read_text": Attack("SELECT content FROM read_text('/etc/passwd')", "(/etc/passwd)"),
    "read_blob": Attack("SELECT content FROM read_blob('/etc/passwd')", "(/etc/passwd)"),
    "glob": Attack("SELECT file FROM glob('/etc/*')", "(/etc/*)"),
    "read_json": Attack("SELECT * FROM read_json('{out}/secret.json')", "secret.json)"),
    "read_parquet in the repo": Attack(
        "SELECT * FROM read_parquet('{repo}/data/profiles.parquet')", "profiles.parquet)"),
    "relative path": Attack("SELECT * FROM 'data/profiles.parquet'", "(data/profiles.parquet)"),
    "inside a temp view": Attack(
        "CREATE TEMP VIEW v AS SELECT * FROM read_csv('/etc/passwd'); SELECT * FROM v",
        "(/etc/passwd)"),
    "COPY out": Attack("COPY (SELECT * FROM sources.profiles) TO '{out}/leak.csv'",
                       "COPY statements are refused", "{out}/leak.csv"),
    "COPY into the repo": Attack(
        "COPY (SELECT 'import os' AS line) TO '{repo}/evil.py' (HEADER false, QUOTE '')",
        "COPY statements are refused", "{repo}/evil.py"),
    "COPY relative": Attack("COPY (SELECT 1 AS x) TO 'evil.py'", "COPY statements are refused",
                            "{repo}/evil.py"),
    "COPY FROM": Attack("CREATE TEMP TABLE t (line VARCHAR); COPY t FROM '/etc/passwd'",
                        "COPY statements are refused"),
    "EXPLAIN ANALYZE COPY": Attack(  # passes the statement check: DuckDB's own fence holds
        "EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{out}/explained.csv'",
        "access outside the store is refused ({out}/explained.csv)", "{out}/explained.csv"),
    "EXPORT": Attack("EXPORT DATABASE '{out}/export'", "EXPORT DATABASE statements are refused",
                     "{out}/export"),
    "ATTACH": Attack("ATTACH '{out}/new.duckdb' AS n (READ_WRITE)", "ATTACH statements are refused",
                     "{out}/new.duckdb"),
    "DETACH": Attack("DETACH store", "DETACH statements are refused"),
    "INSTALL": Attack("INSTALL httpfs", "INSTALL/LOAD statements are refused"),
    "LOAD": Attack("LOAD httpfs", "INSTALL/LOAD statements are refused"),
    "SET external access": Attack("SET enable_external_access = true",
                                  "SET/RESET/USE/PRAGMA statements are refused"),
    "SET lock": Attack("SET lock_configuration = false", "SET/RESET/USE/PRAGMA statements are refused"),
    "RESET lock": Attack("RESET lock_configuration", "SET/RESET/USE/PRAGMA statements are refused"),
    "PRAGMA setting": Attack("PRAGMA enable_profiling = 'json'; PRAGMA profile_output = "
                             "'{out}/profile.json'; SELECT 1", "/PRAGMA statements are refused",
                             "{out}/profile.json"),
    "PRAGMA": Attack("PRAGMA enable_checkpoint_on_shutdown",
                     "PRAGMA/IMPORT DATABASE statements are refused"),
    "IMPORT": Attack("IMPORT DATABASE '{out}'", "PRAGMA/IMPORT DATABASE statements are refused"),
}


@dataclass(frozen=True)
class Setup:
    store: FeatureStore
    repo: Path
    out: Path

    def sql(self, attack: Attack) -> str:
        return attack.sql.format(repo=self.repo, out=self.out)

    def files(self) -> dict[Path, tuple[int, int]]:
        return {p: (p.stat().st_size, p.stat().st_mtime_ns)
                for folder in (self.repo, self.out) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    repo = write_repo(tmp_path_factory.mktemp("repo"))
    out = tmp_path_factory.mktemp("outside")
    (out / "secret.json").write_text('{"token": "do not read"}')
    store = FeatureStore(repo)
    store.apply()
    return Setup(store, repo, out)


@pytest.fixture
def cwd_repo(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> Setup:
    """Relative paths in the attacks name files that exist, relative to the working folder."""
    monkeypatch.chdir(setup.repo)
    return setup


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_refused_through_the_python_api(cwd_repo: Setup, attack: Attack) -> None:
    before = cwd_repo.files()
    with pytest.raises(ReadOnlyError) as refused:
        cwd_repo.store.sql(cwd_repo.sql(attack))
    message = str(refused.value)
    assert message.startswith(LIMIT + ": ") and "\n" not in message
    assert attack.refused.format(out=cwd_repo.out) in message
    assert refused.value.__cause__ is None  # no DuckDB traceback underneath
    assert refused.value.__context__ is None or refused.value.__suppress_context__
    assert cwd_repo.files() == before
    if attack.creates:
        assert not Path(attack.creates.format(repo=cwd_repo.repo, out=cwd_repo.out)).exists()


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_refused_through_the_cli(cwd_repo: Setup, attack: Attack) -> None:
    before = cwd_repo.files()
    proc = cli("sql", "--repo", cwd_repo.repo, cwd_repo.sql(attack), expect=1)
    assert proc.stdout == ""  # nothing read, nothing printed
    line = f"error: {LIMIT}: "
    assert proc.stderr.startswith(line) and proc.stderr.count("\n") == 1, proc.stderr
    assert attack.refused.format(out=cwd_repo.out) in proc.stderr
    assert cwd_repo.files() == before
    if attack.creates:
        assert not Path(attack.creates.format(repo=cwd_repo.repo, out=cwd_repo.out)).exists()


def test_writes_to_the_store_name_the_statement(setup: Setup) -> None:
    with pytest.raises(ReadOnlyError, match=r": DELETE statements are refused \(the offline "
                                            r"store is read-only\)"):
        setup.store.sql("DELETE FROM features.user_profile")
    with pytest.raises(ReadOnlyError, match=r": CREATE on the store is refused \(the offline "
                                            "store is read-only; temporary views"):
        setup.store.sql("CREATE VIEW features.mine AS SELECT 1 AS x")


def test_the_connection_has_external_access_off_and_its_settings_locked(setup: Setup) -> None:
    settings = setup.store.sql(
        "SELECT name, value FROM duckdb_settings() "
        "WHERE name IN ('enable_external_access', 'lock_configuration') ORDER BY name")
    assert settings.rows() == [("enable_external_access", "false"),
                               ("lock_configuration", "true")]


def plain(setup: Setup, query: str) -> pl.DataFrame:
    """The query through an ordinary read-only connection to the store's file."""
    with duckdb.connect(str(setup.store.config.offline_store), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(query).pl()


@pytest.mark.parametrize("query", [
    "SELECT * FROM sources.profiles ORDER BY ALL",
    "SELECT * FROM features.user_profile ORDER BY ALL",
    "WITH latest AS (SELECT user_id, max(event_timestamp) AS t FROM features.user_profile "
    "GROUP BY 1) SELECT * FROM latest ORDER BY user_id",
])
def test_store_objects_read_as_through_a_plain_connection(setup: Setup, query: str) -> None:
    got = setup.store.sql(query)
    assert got.height > 0 and got.equals(plain(setup, query))


WINDOWED = """
from featurestore import Aggregate, Entity, FeatureView, Source
from featurestore.types import Int64

user = Entity("user", join_keys={"user_id": Int64})
tx = Source("tx", path="data/tx.parquet", timestamp="event_ts")
spend = FeatureView("spend", entity=user, source=tx,
                    aggregates=[Aggregate("amount", "sum", window="1d", hop="1h", name="sum_1d")])
"""


def test_the_lock_down_stays_on_the_sandbox_connection(tmp_path: Path) -> None:
    """Inside a session the store's own connection still reads the pushed-event log's files
    after a sandboxed query ran in the same process."""
    tx = pl.DataFrame({"user_id": [1], "amount": [2.0], "event_ts": [T0]},
                      schema_overrides={"event_ts": pl.Datetime("us", "UTC")})
    repo = write_repo(tmp_path, textwrap.dedent(WINDOWED), {"tx": tx})
    store = FeatureStore(repo)
    store.apply()
    pushed = tx.with_columns(amount=pl.lit(5.0), event_ts=pl.lit(T0 + timedelta(minutes=1)))
    now = to_micros(T0 + timedelta(minutes=2))
    event_log.append(repo, "tx", "b1",
                     event_log.check_batch(store.plan, "tx", pushed.to_arrow(), now, 0), now)
    labels = pl.DataFrame({"user_id": [1], "event_timestamp": [T0 + timedelta(hours=1)]})
    with store.session():
        with pytest.raises(ReadOnlyError):
            store.sql("SELECT * FROM read_parquet('data/tx.parquet')")
        assert store.sql("SELECT count(*) AS n FROM sources.tx")["n"].to_list() == [1]
        assert store.training_set(labels, features=["spend"])["sum_1d"].to_list() == [7.0]


def test_a_store_held_by_another_process_is_reported(setup: Setup) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(setup.store.config.offline_store)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        with pytest.raises(OfflineStoreBusy, match=rf"in use by another process \(PID "
                                                   rf"{holder.pid}\)"):
            setup.store.sql("SELECT 1")
    finally:
        holder.communicate("")
    assert setup.store.sql("SELECT 1 AS x")["x"].to_list() == [1]
