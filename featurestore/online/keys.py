"""Every Redis key the online store uses, spelled here and nowhere else:

    {project}:__registry                              the online registry (online/registry.py)
    {project}:__push:{source}:{batch id}              a pushed batch is in the tiles
    {project}:{view}:{version}:{<entity>|<key>}       a row view's row for one entity (its base)
    <base>:t{hop_us}:{b}                              a windowed view's tile block b
    <base>:e{hop_us}:{k}                              the raw events of hop k

The braces are a Redis Cluster hash tag naming only the entity and its key, so every key of
one entity lands in one slot and a lookup of one entity never crosses slots. String keys
escape the characters the layout uses; composite keys join their parts with '|'."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from featurestore.definitions.types import DType
from featurestore.values.columns import Column, from_arrow
from featurestore.values.strings import Utf8Array

_ESCAPES = str.maketrans({"%": "%25", "|": "%7C", "{": "%7B", "}": "%7D"})


def registry_key(project: str) -> str:
    return f"{project}:__registry"


def batch_mark(project: str, source: str, batch_id: str) -> str:
    return f"{project}:__push:{source}:{batch_id}"


def version_pattern(project: str, view: str, version: str) -> str:
    """A SCAN pattern matching every key of one view version."""
    return f"{project}:{view}:{version}:*"


def key_text(column: Column) -> list[str]:
    """One join key column as the text it has inside keys."""
    if isinstance(column.values, Utf8Array):
        return [s.translate(_ESCAPES) for s in column.values.to_list()]
    return list(map(str, np.asarray(column.values, np.int64).tolist()))


def entity_bases(project: str, view: str, version: str, entity: str,
                 key_texts: list[list[str]]) -> list[str]:
    """Each entity's base key, from each join key's `key_text` (in the entity's key order)."""
    joined = key_texts[0] if len(key_texts) == 1 else [
        "|".join(parts) for parts in zip(*key_texts, strict=True)]
    prefix = f"{project}:{view}:{version}:"
    return [f"{prefix}{{{entity}|{tag}}}" for tag in joined]


def bases_of_table(project: str, view: str, version: str, entity: str,
                   join_keys: tuple[tuple[str, DType], ...],
                   keys: pa.Table | pa.RecordBatch) -> list[str]:
    """`entity_bases` for the key columns of an Arrow table or batch."""
    return entity_bases(project, view, version, entity,
                        [key_text(from_arrow(keys.column(k), t)) for k, t in join_keys])


def block_key(base: str, hop_us: int, b: int) -> str:
    return f"{base}:t{hop_us}:{b}"


def events_key(base: str, hop_us: int, k: int) -> str:
    return f"{base}:e{hop_us}:{k}"
