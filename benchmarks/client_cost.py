"""What featurestore.Client costs a serving system in its own process, without a server: the
import, and encoding a GetOnlineFeatures request and decoding its response, each beside
protobuf's own work on the same messages measured in the same run.

    .venv/bin/python benchmarks/client_cost.py [--calls 3000] [--imports 5] [--out FILE]

Targets (the issue "Serving at the gRPC floor"): `from featurestore import Client` in at most
150 ms (median of fresh processes) loading none of DuckDB, Numba, Redis (nor llvmlite or
hiredis); encoding a batch-100 request plus decoding its 100 x 50-feature response at most
100 us (sum of the medians). Prints one JSON object; progress goes to stderr."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import harness
import numpy as np
import online
import payloads
import polars as pl
from timing import time_sides

from featurestore.definitions.types import ALL_TYPES, Float64, Int64, String, Timestamp
from featurestore.serving.client import FeatureServiceSchema, OnlineFeatures, encode_request
from featurestore.serving.proto import WIRE, pb
from featurestore.values.status import Status

# Judged: the engines. Reported: Polars and Arrow, which the client loads only to convert.
FORBIDDEN = ("duckdb", "numba", "llvmlite", "redis", "hiredis")
HEAVY = (*FORBIDDEN, "polars", "pyarrow")
IMPORT_MS, EXCHANGE_US = 150.0, 100.0
BATCHES = (1, 100)
# What an import costs a process, timed inside it; the heavy modules it loaded.
IMPORT_PROBE = ("import json, sys, time; began = time.perf_counter(); {statement}; "
                "took = time.perf_counter() - began; print(json.dumps([took, sorted(m for m in "
                "sys.modules if m.split('.')[0] in {heavy!r})]))")
CLIENT_IMPORT = "from featurestore import Client"
# What any Python gRPC client of this contract loads: grpc, NumPy and the protobuf runtime the
# generated module imports.
FLOOR_IMPORT = ("import grpc, numpy; from google.protobuf import descriptor_pool, "
                "runtime_version, symbol_database; from google.protobuf.internal import builder")
# bench_50_t3's schema (online.py): the columns a request sends
SCHEMA = FeatureServiceSchema(
    online.SERVICE_T3, features={}, entity_keys={"user_id": Int64},
    request_inputs=dict.fromkeys(online.REQUEST_INPUTS, Float64), feature_views=list(online.VIEWS),
    version="", active=True)


def measure_imports(count: int, workdir: Path) -> dict[str, Any]:
    """`count` fresh processes per side, alternating: seconds of the import, and the heavy
    modules it left in sys.modules. They run in `workdir`, so that the package comes from
    the installation (or PYTHONPATH), not from a checkout in the current directory."""
    runs: dict[str, list[tuple[float, list[str]]]] = {"client": [], "floor": []}
    for _ in range(count):
        for side, statement in (("client", CLIENT_IMPORT), ("floor", FLOOR_IMPORT)):
            code = IMPORT_PROBE.format(statement=statement, heavy=HEAVY)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True, cwd=workdir).stdout
            took, heavy = json.loads(out)
            runs[side].append((took, heavy))
    ms = {side: round(statistics.median(t for t, _ in r) * 1000, 1) for side, r in runs.items()}
    heavy = sorted({m for _, loaded in runs["client"] for m in loaded})
    return {"client_ms": ms["client"], "floor_ms": ms["floor"],
            "client_ms_each": [round(t * 1000, 1) for t, _ in runs["client"]],
            "client_over_floor_ms": round(ms["client"] - ms["floor"], 1),
            "heavy_modules_loaded": heavy,
            "forbidden_modules_loaded": [m for m in heavy if m.split(".")[0] in FORBIDDEN]}


def response(batch: int, seed: int) -> tuple[bytes, dict[str, list[Any]]]:
    """A response of online.py's 50 features for `batch` entities, as the server sends it
    (values grouped by type, neutral where missing, statuses, both views' event times), and
    what OnlineFeatures.to_dict() must read from it."""
    rng = np.random.default_rng(seed)
    names, dtypes = list(online.COLUMNS), [ALL_TYPES[t] for t in online.COLUMNS.values()]
    message = pb.GetOnlineFeaturesResponse(
        num_entities=batch, as_of_us=online.END_US, feature_names=names,
        feature_types=[WIRE[d].value_type for d in dtypes])
    found = rng.random(batch) >= 0.09  # as online.py's key range: about 9% not found
    expected: dict[str, list[Any]] = {}
    for index, (name, dtype) in enumerate(zip(names, dtypes, strict=True)):
        series = harness.feature_column(rng, name, dtype.name, index, batch, online.END_US)
        status = np.where(found, np.where(series.is_null().to_numpy(), Status.NULL,
                                          Status.PRESENT), Status.NOT_FOUND).astype(np.uint8)
        message.statuses.extend(status.tolist())
        present = (status == Status.PRESENT).tolist()
        wire_values = series.cast(pl.Int64) if dtype is Timestamp else series
        neutral = "" if dtype is String else 0
        getattr(message.values, WIRE[dtype].field).extend(
            v if ok else neutral for v, ok in zip(wire_values.to_list(), present, strict=True))
        expected[name] = [v if ok else None for v, ok in zip(series.to_list(), present,
                                                              strict=True)]
    for view in online.VIEWS:
        message.event_timestamps[view].timestamp_values.extend(
            np.where(found, online.END_US - rng.integers(0, online.YEAR_US, batch), 0).tolist())
    return message.SerializeToString(), expected


def measure_exchange(batch: int, calls: int) -> dict[str, Any]:
    """Medians in us: the client encoding a request (encode_request, then the serialization
    gRPC does) beside protobuf serializing the same message and building it from the same
    lists with the generated API; the client decoding a response (OnlineFeatures from its
    bytes) beside protobuf parsing them."""
    columns = online.request_columns(online.SERVICE_T3, batch, count=64, seed=batch)
    built = [encode_request(online.SERVICE_T3, entities={"user_id": keys}, request=inputs,
                            as_of=online.END_US, schema=SCHEMA) for keys, inputs in columns]
    raw, expected = response(batch, seed=batch)
    decoded = OnlineFeatures(raw).to_dict()
    if decoded != expected:  # untimed: the decoding measured is the right one
        raise SystemExit(f"batch {batch}: OnlineFeatures read back other values than were sent")
    for message, (keys, inputs) in zip(built, columns, strict=True):
        if message.SerializeToString() != payloads.encode_request(
                online.SERVICE_T3, {"user_id": keys}, inputs, online.END_US):
            raise SystemExit(f"batch {batch}: encode_request differs from the generated API's")

    def pick(i: int) -> tuple[list[int], dict[str, list[float]]]:
        return columns[i % len(columns)]

    sides = {
        "encode": lambda i: encode_request(
            online.SERVICE_T3, entities={"user_id": pick(i)[0]}, request=pick(i)[1],
            as_of=online.END_US, schema=SCHEMA).SerializeToString(),
        "encode_protobuf_serialize": lambda i: built[i % len(built)].SerializeToString(),
        "encode_protobuf_build": lambda i: payloads.encode_request(
            online.SERVICE_T3, {"user_id": pick(i)[0]}, pick(i)[1], online.END_US),
        "decode": lambda i: OnlineFeatures(raw),
        "decode_protobuf_parse": lambda i: pb.GetOnlineFeaturesResponse.FromString(raw),
    }
    ns = time_sides(sides, calls, warmup=200, block=50)
    us = {side: round(float(np.median(times)) / 1000, 2) for side, times in ns.items()}
    return {"request_bytes": len(built[0].SerializeToString()), "response_bytes": len(raw),
            "median_us": us,
            "encode_plus_decode_us": round(us["encode"] + us["decode"], 2),
            "ratio_decode_over_parse": round(us["decode"] / us["decode_protobuf_parse"], 2),
            "ratio_encode_over_build": round(us["encode"] / us["encode_protobuf_build"], 2)}


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    harness.log(f"imports: {args.imports} fresh processes per side")
    imports = measure_imports(args.imports, workdir)
    exchange = {}
    for batch in BATCHES:
        harness.log(f"batch {batch}: {args.calls} calls per side")
        exchange[f"batch_{batch}"] = measure_exchange(batch, args.calls)
    both = exchange["batch_100"]["encode_plus_decode_us"]
    targets = {
        "import_ms": {"value": imports["client_ms"], "target": f"<= {IMPORT_MS:g}",
                      "pass": imports["client_ms"] <= IMPORT_MS},
        "import_loads_no_engine": {"value": imports["forbidden_modules_loaded"],
                                   "target": "[]", "pass": not imports["forbidden_modules_loaded"]},
        "encode_plus_decode_batch_100_us": {"value": both, "target": f"<= {EXCHANGE_US:g}",
                                            "pass": both <= EXCHANGE_US},
    }
    return {"benchmark": "client_cost", "calls": args.calls, "targets": targets,
            "all_targets_met": all(t["pass"] for t in targets.values()), "imports": imports,
            "exchange": exchange, "machine": harness.machine_info(),
            "versions": harness.versions()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="timed calls per side and batch")
    parser.add_argument("--imports", type=int, default=5,
                        help="fresh processes timing each import (the median is judged)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--out", type=Path)
    harness.run(benchmark, parser.parse_args(), "client-cost-")


if __name__ == "__main__":
    main()
