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


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def busy_cpu() -> float:
    """CPU seconds the whole machine has been busy (Linux /proc/stat), to price other
    processes' load during a measurement."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


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
