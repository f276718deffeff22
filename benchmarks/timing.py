"""Latency sampling: each call timed on its own (perf_counter_ns) after a warm-up, several
sides taking turns in blocks so that a busy shared machine slows them alike, and the
percentiles reported."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def time_sides(sides: dict[str, Callable[[int], Any]], requests: int, warmup: int, block: int
               ) -> dict[str, np.ndarray]:
    """Nanoseconds of call(i) for i in range(requests), for every side. Every side serves
    request i of the same list after `warmup` untimed calls; the sides take turns in blocks of
    `block` requests, and the order of turns rotates, so drifts in the machine's load reach
    all sides alike."""
    for call in sides.values():
        for i in range(warmup):
            call(i % requests)
    times = {name: np.empty(requests, np.int64) for name in sides}
    order = list(sides)
    for start in range(0, requests, block):
        for name in order:
            call, out = sides[name], times[name]
            for i in range(start, min(start + block, requests)):
                began = time.perf_counter_ns()
                call(i)
                out[i] = time.perf_counter_ns() - began
        order = order[1:] + order[:1]
    return times


def time_calls(call: Callable[[int], Any], requests: int, warmup: int) -> np.ndarray:
    """One side on its own: `warmup` untimed calls, then call(i) timed for each i."""
    return time_sides({"call": call}, requests, warmup, requests)["call"]


def percentiles(ns: np.ndarray) -> dict[str, float]:
    """p50/p90/p99/mean/max in ms of nanosecond samples (numpy's linear interpolation)."""
    ms = ns / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": round(float(p50), 4), "p90_ms": round(float(p90), 4),
            "p99_ms": round(float(p99), 4), "mean_ms": round(float(ms.mean()), 4),
            "max_ms": round(float(ms.max()), 4)}


def ratio(stats: dict[str, dict[str, float]], side: str, base: str, percentile: str) -> float:
    """stats[side] over stats[base] at `percentile` ("p50", "p99"), where stats maps each side
    to its percentiles()."""
    key = f"{percentile}_ms"
    return round(stats[side][key] / stats[base][key], 3)
