"""What an analyst meets in `FeatureStore.sql` and `featurestore sql`: the store's objects are
discoverable (SHOW TABLES, .tables, .describe) without the bookkeeping, every view has an
`_asof` lookup (a windowed one gives the training set's values bit for bit), temporary objects
last a session, and `store.session()` takes any number of `sql()` calls."""

from __future__ import annotations

import re
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from repo_kit import PROFILE_DEFS, T0, profiles_frame, write_repo
from serving_kit import cli

from featurestore import FeatureStore
from featurestore.errors import FeatureStoreError
from featurestore.offline import event_log
from featurestore.values.timestamps import to_micros

DEFS = PROFILE_DEFS + """
from featurestore import Aggregate

tx = Source("tx", path="data/tx.parquet", timestamp="event_ts", created="ingested_at")
spend = FeatureView("spend", entity=user, source=tx, aggregates=[
    Aggregate("amount", "sum", window="1d", hop="1h", name="sum_1d"),
    Aggregate("amount", "count", window="6h", hop="1h", name="count_6h"),
    Aggregate("amount", "max", window="1h", hop="5m", name="max_1h"),
    Aggregate("amount", "stddev", window="1d", hop="1h", name="stddev_1d"),
    Aggregate("merchant", "count_distinct", window="1d", hop="1h", dtype=String,
              name="merchants_1d")])
"""
AGGREGATES = ["sum_1d", "count_6h", "max_1h", "stddev_1d", "merchants_1d"]
PUSH_AT = T0 + timedelta(days=1, hours=3)


def tx_frame(seed: int, n: int = 600) -> pl.DataFrame:
    """Events over three days for users 1-5; some arrive hours or days after they happened
    (created > event time), some amounts are NULL."""
    rng = np.random.default_rng(seed)
    offsets = rng.integers(0, 3 * 86_400_000_000, n)
    delays = np.where(rng.random(n) < 0.1, rng.integers(0, 2 * 86_400_000_000, n),
                      rng.integers(0, 3_600_000_000, n))
    amounts = np.round(rng.normal(50.0, 30.0, n), 2)
    return pl.DataFrame({
        "user_id": rng.integers(1, 6, n),
        "merchant": [f"M{m}" for m in rng.integers(0, 12, n)],
        "amount": [None if i % 17 == 0 else float(a) for i, a in enumerate(amounts)],
        "event_ts": [T0 + timedelta(microseconds=int(o)) for o in offsets],
        "ingested_at": [T0 + timedelta(microseconds=int(o + d)) for o, d in zip(offsets, delays,
                                                                                strict=True)],
    }, schema_overrides={"event_ts": pl.Datetime("us", "UTC"),
                         "ingested_at": pl.Datetime("us", "UTC")})


def make_store(root: Path, seed: int = 7) -> FeatureStore:
    repo = write_repo(root, textwrap.dedent(DEFS), {"profiles": profiles_frame(),
                                                  "tx": tx_frame(seed)})
    store = FeatureStore(repo)
    store.apply()
    # A pushed batch after apply: training sets read it from the event log, and so must SQL.
    pushed = pl.DataFrame({"user_id": [1, 1, 2], "merchant": ["P1", "P2", "P1"],
                           "amount": [1000.0, 2000.0, 3000.0],
                           "event_ts": [PUSH_AT - timedelta(minutes=m) for m in (1, 2, 3)]},
                          schema_overrides={"event_ts": pl.Datetime("us", "UTC")})
    now = to_micros(PUSH_AT)
    event_log.append(repo, "tx", "b1",
                     event_log.check_batch(store.plan, "tx", pushed.to_arrow(), now, 0), now)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    return make_store(tmp_path_factory.mktemp("analyst"))


def labels(seed: int, n: int = 2500) -> pl.DataFrame:
    """Random times, exact hop boundaries, the push's instant, an entity without events (6)
    and one unknown everywhere (99). More than one DuckDB vector, so the lookup runs in
    several chunks."""
    rng = np.random.default_rng(seed)
    times = [T0 + timedelta(microseconds=int(o))
             for o in rng.integers(-3_600_000_000, 4 * 86_400_000_000, n - 50)]
    times += [T0 + timedelta(hours=h) for h in range(48)] + [PUSH_AT, PUSH_AT]
    users = [int(u) for u in rng.choice([1, 2, 3, 4, 5, 6, 99], n - 2)] + [1, 2]
    return pl.DataFrame({"i": list(range(n)), "user_id": users, "event_timestamp": times},
                        schema_overrides={"event_timestamp": pl.Datetime("us", "UTC")})


def values_sql(frame: pl.DataFrame) -> str:
    rows = ", ".join(f"({r['i']}, {r['user_id']}, TIMESTAMPTZ '{r['event_timestamp']}')"
                     for r in frame.to_dicts())
    return f"SELECT * FROM (VALUES {rows}) AS t(i, user_id, event_timestamp)"


def bits(frame: pl.DataFrame) -> dict[str, tuple[list[bool], list[int | str]]]:
    """Each column's null mask and values, floats as their bit patterns (-0.0 and NaN too)."""
    out: dict[str, tuple[list[bool], list[int | str]]] = {}
    for name in frame.columns:
        column = frame[name]
        valid = column.is_not_null().to_list()
        if column.dtype == pl.Float64:
            raw = column.fill_null(0.0).to_numpy().view(np.int64).tolist()
        else:
            raw = column.to_list()
        out[name] = (valid, [v if ok else 0 for v, ok in zip(raw, valid, strict=True)])
    return out


def windowed_asof(sql: object, frame: pl.DataFrame) -> pl.DataFrame:
    run = sql.sql  # type: ignore[attr-defined]
    return run(f"CREATE TEMP VIEW labels AS {values_sql(frame)}; "
               "SELECT * FROM features.spend_asof('labels') ORDER BY i")


@pytest.mark.parametrize("seed", [1, 2])
def test_windowed_asof_equals_the_training_set_bit_for_bit(tmp_path: Path, seed: int) -> None:
    store = make_store(tmp_path, seed)
    frame = labels(seed)
    expected = store.training_set(frame, features=["spend"])
    got = windowed_asof(store, frame)
    assert got.columns == ["i", "user_id", "event_timestamp", *AGGREGATES]
    assert got["i"].to_list() == frame["i"].to_list()
    assert bits(got.select(AGGREGATES)) == bits(expected.select(AGGREGATES))
    # The comparison has teeth: empty windows (sum 0, max NULL), values, the push.
    assert (got["sum_1d"] == 0.0).any() and (got["sum_1d"] > 0.0).any()
    assert 0 < got["max_1h"].null_count() < got.height
    at_push = got.filter((pl.col("event_timestamp") == PUSH_AT) & (pl.col("user_id") == 1))
    assert at_push["sum_1d"][0] >= 3000.0


def test_windowed_asof_inside_a_session_and_with_null_keys(store: FeatureStore) -> None:
    frame = labels(3, 300)
    outside = windowed_asof(store, frame)
    with store.session():
        inside = windowed_asof(store, frame)
        nulls = store.sql(
            "CREATE TEMP VIEW l AS SELECT * FROM (VALUES (NULL::BIGINT, TIMESTAMPTZ "
            "'2024-01-02 00:00:00+00'), (1, NULL::TIMESTAMPTZ), (1, TIMESTAMPTZ "
            "'2024-01-02 00:00:00+00')) t(user_id, event_timestamp); "
            "SELECT * FROM features.spend_asof('l') ORDER BY user_id NULLS FIRST, "
            "event_timestamp NULLS FIRST")
    assert bits(inside) == bits(outside)
    assert nulls.height == 3
    assert nulls.select(AGGREGATES).row(0) == (None,) * len(AGGREGATES)  # NULL key
    assert nulls.select(AGGREGATES).row(1) == (None,) * len(AGGREGATES)  # NULL time
    assert nulls["count_6h"][2] is not None


def listing(store: FeatureStore, query: str = "SHOW TABLES") -> dict[str, str]:
    frame = store.sql(query)
    return dict(zip(frame["name"].to_list(), frame["kind"].to_list(), strict=True))


def test_show_tables_lists_what_an_analyst_can_use_and_nothing_internal(
        store: FeatureStore) -> None:
    assert listing(store) == {
        "sources.profiles": "source", "sources.tx": "source",
        "features.spend": "windowed feature view", "features.user_profile": "feature view",
        "features.spend_asof": "point-in-time lookup",
        "features.user_profile_asof": "point-in-time lookup",
        "amount_to_limit": "transform function"}
    usage = store.sql("show tables;")  # any spelling
    assert "amount_to_limit(amount DOUBLE, limit DOUBLE) -> DOUBLE" in usage["usage"].to_list()
    assert "SELECT * FROM features.spend_asof('labels')" in usage["usage"].to_list()
    everything = store.sql("SHOW ALL TABLES")
    assert set(everything["schema"]) == {"sources", "features"}
    assert set(everything["name"]) == {"profiles", "tx", "spend", "user_profile"}


def test_show_tables_lists_temporary_objects_created_before_it(store: FeatureStore) -> None:
    got = listing(store, "CREATE TEMP VIEW mine AS SELECT 1 AS x; "
                         "CREATE TEMP MACRO twice(x) AS 2 * x; SHOW TABLES")
    assert got["mine"] == "temporary view" and got["twice"] == "temporary macro"
    assert "features.spend_asof" in got


def describe(store: FeatureStore, name: str) -> list[tuple[str, str, str]]:
    with store.sql_session() as session:
        return session.describe(name).rows()


def test_describe_names_columns_parameters_and_results(store: FeatureStore) -> None:
    assert describe(store, "features.user_profile")[:3] == [
        ("user_id", "BIGINT", "column"),
        ("event_timestamp", "TIMESTAMP WITH TIME ZONE", "column"),
        ("visible_at", "TIMESTAMP WITH TIME ZONE", "column")]
    assert describe(store, "amount_to_limit") == [
        ("amount", "DOUBLE", "parameter: request input amount"),
        ("limit", "DOUBLE", "parameter: feature user_profile.credit_limit"),
        ("amount_to_limit", "DOUBLE", "result")]
    asof = describe(store, "features.spend_asof")
    assert asof[0][0] == "labels" and asof[1:3] == [
        ("user_id", "BIGINT", "label column: join key"),
        ("event_timestamp", "TIMESTAMP WITH TIME ZONE", "label column: as-of time")]
    assert [(n, t) for n, t, _ in asof[3:]] == [
        ("sum_1d", "DOUBLE"), ("count_6h", "BIGINT"), ("max_1h", "DOUBLE"),
        ("stddev_1d", "DOUBLE"), ("merchants_1d", "BIGINT")]
    with pytest.raises(FeatureStoreError, match=r"no table, view, macro or transform named "
                                                "'_fs.nothing'"):
        describe(store, "_fs.nothing")


def test_temporary_objects_last_a_sql_session_and_no_longer(store: FeatureStore) -> None:
    with store.sql_session() as session:
        session.sql("CREATE TEMP VIEW kept AS SELECT 41 AS x")
        session.sql("CREATE TEMP MACRO plus_one(x) AS x + 1")
        assert session.sql("SELECT plus_one(x) AS y FROM kept")["y"].to_list() == [42]
    with pytest.raises(FeatureStoreError, match="kept"):
        store.sql("SELECT * FROM kept")


def test_a_session_takes_many_sql_calls(store: FeatureStore) -> None:
    frame = labels(4, 50)
    with store.session():
        for i in range(5):
            assert store.sql(f"SELECT {i} AS x")["x"].to_list() == [i]
            assert store.sql("SELECT amount_to_limit(10.0, 4.0) AS r")["r"].to_list() == [2.5]
            assert store.sql("SELECT count(*) AS n FROM sources.tx")["n"][0] == 600
            assert store.training_set(frame, features=["spend"]).height == 50


SHELL = """\
.tables
.describe features.spend_asof
help
CREATE TEMP VIEW labels AS SELECT * FROM (VALUES (1, TIMESTAMPTZ '2024-01-02 00:00:00+00'))
    t(user_id, event_timestamp);
.help
SELECT user_id, count_6h FROM features.spend_asof('labels');
.describe nothing
SHOW TABLES;
.quit
SELECT 'not run' AS after_quit;
"""


def test_the_interactive_shell_lists_describes_helps_and_keeps_temp_views(
        store: FeatureStore) -> None:
    proc = cli("sql", "--repo", store.config.root, "--format", "csv", stdin=SHELL)
    listed = proc.stdout.split("name,kind,usage\n")
    assert len(listed) == 3  # .tables, then SHOW TABLES with the temporary view
    assert "features.spend_asof,point-in-time lookup," in listed[1]
    assert "amount_to_limit,transform function," in listed[1]
    assert "labels,temporary view," in listed[2] and "labels,temporary" not in listed[1]
    assert "_fs" not in proc.stdout
    assert "sum_1d,DOUBLE,\"result column" in proc.stdout
    assert proc.stdout.count(".describe NAME") == 2  # help and .help
    expected = store.sql("CREATE TEMP VIEW labels AS SELECT * FROM (VALUES (1, TIMESTAMPTZ "
                         "'2024-01-02 00:00:00+00')) t(user_id, event_timestamp); "
                         "SELECT user_id, count_6h FROM features.spend_asof('labels')")
    assert f"user_id,count_6h\n1,{expected['count_6h'][0]}\n" in proc.stdout
    assert "not run" not in proc.stdout
    assert proc.stderr.splitlines() == ["error: no table, view, macro or transform named "
                                        "'nothing'; `.tables` lists them"]


def test_the_readme_runs_no_duckdb_command_the_project_does_not_install() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    commands = {line.split()[0] for block in re.findall(r"```sh\n(.*?)```", readme, re.S)
                for line in block.splitlines() if line.strip()}
    assert "duckdb" not in commands or (Path(sys.executable).parent / "duckdb").exists()
