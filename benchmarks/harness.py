"""What every benchmark script shares: progress on stderr, synthetic feature columns, the
machine and versions a result was measured on, and running in a work directory (kept with
--workdir, else temporary) before printing one JSON object to stdout and, with --out, to a
file."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import grpc
import numba
import numpy as np
import polars as pl
import redis


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def feature_column(rng: np.random.Generator, name: str, dtype: str, index: int, n: int,
                   end_us: int) -> pl.Series:
    """One synthetic feature column of `dtype`; every fifth column holds 1% nulls, as real
    sources do."""
    if dtype == "Float64":
        values: Any = rng.standard_normal(n) * (index + 1)
    elif dtype == "Int64":
        values = rng.integers(-1_000, 1_000_000, n, dtype=np.int64)
    elif dtype == "Bool":
        values = rng.random(n) < 0.3
    elif dtype == "String":
        categories = pl.Series([f"category_{c:02d}" for c in range(24)])
        values = categories.gather(rng.integers(0, len(categories), n))
    else:  # Timestamp: within ten years before end_us
        values = pl.Series(end_us - rng.integers(0, 10 * 365 * 86_400_000_000, n)).cast(
            pl.Datetime("us", "UTC"))
    series = pl.Series(name, values)
    if index % 5 == 0:
        series = series.scatter(np.flatnonzero(rng.random(n) < 0.01), None)
    return series


def evaluate(values: dict[str, float], targets: dict[str, tuple[str, float]]
             ) -> dict[str, Any]:
    """Each target ("<=" or ">=" a limit) with its measured value and pass/fail."""
    out = {}
    for name, (op, limit) in targets.items():
        value = values[name]
        out[name] = {"value": value, "target": f"{op} {limit:g}",
                     "pass": value <= limit if op == "<=" else value >= limit}
    return out


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                      if line.startswith("model name")), "")
    return {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict[str, Any]:
    """The commit measured (and any uncommitted files under featurestore/), the serving
    stack's versions and redis-server's."""
    from google import protobuf

    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout

    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return {"featurestore_commit": git("rev-parse", "--short", "HEAD").strip(),
            "featurestore_uncommitted": git("status", "--porcelain", "featurestore").split("\n")[:-1],
            "grpcio": grpc.__version__, "protobuf": protobuf.__version__,
            "redis_py": redis.__version__, "redis_server": server.split()[2].removeprefix("v="),
            "numba": numba.__version__, "numpy": np.__version__, "duckdb": duckdb.__version__,
            "polars": pl.__version__}


def run(benchmark: Callable[[argparse.Namespace, Path], dict[str, Any]],
        args: argparse.Namespace, prefix: str) -> None:
    """Runs `benchmark(args, workdir)` and reports its result as JSON."""
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = benchmark(args, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            result = benchmark(args, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
