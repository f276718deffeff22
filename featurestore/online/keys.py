"""Redis key layout, the one place that knows it:

    {project}:{view}:{version}:{<entity>|<key>}

The braces are a Redis Cluster hash tag naming only the entity and its key, so every view's
row for one entity lands in one slot and a lookup of one entity never crosses slots. String
keys escape the characters the layout uses; composite keys join their parts with '|'."""

from __future__ import annotations

import numpy as np

from featurestore.values.columns import Column
from featurestore.values.strings import Utf8Array

_ESCAPES = str.maketrans({"%": "%25", "|": "%7C", "{": "%7B", "}": "%7D"})


def registry_key(project: str) -> str:
    return f"{project}:__registry"


def view_prefix(project: str, view: str, version: str) -> str:
    return f"{project}:{view}:{version}:"


def key_text(column: Column) -> list[str]:
    """One join key column as the text it has inside keys."""
    if isinstance(column.values, Utf8Array):
        return [s.translate(_ESCAPES) for s in column.values.to_list()]
    return list(map(str, np.asarray(column.values, np.int64).tolist()))


def entity_tags(entity: str, parts: list[list[str]]) -> list[str]:
    """The hash-tag part of the keys, from each join key's `key_text`."""
    joined = parts[0] if len(parts) == 1 else ["|".join(p) for p in zip(*parts, strict=True)]
    return [f"{{{entity}|{tag}}}" for tag in joined]
