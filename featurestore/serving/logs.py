"""The server's logs: one JSON object per line (or plain text for a terminal), a level, and an
access log of sampled requests plus every refused or failed one.

An exception is logged as its type and message on the same line, never as a traceback: a bad
request must cost one line, and a traceback's locals could hold what a caller sent."""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("json", "text")
access = logging.getLogger("featurestore.access")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "pid": record.process,
            "message": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            line["error"] = f"{type(error).__name__}: {error}"
        return json.dumps(line, default=str)


class Text(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(processName)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        text = " ".join([logging.Formatter.format(self, _without_trace(record)),
                         *(f"{k}={v}" for k, v in fields.items())])
        if record.exc_info and record.exc_info[1] is not None:
            text += f" error={type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return text


def _without_trace(record: logging.LogRecord) -> logging.LogRecord:
    copy = logging.makeLogRecord(record.__dict__)
    copy.exc_info = copy.exc_text = None
    return copy


def configure(level: str = "info", fmt: str = "json") -> None:
    """Sets the root logger of this process (each serving worker calls it)."""
    if level not in LEVELS:
        raise ValueError(f"--log-level must be one of {', '.join(LEVELS)}, got {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"--log-format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if fmt == "json" else Text())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class AccessLog:
    """Logs a request when it failed (always) or when it is sampled (OK ones, at `sample`)."""

    def __init__(self, sample: float):
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"--access-log-sample must be between 0 and 1, got {sample}")
        self.sample = sample
        self._next = 0
        self._prefix = f"{os.getpid():x}-"

    def request_id(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
        """The caller's x-request-id when it sent a sane one, else one unique to this process
        (made only for calls that are logged)."""
        given = next((v for k, v in metadata or () if k == "x-request-id"), None)
        if isinstance(given, str) and 0 < len(given) <= 128 and given.isprintable():
            return given
        self._next += 1
        return f"{self._prefix}{self._next:x}"

    def record(self, fields: dict[str, Any], ok: bool, server_fault: bool) -> None:
        if ok:
            if self.sample and (self.sample >= 1.0 or random.random() < self.sample):
                access.info("request", extra={"fields": fields})
        elif server_fault:
            access.error("request failed", extra={"fields": fields})
        else:
            access.warning("request refused", extra={"fields": fields})
