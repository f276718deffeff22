"""featurestore and Feast side by side, on the same data, in the same run, on one Redis.

    .venv/bin/python benchmarks/feast_compare.py [--quick] [--out benchmarks/results]

One Feast repo is generated (2M events of 100k users for two feature views of 20 and 50
float features, 500k labels, an on-demand feature view in python mode with 3 outputs) and
converted with `featurestore import-feast`, so both systems read the same files and define
the same features. Measured, each side in turn:

- training set: Feast `get_historical_features(...).to_df()` vs `FeatureStore.training_set`
  (inside `session()`), seconds;
- materialization into the same redis-server (Feast in database 1, ours in 2), rows/s;
- online, in process: Feast `get_online_features` vs our OnlineStore.read (redis-py), batches of 1,
  10 and 100 users, p50/p90/p99 ms.

- online over the network: Feast's HTTP feature server (`feast serve`) vs our gRPC server, one
  worker each, called from this process, batches of 1, 10 and 100.

- throughput: batch-1 requests/s with 2 server workers each (`feast serve -w 2`,
  `featurestore serve --workers 2`), from a client process of 4 closed-loop threads sending
  prebuilt requests.

Also writes `feast_compare.png`, every ratio on one chart.

Writes `feast_compare.json` and `feast_compare.md` (every figure with the ratio Feast/ours)
to --out. --quick shrinks the data to run in about a minute."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import feast
import grpc
import numpy as np
import pandas as pd
import pyarrow as pa
import requests
from harness import log
from payloads import OURS_METHOD, encode_request
from processes import Group, free_port, in_process, owned, start_group, wait_for
from servers import start_ours, start_redis
from timing import percentiles, time_calls

from featurestore import Client, FeatureStore
from featurestore.definitions.types import Float64, Int64
from featurestore.feast_import import import_feast
from featurestore.online.lookup import Lookup
from featurestore.online.store import OnlineStore
from featurestore.values.columns import from_arrow

T0 = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 30
DEFINITIONS = """
from datetime import timedelta
from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64

user = Entity(name="user", join_keys=["user_id"])
def view(name, n):
    source = FileSource(name=f"{name}_source", path=f"data/{name}.parquet",
                        timestamp_field="event_timestamp")
    return FeatureView(name=name, entities=[user], ttl=timedelta(days=30), source=source,
                       schema=[Field(name=f"{name}_f{i:02d}", dtype=Float64) for i in range(n)])
profile = view("profile", 20)
stats = view("stats", 50)
request = RequestSource(name="txn", schema=[Field(name="amount", dtype=Float64)])

@on_demand_feature_view(sources=[profile, stats, request], mode="python",
                        schema=[Field(name="amount_ratio", dtype=Float64),
                                Field(name="amount_gap", dtype=Float64),
                                Field(name="score", dtype=Float64)])
def per_txn(inputs):
    return {
        "amount_ratio": [a / (p + 1.0) if p is not None else None
                         for a, p in zip(inputs["amount"], inputs["profile_f00"])],
        "amount_gap": [a - s if s is not None else None
                       for a, s in zip(inputs["amount"], inputs["stats_f00"])],
        "score": [p * 0.5 + s * 0.25 if p is not None and s is not None else None
                  for p, s in zip(inputs["profile_f01"], inputs["stats_f01"])],
    }

service = FeatureService(name="bench", features=[profile, stats, per_txn])
"""


def write_feast_repo(root: Path, users: int, rows: int, redis_host: str, seed: int) -> Path:
    repo = root / "feast_repo"
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(textwrap.dedent(f"""
        project: bench
        registry: data/registry.db
        provider: local
        online_store:
            type: redis
            connection_string: "{redis_host},db=1"
        entity_key_serialization_version: 3
        """))
    (repo / "definitions.py").write_text(DEFINITIONS)
    rng = np.random.default_rng(seed)
    for name, width in (("profile", 20), ("stats", 50)):
        n = rows // 2
        columns: dict[str, Any] = {
            "user_id": rng.integers(0, users, n),
            "event_timestamp": pd.to_datetime(T0 + pd.to_timedelta(
                rng.integers(0, DAYS * 86400, n), unit="s"), utc=True)}
        for i in range(width):
            columns[f"{name}_f{i:02d}"] = rng.random(n)
        pd.DataFrame(columns).to_parquet(repo / "data" / f"{name}.parquet")
    return repo


def labels(users: int, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user_id": rng.integers(0, users, n),
        "event_timestamp": pd.to_datetime(T0 + pd.to_timedelta(
            rng.integers(86400, DAYS * 86400, n), unit="s"), utc=True),
        "amount": rng.random(n) * 100})


def timed(fn: Any) -> tuple[float, Any]:
    began = time.perf_counter()
    value = fn()
    return time.perf_counter() - began, value


def latency(call: Any, requests: int) -> dict[str, float]:
    return percentiles(time_calls(call, requests, min(20, requests)))


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    users, rows, n_labels = (2000, 40_000, 10_000) if args.quick else (100_000, 2_000_000,
                                                                       500_000)
    result: dict[str, Any] = {"config": {"users": users, "rows": rows, "labels": n_labels,
                                         "feast": feast.__version__}}
    with owned(start_redis(workdir)) as (_, url):
        base = url.rsplit("/", 1)[0]
        repo = write_feast_repo(workdir, users, rows, base.removeprefix("redis://"), args.seed)
        imported = import_feast(repo, workdir / "ours")
        result["import"] = {"converted": imported.converted, "notes": imported.notes}
        config = workdir / "ours" / "featurestore.yaml"
        config.write_text(config.read_text().replace("managed", f"{base}/2"))
        subprocess.run([sys.executable, "-m", "feast.cli.cli", "apply"], cwd=repo, check=True,
                       capture_output=True)
        theirs = feast.FeatureStore(repo_path=str(repo))
        ours = FeatureStore(workdir / "ours")
        ours.apply()
        frame = labels(users, n_labels, args.seed + 1)
        log("training sets")
        feast_s, feast_df = timed(lambda: theirs.get_historical_features(
            entity_df=frame, features=theirs.get_feature_service("bench")).to_df())
        with ours.session():
            ours.training_set(frame.head(1000), service="bench")  # warm the session
            ours_s, ours_df = timed(lambda: ours.training_set(frame, service="bench"))
        result["training_set"] = {"feast_s": round(feast_s, 3), "ours_s": round(ours_s, 3),
                                  "feast_rows": len(feast_df), "ours_rows": ours_df.height}
        log(f"training set: Feast {feast_s:.2f} s, ours {ours_s:.2f} s")
        end = T0 + timedelta(days=DAYS, seconds=1)
        feast_m, _ = timed(lambda: theirs.materialize(start_date=T0, end_date=end))
        ours_m, done = timed(lambda: ours.materialize(end=end))
        written = sum(m.rows for m in done)
        result["materialization"] = {
            "feast_s": round(feast_m, 3), "ours_s": round(ours_m, 3), "ours_rows": written,
            "feast_rows_per_s": round(written / feast_m), "ours_rows_per_s": round(written / ours_m)}
        log(f"materialization: Feast {feast_m:.2f} s, ours {ours_m:.2f} s ({written} rows)")
        result["online_in_process"] = online(theirs, ours, url, users, args)
        result["online_network"] = network(repo, workdir, users, args)
        result["throughput"] = throughput(repo, workdir, users, args)
    return result


def start_feast_server(repo: Path, workdir: Path, workers: int) -> tuple[Group, str]:
    """`feast serve` (Feast's HTTP feature server), ready once /health answers."""
    port = free_port()
    group = start_group(f"feast serve -w {workers}", [
        sys.executable, "-m", "feast.cli.cli", "serve", "--host", "127.0.0.1", "-p", str(port),
        "-w", str(workers)], workdir / f"feast-serve-{port}.log", cwd=repo)
    target = f"http://127.0.0.1:{port}"
    wait_for(group, f"{target}/health", lambda: _healthy(target))
    return group, target


def _healthy(target: str) -> bool:
    try:
        return requests.get(f"{target}/health", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def network(repo: Path, workdir: Path, users: int, args: argparse.Namespace
            ) -> dict[str, Any]:
    """Latency with one worker each, from a separate client process: Feast over HTTP/JSON with
    a kept-alive session, ours over gRPC with featurestore.Client."""
    with owned(start_feast_server(repo, workdir, 1)) as (_, feast_target), \
            owned(start_ours(workdir / "ours", 1, workdir)) as (_, ours_target):
        return in_process(network_worker, feast_target, ours_target, users, args.requests,
                          args.seed + 3)  # type: ignore[no-any-return]


def network_worker(feast_target: str, ours_target: str, users: int, requests_per_batch: int,
                   seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    out = {}
    with requests.Session() as http, Client(ours_target) as client:
        client.feature_service("bench")
        for batch in (1, 10, 100):
            n = max(50, requests_per_batch // batch)
            keys = rng.integers(0, users, (n, batch)).tolist()
            amounts = (rng.random((n, batch)) * 100).tolist()

            def feast_call(i: int, keys: list[Any] = keys, amounts: list[Any] = amounts
                           ) -> Any:
                reply = http.post(f"{feast_target}/get-online-features", json={
                    "feature_service": "bench",
                    "entities": {"user_id": keys[i], "amount": amounts[i]}}, timeout=30)
                reply.raise_for_status()
                return reply.json()

            def ours_call(i: int, keys: list[Any] = keys, amounts: list[Any] = amounts
                          ) -> Any:
                return client.get_online_features(service="bench",
                                                  entities={"user_id": keys[i]},
                                                  request={"amount": amounts[i]})

            f, o = latency(feast_call, n), latency(ours_call, n)
            out[f"batch_{batch}"] = {"feast": f, "ours": o, "ratio_p99_feast_over_ours":
                                     round(f["p99_ms"] / o["p99_ms"], 2)}
            log(f"network batch {batch}: Feast p99 {f['p99_ms']} ms, ours p99 "
                f"{o['p99_ms']} ms")
    return out


def throughput(repo: Path, workdir: Path, users: int, args: argparse.Namespace
               ) -> dict[str, Any]:
    """Requests/s of batch-1 requests with 2 server workers each, from one client process of
    4 threads sending prebuilt requests (JSON bytes for Feast, protobuf bytes for ours) in
    closed loops for the same number of seconds. On 2 cores the client competes with the
    servers, so this is a floor for both."""
    rng = np.random.default_rng(args.seed + 4)
    keys = rng.integers(0, users, 2000).tolist()
    amounts = (rng.random(2000) * 100).tolist()
    bodies = {
        "feast": [json.dumps({"feature_service": "bench", "entities": {
            "user_id": [k], "amount": [a]}}).encode() for k, a in zip(keys, amounts, strict=True)],
        "ours": [encode_request("bench", {"user_id": [k]}, {"amount": [a]})
                 for k, a in zip(keys, amounts, strict=True)]}
    out: dict[str, Any] = {}
    with owned(start_feast_server(repo, workdir, 2)) as (_, feast_target), \
            owned(start_ours(workdir / "ours", 2, workdir)) as (_, ours_target):
        targets = {"feast": feast_target, "ours": ours_target}
        for side in ("feast", "ours"):
            done = in_process(load_worker, side, targets[side], bodies[side], 4,
                              args.load_seconds)
            out[side] = {"requests": done, "seconds": args.load_seconds,
                         "req_per_s": round(done / args.load_seconds)}
            log(f"throughput {side}: {out[side]['req_per_s']} req/s")
    out["ratio_ours_over_feast"] = round(out["ours"]["req_per_s"] / out["feast"]["req_per_s"], 2)
    return out


def load_worker(side: str, target: str, bodies: list[bytes], threads: int, seconds: float
                ) -> int:
    """Closed-loop threads until the deadline; returns how many requests completed."""
    import threading

    deadline = time.monotonic() + seconds
    done = [0] * threads

    def loop(t: int) -> None:
        if side == "feast":
            with requests.Session() as http:
                i = t
                while time.monotonic() < deadline:
                    http.post(f"{target}/get-online-features", data=bodies[i % len(bodies)],
                              headers={"Content-Type": "application/json"},
                              timeout=30).raise_for_status()
                    done[t] += 1
                    i += threads
        else:
            with grpc.insecure_channel(target) as channel:
                call = channel.unary_unary(OURS_METHOD)
                i = t
                while time.monotonic() < deadline:
                    call(bodies[i % len(bodies)], timeout=30)
                    done[t] += 1
                    i += threads

    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done)


def chart(result: dict[str, Any], path: Path) -> None:
    """Feast / ours for every figure, on a log scale (higher: featurestore faster)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, ratios = [], []
    ts, mat = result["training_set"], result["materialization"]
    labels += ["training set", "materialization"]
    ratios += [ts["feast_s"] / ts["ours_s"], mat["ours_rows_per_s"] / mat["feast_rows_per_s"]]
    for where in ("online_in_process", "online_network"):
        for batch, r in result[where].items():
            labels.append(f"{where.removeprefix('online_').replace('_', '-')} {batch} p99")
            ratios.append(r["feast"]["p99_ms"] / r["ours"]["p99_ms"])
    labels.append("throughput (2 workers)")
    ratios.append(result["throughput"]["ratio_ours_over_feast"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.barh(labels[::-1], ratios[::-1], color="#3b7dd8")
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("Feast / featurestore (times faster, log scale)")
    ax.set_title(f"featurestore vs Feast {result['config']['feast']}, same data and machine")
    for y, v in enumerate(ratios[::-1]):
        ax.text(v, y, f" {v:.1f}x", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def online(theirs: Any, ours: FeatureStore, url: str, users: int,
           args: argparse.Namespace) -> dict[str, Any]:
    plan = ours.plan
    online_store = OnlineStore(url.rsplit("/", 1)[0] + "/2", plan.project)
    selection = plan.select(service="bench")
    lookup = Lookup(plan.project, plan, selection, online_store.served())
    service = theirs.get_feature_service("bench")
    rng = np.random.default_rng(args.seed + 2)
    out = {}
    for batch in (1, 10, 100):
        requests = max(50, args.requests // batch)
        keys = rng.integers(0, users, (requests, batch))
        amounts = rng.random((requests, batch)) * 100
        rows = [[{"user_id": int(k), "amount": float(a)} for k, a in zip(ks, am, strict=True)]
                for ks, am in zip(keys, amounts, strict=True)]
        now = int(time.time() * 1e6)

        def ours_call(i: int, keys: np.ndarray = keys, amounts: np.ndarray = amounts,
                      now: int = now) -> Any:
            return online_store.read(lookup, {"user_id": from_arrow(pa.array(keys[i]), Int64)},
                                     {"amount": from_arrow(pa.array(amounts[i]), Float64)}, now)

        def feast_call(i: int, rows: list[Any] = rows) -> Any:
            return theirs.get_online_features(features=service, entity_rows=rows[i]).to_dict()

        f, o = latency(feast_call, requests), latency(ours_call, requests)
        out[f"batch_{batch}"] = {"feast": f, "ours": o,
                                 "ratio_p99_feast_over_ours": round(f["p99_ms"] / o["p99_ms"], 2)}
        log(f"in-process batch {batch}: Feast p99 {f['p99_ms']} ms, ours p99 {o['p99_ms']} ms")
    online_store.close()
    return out


def table(result: dict[str, Any]) -> str:
    ts, mat = result["training_set"], result["materialization"]
    lines = ["| measure | Feast | featurestore | Feast / ours |", "|---|---|---|---|",
             f"| training set (s) | {ts['feast_s']} | {ts['ours_s']} | "
             f"{ts['feast_s'] / ts['ours_s']:.1f}x |",
             f"| materialization (rows/s) | {mat['feast_rows_per_s']:,} | "
             f"{mat['ours_rows_per_s']:,} | {mat['ours_rows_per_s'] / mat['feast_rows_per_s']:.1f}x "
             "faster |"]
    for where in ("online_in_process", "online_network"):
        for batch, r in result[where].items():
            for p in ("p50_ms", "p90_ms", "p99_ms"):
                lines.append(f"| {where.removeprefix('online_').replace('_', '-')} {batch} {p} "
                             f"| {r['feast'][p]} | {r['ours'][p]} | "
                             f"{r['feast'][p] / r['ours'][p]:.1f}x |")
    tp = result["throughput"]
    lines.append(f"| throughput, 2 workers, batch 1 (req/s) | {tp['feast']['req_per_s']:,} | "
                 f"{tp['ours']['req_per_s']:,} | {tp['ratio_ours_over_feast']:.1f}x more |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--load-seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if args.quick:
        args.load_seconds = min(args.load_seconds, 3.0)
    import tempfile
    with tempfile.TemporaryDirectory(prefix="feast-compare-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = benchmark(args, workdir)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "feast_compare_quick" if args.quick else "feast_compare"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(table(result))
    chart(result, args.out / f"{name}.png")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
