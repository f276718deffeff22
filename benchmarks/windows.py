"""Windowed aggregations, measured: backfill events/s, push events/s over gRPC, and online
latency of a feature service with 10 windowed aggregations (7-day windows, 1-hour hops: 168
full tiles and a head each), each next to a baseline measured in the same run.

    .venv/bin/python benchmarks/windows.py [--events 10000000] [--users 100000] [--out FILE]
        [--parts backfill,online,push]   (the parts to measure; `apply` always runs, and
                                          materialize with online or push)
        [--push-batches 50] [--push-batch 1000] [--push-concurrency 1]

- backfill: `windowed.build` of a view with 5 aggregations (what `featurestore backfill` runs
  per windowed view, after ingesting), against DuckDB window functions computing the same five
  aggregates at every event over the same table (plain floating point, per event rather than
  per hop boundary: the closest bare-DuckDB equivalent). Median of --reps.
- push: batches of --push-batch events through `Client.push` to `featurestore serve`, from this
  process, --push-concurrency at a time; events/s over the wall time, per-batch latency, and
  the CPU the server, Redis and this client used per batch.
- online: batches of 1 and 100 users through `featurestore.Client` against a bare grpc.aio echo
  of the same requests pre-encoded, taking turns in blocks (online.py's method)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from cpu import cpu_delta, cpu_snapshot
from echo import echo_call
from harness import evaluate, log, machine_info, run, versions
from payloads import encode_request
from processes import owned
from servers import start_echo, start_ours, start_redis
from timing import percentiles, ratio, time_sides

from featurestore import Client, FeatureStore
from featurestore.offline import windowed
from featurestore.offline.connection import connect

DAY_US = 86_400_000_000
# The echo's request bytes carry this as_of (online.py's), as they always have, while our side
# reads as of now: kept so that echo figures stay comparable with earlier results.
# The issue "Serving at the gRPC floor": a windowed service's read tails, pushes of
# 1,000-event batches over gRPC, and the 10M-event materialize in at most 15 s; the issue
# "Beyond one machine": the backfill at least 2x DuckDB's window functions, `apply` in 20 s.
TARGETS = {
    "backfill_speedup_over_duckdb": (">=", 2.0),
    "apply_s": ("<=", 20.0),
    "online_batch_1_p99_ms": ("<=", 1.5),
    "online_batch_100_p99_ms": ("<=", 3.0),
    "push_events_per_s": (">=", 100_000.0),
    "push_batch_p50_ms": ("<=", 20.0),
    "materialize_events_per_s": (">=", 10_000_000 / 15),
}
PARTS = ("backfill", "online", "push")
ECHO_AS_OF_US = int(datetime(2025, 7, 1, tzinfo=UTC).timestamp()) * 1_000_000
SPAN_DAYS = 30
FIVE = """[Aggregate("amount", "sum", window="7d", hop="1h"),
           Aggregate("amount", "count", window="7d", hop="1h"),
           Aggregate("amount", "mean", window="1d", hop="1h"),
           Aggregate("amount", "max", window="1d", hop="1h"),
           Aggregate("amount", "stddev", window="7d", hop="1h")]"""
TEN = ", ".join(f'Aggregate("amount", "{f}", window="7d", hop="1h", name="w_{f}")' for f in (
    "sum", "count", "mean", "min", "max", "var", "stddev", "first", "last", "count_distinct"))
DEFINITIONS = f'''
from featurestore import Aggregate, Entity, FeatureService, FeatureView, Source
from featurestore.types import Int64
user = Entity("user", join_keys={{"user_id": Int64}})
tx = Source("tx", path="data/tx.parquet", timestamp="event_ts")
spend5 = FeatureView("spend5", entity=user, source=tx, aggregates={FIVE})
spend10 = FeatureView("spend10", entity=user, source=tx, aggregates=[{TEN}])
win10 = FeatureService("win10", features=[spend10])
'''
BASELINE = """
CREATE OR REPLACE TEMP TABLE baseline AS
SELECT user_id, event_ts,
  sum(amount) OVER w7, count(amount) OVER w7, avg(amount) OVER w1, max(amount) OVER w1,
  stddev_samp(amount) OVER w7
FROM _fs.src_tx
WINDOW w7 AS (PARTITION BY user_id ORDER BY event_ts
              RANGE BETWEEN INTERVAL 7 DAYS PRECEDING AND CURRENT ROW),
       w1 AS (PARTITION BY user_id ORDER BY event_ts
              RANGE BETWEEN INTERVAL 1 DAY PRECEDING AND CURRENT ROW)"""


def write_events(path: Path, events: int, users: int, end_us: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ts = end_us - rng.integers(60_000_000, SPAN_DAYS * DAY_US, events)
    pq.write_table(pa.table({
        "user_id": rng.integers(0, users, events),
        "amount": rng.gamma(2.0, 30.0, events).round(2),
        "event_ts": pa.array(ts, pa.int64()).cast(pa.timestamp("us", tz="UTC"))}), path)


def measure_backfill(store: FeatureStore, reps: int) -> dict[str, Any]:
    plan = store.plan
    view = plan.views["spend5"]
    ours, bare, rows = [], [], 0
    for rep in range(reps):
        con = connect(store.config.offline_store)
        try:
            con.execute("BEGIN TRANSACTION")
            began = time.perf_counter()
            rows = windowed.build(con, plan, view, "_fs.bench_backfill")
            ours.append(time.perf_counter() - began)
            con.execute("ROLLBACK")
            began = time.perf_counter()
            con.execute(BASELINE)
            bare.append(time.perf_counter() - began)
        finally:
            con.close()
        log(f"backfill rep {rep + 1}: ours {ours[-1]:.2f} s, DuckDB windows {bare[-1]:.2f} s")
    events = duckdb.connect(str(store.config.offline_store), read_only=True).execute(
        "SELECT count(*) FROM _fs.src_tx").fetchone()[0]
    return {"events": events, "aggregations": len(view.aggregates), "rows_written": rows,
            "ours_s": [round(t, 3) for t in ours], "duckdb_windows_s": [round(t, 3) for t in bare],
            "ours_events_per_s": round(events / statistics.median(ours)),
            "duckdb_windows_events_per_s": round(events / statistics.median(bare)),
            "ratio_ours_over_duckdb": round(statistics.median(ours) / statistics.median(bare), 3)}


def measure_push(target: str, users: int, batches: int, size: int, seed: int,
                 groups: dict[str, int], concurrency: int) -> dict[str, Any]:
    """Pushes from `concurrency` senders at once (1: one after the other), each batch sent
    when a sender is free; events/s over the wall time from the first send to the last
    reply, with the CPU each of `groups` (name -> process group: the server, Redis) and this
    client used per batch, which a shared machine's load does not inflate the way it does
    latencies."""
    rng = np.random.default_rng(seed)
    run = time.time_ns()  # batch ids unique per run: a reused --workdir keeps its event log
    now = time.time_ns() // 1000
    tables = [pa.table({
        "user_id": rng.integers(0, users, size),
        "amount": rng.gamma(2.0, 30.0, size).round(2),
        "event_ts": pa.array(now - rng.integers(0, 3_600_000_000, size), pa.int64()
                             ).cast(pa.timestamp("us", tz="UTC"))}) for _ in range(batches)]
    times = np.zeros(batches)
    before, own = cpu_snapshot(groups), time.process_time()
    with Client(target, timeout=30) as client:
        def send(b: int) -> None:
            began = time.perf_counter()
            reply = client.push("tx", tables[b], f"bench-{seed}-{run}-{b}")
            times[b] = time.perf_counter() - began
            assert reply.rows == size and not reply.duplicate

        began = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as senders:
            list(senders.map(send, range(batches)))
        wall = time.perf_counter() - began
    cpu = cpu_delta(before, cpu_snapshot(groups), time.process_time() - own, "client")
    return {"batches": batches, "batch_events": size, "concurrency": concurrency,
            "events_per_s": round(batches * size / wall),
            "batch_latency": percentiles(times * 1e9),
            "cpu_ms_per_batch": {k: round(1000 * v / batches, 2) for k, v in cpu.items()}}


def measure_online(ours: str, echo: str, users: int, batch: int, requests: int,
                   seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, users, (requests, batch)).tolist()
    payloads = [encode_request("win10", {"user_id": k}, {}, ECHO_AS_OF_US) for k in keys]
    with Client(ours) as client, grpc.insecure_channel(echo) as channel:
        echo_rpc = echo_call(channel)
        client.feature_service("win10")
        sides = {"ours": lambda i: client.get_online_features(
                     service="win10", entities={"user_id": keys[i]}),
                 "echo": lambda i: echo_rpc(payloads[i])}
        times = time_sides(sides, requests, min(50, requests), 50)
    stats = {name: percentiles(ns) for name, ns in times.items()}
    return {"batch": batch, "requests": requests, **stats,
            "ratio_p50_ours_over_echo": ratio(stats, "ours", "echo", "p50"),
            "ratio_p99_ours_over_echo": ratio(stats, "ours", "echo", "p99")}


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    repo = workdir / "repo"
    (repo / "data").mkdir(parents=True, exist_ok=True)
    end_us = time.time_ns() // 1000
    log(f"writing {args.events:,} events for {args.users:,} users")
    write_events(repo / "data" / "tx.parquet", args.events, args.users, end_us, args.seed)
    (repo / "features.py").write_text(DEFINITIONS)
    result: dict[str, Any] = {"machine": machine_info(), "versions": versions(),
                              "config": vars(args) | {"out": str(args.out),
                                                       "workdir": str(args.workdir)}}
    with owned(start_redis(workdir)) as (redis_group, url):
        (repo / "featurestore.yaml").write_text(f"project: bench\nonline_store: {url}\n")
        store = FeatureStore(repo)
        began = time.perf_counter()
        store.apply()
        result["apply_s"] = round(time.perf_counter() - began, 2)
        log(f"apply (ingest + both windowed views): {result['apply_s']} s")
        if "backfill" in args.parts:
            result["backfill"] = measure_backfill(store, args.reps)
        if {"online", "push"} & set(args.parts):
            serve(result, args, repo, workdir, store, redis_group)
    return finish(result, args)


def serve(result: dict[str, Any], args: argparse.Namespace, repo: Path, workdir: Path,
          store: FeatureStore, redis_group: Any) -> None:
    """Materialize, then the online reads and pushes against a server beside an echo."""
    began = time.perf_counter()
    store.materialize()
    result["materialize_s"] = round(time.perf_counter() - began, 2)
    with owned(start_ours(repo, 1, workdir)) as (server, ours), \
            owned(start_echo(False, workdir)) as (_, echo):
        if "online" in args.parts:
            result["online"] = {
                f"batch_{b}": measure_online(ours, echo, args.users, b, n, args.seed + b)
                for b, n in ((1, args.requests), (100, args.requests // 4))}
            for key, r in result["online"].items():
                log(f"online {key}: ours p50 {r['ours']['p50_ms']} p99 "
                    f"{r['ours']['p99_ms']} ms, echo p50 {r['echo']['p50_ms']} p99 "
                    f"{r['echo']['p99_ms']} ms")
        if "push" in args.parts:
            result["push"] = measure_push(
                ours, args.users, args.push_batches, args.push_batch, args.seed,
                {"server": server.pgid, "redis": redis_group.pgid}, args.push_concurrency)
            p = result["push"]
            log(f"push: {p['events_per_s']:,} events/s, p50 {p['batch_latency']['p50_ms']} "
                f"ms per batch; CPU ms per batch {p['cpu_ms_per_batch']}")


def finish(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The result with each target measured in it judged (pass/fail)."""
    measured: dict[str, float] = {"apply_s": result["apply_s"]}
    if "backfill" in result:
        measured["backfill_speedup_over_duckdb"] = round(
            1 / result["backfill"]["ratio_ours_over_duckdb"], 3)
    if "materialize_s" in result:
        measured["materialize_events_per_s"] = round(args.events / result["materialize_s"])
    if "online" in result:
        measured["online_batch_1_p99_ms"] = result["online"]["batch_1"]["ours"]["p99_ms"]
        measured["online_batch_100_p99_ms"] = result["online"]["batch_100"]["ours"]["p99_ms"]
    if "push" in result:
        measured["push_events_per_s"] = result["push"]["events_per_s"]
        measured["push_batch_p50_ms"] = result["push"]["batch_latency"]["p50_ms"]
    result["targets"] = evaluate(measured, {k: v for k, v in TARGETS.items() if k in measured})
    for name, t in result["targets"].items():
        log(f"target {name}: {t['value']} {t['target']}: {'pass' if t['pass'] else 'FAIL'}")
    result["all_targets_met"] = all(t["pass"] for t in result["targets"].values())
    return result


def parts(text: str) -> tuple[str, ...]:
    chosen = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = set(chosen) - set(PARTS)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"parts are {', '.join(PARTS)}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--push-batches", type=int, default=50)
    parser.add_argument("--push-batch", type=int, default=1000)
    parser.add_argument("--push-concurrency", type=int, default=1,
                        help="pushes in flight at once (senders sharing one client)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--parts", type=parts, default=PARTS,
                        help="comma-separated parts to measure (default: all)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--out", type=Path)
    run(benchmark, parser.parse_args(), "featurestore-windows-")


if __name__ == "__main__":
    sys.exit(main())
