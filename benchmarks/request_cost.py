"""What the server's code costs per request, without gRPC: `FeatureServer.online_features` on
prepared requests against a real Redis, beside its floor measured in the same run (a bare
MGET of the same keys on the same lean client). Meant for A/B runs of two commits, where the
end-to-end gRPC latency of online.py is too noisy on a shared 2-core machine to show a change
of tens of microseconds.

    .venv/bin/python benchmarks/request_cost.py [--reps 7] [--requests 300] [--out FILE]

Uses online.py's data and its `bench_50_t3` service (50 features over its row views and 3
transforms), each request parsed from its bytes per call as the server does. Prints JSON: per
batch size, the median over --reps of the mean microseconds per request (wall time), ours and
floor."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import harness
import numpy as np
import online
from grpc_health.v1 import health
from servers import start_redis

from featurestore import FeatureStore
from featurestore.online.reader import OnlineReader
from featurestore.online.redis_async import AsyncRedis
from featurestore.serving.proto import pb
from featurestore.serving.request import Call, read_columns
from featurestore.serving.service import FeatureServer, ServerOptions

BATCHES = (1, 10, 100)


async def measure(store: FeatureStore, url: str, reps: int, count: int) -> dict[str, Any]:
    plan = store.plan
    server = FeatureServer(plan, OnlineReader(url, plan.project), health.aio.HealthServicer(),
                           ServerOptions())
    await server.refresh()
    floor_client = AsyncRedis(url)
    out: dict[str, Any] = {}
    for batch in BATCHES:
        raws = online.encode_columns(online.SERVICE_T3, online.request_columns(
            online.SERVICE_T3, batch, count, batch))
        requests = [pb.GetOnlineFeaturesRequest.FromString(raw) for raw in raws]
        prepared = server._prepare(requests[0])
        keys = [prepared.lookup.start(read_columns(r, prepared.selection, batch)[1],
                                      online.END_US).keys for r in requests]

        async def serve(raw: bytes) -> bytes:  # parsed per call, as the server does
            return await server.online_features(pb.GetOnlineFeaturesRequest.FromString(raw),
                                                Call(None))
        sides = {"ours": [(serve, (raw,)) for raw in raws],
                 "floor": [(partial(floor_client.execute, timeout=1.0), ("MGET", *k))
                           for k in keys]}
        samples: dict[str, list[float]] = {"ours": [], "floor": []}
        await _run(sides["ours"])  # warm up
        for _ in range(reps):  # alternating, so that a busy machine slows both alike
            for name, calls in sides.items():
                start = time.perf_counter()
                await _run(calls)
                samples[name].append((time.perf_counter() - start) / count * 1e6)
        us = {name: round(statistics.median(v), 1) for name, v in samples.items()}
        out[f"batch_{batch}"] = {"us_per_request": us,
                                 "ratio_ours_over_floor": round(us["ours"] / us["floor"], 2)}
    return out


async def _run(calls: list[tuple[Any, tuple[Any, ...]]]) -> None:
    for call, args in calls:
        await call(*args)


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    group, url = start_redis(workdir)
    try:
        repo = workdir / "repo"
        online.write_repo(repo, online.generate_rows(np.random.default_rng(0)), url)
        store = FeatureStore(repo)
        store.apply()
        store.materialize(end=datetime(1970, 1, 1, tzinfo=UTC)
                          + timedelta(microseconds=online.END_US))
        cases = asyncio.run(measure(store, url, args.reps, args.requests))
    finally:
        group.stop()
    return {"benchmark": "request_cost", "reps": args.reps, "requests": args.requests,
            "cases": cases, "machine": harness.machine_info(), "versions": harness.versions()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--out", type=Path)
    harness.run(benchmark, parser.parse_args(), "request-cost-")


if __name__ == "__main__":
    main()
