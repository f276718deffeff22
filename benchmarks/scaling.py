"""The Spark offline engine at 1 and 2 cores against the DuckDB engine, on the same data in
the same run: a windowed backfill (source Parquet to feature table) and a training set (plain
and windowed view, one transform).

    .venv/bin/python benchmarks/scaling.py [--events 2000000] [--users 50000]
                                           [--labels 200000] [--reps 3] [--out FILE]

Spark runs `local[1]` then `local[2]` (one executor JVM whose task slots are the cores: the
single-machine stand-in for 1 and 2 executors). Each timing is the median of --reps after one
unmeasured warm-up (the JVM's and the executors' first compile of the kernels)."""

from __future__ import annotations

import argparse
import statistics
import textwrap
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from harness import log, machine_info, run, versions

from featurestore import FeatureStore

DEFINITIONS = """
from datetime import timedelta
from featurestore import Aggregate, Entity, FeatureService, FeatureView, Field, Request, Source
from featurestore import transform
from featurestore.types import Float64, Int64

user = Entity("user", join_keys={"user_id": Int64})
tx = Source("tx", path="data/tx.parquet", timestamp="event_ts")
profiles = Source("profiles", path="data/profiles.parquet", timestamp="updated_at")
profile = FeatureView("profile", entity=user, source=profiles, ttl=timedelta(days=30),
                      fields=[Field("credit_limit", Float64), Field("age", Int64)])
spend = FeatureView("spend", entity=user, source=tx, aggregates=[
    Aggregate("amount", "sum", window="7d", hop="1h"),
    Aggregate("amount", "count", window="1d", hop="1h"),
    Aggregate("amount", "max", window="1h", hop="5m"),
    Aggregate("amount", "mean", window="7d", hop="1h"),
    Aggregate("amount", "stddev", window="7d", hop="1h")])

@transform(inputs={"amount": Request("amount", Float64), "limit": profile["credit_limit"]},
           output=Float64)
def amount_to_limit(amount, limit):
    return amount / limit if limit > 0.0 else 0.0

service = FeatureService("service", features=[profile, spend, amount_to_limit])
"""
DAY_US = 86_400_000_000
END_US = 1_750_000_000_000_000


def generate(root: Path, events: int, users: int, labels: int) -> pl.DataFrame:
    rng = np.random.default_rng(7)
    data = root / "data"
    data.mkdir(parents=True)
    ts = pl.Series(END_US - rng.integers(0, 60 * DAY_US, events)).cast(pl.Datetime("us", "UTC"))
    pl.DataFrame({"user_id": rng.integers(0, users, events), "event_ts": ts,
                  "amount": rng.gamma(2.0, 30.0, events)}).write_parquet(data / "tx.parquet")
    rows = users * 3
    pl.DataFrame({
        "user_id": rng.integers(0, users, rows),
        "updated_at": pl.Series(END_US - rng.integers(0, 90 * DAY_US, rows))
        .cast(pl.Datetime("us", "UTC")),
        "credit_limit": rng.uniform(100, 10_000, rows), "age": rng.integers(18, 90, rows),
    }).write_parquet(data / "profiles.parquet")
    return pl.DataFrame({
        "user_id": rng.integers(0, users, labels),
        "event_timestamp": pl.Series(END_US - rng.integers(0, 30 * DAY_US, labels))
        .cast(pl.Datetime("us", "UTC")),
        "amount": rng.gamma(2.0, 30.0, labels)})


def timed(action: Callable[[], Any], reps: int) -> float:
    action()  # warm-up: not measured
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(store: FeatureStore, engine: str, labels: pl.DataFrame, reps: int
            ) -> dict[str, float]:
    backfill = timed(lambda: store.backfill(["spend"], engine=engine), reps)
    if engine == "spark":
        store.backfill(["profile"], engine=engine)
    training = timed(lambda: store.training_set(labels, service="service", engine=engine), reps)
    return {"windowed_backfill_s": round(backfill, 3), "training_set_s": round(training, 3)}


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    root = workdir / "repo"
    root.mkdir()
    (root / "featurestore.yaml").write_text("project: scaling\n")
    (root / "features.py").write_text(textwrap.dedent(DEFINITIONS))
    labels = generate(root, args.events, args.users, args.labels)
    store = FeatureStore(root)
    log("apply (DuckDB)")
    store.apply()
    log("DuckDB")
    results: dict[str, Any] = {"duckdb": measure(store, "duckdb", labels, args.reps)}
    for cores in (1, 2):
        master = f"local[{cores}]"
        log(f"Spark {master}")
        store = FeatureStore(root)
        store.config = replace(store.config, spark_master=master)
        spark = store.spark.spark
        spark.conf.set("spark.sql.shuffle.partitions", str(4 * cores))
        results[f"spark_{master}"] = measure(store, "spark", labels, args.reps)
        spark.stop()
    one, two = results["spark_local[1]"], results["spark_local[2]"]
    duck = results["duckdb"]
    return {
        "benchmark": "scaling", "events": args.events, "users": args.users,
        "labels": args.labels, "reps": args.reps, "results": results,
        "speedup_2_over_1_cores": {k: round(one[k] / two[k], 2) for k in one},
        "spark_2_cores_over_duckdb": {k: round(two[k] / duck[k], 2) for k in duck},
        "events_per_s": {name: round(args.events / r["windowed_backfill_s"])
                         for name, r in results.items()},
        "machine": machine_info(), "versions": versions(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--labels", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--out", type=Path)
    run(benchmark, parser.parse_args(), "fs-scaling-")


if __name__ == "__main__":
    main()
