"""Keeps Numba's on-disk caches of featurestore's own kernels honest.

Numba keys a cached function by its own file's timestamp, not by the code it calls in other
modules: after an edit or an upgrade of accumulators.py, the cached kernels of windows.py
would go on running the old accumulators, and online and offline could disagree. So the
caches are dropped whenever any kernel source changes, before any kernel runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
STAMP = "numba-sources.sha256"


def kernel_sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "cache=True" in p.read_text())


def drop_stale() -> None:
    sources = kernel_sources()
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
    stamp = PACKAGE / "__pycache__" / STAMP
    try:
        if stamp.is_file() and stamp.read_text() == digest:
            return
        for source in sources:
            for cached in source.parent.glob(f"__pycache__/{source.stem}.*.nb[ic]"):
                cached.unlink(missing_ok=True)
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:  # a read-only install: its files do not change under it either
        pass
