"""Soak: a real `featurestore serve` under mixed load for minutes, watched for errors, latency
drift, memory growth and wrong values.

    .venv/bin/python benchmarks/soak.py [--minutes 5 | --quick] [--workers 2] [--out FILE]

The example repo (feature_repo/ and its data generator, larger than `make demo`'s) is applied
and materialized into the benchmark's own redis-server, then served with --metrics-port. For
the whole run, from separate client processes: GetOnlineFeatures of `fraud_v1` (batch-1 and
batch-100 clients, each paced to a rate), 1,000-event pushes to `transactions` (which feeds
the windowed view `user_spend`) every second, and halfway one full `featurestore materialize`
(a new storage per view and the atomic flip, under load). Then the parity check against the
server, and a scrape of its Prometheus counters."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import redis
from cpu import cpu_snapshot
from harness import log, machine_info, run, versions
from memory import tree_rss
from processes import Child, Group, free_port, owned, spawn, start_group
from prometheus_client.parser import text_string_to_metric_families
from servers import start_ours, start_redis
from timing import percentiles

from featurestore import Client, FeatureStore
from featurestore.parity import check as check_parity
from featurestore.serving.client import ServingError
from featurestore.values.timestamps import EPOCH

EXAMPLE = Path(__file__).resolve().parents[1] / "feature_repo"
SERVICE, SOURCE = "fraud_v1", "transactions"
COUNTRIES = np.array(["US", "GB", "DE", "FR", "ES", "IT", "NL", "CA", "BR", "IN"])
GET_DEADLINE_S, PUSH_DEADLINE_S = 5.0, 30.0  # the Client's default; windows.py's for pushes
WARMUP_REQUESTS = 20
# Python's allocators move a server's RSS by +-10 MB around a materialization, so a slope over
# less than a few minutes says nothing; the quick run reports it without judging it.
RSS_JUDGED_S = 180.0
MB = 1 << 20


# --- client processes -----------------------------------------------------------------------

def paced(pipe: Connection, prepare: Callable[[int], Any], send: Callable[[Any], None],
          rate: float) -> dict[str, Any]:
    """Runs send(prepare(i)) for i = 0, 1, ... in the window the parent names, at `rate` calls
    per second (0: back to back). A call that overruns its slot delays the next one without
    a burst to catch up. Only send() is timed. Returns each call's start (seconds into the
    window), duration and gRPC code (errors only, by index), plus a few error messages."""
    pipe.send("ready")
    start_at, end_at = pipe.recv()
    time.sleep(max(0.0, start_at - time.time()))
    period = 1.0 / rate if rate else 0.0
    starts: list[float] = []
    took: list[int] = []
    errors: dict[int, str] = {}
    details: list[str] = []
    next_at = start_at
    while (now := time.time()) < end_at and next_at < end_at:
        if next_at > now:
            time.sleep(next_at - now)
        payload = prepare(len(starts))
        sent, began = time.time(), time.perf_counter_ns()
        try:
            send(payload)
        except ServingError as exc:
            errors[len(starts)] = exc.code.name
            if len(details) < 5:
                details.append(str(exc)[:300])
        took.append(time.perf_counter_ns() - began)
        starts.append(sent - start_at)
        next_at = max(next_at + period, sent)
    return {"starts_s": np.array(starts), "took_ns": np.array(took, np.int64), "errors": errors,
            "error_details": details}


def get_client(pipe: Connection, target: str, batch: int, rate: float, users: np.ndarray,
               merchants: np.ndarray, seed: int) -> dict[str, Any]:
    """GetOnlineFeatures of the service for `batch` (user, merchant) pairs drawn from `users`
    and `merchants` (pairs that paid each other, plus never-seen ones), with request inputs,
    as of now."""
    rng = np.random.default_rng(seed)

    def prepare(_: int) -> dict[str, Any]:
        rows = rng.integers(0, len(users), batch)
        return {"entities": {"user_id": users[rows], "merchant_id": merchants[rows]},
                "request": {"amount": rng.gamma(2.0, 40.0, batch).round(2),
                            "txn_country": COUNTRIES[rng.integers(0, len(COUNTRIES), batch)],
                            "txn_ts": np.full(batch, time.time_ns() // 1000)}}

    with Client(target, timeout=GET_DEADLINE_S) as client:
        def send(payload: dict[str, Any]) -> None:
            client.get_online_features(service=SERVICE, **payload)
        for i in range(WARMUP_REQUESTS):
            send(prepare(i))
        return paced(pipe, prepare, send, rate)


def push_client(pipe: Connection, target: str, users: int, merchants: int, size: int,
                every: float, seed: int) -> dict[str, Any]:
    """Pushes of `size` events to the source every `every` seconds: random cards and
    merchants, event times within the last hour, a fresh batch id each (unique per run)."""
    rng = np.random.default_rng(seed)
    merchant_ids = np.array([f"M{m:05d}" for m in range(1, merchants + 1)])
    run_id = time.time_ns()
    pushed = {"events": 0, "too_late": 0, "duplicates": 0}

    def prepare(i: int) -> tuple[pa.Table, str]:
        now = time.time_ns() // 1000
        return pa.table({
            "user_id": rng.integers(1, users + 1, size),
            "merchant_id": merchant_ids[rng.integers(0, merchants, size)],
            "amount": rng.gamma(2.0, 40.0, size).round(2),
            "event_ts": pa.array(now - rng.integers(0, 3_600_000_000, size), pa.int64()
                                 ).cast(pa.timestamp("us", tz="UTC"))}), f"soak-{run_id}-{i}"

    with Client(target, timeout=PUSH_DEADLINE_S) as client:
        def send(payload: tuple[pa.Table, str]) -> None:
            reply = client.push(SOURCE, *payload)
            pushed["events"] += reply.rows
            pushed["too_late"] += reply.too_late
            pushed["duplicates"] += int(reply.duplicate)
        client.list_feature_services()  # connected before the window opens
        return paced(pipe, prepare, send, 1.0 / every) | {"pushed": pushed}


# --- setup ----------------------------------------------------------------------------------

def setup_repo(repo: Path, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The example repo with generated data, its online store the benchmark's Redis; applied
    and materialized (END = now)."""
    began = time.perf_counter()
    repo.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE / "features.py", repo / "features.py")
    (repo / "featurestore.yaml").write_text(
        f"project: card_fraud\noffline_store: data/offline.duckdb\nonline_store: {url}\n")
    generated = subprocess.run(
        [sys.executable, str(EXAMPLE / "datagen" / "generate.py"), "--out", str(repo / "data"),
         "--users", str(args.users), "--merchants", str(args.merchants),
         "--transactions", str(args.transactions), "--seed", str(args.seed)],
        capture_output=True, text=True, check=True)
    log(generated.stdout.strip())
    generate_s = time.perf_counter() - began
    store = FeatureStore(repo)
    began = time.perf_counter()
    store.apply()
    apply_s = time.perf_counter() - began
    log(f"apply: {apply_s:.1f} s")
    began = time.perf_counter()
    store.materialize()
    materialize_s = time.perf_counter() - began
    log(f"materialize: {materialize_s:.1f} s")
    return {"generate_s": round(generate_s, 1), "apply_s": round(apply_s, 1),
            "materialize_s": round(materialize_s, 1)}


def paying_pairs(repo: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` (user, merchant) pairs for reads: 95% drawn from the transactions (so most have a
    history row), 5% with a never-seen user (NOT_FOUND)."""
    paid = pl.read_parquet(repo / "data" / "transactions.parquet",
                           columns=["user_id", "merchant_id"]).sample(n, with_replacement=True,
                                                                     seed=seed)
    users, merchants = paid["user_id"].to_numpy().copy(), paid["merchant_id"].to_numpy()
    unseen = np.random.default_rng(seed).random(n) < 0.05
    users[unseen] = -1 - np.arange(int(unseen.sum()))
    return users, merchants.astype(str)


# --- the run --------------------------------------------------------------------------------

def sample(started: float, serve: Group, groups: dict[str, int], client: redis.Redis
           ) -> dict[str, Any]:
    """The server's RSS (in all and per process), Redis memory and keys, and the cumulative
    CPU of each group, `t_s` seconds after `started`."""
    rss = tree_rss(serve.process.pid)
    memory = client.info("memory")
    return {"t_s": round(time.time() - started, 1),
            "server_rss_mb": round(sum(rss.values()) / MB, 1),
            "server_rss_by_pid_mb": {pid: round(b / MB, 1) for pid, b in rss.items()},
            "redis_used_memory_mb": round(memory["used_memory"] / MB, 2),
            "redis_keys": client.dbsize(), "cpu": cpu_snapshot(groups)}


def with_cores(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turns each sample's cumulative CPU seconds into cores used since the previous one;
    `others` is the rest of the machine. A group whose processes exited meanwhile took their
    CPU with them: null."""
    out = []
    for before, after in zip([None, *samples], samples, strict=False):
        row = {k: v for k, v in after.items() if k not in ("cpu", "server_rss_by_pid_mb")}
        wall = after["t_s"] - before["t_s"] if before is not None else 0.0
        if before is not None and wall > 0:
            used = {name: (after["cpu"][name] - before["cpu"].get(name, 0.0)) / wall
                    for name in after["cpu"]}
            known = [v for name, v in used.items() if name != "machine" and v >= 0]
            row["cores"] = {name: round(v, 2) if v >= 0 else None for name, v in used.items()}
            row["cores"]["others"] = round(max(0.0, used["machine"] - sum(known)), 2)
        out.append(row)
    return out


def start_clients(args: argparse.Namespace, repo: Path, target: str) -> dict[str, list[Child]]:
    """The client processes by kind, started and connecting (each says "ready" when done)."""
    users, merchants = paying_pairs(repo, 20_000, args.seed)
    clients: dict[str, list[Child]] = {"get_b1": [], "get_b100": [], "push": []}
    for i in range(args.clients):
        clients["get_b1"].append(spawn(get_client, target, 1, args.rate, users, merchants,
                                       args.seed + i, converse=True))
    for i in range(args.batch_clients):
        clients["get_b100"].append(spawn(get_client, target, 100, args.batch_rate, users,
                                         merchants, args.seed + 100 + i, converse=True))
    clients["push"].append(spawn(push_client, target, args.users, args.merchants,
                                 args.push_batch, args.push_every, args.seed, converse=True))
    return clients


def soak(args: argparse.Namespace, repo: Path, workdir: Path, serve: Group, target: str,
         redis_group: Group, url: str, stack: contextlib.ExitStack) -> dict[str, Any]:
    """Releases the clients on one window, samples memory and CPU meanwhile and starts the
    materialization halfway; returns what the clients and samples saw."""
    duration = args.minutes * 60.0
    clients = start_clients(args, repo, target)
    everyone = [c for kind in clients.values() for c in kind]
    for child in everyone:  # done by the end of a run; if it was cut short, not worth waiting
        stack.callback(child.stop, 1.0)
    for child in everyone:
        if not child.pipe.poll(180) or child.pipe.recv() != "ready":
            raise RuntimeError(f"a client process ({child.name}) did not get ready")

    redis_client = redis.Redis.from_url(url)
    stack.callback(redis_client.close)
    groups = {"server": serve.pgid, "redis": redis_group.pgid,
              "benchmark": os.getpgrp()}  # this process and its client processes
    idle = sample(time.time(), serve, groups, redis_client)
    start_at = time.time() + 0.5
    for child in everyone:
        child.pipe.send((start_at, start_at + duration))
    log(f"soaking for {args.minutes:g} min: {args.clients} batch-1 clients at {args.rate:g}/s, "
        f"{args.batch_clients} batch-100 at {args.batch_rate:g}/s, {args.push_batch} events "
        f"pushed every {args.push_every:g} s, materialize at {duration / 2:.0f} s")
    time.sleep(max(0.0, start_at - time.time()))

    samples: list[dict[str, Any]] = []
    materialize: Group | None = None
    materialized: dict[str, Any] = {}
    next_sample = start_at
    while True:
        now = time.time()
        if materialize is None and now >= start_at + duration / 2:
            materialize = start_group("featurestore materialize", [
                sys.executable, "-m", "featurestore.cli", "materialize", "--repo", str(repo)],
                workdir / "materialize.log")
            stack.callback(materialize.stop)
            groups["materialize"] = materialize.pgid
            materialized["started_s"] = round(now - start_at, 1)
            log(f"{now - start_at:.0f} s: featurestore materialize started")
        if materialize is not None and "ended_s" not in materialized and not materialize.alive():
            materialized["ended_s"] = round(now - start_at, 1)
            materialized["exit_code"] = materialize.process.returncode
            if materialize.process.returncode:
                materialized["output_tail"] = materialize.log.read_text()[-1500:]
            log(f"{now - start_at:.0f} s: featurestore materialize exited "
                f"{materialize.process.returncode}")
        if now >= next_sample:
            samples.append(sample(start_at, serve, groups, redis_client))
            next_sample += args.sample_every
            last = samples[-1]
            if len(samples) % 6 == 1:
                log(f"{last['t_s']:.0f} s: server RSS {last['server_rss_mb']} MB, redis "
                    f"{last['redis_used_memory_mb']} MB")
        if now >= start_at + duration and "ended_s" in materialized:
            break
        time.sleep(0.1)
    results = {kind: [c.result(120) for c in children] for kind, children in clients.items()}
    return {"idle": idle, "samples": samples, "materialize": materialized, "clients": results,
            "duration_s": duration}


# --- summaries -----------------------------------------------------------------------------

def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One kind's client results as arrays: starts, durations, codes ('OK' or the error)."""
    starts = np.concatenate([r["starts_s"] for r in results])
    took = np.concatenate([r["took_ns"] for r in results])
    codes = np.concatenate([np.array([r["errors"].get(i, "OK") for i in range(len(r["took_ns"]))],
                                     dtype=object) for r in results])
    return {"starts": starts, "took": took, "codes": codes}


def stats(calls: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    codes, ok = calls["codes"][mask], calls["codes"][mask] == "OK"
    took = calls["took"][mask][ok]
    errors = {str(c): int(n) for c, n in zip(*np.unique(codes[~ok], return_counts=True),
                                             strict=True)}
    latency = percentiles(took) if len(took) else {}
    return {"requests": int(mask.sum()), "errors": errors,
            **{k: latency.get(k) for k in ("p50_ms", "p99_ms", "max_ms")}}


def intervals(calls: dict[str, dict[str, Any]], duration: float, every: float,
              materialized: dict[str, Any], samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for k in range(math.ceil(duration / every)):
        lo, hi = k * every, min((k + 1) * every, duration)
        row: dict[str, Any] = {"t_s": lo}
        for kind, c in calls.items():
            row[kind] = stats(c, (c["starts"] >= lo) & (c["starts"] < hi))
        row["materializing"] = (materialized.get("started_s", math.inf) < hi
                                and materialized.get("ended_s", math.inf) >= lo)
        inside = [s for s in samples if lo <= s["t_s"] < hi]
        if inside:
            row["server_rss_mb"] = inside[-1]["server_rss_mb"]
            row["redis_used_memory_mb"] = inside[-1]["redis_used_memory_mb"]
        out.append(row)
    return out


def totals(calls: dict[str, dict[str, Any]], duration: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, c in calls.items():
        s = stats(c, np.ones(len(c["took"]), bool))
        ok = c["took"][c["codes"] == "OK"]
        n_errors = sum(s["errors"].values())
        out[kind] = {"requests": s["requests"], "errors": n_errors,
                     "errors_by_code": s["errors"],
                     "error_rate": round(n_errors / s["requests"], 6) if s["requests"] else None,
                     "per_s": round(s["requests"] / duration, 1),
                     "latency": percentiles(ok) if len(ok) else None}
    requests = sum(t["requests"] for t in out.values())
    errors = sum(t["errors"] for t in out.values())
    out["all"] = {"requests": requests, "errors": errors,
                  "error_rate": round(errors / requests, 6) if requests else None}
    return out


def growth_per_min(samples: list[dict[str, Any]], key: str, since: float) -> float | None:
    """The least-squares slope of `key` over the samples from `since` on, per minute."""
    kept = [x for x in samples if x["t_s"] >= since]
    if len(kept) < 3:
        return None
    minutes = [x["t_s"] / 60.0 for x in kept]
    return round(float(np.polyfit(minutes, [x[key] for x in kept], 1)[0]), 3)


def memory_summary(samples: list[dict[str, Any]], warmup: float, duration: float,
                   idle: dict[str, Any], materialized: dict[str, Any]) -> dict[str, Any]:
    during = [x for x in samples if x["t_s"] <= duration + 1]  # the last one falls at the end
    first, last = during[0], during[-1]
    after_warmup = [x for x in during if x["t_s"] >= warmup]
    pids = dict.fromkeys([*first["server_rss_by_pid_mb"], *last["server_rss_by_pid_mb"]])
    return {
        "server_rss_mb": {
            "idle_before_load": idle["server_rss_mb"], "start": first["server_rss_mb"],
            "end": last["server_rss_mb"], "max": max(x["server_rss_mb"] for x in during),
            "at_warmup_end": after_warmup[0]["server_rss_mb"] if after_warmup else None,
            "growth_mb_per_min_after_warmup": growth_per_min(during, "server_rss_mb", warmup),
            "growth_mb_per_min_after_materialize": growth_per_min(
                during, "server_rss_mb", materialized.get("ended_s", math.inf)),
            "by_process": {pid: {"start": first["server_rss_by_pid_mb"].get(pid),
                                 "end": last["server_rss_by_pid_mb"].get(pid)} for pid in pids}},
        "redis_used_memory_mb": {
            "idle_before_load": idle["redis_used_memory_mb"],
            "start": first["redis_used_memory_mb"], "end": last["redis_used_memory_mb"],
            "max": max(x["redis_used_memory_mb"] for x in during),
            "growth_mb_per_min_after_warmup": growth_per_min(during, "redis_used_memory_mb",
                                                             warmup)},
        "redis_keys": {"start": first["redis_keys"], "end": last["redis_keys"]},
    }


def scrape(port: int) -> dict[str, Any]:
    """A few of the server's counters (summed over its workers by the server)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = {"featurestore_requests": ("method", "code"), "featurestore_pushed_events":
              ("outcome",), "featurestore_redis_round_trips": ("outcome",)}
    out: dict[str, dict[str, float]] = {name: {} for name in wanted}
    for family in text_string_to_metric_families(text):
        if family.name not in wanted:
            continue
        for s in family.samples:
            if s.name == f"{family.name}_total" and s.value:
                key = "/".join(s.labels[label] for label in wanted[family.name])
                out[family.name][key] = out[family.name].get(key, 0) + int(s.value)
    return out


def parity(repo: Path, target: str, sample_size: int) -> dict[str, Any]:
    began = time.perf_counter()
    with Client(target, timeout=120) as client:
        report = check_parity(FeatureStore(repo), client, SERVICE, sample_size)
    return {"service": SERVICE,
            "as_of": (EPOCH + timedelta(microseconds=report.as_of_us)).isoformat(),
            "entities": report.entities, "values": report.values,
            "expired": report.expired, "mismatches": len(report.mismatches),
            "first_mismatches": [
                {"feature": m.feature, "keys": str(m.keys), "offline": repr(m.offline),
                 "offline_status": m.offline_status, "online": repr(m.online),
                 "online_status": m.online_status} for m in report.mismatches[:10]],
            "seconds": round(time.perf_counter() - began, 1)}


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if args.quick:
        args.minutes = 1.0
    warmup = min(60.0, args.minutes * 60 / 3)
    result: dict[str, Any] = {
        "benchmark": "soak", "machine": {**machine_info(), "loadavg_before": os.getloadavg()},
        "versions": versions(),
        "config": vars(args) | {"out": str(args.out), "workdir": str(args.workdir),
                                "service": SERVICE, "push_source": SOURCE,
                                "get_deadline_s": GET_DEADLINE_S,
                                "push_deadline_s": PUSH_DEADLINE_S, "warmup_s": warmup}}
    with contextlib.ExitStack() as stack:
        redis_group, url = stack.enter_context(owned(start_redis(workdir)))
        repo = workdir / "repo"
        result["setup"] = setup_repo(repo, url, args)
        metrics_port = free_port()
        serve, target = stack.enter_context(owned(start_ours(
            repo, args.workers, workdir, ["--metrics-port", str(metrics_port)])))
        seen = soak(args, repo, workdir, serve, target, redis_group, url, stack)
        log("load over; parity check")
        result["parity"] = parity(repo, target, args.parity_sample)
        result["server_metrics"] = scrape(metrics_port)
    duration = seen["duration_s"]
    calls = {kind: merge(r) for kind, r in seen["clients"].items()}
    push = seen["clients"]["push"][0]
    result["totals"] = totals(calls, duration)
    result["totals"]["push"] |= {"events_pushed": push["pushed"]["events"],
                                 "events_too_late": push["pushed"]["too_late"],
                                 "duplicate_batches": push["pushed"]["duplicates"],
                                 "events_per_s": round(push["pushed"]["events"] / duration)}
    result["error_details"] = {kind: [d for r in results for d in r["error_details"]]
                               for kind, results in seen["clients"].items()}
    result["materialize"] = seen["materialize"]
    result["memory"] = memory_summary(seen["samples"], warmup, duration, seen["idle"],
                                      seen["materialize"])
    result["intervals"] = intervals(calls, duration, args.interval, seen["materialize"],
                                    seen["samples"])
    result["samples"] = with_cores(seen["samples"])
    result["checks"] = checks(result, args.rss_growth_limit, duration - warmup)
    result["passed"] = all(c["pass"] for c in result["checks"].values() if c["pass"] is not None)
    result["machine"]["loadavg_after"] = os.getloadavg()
    return result


def checks(result: dict[str, Any], rss_limit: float, judged_s: float
           ) -> dict[str, dict[str, Any]]:
    """Every request is valid and has a generous deadline, so no error code is expected. RSS
    growth is judged (pass not null) only over at least RSS_JUDGED_S after warm-up."""
    growth = result["memory"]["server_rss_mb"]["growth_mb_per_min_after_warmup"]
    judged = judged_s >= RSS_JUDGED_S and growth is not None
    server_codes = {k: v for k, v in result["server_metrics"]["featurestore_requests"].items()
                    if not k.endswith("/OK")}
    applied = result["server_metrics"]["featurestore_pushed_events"].get("applied", 0)
    return {
        "no_client_errors": {"value": result["totals"]["all"]["errors"], "target": "== 0",
                             "pass": result["totals"]["all"]["errors"] == 0},
        "no_server_errors": {"value": server_codes, "target": "no code but OK",
                             "pass": not server_codes},
        "materialize_succeeded": {"value": result["materialize"].get("exit_code"),
                                  "target": "exit 0",
                                  "pass": result["materialize"].get("exit_code") == 0},
        "parity_holds": {"value": result["parity"]["mismatches"], "target": "== 0",
                         "pass": result["parity"]["mismatches"] == 0},
        "server_applied_every_pushed_event": {
            "value": applied, "target": f"== {result['totals']['push']['events_pushed']}",
            "pass": applied == result["totals"]["push"]["events_pushed"]},
        "rss_growth_after_warmup": {
            "value": growth, "target": f"<= {rss_limit:g} MB/min",
            "pass": growth <= rss_limit if judged and growth is not None else None,
            "judged_over_s": judged_s},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the load")
    parser.add_argument("--quick", action="store_true", help="one minute of load")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    parser.add_argument("--clients", type=int, default=2, help="batch-1 client processes")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="requests/s of each batch-1 client (0: back to back)")
    parser.add_argument("--batch-clients", type=int, default=1,
                        help="batch-100 client processes")
    parser.add_argument("--batch-rate", type=float, default=10.0,
                        help="requests/s of each batch-100 client (0: back to back)")
    parser.add_argument("--push-batch", type=int, default=1000, help="events per push")
    parser.add_argument("--push-every", type=float, default=1.0, help="seconds between pushes")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per series row")
    parser.add_argument("--sample-every", type=float, default=5.0,
                        help="seconds between memory and CPU samples")
    parser.add_argument("--rss-growth-limit", type=float, default=5.0,
                        help="MB/min of server RSS growth after warm-up that fails the run")
    parser.add_argument("--parity-sample", type=int, default=1000, help="entities to check")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--merchants", type=int, default=2_000)
    parser.add_argument("--transactions", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path,
                        help="keep the repo, its data and the servers' logs here")
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    args = parser.parse_args()
    # A plain SIGTERM would skip the blocks that stop the servers and clients.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.pop("FEATURESTORE_REDIS_URL", None)  # the repo names the benchmark's own Redis
    run(benchmark, args, "featurestore-soak-")


if __name__ == "__main__":
    main()
