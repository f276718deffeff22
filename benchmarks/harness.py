"""What every benchmark script shares: progress on stderr, machine-wide CPU accounting, and
running in a work directory (kept with --workdir, else temporary) before printing one JSON
object to stdout and, with --out, to a file."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def busy_cpu() -> float:
    """CPU seconds the whole machine has been busy (Linux /proc/stat), to price other
    processes' load during a measurement."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


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
