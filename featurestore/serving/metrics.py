"""Prometheus metrics of a serving process, scraped over HTTP from `--metrics-port`.

With `--workers N` every worker records into files of a folder the parent made
(prometheus_client's multiprocess mode, chosen by PROMETHEUS_MULTIPROC_DIR, which must be set
before prometheus_client is imported: the parent sets it, and workers are spawned with it),
and the parent alone answers scrapes, summing the workers. Gauges a worker sets from the
online registry (freshness) keep the most recent value written by any worker."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

from featurestore.errors import FeatureStoreError
from featurestore.values.status import STATUS_NAMES

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter("featurestore_requests", "Requests by method, feature service (or push "
                   "source) and gRPC status code", ["method", "service", "code"])
LATENCY = Histogram("featurestore_request_seconds", "Server-side time from request bytes to "
                    "response bytes", ["method"],
                    buckets=(.0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, 1, 5))
BATCH = Histogram("featurestore_request_entities", "Entities per GetOnlineFeatures request, "
                  "events per PushEvents request", ["method"],
                  buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000))
VALUES = Counter("featurestore_values", "Values served, by feature view (transforms: "
                 "'transforms') and status", ["view", "status"])
REDIS = Counter("featurestore_redis_round_trips", "Round trips to the online store by "
                "outcome (ok, error)", ["outcome"])
PUSHED = Counter("featurestore_pushed_events", "Pushed events by source and outcome (applied, "
                 "duplicate: a retried batch, too_late: older than every window)",
                 ["source", "outcome"])
MATERIALIZED_AGE = Gauge("featurestore_view_materialized_age_seconds", "Age of the served "
                         "storage's materialization (its creation), by feature view", ["view"],
                         multiprocess_mode="mostrecent")
PUSH_AGE = Gauge("featurestore_view_last_push_age_seconds", "Age of the latest pushed batch "
                 "the served storage holds, by feature view", ["view"],
                 multiprocess_mode="mostrecent")
PARITY_CHECKED = Gauge("featurestore_parity_checked_values", "Values the latest `featurestore "
                       "parity --from-log` recomputed, by service (or feature list) and "
                       "feature", ["selection", "feature"], multiprocess_mode="mostrecent")
PARITY_MISMATCHED = Gauge("featurestore_parity_mismatched_values", "Values the latest "
                          "`featurestore parity --from-log` found different, by service (or "
                          "feature list) and feature", ["selection", "feature"],
                          multiprocess_mode="mostrecent")


class ValueCounter:
    """Counts one selection's served values by view and status with one bincount per
    response (a Python loop over 50 features would cost more than the rest of the metrics)."""

    def __init__(self, refs: list[str]):
        views = [ref.split(":", 1)[0] if ":" in ref else "transforms" for ref in refs]
        self.views = list(dict.fromkeys(views))
        self.group = np.array([self.views.index(v) for v in views], np.intp)[:, None]
        self.series = [VALUES.labels(view, status) for view in self.views
                       for status in STATUS_NAMES]

    def count(self, statuses: np.ndarray) -> None:
        """`statuses`: (features, entities) uint8."""
        width = len(STATUS_NAMES)
        counts = np.bincount((self.group * width + statuses).ravel(),
                             minlength=len(self.series))
        for series, k in zip(self.series, counts.tolist(), strict=True):
            if k:
                series.inc(k)


_ROUND_TRIP = {True: REDIS.labels("ok"), False: REDIS.labels("error")}


def count_round_trip(ok: bool) -> None:
    _ROUND_TRIP[ok].inc()


def set_freshness(ages: dict[str, tuple[float | None, float | None]]) -> None:
    """view -> (seconds since its materialization, seconds since its latest push)."""
    for view, (materialized, pushed) in ages.items():
        if materialized is not None:
            MATERIALIZED_AGE.labels(view).set(materialized)
        if pushed is not None:
            PUSH_AGE.labels(view).set(pushed)


def set_parity(summary: dict[str, Any]) -> None:
    """The counts of the latest monitor run (samples.read_summary)."""
    for row in summary.get("features", []):
        PARITY_CHECKED.labels(row["selection"], row["feature"]).set(row["checked"])
        PARITY_MISMATCHED.labels(row["selection"], row["feature"]).set(row["mismatched"])


def serve_metrics(host: str, port: int) -> None:
    """Answers scrapes from a thread of this process: the workers' files when this is the
    parent of workers, else this process's own registry."""
    folder = os.environ.get(MULTIPROCESS_ENV)
    registry = REGISTRY
    if folder:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=folder)
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise FeatureStoreError(f"cannot serve metrics on {host}:{port}: {exc.strerror}; "
                                "choose another --metrics-port") from exc


@contextmanager
def worker_files() -> Iterator[None]:
    """A fresh folder for the workers' metric files while they run (set in the environment
    the workers are spawned with), removed afterwards."""
    folder = tempfile.mkdtemp(prefix="featurestore-metrics-")
    os.environ[MULTIPROCESS_ENV] = folder
    try:
        yield
    finally:
        os.environ.pop(MULTIPROCESS_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)
