"""Live parity samples: the server logs a fraction of its GetOnlineFeatures requests with what
`featurestore parity --from-log` needs to recompute them offline, bit for bit.

A request is sampled when a 64-bit BLAKE2b hash of its first entity's key falls below
rate * 2**64: the same entities are sampled in every worker and after restarts, and raising
the rate keeps every entity sampled before. The request path only hashes, re-serializes a
sampled request and queues it with the response bytes it already encoded; a writer thread
encodes the records and appends them to `<repo>/.featurestore/samples/`, so no request waits
on the disk (when the disk falls QUEUE_LIMIT records behind, samples are dropped and
counted, never waited for).

Files: `samples-<UTC day>-<pid>-<n>.jsonl`, one JSON record per line, a new file per worker
process and day, and after MAX_FILE_BYTES. Nothing deletes them. `parity.json` beside them
is the summary of the last `parity --from-log` run (`read_summary`)."""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from featurestore.errors import FeatureStoreError
from featurestore.online.lookup import Lookup
from featurestore.online.registry import Served
from featurestore.plan import Plan, Selection
from featurestore.plan.hashing import content_hash, version_of
from featurestore.serving.proto import pb
from featurestore.serving.request import read_columns
from featurestore.values.columns import Column, to_arrow
from featurestore.values.strings import Utf8Array

log = logging.getLogger("featurestore.serving")

MAX_FILE_BYTES = 64 << 20
QUEUE_LIMIT = 10_000  # sampled requests waiting for the disk; beyond, samples are dropped
SUMMARY = "parity.json"


def samples_dir(root: Path) -> Path:
    return root / ".featurestore" / "samples"


def check_rate(rate: float) -> float:
    if not 0.0 <= rate <= 1.0:  # NaN fails too
        raise FeatureStoreError(f"--log-sample {rate} is not a fraction between 0 and 1 (0 turns "
                                "sampling off, 0.01 logs one request in a hundred, 1 logs all)")
    return rate


def first_entity_hash(entities: Mapping[str, Column]) -> int | None:
    """The sampling hash: the first entity's key bytes (each join key by name: int64 as 8
    little-endian bytes, strings as UTF-8), or None for a request without entities."""
    digest = hashlib.blake2b(digest_size=8)
    for name in sorted(entities):
        values = entities[name].values
        if len(values) == 0:
            return None
        if isinstance(values, Utf8Array):
            part = values.data[values.offsets[0]:values.offsets[1]].tobytes()
        else:
            part = values[:1].tobytes()  # request arrays have the wire's little-endian layout
        digest.update(len(part).to_bytes(4, "little") + part)
    return int.from_bytes(digest.digest(), "little")


def selection_version(plan: Plan, service: str | None, selection: Selection) -> str:
    """A feature service's version, or for a feature list the same kind of hash over its
    features' definitions: equal exactly when the repo still computes what was served."""
    if service:
        return version_of(plan.services[service].hash)
    refs = [[o.ref, plan.views[o.ref.split(":")[0]].hash if ":" in o.ref
             else plan.transforms[o.ref].hash] for o in selection.outputs]
    return version_of(content_hash({"kind": "features", "features": refs}))


@dataclass(frozen=True)
class ServedView:
    """What a sampled request read of one view: the version and storage served, and the END
    of the materialization that wrote it (None when the server could not tell)."""

    version: str
    storage: str
    end_us: int | None


@dataclass(frozen=True)
class _Pending:
    """A sampled request as the request path hands it over; encoded by the writer thread."""

    wall_us: int
    service: str
    features: tuple[str, ...]
    plan: Plan  # the definitions that answered (a server keeps older ones while reloading)
    selection: Selection
    as_of_us: int
    views: dict[str, ServedView]
    request: bytes
    response: bytes


class Sampler:
    """Samples requests of one server process; rate 0 costs one comparison per request and
    starts nothing."""

    def __init__(self, rate: float, root: Path | None):
        check_rate(rate)
        if rate and root is None:
            raise FeatureStoreError("sampling requests needs the feature repo's folder, where "
                                    "samples are written")
        self.folder = samples_dir(root) if root is not None else None
        self._threshold = round(rate * 2**64)
        self._queue: queue.Queue[_Pending | None] = queue.Queue(QUEUE_LIMIT)
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def offer(self, request: pb.GetOnlineFeaturesRequest, lookup: Lookup,
              served: Mapping[str, Served] | None, entities: Mapping[str, Column],
              as_of_us: int, response: bytes) -> None:
        """Called once per answered request, with the response bytes sent."""
        if not self._threshold:
            return
        key = first_entity_hash(entities)
        if key is None or key >= self._threshold:
            return
        views = {}
        for item in (*lookup.rows, *lookup.windows):
            held = (served or {}).get(item.view.name)
            end = held.end_us if held is not None and held.storage == item.storage else None
            views[item.view.name] = ServedView(item.view.version, item.storage, end)
        pending = _Pending(time.time_ns() // 1000, request.feature_service,
                           tuple(request.features), lookup.plan, lookup.selection, as_of_us,
                           views,
                           request.SerializeToString(), response)
        if self._thread is None:
            self._start()
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        """Writes what is queued; runs at exit."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._write_forever, name="featurestore-samples",
                                        daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _write_forever(self) -> None:
        assert self.folder is not None
        out = _SampleFiles(self.folder)
        reported = 0
        while True:
            items = [self._queue.get()]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                for item in items:
                    if item is not None:
                        out.write(self._record(item), item.wall_us)
                out.flush()
            except OSError as exc:
                log.warning("cannot write parity samples to %s: %s", self.folder, exc)
            if self.dropped > reported:
                log.warning("dropped %d parity samples: the disk is slower than --log-sample "
                            "asks for", self.dropped - reported)
                reported = self.dropped
            if None in items:
                out.close()
                return

    def _record(self, p: _Pending) -> bytes:
        return json.dumps({
            "wall_us": p.wall_us, "pid": os.getpid(), "service": p.service or None,
            "features": list(p.features) or None,
            "version": selection_version(p.plan, p.service, p.selection),
            "as_of_us": p.as_of_us,
            "views": {name: [v.version, v.storage, v.end_us] for name, v in p.views.items()},
            "request": base64.b64encode(p.request).decode(),
            "response": base64.b64encode(p.response).decode(),
        }).encode() + b"\n"


class _SampleFiles:
    """The current file of one process: a new one each UTC day and after MAX_FILE_BYTES."""

    def __init__(self, folder: Path, max_bytes: int = MAX_FILE_BYTES):
        self.folder, self.max_bytes = folder, max_bytes
        self._file: Any = None
        self._day, self._seq = "", 0

    def write(self, line: bytes, wall_us: int) -> None:
        day = time.strftime("%Y%m%d", time.gmtime(wall_us // 1_000_000))
        if self._file is None or day != self._day or self._file.tell() >= self.max_bytes:
            self._open(day)
        self._file.write(line)

    def _open(self, day: str) -> None:
        self.close()
        self._seq = self._seq + 1 if day == self._day else 0
        self._day = day
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:  # a file of an earlier process with the same pid is appended to
            path = self.folder / f"samples-{day}-{os.getpid()}-{self._seq}.jsonl"
            if not path.exists() or path.stat().st_size < self.max_bytes:
                break
            self._seq += 1
        self._file = path.open("ab")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(frozen=True)
class Sample:
    """One logged request, as `read_samples` returns it."""

    wall_us: int
    service: str | None
    features: tuple[str, ...] | None
    version: str  # selection_version when it was served
    as_of_us: int  # the time the server answered for
    views: dict[str, ServedView]
    request: bytes
    response: bytes

    @property
    def selection(self) -> str:
        """How reports name what was asked for: the service, or `features:<the list>`."""
        return self.service or "features:" + ",".join(self.features or ())

    def select(self, plan: Plan) -> Selection:
        return plan.select(service=self.service,
                           features=list(self.features) if self.features else None)

    def columns(self, selection: Selection) -> dict[str, pa.Array]:
        """The entity keys and request inputs, read by the server's own parser."""
        request = pb.GetOnlineFeaturesRequest.FromString(self.request)
        _, entities, inputs = read_columns(request, selection, sys.maxsize)
        types = {**selection.join_keys, **selection.requests}
        return {name: to_arrow(column, types[name])
                for name, column in (*entities.items(), *inputs.items())}

    def online(self) -> pb.GetOnlineFeaturesResponse:
        return pb.GetOnlineFeaturesResponse.FromString(self.response)


def read_samples(folder: Path, since_us: int | None = None) -> tuple[list[Sample], int]:
    """The samples logged at or after `since_us` (all without it), oldest file first, and how
    many lines could not be read (a line cut short by a crash, say)."""
    samples: list[Sample] = []
    unreadable = 0
    since_day = time.strftime("%Y%m%d", time.gmtime(since_us // 1_000_000)) \
        if since_us is not None else ""
    for path in sorted(folder.glob("samples-*.jsonl")):
        if path.name.split("-")[1] < since_day:
            continue
        for line in path.read_bytes().splitlines():
            try:
                sample = _parse(line)
            except (ValueError, KeyError, TypeError):
                unreadable += 1
                continue
            if since_us is None or sample.wall_us >= since_us:
                samples.append(sample)
    return samples, unreadable


def _parse(line: bytes) -> Sample:
    r = json.loads(line)
    return Sample(int(r["wall_us"]), r["service"],
                  tuple(r["features"]) if r["features"] is not None else None, r["version"],
                  int(r["as_of_us"]),
                  {name: ServedView(*v) for name, v in r["views"].items()},
                  base64.b64decode(r["request"], validate=True),
                  base64.b64decode(r["response"], validate=True))


def write_summary(folder: Path, summary: dict[str, Any]) -> Path:
    """Replaces the summary in one step, so a reader never sees half of one."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SUMMARY
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(summary, indent=1, sort_keys=True))
    partial.replace(path)
    return path


def read_summary(folder: Path) -> dict[str, Any]:
    """The last `parity --from-log` run's summary (see README "Live parity monitor"), or {}
    when none has run."""
    try:
        return dict(json.loads((folder / SUMMARY).read_text()))
    except FileNotFoundError:
        return {}
