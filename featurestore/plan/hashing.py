"""Content hashes of definitions: canonical JSON of what a definition means, never of where
it lives in memory, so the same repo hashes the same in any process on any machine."""

from __future__ import annotations

import hashlib
import inspect
import json
import textwrap
import types
from typing import Any

VERSION_LENGTH = 12


def content_hash(spec: dict[str, Any]) -> str:
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def version_of(digest: str) -> str:
    return digest[:VERSION_LENGTH]


def function_code(fn: types.FunctionType) -> str:
    """The function's source plus the source of module-level helpers and constants it uses,
    so editing a helper changes the transform's version too."""
    parts = [_source(fn)]
    seen: set[str] = set()
    for name in sorted(set(fn.__code__.co_names)):
        if name in seen or name not in fn.__globals__:
            continue
        seen.add(name)
        value = fn.__globals__[name]
        value = getattr(value, "py_func", value)  # a Numba-jitted helper
        if isinstance(value, types.FunctionType):
            parts.append(_source(value))
        elif isinstance(value, bool | int | float | str):
            parts.append(f"{name} = {value!r}")
    return "\n".join(parts)


def _source(fn: types.FunctionType) -> str:
    try:
        return textwrap.dedent(inspect.getsource(fn)).strip()
    except (OSError, TypeError):
        return fn.__code__.co_code.hex()
