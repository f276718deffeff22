"""featurestore and Feast side by side, on the same data, in the same run, on one Redis, with
Feast in its best local configuration.

    .venv/bin/python benchmarks/feast_compare.py [--quick] [--workers 2] [--out benchmarks/results]

One Feast repo is generated (feast_repo.py: 2M events of 100k users for two feature views of
20 and 50 float features, 500k labels, a python-mode on-demand view with 3 outputs, and two
feature services: `bench` with the on-demand view, `bench_plain` without) and converted with
`featurestore import-feast`, so both systems read the same files and define the same features
(the on-demand view becomes 3 @transform). Every measure is taken for both services. Feast
runs with its DuckDB offline store (the primary configuration) and, for training sets and
materialization, also with its default file (Dask) store. Measured:

- training set: Feast `get_historical_features(...).to_df()` vs `FeatureStore.training_set`
  inside `session()`, seconds; each configuration warmed once on 1,000 labels, then timed
  --repeat times with the sides alternating (the file store once: a call takes a minute);
- materialization into the same redis-server (Feast in database 1, emptied before each of its
  runs so every row is written; ours in 2), entity rows/s;
- online, in process: Feast's SDK `get_online_features` (columnar entity rows) vs our
  `OnlineStore.read`, batches of 1, 10 and 100 users, the four sides (2 systems x 2 services)
  taking turns in blocks of 50 requests;
- online over the network, from a separate client process, both servers with --workers
  workers: Feast's HTTP feature server (`feast serve -w N --no-access-log --max-requests 0`)
  through one kept-alive `http.client.HTTPConnection` (JSON encoded and decoded per call),
  asked for the features by reference (its fastest call) and, as a third side, by the feature
  service's name, vs `featurestore serve --workers N` through one `featurestore.Client` (one
  gRPC channel), all six sides taking turns as above;
- throughput: batch-1 requests/s on the same servers, from a client process of 4 closed-loop
  threads sending prebuilt requests (each thread its own kept-alive HTTP connection or gRPC
  channel), --rounds rounds alternating the sides, the best round reported.

Ours reads as of the materialization's end (inside every view's ttl, so its values are
PRESENT: Feast does not apply ttl online); an untimed check first compares both systems'
values for 100 users.

Writes `feast_compare.json`, `feast_compare.md` (feast_report.py: every figure with how many
times faster featurestore was) and `feast_compare.png` (those ratios) to --out. --quick
shrinks the data to run in a few minutes."""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import feast
import grpc
import numpy as np
import pyarrow as pa
import redis
from feast_repo import (
    DAYS,
    FEATURE_REFS,
    OFFLINE_STORES,
    SERVICES,
    T0,
    WIDTHS,
    feast_store,
    labels,
    write_feast_repo,
)
from feast_report import chart, table
from harness import log, machine_info
from payloads import OURS_METHOD, encode_request
from processes import Group, free_port, in_process, owned, start_group, wait_for
from servers import start_ours, start_redis
from timing import percentiles, time_sides

from featurestore import Client, FeatureStore
from featurestore.definitions.types import Float64, Int64
from featurestore.feast_import import import_feast
from featurestore.online.lookup import Lookup, OnlineResult
from featurestore.online.store import OnlineStore
from featurestore.values.columns import from_arrow
from featurestore.values.status import PRESENT
from featurestore.values.timestamps import to_micros

END = T0 + timedelta(days=DAYS, seconds=1)  # materialized up to; ours reads as of it
FEAST_SERVE_OPTIONS = ["--no-access-log", "--max-requests", "0"]
BATCHES = (1, 10, 100)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    value = fn()
    return time.perf_counter() - began, value


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    users, rows, n_labels = (2000, 40_000, 10_000) if args.quick else (100_000, 2_000_000,
                                                                       500_000)
    result: dict[str, Any] = {"config": {
        "users": users, "rows": rows, "labels": n_labels, "feast": feast.__version__,
        "workers": args.workers, "feast_serve": ["feast", "serve", "-w", str(args.workers),
                                                 *FEAST_SERVE_OPTIONS],
        "services": {"with_transforms": "bench: 70 features + 3 transforms (Feast: a "
                     "python-mode on-demand view; ours: 3 @transform)",
                     "without_transforms": "bench_plain: the same 70 features"},
        "as_of": END.isoformat(), "repeat": args.repeat, "rounds": args.rounds,
        "machine": machine_info()}}
    with owned(start_redis(workdir)) as (_, url):
        base = url.rsplit("/", 1)[0]
        repo = write_feast_repo(workdir, users, rows, base.removeprefix("redis://"), args.seed)
        imported = import_feast(repo, workdir / "ours")
        result["import"] = {"converted": imported.converted, "notes": imported.notes}
        config = workdir / "ours" / "featurestore.yaml"
        config.write_text(config.read_text().replace("managed", f"{base}/2"))
        subprocess.run([sys.executable, "-m", "feast.cli.cli", "apply"], cwd=repo, check=True,
                       capture_output=True)
        theirs = {side: feast_store(repo, side) for side in OFFLINE_STORES}
        ours = FeatureStore(workdir / "ours")
        ours.apply()
        frame = labels(users, n_labels, args.seed + 1)
        result["training_set"] = training_sets(theirs, ours, frame, args.repeat)
        result["materialization"] = materialization(theirs, ours, base)
        with OnlineStore(f"{base}/2", ours.plan.project) as online_store:
            lookups = {v: Lookup(ours.plan.project, ours.plan, ours.plan.select(service=s),
                                 online_store.served()) for v, s in SERVICES.items()}
            result["sanity"] = same_values(theirs["feast_duckdb"], online_store, lookups, users,
                                           args.seed + 5)
            result["online_in_process"] = in_process_latency(
                theirs["feast_duckdb"], online_store, lookups, users, args)
        with owned(start_feast_server(repo, workdir, args.workers)) as (_, feast_target), \
                owned(start_ours(workdir / "ours", args.workers, workdir)) as (_, ours_target):
            result["online_network"] = in_process(network_worker, feast_target, ours_target,
                                                  users, args.requests, args.seed + 3)
            result["throughput"] = throughput(feast_target, ours_target, users, args)
    return result


def training_sets(theirs: dict[str, feast.FeatureStore], ours: FeatureStore, frame: Any,
                  repeat: int) -> dict[str, Any]:
    """Seconds of each configuration's training set for the same labels."""
    out: dict[str, Any] = {}
    with ours.session():
        for variant, service in SERVICES.items():
            calls = {side: feast_training_set(store, service) for side, store in theirs.items()}
            calls["ours"] = ours_training_set(ours, service)
            for call in calls.values():
                call(frame.head(1000))
            runs: dict[str, list[float]] = {side: [] for side in calls}
            counts: dict[str, int] = {}
            order = ["feast_duckdb", "ours"]
            for rep in range(repeat):
                for side in order + (["feast_file"] if rep == 0 else []):
                    seconds, counts[side] = timed(lambda c=calls[side]: c(frame))
                    runs[side].append(round(seconds, 3))
                    log(f"training set {service}, {side}: {seconds:.2f} s")
                order.reverse()
            out[variant] = {side: {"runs_s": runs[side],
                                   "median_s": round(statistics.median(runs[side]), 3),
                                   "rows": counts[side]} for side in calls}
            for side in theirs:
                out[variant][f"ratio_{side}_over_ours"] = round(
                    out[variant][side]["median_s"] / out[variant]["ours"]["median_s"], 2)
    return out


def feast_training_set(store: feast.FeatureStore, service: str) -> Callable[[Any], int]:
    return lambda frame: len(store.get_historical_features(
        entity_df=frame, features=store.get_feature_service(service)).to_df())


def ours_training_set(store: FeatureStore, service: str) -> Callable[[Any], int]:
    return lambda frame: store.training_set(frame, service=service).height


def materialization(theirs: dict[str, feast.FeatureStore], ours: FeatureStore, base: str
                    ) -> dict[str, Any]:
    """One full materialization each, up to END. Feast's Redis store skips a row no newer
    than the one it holds, so its database is emptied before each of its runs; the DuckDB
    store runs last, and its values are the ones served after."""
    ours_s, done = timed(lambda: ours.materialize(end=END))
    written = sum(m.rows for m in done)
    out: dict[str, Any] = {"entity_rows": written, "ours": {
        "s": round(ours_s, 3), "rows_per_s": round(written / ours_s)}}
    log(f"materialization, ours: {ours_s:.2f} s ({written} entity rows)")
    feast_db = redis.Redis.from_url(f"{base}/1")
    for side in ("feast_file", "feast_duckdb"):
        feast_db.flushdb()
        seconds, _ = timed(lambda s=side: theirs[s].materialize(start_date=T0, end_date=END))
        out[side] = {"s": round(seconds, 3), "rows_per_s": round(written / seconds)}
        out[f"ratio_ours_over_{side}"] = round(out["ours"]["rows_per_s"]
                                               / out[side]["rows_per_s"], 2)
        log(f"materialization, {side}: {seconds:.2f} s")
    feast_db.close()
    return out


def ours_read(online_store: OnlineStore, lookup: Lookup, keys: list[int],
              amounts: list[float] | None) -> OnlineResult:
    requests = {} if amounts is None else {"amount": from_arrow(pa.array(amounts), Float64)}
    return online_store.read(lookup, {"user_id": from_arrow(pa.array(keys), Int64)}, requests,
                             to_micros(END))


def feast_rows(keys: list[int], amounts: list[float] | None) -> dict[str, list[Any]]:
    """Columnar entity rows (plus the request input, for the service that needs it)."""
    return {"user_id": keys} | ({} if amounts is None else {"amount": amounts})


def same_values(theirs: feast.FeatureStore, online_store: OnlineStore,
                lookups: dict[str, Lookup], users: int, seed: int) -> dict[str, Any]:
    """Both systems serve the same values for 100 random users (untimed): otherwise the
    comparison would not be like for like, and the run stops."""
    keys = np.random.default_rng(seed).integers(0, users, 100).tolist()
    served = ours_read(online_store, lookups["without_transforms"], keys, None)
    expected = theirs.get_online_features(
        features=theirs.get_feature_service(SERVICES["without_transforms"]),
        entity_rows=feast_rows(keys, None)).to_dict()
    present = differing = 0
    for feature in served.features:
        mine = feature.status == PRESENT
        present += int(mine.sum())
        other = np.array([np.nan if v is None else v for v in expected[feature.name]])
        differing += int((mine != ~np.isnan(other)).sum()
                         + (feature.column.values[mine] != other[mine]).sum())
    out = {"users": len(keys), "features": sum(WIDTHS.values()), "present": present,
           "differing": differing}
    if differing or not present:
        raise RuntimeError(f"Feast and featurestore do not serve the same values: {out}")
    return out


def in_process_latency(theirs: feast.FeatureStore, online_store: OnlineStore,
                       lookups: dict[str, Lookup], users: int, args: argparse.Namespace
                       ) -> dict[str, Any]:
    """Feast's SDK and our OnlineStore.read in this process, the four sides taking turns."""
    services = {v: theirs.get_feature_service(s) for v, s in SERVICES.items()}
    rng = np.random.default_rng(args.seed + 2)
    out: dict[str, Any] = {v: {} for v in SERVICES}
    for batch in BATCHES:
        n = requests_for(batch, args.requests)
        keys = rng.integers(0, users, (n, batch)).tolist()
        amounts = (rng.random((n, batch)) * 100).tolist()
        sides: dict[str, Callable[[int], Any]] = {}
        for variant in SERVICES:
            inputs = request_inputs(variant, amounts)
            sides[f"feast/{variant}"] = lambda i, s=services[variant], k=keys, a=inputs: \
                theirs.get_online_features(features=s, entity_rows=feast_rows(k[i], a[i])
                                           ).to_dict()
            sides[f"ours/{variant}"] = lambda i, lookup=lookups[variant], k=keys, a=inputs: \
                ours_read(online_store, lookup, k[i], a[i])
        record(out, f"in-process batch {batch}", batch, n, time_sides(sides, n, 20, 50))
    return out


def request_inputs(variant: str, amounts: list[Any]) -> list[Any]:
    """Each request's `amount` values where the service has the transforms, else None."""
    return amounts if variant == "with_transforms" else [None] * len(amounts)


def requests_for(batch: int, requests: int) -> int:
    return max(requests // 5, requests // batch)


def record(out: dict[str, Any], what: str, batch: int, n: int, times: dict[str, Any]) -> None:
    """Percentiles of each side of time_sides() ("<side>/<variant>"), filed by variant, with
    the ratios Feast/ours."""
    for variant in SERVICES:
        stats = {side: percentiles(ns) for side_variant, ns in times.items()
                 for side, v in [side_variant.split("/")] if v == variant}
        feast_p, ours_p = stats["feast"], stats["ours"]
        out[variant][f"batch_{batch}"] = {
            "requests": n, **stats,
            "ratio_p50_feast_over_ours": round(feast_p["p50_ms"] / ours_p["p50_ms"], 2),
            "ratio_p99_feast_over_ours": round(feast_p["p99_ms"] / ours_p["p99_ms"], 2)}
        log(f"{what}, {variant}: " + ", ".join(
            f"{side} p50/p99 {p['p50_ms']}/{p['p99_ms']} ms" for side, p in stats.items()))


def start_feast_server(repo: Path, workdir: Path, workers: int) -> tuple[Group, str]:
    """`feast serve` (Feast's HTTP feature server: gunicorn with uvicorn workers) without its
    access log and without recycling workers every 1,000 requests (its defaults), ready once
    every worker booted and /health answers; returns (group, host:port)."""
    port = free_port()
    group = start_group(f"feast serve -w {workers}", [
        sys.executable, "-m", "feast.cli.cli", "serve", "--host", "127.0.0.1", "-p", str(port),
        "-w", str(workers), *FEAST_SERVE_OPTIONS], workdir / f"feast-serve-{port}.log",
        cwd=repo)
    target = f"127.0.0.1:{port}"
    wait_for(group, f"{target}/health", lambda: (
        group.log.read_text().count("Application startup complete") == workers
        and _healthy(target)))
    return group, target


def _healthy(target: str) -> bool:
    try:
        http = FeastHttp(target)
        http.connection.request("GET", "/health")
        return http.connection.getresponse().status == 200
    except OSError:
        return False


class FeastHttp:
    """Feast's feature server over one HTTP/1.1 connection kept alive between calls."""

    def __init__(self, target: str):
        host, port = target.rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)

    def post(self, body: bytes) -> bytes:
        self.connection.request("POST", "/get-online-features", body,
                                {"Content-Type": "application/json"})
        reply = self.connection.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"Feast answered {reply.status}: {data[:500]!r}")
        return data


def feast_body(features: dict[str, Any], keys: list[int], amounts: list[float] | None
               ) -> bytes:
    """A /get-online-features request: `features` is {"features": [refs]} or
    {"feature_service": name}."""
    return json.dumps(features | {"entities": feast_rows(keys, amounts)}).encode()


def network_worker(feast_target: str, ours_target: str, users: int, requests: int, seed: int
                   ) -> dict[str, Any]:
    """Sequential calls from this (spawned) process: Feast over kept-alive HTTP/JSON, ours
    through featurestore.Client, both services, the four sides taking turns."""
    rng = np.random.default_rng(seed)
    http = FeastHttp(feast_target)
    out: dict[str, Any] = {v: {} for v in SERVICES}
    with Client(ours_target) as client:
        for service in SERVICES.values():
            client.feature_service(service)
        for batch in BATCHES:
            n = requests_for(batch, requests)
            keys = rng.integers(0, users, (n, batch)).tolist()
            amounts = (rng.random((n, batch)) * 100).tolist()
            sides: dict[str, Callable[[int], Any]] = {}
            for variant, service in SERVICES.items():
                inputs = request_inputs(variant, amounts)
                for side, features in (("feast", {"features": FEATURE_REFS[variant]}),
                                       ("feast_by_service", {"feature_service": service})):
                    sides[f"{side}/{variant}"] = lambda i, f=features, k=keys, a=inputs: \
                        json.loads(http.post(feast_body(f, k[i], a[i])))
                sides[f"ours/{variant}"] = lambda i, s=service, k=keys, a=inputs: \
                    client.get_online_features(
                        service=s, entities={"user_id": k[i]},
                        request=None if a[i] is None else {"amount": a[i]}, as_of=END)
            record(out, f"network batch {batch}", batch, n, time_sides(sides, n, 20, 50))
    http.connection.close()
    return out


def throughput(feast_target: str, ours_target: str, users: int, args: argparse.Namespace
               ) -> dict[str, Any]:
    """Requests/s of batch-1 requests from one client process of 4 threads sending prebuilt
    requests (JSON bytes for Feast, protobuf bytes for ours; responses read, not parsed) in
    closed loops for --load-seconds, --rounds times per side and service, alternating. On 2
    cores the client competes with the servers, so this is a floor for both."""
    rng = np.random.default_rng(args.seed + 4)
    keys = rng.integers(0, users, 2000).tolist()
    amounts = (rng.random(2000) * 100).tolist()
    targets = {"feast": feast_target, "ours": ours_target}
    out: dict[str, Any] = {}
    for variant, service in SERVICES.items():
        with_inputs = variant == "with_transforms"
        bodies = {
            "feast": [feast_body({"features": FEATURE_REFS[variant]}, [k],
                                 [a] if with_inputs else None)
                      for k, a in zip(keys, amounts, strict=True)],
            "ours": [encode_request(service, {"user_id": [k]},
                                    {"amount": [a]} if with_inputs else {}, to_micros(END))
                     for k, a in zip(keys, amounts, strict=True)]}
        rounds: dict[str, list[int]] = {"feast": [], "ours": []}
        order = ["feast", "ours"]
        for _ in range(args.rounds):
            for side in order:
                done = in_process(load_worker, side, targets[side], bodies[side], 4,
                                  args.load_seconds)
                rounds[side].append(round(done / args.load_seconds))
                log(f"throughput {service}, {side}: {rounds[side][-1]} req/s")
            order.reverse()
        out[variant] = {side: {"rounds_req_per_s": r, "req_per_s": max(r)}
                        for side, r in rounds.items()}
        out[variant]["ratio_ours_over_feast"] = round(max(rounds["ours"]) / max(rounds["feast"]),
                                                      2)
    out["threads"], out["seconds"] = 4, args.load_seconds
    return out


def load_worker(side: str, target: str, bodies: list[bytes], threads: int, seconds: float
                ) -> int:
    """Closed-loop threads until the deadline; returns how many requests completed."""
    deadline = time.monotonic() + seconds
    done = [0] * threads

    def loop(t: int) -> None:
        if side == "feast":
            send = FeastHttp(target).post
        else:
            channel = grpc.insecure_channel(target)
            call = channel.unary_unary(OURS_METHOD)

            def send(body: bytes) -> bytes:
                return call(body, timeout=30)  # type: ignore[no-any-return]
        i = t
        while time.monotonic() < deadline:
            send(bodies[i % len(bodies)])
            done[t] += 1
            i += threads

    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=2,
                        help="server workers, the same for both servers (default 2)")
    parser.add_argument("--requests", type=int, default=1000,
                        help="timed requests per side at batch 1 (batch b: this / b, at least "
                        "a fifth)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed training sets per side and service (file store: 1)")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds per side")
    parser.add_argument("--load-seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if args.quick:
        args.load_seconds = min(args.load_seconds, 3.0)
        args.requests = min(args.requests, 300)
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
