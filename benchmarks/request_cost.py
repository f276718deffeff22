"""What the server's code costs per request, without gRPC: `FeatureServer.online_features` on
prepared requests against a real Redis, beside its floor measured in the same run (a bare
MGET of the same keys on the same lean client). Meant for A/B runs of two commits, where the
end-to-end gRPC latency of online.py is too noisy on a shared 2-core machine to show a change
of tens of microseconds.

    .venv/bin/python benchmarks/request_cost.py [--reps 7] [--requests 300] [--out FILE]
        [--plain-python]

Uses online.py's data and its `bench_50_t3` service (50 features over its row views and 3
transforms), each request parsed from its bytes per call as the server does. Prints JSON: per
batch size, the median over --reps of the mean microseconds per request (wall time), ours and
floor. With --plain-python, three more services take turns with them: the same 3 transforms
declared `compiled=False` (`plain_python`), and the 3 as `import-feast` writes the outputs of
an on-demand view it cannot translate, its function called per row and output through
featurestore.feast_rows: a pandas-mode function (`feast_pandas`) and a python-mode loop
(`feast_python`)."""

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
# --plain-python: bench_50_t3's transforms run as plain Python, called directly and as Feast
# functions of both modes (what import-feast writes), in three more services.
PLAIN_PYTHON = '''

import pandas as pd

from featurestore.feast_rows import feast_row

INPUTS = {{"amount": Request("amount", Float64), "threshold": Request("threshold", Float64),
          "f00": user_profile["f_00"], "f01": user_activity["f_01"], "f02": user_profile["f_02"]}}


def amounts(inputs: pd.DataFrame) -> pd.DataFrame:
    df = pd.DataFrame()
    df["over"] = inputs["amount"] / inputs["f00"].replace(0.0, float("inf"))
    df["minus"] = inputs["amount"] - inputs["f01"]
    df["above"] = inputs["f02"] > inputs["threshold"]
    return df


def amounts_loop(inputs):
    out = {{"over": [], "minus": [], "above": []}}
    for a, t, f00, f01, f02 in zip(inputs["amount"], inputs["threshold"], inputs["f00"],
                                   inputs["f01"], inputs["f02"]):
        out["over"].append(a / f00 if f00 != 0.0 else 0.0)
        out["minus"].append(a - f01)
        out["above"].append(f02 > t)
    return out


@transform(inputs={{"amount": INPUTS["amount"], "f": INPUTS["f00"]}}, output=Float64,
           compiled=False)
def over_py(amount, f):
    return amount_over_f00(amount, f)


@transform(inputs={{"amount": INPUTS["amount"], "f": INPUTS["f01"]}}, output=Float64,
           compiled=False)
def minus_py(amount, f):
    return amount_minus_f01(amount, f)


@transform(inputs={{"threshold": INPUTS["threshold"], "f": INPUTS["f02"]}}, output=Bool,
           compiled=False)
def above_py(threshold, f):
    return f02_above_threshold(threshold, f)


{transforms}
{plain} = FeatureService("{plain}", features=[{views}, over_py, minus_py, above_py])
{pandas} = FeatureService("{pandas}", features=[{views}, over_pandas, minus_pandas,
                                                above_pandas])
{python} = FeatureService("{python}", features=[{views}, over_python, minus_python,
                                                above_python])
'''
FEAST_TRANSFORM = '''
@transform(inputs={{"amount": INPUTS["amount"], "threshold": INPUTS["threshold"],
                   "f00": INPUTS["f00"], "f01": INPUTS["f01"], "f02": INPUTS["f02"]}},
           output={output}, compiled=False)
def {name}_{mode}(amount, threshold, f00, f01, f02):
    return feast_row({function}, "{mode}", {{"amount": amount, "threshold": threshold,
                                          "f00": f00, "f01": f01, "f02": f02}}, "{name}")
'''
SERVICES = {"ours": online.SERVICE_T3, "plain_python": "bench_50_t3_py",
            "feast_pandas": "bench_50_t3_pandas", "feast_python": "bench_50_t3_python"}


async def measure(store: FeatureStore, url: str, reps: int, count: int, plain_python: bool
                  ) -> dict[str, Any]:
    plan = store.plan
    server = FeatureServer(plan, OnlineReader(url, plan.project), health.aio.HealthServicer(),
                           ServerOptions())
    await server.refresh()
    floor_client = AsyncRedis(url)
    services = SERVICES if plain_python else {"ours": SERVICES["ours"]}
    out: dict[str, Any] = {}
    for batch in BATCHES:
        columns = online.request_columns(online.SERVICE_T3, batch, count, batch)
        raws = {side: online.encode_columns(service, columns)
                for side, service in services.items()}
        requests = [pb.GetOnlineFeaturesRequest.FromString(raw) for raw in raws["ours"]]
        prepared = server._prepare(requests[0])
        keys = [prepared.lookup.start(read_columns(r, prepared.selection, batch)[1],
                                      online.END_US).keys for r in requests]

        async def serve(raw: bytes) -> bytes:  # parsed per call, as the server does
            return await server.online_features(pb.GetOnlineFeaturesRequest.FromString(raw),
                                                Call(None))
        sides = {side: [(serve, (raw,)) for raw in side_raws]
                 for side, side_raws in raws.items()}
        sides["floor"] = [(partial(floor_client.execute, timeout=1.0), ("MGET", *k))
                          for k in keys]
        samples: dict[str, list[float]] = {name: [] for name in sides}
        for side in services:
            await _run(sides[side])  # warm up
        for _ in range(reps):  # alternating, so that a busy machine slows all alike
            for name, calls in sides.items():
                start = time.perf_counter()
                await _run(calls)
                samples[name].append((time.perf_counter() - start) / count * 1e6)
        us = {name: round(statistics.median(v), 1) for name, v in samples.items()}
        out[f"batch_{batch}"] = {"us_per_request": us,
                                 "ratio_ours_over_floor": round(us["ours"] / us["floor"], 2),
                                 **{f"ratio_{side}_over_ours": round(us[side] / us["ours"], 2)
                                    for side in services if side != "ours"}}
    return out


def plain_python_py() -> str:
    """The definitions --plain-python adds to online.py's repo."""
    transforms = "".join(
        FEAST_TRANSFORM.format(name=name, output=output, mode=mode, function=function)
        for mode, function in (("pandas", "amounts"), ("python", "amounts_loop"))
        for name, output in (("over", "Float64"), ("minus", "Float64"), ("above", "Bool")))
    return PLAIN_PYTHON.format(transforms=transforms, views=", ".join(online.VIEWS),
                               plain=SERVICES["plain_python"], pandas=SERVICES["feast_pandas"],
                               python=SERVICES["feast_python"])


async def _run(calls: list[tuple[Any, tuple[Any, ...]]]) -> None:
    for call, args in calls:
        await call(*args)


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    group, url = start_redis(workdir)
    try:
        repo = workdir / "repo"
        online.write_repo(repo, online.generate_rows(np.random.default_rng(0)), url)
        if args.plain_python:
            with (repo / "features.py").open("a") as definitions:
                definitions.write(plain_python_py())
        store = FeatureStore(repo)
        store.apply()
        store.materialize(end=datetime(1970, 1, 1, tzinfo=UTC)
                          + timedelta(microseconds=online.END_US))
        cases = asyncio.run(measure(store, url, args.reps, args.requests, args.plain_python))
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
    parser.add_argument("--plain-python", action="store_true",
                        help="also measure the transforms run as plain Python (compiled=False)")
    harness.run(benchmark, parser.parse_args(), "request-cost-")


if __name__ == "__main__":
    main()
