"""The online store on a 3-master Redis Cluster beside one Redis, in the same run: the
server's own read path (`FeatureServer.online_features` on prepared requests, in process, so
gRPC's noise stays out) at batch 1 and batch 100, latency of sequential requests and
throughput with requests in flight at once, the two backends measured in turn within each
round; and materialization speed into each.

    .venv/bin/python benchmarks/cluster.py [--reps 5] [--requests 300] [--out FILE]

Uses online.py's data and its `bench_50_t3` service (50 features over its row views and 3
transforms). The cluster's masters run on this machine's loopback like the single Redis, so
the numbers show what the cluster transport costs (a read is one round trip per node, in
parallel), not what more machines add. Prints JSON: per backend and batch, medians over
--reps of microseconds per request and requests per second."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import harness
import numpy as np
import online
import redis
from grpc_health.v1 import health
from processes import Group, free_port, start_group, wait_for
from servers import start_redis

from featurestore import FeatureStore
from featurestore.online.reader import OnlineReader
from featurestore.serving.proto import pb
from featurestore.serving.request import Call
from featurestore.serving.service import FeatureServer, ServerOptions

BATCHES = (1, 100)
IN_FLIGHT = 16  # concurrent requests of the throughput measure
REDIS_TIMEOUT_S = 5.0  # a shared machine's stalls must not fail a run (both backends alike)


def start_cluster(workdir: Path, masters: int = 3) -> tuple[list[Group], str]:
    """`masters` cluster-enabled redis-servers joined by `redis-cli --cluster create`."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise RuntimeError("redis-server and redis-cli are needed (make redis)")
    ports: list[int] = []
    while len(ports) < masters:
        port = free_port()
        if port + 10000 <= 65535 and port not in ports:  # its cluster bus port too
            ports.append(port)
    groups = []
    for port in ports:
        folder = workdir / f"cluster-{port}"
        folder.mkdir()
        group = start_group(f"redis-cluster-{port}", [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
            "no", "--dir", str(folder), "--cluster-enabled", "yes"], folder / "redis.log")
        groups.append(group)
        client = redis.Redis(host="127.0.0.1", port=port)
        wait_for(group, "redis-server to answer PING", lambda c=client: bool(c.ping()), 10)
        client.close()
    subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                    "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True)
    for port, group in zip(ports, groups, strict=True):
        client = redis.Redis(host="127.0.0.1", port=port)
        wait_for(group, "the cluster to be ok", lambda c=client: b"cluster_state:ok" in
                 c.execute_command("CLUSTER", "INFO"), 30)
        client.close()
    return groups, "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)


async def measure(stores: dict[str, tuple[FeatureStore, str]], reps: int, count: int
                  ) -> dict[str, Any]:
    """Per backend and batch size: the medians over `reps` rounds, the backends measured
    one after the other within each round (a busy machine slows both alike)."""
    servers = {}
    for name, (store, url) in stores.items():
        servers[name] = FeatureServer(store.plan, OnlineReader(url, store.plan.project),
                                      health.aio.HealthServicer(),
                                      ServerOptions(redis_timeout=REDIS_TIMEOUT_S))
        await servers[name].refresh()
    out: dict[str, Any] = {name: {} for name in stores}
    for batch in BATCHES:
        raws = online.encode_columns(online.SERVICE_T3, online.request_columns(
            online.SERVICE_T3, batch, count, batch))
        latency: dict[str, list[float]] = {name: [] for name in stores}
        throughput: dict[str, list[float]] = {name: [] for name in stores}
        for server in servers.values():
            await _sequential(server, raws)  # warm up
        for _ in range(reps):
            for name, server in servers.items():
                start = time.perf_counter()
                await _sequential(server, raws)
                latency[name].append((time.perf_counter() - start) / count * 1e6)
                start = time.perf_counter()
                await asyncio.gather(*(_sequential(server, raws[i::IN_FLIGHT])
                                       for i in range(IN_FLIGHT)))
                throughput[name].append(count / (time.perf_counter() - start))
        for name in stores:
            out[name][f"batch_{batch}"] = {
                "us_per_request": round(statistics.median(latency[name]), 1),
                "requests_per_s": round(statistics.median(throughput[name]))}
    return out


async def _sequential(server: FeatureServer, raws: list[bytes]) -> None:
    for raw in raws:
        await server.online_features(pb.GetOnlineFeaturesRequest.FromString(raw), Call(None))


def materialized(url: str, workdir: Path, rows: Any) -> tuple[FeatureStore, float]:
    """The benchmark repo on `url`, materialized; and its rows per second."""
    workdir.mkdir()
    online.write_repo(workdir / "repo", rows, url)
    store = FeatureStore(workdir / "repo")
    store.apply()
    start = time.perf_counter()
    done = store.materialize(end=datetime(1970, 1, 1, tzinfo=UTC)
                             + timedelta(microseconds=online.END_US))
    return store, sum(m.rows for m in done) / (time.perf_counter() - start)


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rows = online.generate_rows(np.random.default_rng(0))
    group, single_url = start_redis(workdir)
    groups = [group]
    try:
        cluster_groups, cluster_url = start_cluster(workdir)
        groups += cluster_groups
        urls = {"single_redis": single_url, "cluster_3_masters": cluster_url}
        stores, speed = {}, {}
        for name, url in urls.items():
            store, speed[name] = materialized(url, workdir / name, rows)
            stores[name] = (store, url)
        out = asyncio.run(measure(stores, args.reps, args.requests))
    finally:
        for g in groups:
            g.stop()
    for name in out:
        out[name]["materialize_rows_per_s"] = round(speed[name])
    single, cluster = out["single_redis"], out["cluster_3_masters"]
    ratios = {f"batch_{b}": {
        "latency_cluster_over_single": round(cluster[f"batch_{b}"]["us_per_request"]
                                             / single[f"batch_{b}"]["us_per_request"], 2),
        "throughput_cluster_over_single": round(cluster[f"batch_{b}"]["requests_per_s"]
                                                / single[f"batch_{b}"]["requests_per_s"], 2)}
        for b in BATCHES}
    return {"benchmark": "cluster", "reps": args.reps, "requests": args.requests,
            "in_flight": IN_FLIGHT, "cases": out, "ratios": ratios,
            "machine": harness.machine_info(), "versions": harness.versions()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--out", type=Path)
    harness.run(benchmark, parser.parse_args(), "cluster-")


if __name__ == "__main__":
    main()
