"""The Spark engine against the DuckDB engine on the same generated repo: every feature
table row and every training-set value and status, bit for bit. The data has special floats
(NaN, infinities, -0.0, subnormals), ties in event and created times, created times that hide
rows and ones that only break ties, labels on ttl and hop edges, composite keys (unicode
strings among them), null keys, duplicate labels, windowed views and transforms."""

from __future__ import annotations

import math
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from redis_kit import redis_client

from featurestore import FeatureStore
from featurestore.offline import event_log
from featurestore.offline.connection import connect
from featurestore.offline.feature_tables import feature_table
from featurestore.offline.spark.feature_tables import from_bits, location

FUNCTIONS = ["sum", "count", "mean", "min", "max", "var", "stddev", "first", "last",
             "count_distinct"]
DEFINITIONS = """
from datetime import timedelta
from featurestore import (Aggregate, Entity, FeatureService, FeatureView, Field, Request,
                          Source, transform)
from featurestore.types import Bool, Float64, Int64, String, Timestamp

acct = Entity("acct", join_keys={"acct_id": Int64})
acct_region = Entity("acct_region", join_keys={"acct_id": Int64, "region": String})
user = Entity("user", join_keys={"user_id": Int64})
user_shop = Entity("user_shop", join_keys={"user_id": Int64, "shop": String})

a_src = Source("a_src", path="data/a.parquet", timestamp="event_ts", created="created_ts")
a_tie = Source("a_tie", path="data/a.parquet", timestamp="event_ts", created="created_ts",
               created_role="tie_break")
b_src = Source("b_src", path="data/b/*.parquet", timestamp="ts")
tx = Source("tx", path="data/tx.parquet", timestamp="event_ts", created="ingested_ts")

view_a = FeatureView("view_a", entity=acct, source=a_src, ttl=timedelta(minutes=20),
    fields=[Field("a_int", Int64), Field("a_float", Float64), Field("a_str", String),
            Field("a_ts", Timestamp)])
view_t = FeatureView("view_t", entity=acct, source=a_tie, ttl=timedelta(minutes=20),
    fields=[Field("a_bool", Bool)])
view_b = FeatureView("view_b", entity=acct_region, source=b_src,
    fields=[Field("b_int", Int64), Field("b_float", Float64), Field("b_str", String)])
spend = FeatureView("spend", entity=user, source=tx, aggregates=[
    *[Aggregate("amount", f, window="2h", hop="30m") for f in FUNCTIONS],
    Aggregate("amount", "sum", window="10m", hop="5m", name="sum_10m"),
    Aggregate("qty", "sum", window="1h", hop="15m", dtype=Int64, name="qty_1h"),
    Aggregate("qty", "max", window="1h", hop="15m", dtype=Int64, name="qty_max_1h"),
    Aggregate("shop", "count_distinct", window="2h", hop="30m", dtype=String, name="shops")])
b_sums = FeatureView("b_sums", entity=acct_region, source=b_src, aggregates=[
    Aggregate("b_float", "sum", window="1h", hop="15m", name="b_sum_1h"),
    Aggregate("b_int", "max", window="1h", hop="15m", dtype=Int64, name="b_max_1h")])
by_shop = FeatureView("by_shop", entity=user_shop, source=tx, aggregates=[
    Aggregate("amount", "sum", window="1h", hop="15m", name="shop_sum"),
    Aggregate("amount", "max", window="1h", hop="15m", name="shop_max")])

@transform(inputs={"amount": Request("amount", Float64), "limit": view_a["a_float"]},
           output=Float64)
def amount_to_limit(amount, limit):
    return amount / limit if limit > 0.0 else 0.0

@transform(inputs={"amount": Request("amount", Float64), "total": spend["amount_sum_2h"]},
           output=Float64)
def share_of_spend(amount, total):
    return amount / total if total != 0.0 else -0.0

everything = FeatureService("everything", features=[
    view_a, view_t, view_b, b_sums, spend, by_shop, amount_to_limit, share_of_spend])
""".replace("FUNCTIONS", repr(FUNCTIONS))

BASE = 1_700_000_000_000_000
STEP = 5 * 60_000_000  # five minutes: a hop of the finest window, ties are frequent
TTL = 20 * 60_000_000
TS = pa.timestamp("us", tz="UTC")
SPECIALS = [math.nan, -math.nan, 0.0, -0.0, math.inf, -math.inf, 5e-324, -5e-324,
            2.2250738585072014e-308, 1.7976931348623157e308, 1.0, -1.5]
KEYS = [1, 2, -7, 0, -(2**63), 2**63 - 1]
REGIONS = ["", "eu", "é", "e\u0301", "😀"]


def pick(rng: np.random.Generator, values: list[Any], n: int, nulls: float = 0.0) -> list[Any]:
    out = [values[i] for i in rng.integers(0, len(values), n)]
    return [None if rng.random() < nulls else v for v in out]


def floats(rng: np.random.Generator, n: int) -> list[float | None]:
    special = pick(rng, SPECIALS, n)
    return [None if r < 0.05 else s if r < 0.5 else float(v)
            for r, s, v in zip(rng.random(n), special, rng.normal(0, 1e3, n), strict=True)]


def grid(rng: np.random.Generator, n: int, steps: int = 60) -> np.ndarray:
    return BASE + rng.integers(0, steps, n) * STEP


def write(path: Path, columns: dict[str, tuple[list[Any] | np.ndarray, pa.DataType]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({c: pa.array(v.tolist() if isinstance(v, np.ndarray) else v, t)
                             for c, (v, t) in columns.items()}), path)


def push_batches(store: FeatureStore, seed: int) -> None:
    """Batches in the pushed-event log of b_src and a_src (visible from their ingest times),
    as a push logs them: both engines read them beside the files."""
    rng = np.random.default_rng(seed)
    for i in range(3):
        rows = pq.read_table(store.config.root / "data" / "b" / f"part{i % 2}.parquet")
        rows = rows.filter(pc.and_(pc.is_valid(rows.column("acct_id")),
                                   pc.is_valid(rows.column("region"))))  # pushes need keys
        ingested = BASE + (20 + 15 * i) * STEP
        batch = event_log.check_batch(store.plan, "b_src", rows.take(
            rng.integers(0, rows.num_rows, 40)), ingested, 10**15)
        event_log.append(store.config.root, "b_src", f"batch-{i}", batch, ingested)
    # a source with a created column: a pushed row's created time is its ingest time
    rows = pq.read_table(store.config.root / "data" / "a.parquet")
    rows = rows.filter(pc.is_valid(rows.column("acct_id")))
    ingested = BASE + 30 * STEP
    batch = event_log.check_batch(store.plan, "a_src", rows.take(
        rng.integers(0, rows.num_rows, 40)), ingested, 10**15)
    event_log.append(store.config.root, "a_src", "batch-a", batch, ingested)


def generate(root: Path, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = 400
    event = grid(rng, n)
    write(root / "data" / "a.parquet", {
        "acct_id": (pick(rng, KEYS, n, 0.05), pa.int64()),
        "event_ts": (event, TS),
        "created_ts": (event + rng.integers(-2, 4, n) * STEP, TS),  # ties, hidden, early
        "a_int": (pick(rng, [0, -1, -(2**63), 2**63 - 1, 7], n, 0.1), pa.int64()),
        "a_float": (floats(rng, n), pa.float64()),
        "a_bool": (pick(rng, [True, False], n, 0.1), pa.bool_()),
        "a_str": (pick(rng, ["", "é", "e\u0301", "😀", "a\x00b", "NULL"], n, 0.1), pa.string()),
        "a_ts": (pick(rng, [-(2**62), 0, -1, BASE, 2**62], n, 0.1), TS)})
    for part in range(2):
        m = 150
        write(root / "data" / "b" / f"part{part}.parquet", {
            "acct_id": (pick(rng, KEYS, m, 0.05), pa.int64()),
            "region": (pick(rng, REGIONS, m, 0.05), pa.string()),
            "ts": (grid(rng, m), TS),
            "b_int": (pick(rng, [0, 3, -(2**63)], m, 0.1), pa.int64()),
            "b_float": (floats(rng, m), pa.float64()),
            "b_str": (pick(rng, ["x", "é", ""], m, 0.1), pa.string())})
    k = 3000
    event = grid(rng, k) + rng.integers(0, STEP, k) * (rng.random(k) < 0.5)
    write(root / "data" / "tx.parquet", {
        "user_id": (pick(rng, KEYS, k, 0.03), pa.int64()),
        "shop": (pick(rng, ["s1", "s2", "é", ""], k), pa.string()),
        "event_ts": (event, TS),
        "ingested_ts": (event + rng.integers(0, 3, k) * STEP * (rng.random(k) < 0.3), TS),
        "amount": (floats(rng, k), pa.float64()),
        "qty": (pick(rng, [1, 2, -3, 2**40], k, 0.1), pa.int64())})
    labels = 600
    anchors = grid(rng, labels, 64) + np.array(pick(rng, [0, -1, 1, TTL, TTL + 1, -TTL], labels))
    frame = pl.DataFrame({
        "acct_id": pick(rng, [*KEYS, 99], labels),
        "region": pick(rng, [*REGIONS, "zz"], labels),
        "user_id": pick(rng, [*KEYS, 99], labels),
        "shop": pick(rng, ["s1", "s2", "é", "", "none"], labels),
        "event_timestamp": pl.Series(anchors, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
        "amount": floats(rng, labels)}, schema_overrides={"acct_id": pl.Int64,
                                                          "user_id": pl.Int64})
    return pl.concat([frame, frame.head(20)])  # duplicate label rows


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> tuple[FeatureStore, pl.DataFrame]:
    root = tmp_path_factory.mktemp("engines")
    (root / "featurestore.yaml").write_text("project: engines\noffline_engine: spark\n")
    (root / "features.py").write_text(textwrap.dedent(DEFINITIONS))
    labels = generate(root, seed=14)
    store = FeatureStore(root)
    push_batches(store, seed=15)
    store.apply()  # the DuckDB engine's feature tables
    built = store.backfill()  # the configured engine: Spark
    assert set(built.built) == set(store.plan.views)
    return store, labels


def bits(column: pa.ChunkedArray) -> list[Any]:
    """Values as comparable bits: floats by their IEEE pattern (NaNs' signs and payloads
    included), timestamps as micros."""
    array = column.combine_chunks()
    if pa.types.is_floating(array.type):
        raw = array.fill_null(0.0).to_numpy(zero_copy_only=False).view(np.int64)
        return [int(b) if v else None for b, v in zip(raw, array.is_valid().to_pylist(),
                                                      strict=True)]
    if pa.types.is_timestamp(array.type):
        array = array.cast(pa.int64())
    return array.to_pylist()


def assert_same(duck: pa.Table, spark: pa.Table, what: str) -> None:
    assert duck.column_names == spark.column_names, what
    assert duck.num_rows == spark.num_rows, what
    for name in duck.column_names:
        d, s = duck.column(name), spark.column(name)
        assert d.type == s.type or (pa.types.is_timestamp(d.type) and pa.types.is_timestamp(
            s.type)), f"{what}: {name} is {d.type} in DuckDB, {s.type} in Spark"
        diff = [(i, a, b) for i, (a, b) in enumerate(zip(bits(d), bits(s), strict=True))
                if a != b]
        assert not diff, f"{what}: column {name} differs at {len(diff)} rows, first {diff[:5]}"


def test_feature_tables_are_identical(repo: tuple[FeatureStore, pl.DataFrame], spark: Any
                                      ) -> None:
    store, _ = repo
    con = connect(store.config.offline_store, read_only=True)
    try:
        for view in store.plan.views.values():
            keys = [k for k, _ in view.join_keys]
            order = [(c, "ascending") for c in [*keys, "__vis"]]
            duck = con.sql(f"SELECT * FROM {feature_table(view)}").to_arrow_table()
            stored = spark.read.parquet(location(store.config.spark_tables_url, view)).toArrow()
            dtypes = {**dict(view.features), **{a.name: a.output for a in view.aggregates}}
            theirs = pa.table({c: from_bits(stored.column(c), dtypes[c]) if c in dtypes
                               else stored.column(c) for c in stored.column_names})
            assert duck.num_rows > 20, view.name
            assert_same(duck.sort_by(order), theirs.select(duck.column_names).sort_by(order),
                        f"feature table {view.name}")
    finally:
        con.close()


def test_training_sets_are_identical(repo: tuple[FeatureStore, pl.DataFrame]) -> None:
    store, labels = repo
    duck = store.training_set(labels, service="everything", statuses=True, engine="duckdb")
    theirs = store.training_set(labels, service="everything", statuses=True)  # offline_engine
    assert_same(duck.to_arrow(), theirs.to_arrow(), "training set")
    statuses = duck.select(c for c in duck.columns if c.endswith("__status"))
    seen = {s for c in statuses.columns for s in statuses[c].cast(pl.String).to_list()}
    assert seen == {"PRESENT", "NULL", "NOT_FOUND", "OUTSIDE_TTL"}  # the data reaches each


def stored_rows(url: str, store: FeatureStore, views: list[str]) -> dict[str, tuple[bytes, bool]]:
    """Every row key of the views' served storages (named without the storage), its bytes
    and whether it expires."""
    client = redis_client(url)
    try:
        with store.online() as online:
            served = online.served()
        out = {}
        for name in views:
            prefix = f"{store.config.project}:{name}:{served[name].storage}:".encode()
            for key in client.scan_iter(match=prefix + b"*"):
                out[name + key[len(prefix):].decode()] = (client.get(key), client.pttl(key) > 0)
        return out
    finally:
        client.close()


@pytest.mark.parametrize("spark_online", ["redis", "cluster"])
def test_materialized_rows_are_identical(repo: tuple[FeatureStore, pl.DataFrame], redis_url: str,
                                         spark_online: str, request: pytest.FixtureRequest,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Both engines write the plain views online byte for byte (the Spark engine's executors
    into one Redis, then into a Redis Cluster): a full materialization at a time inside the
    data (rows visible later are left out), then an update from that time on (only entities
    whose winner changed since, written if newer)."""
    store, _ = repo
    views = [v.name for v in store.plan.views.values() if not v.windowed]
    first, then = (datetime.fromtimestamp((BASE + k * STEP) / 1e6, UTC) for k in (25, 70))
    base = redis_url.rsplit("/", 1)[0]
    targets = {"redis": f"{base}/2", "cluster": request.getfixturevalue("cluster_url")}
    got = {}
    for url, engine in [(f"{base}/1", "duckdb"), (targets[spark_online], "spark")]:
        monkeypatch.setenv("FEATURESTORE_REDIS_URL", url)
        full = store.materialize(end=first, views=views, engine=engine)
        before = stored_rows(url, store, views)
        more = store.materialize(end=then, start=first, views=views, engine=engine)
        got[engine] = ([(m.view, m.rows, m.written) for m in full + more], before,
                       stored_rows(url, store, views))
    duck, spark = got["duckdb"], got["spark"]
    assert duck[0] == spark[0]  # rows read and written, view by view
    assert all(m[1] > 0 for m in duck[0]), duck[0]
    assert duck[1] != duck[2]  # the update changed some rows
    assert len(duck[1]) > 10
    assert duck[1] == spark[1]
    assert duck[2] == spark[2]
