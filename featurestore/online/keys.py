"""Every Redis key the online store uses, spelled here and nowhere else:

    {project}:__registry                              the online registry (online/registry.py)
    {project}:__active:{view}                         the view's served storage, a copy of the
                                                      registry's that reads fetch with their keys
    {project}:__applied:{view}:{storage}              pushed batches a storage holds (a ZSET
                                                      of batch ids scored by ingest time)
    {project}:__fresh:{view}:{storage}                the latest ingest time of a batch pushed
                                                      into a storage
    {project}:__lock:{view}                           the materialization lock of a view
    {project}:__pushlock:{view}:{storage}             held while a push merges into a storage
    {project}:{view}:{storage}:{<entity>|<key>}       a row view's row for one entity (its base)
    <base>:w{hop_us}                                  a windowed view's window key: the
                                                      entity's tiles of one hop group

A storage is one generation of one view version, `<version>.<generation>`: every full
materialization writes a new one where nothing reads it, and the registry flips to it. The
braces are a Redis Cluster hash tag naming only the entity and its key, so every key of one
entity lands in one slot and a lookup of one entity never crosses slots. String keys escape
the characters the layout uses; composite keys join their parts with '|'."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from featurestore.definitions.types import DType
from featurestore.values.columns import Column, from_arrow
from featurestore.values.strings import Utf8Array

_ESCAPES = str.maketrans({"%": "%25", "|": "%7C", "{": "%7B", "}": "%7D"})


# Row keys of views with a ttl outlive the ttl by this margin, so a read as of the last minute
# never meets a key expired while its row was still inside the ttl.
EXPIRY_MARGIN_US = 60_000_000


def registry_key(project: str) -> str:
    return f"{project}:__registry"


def applied_key(project: str, view: str, storage: str) -> str:
    return f"{project}:__applied:{view}:{storage}"


def active_key(project: str, view: str) -> str:
    return f"{project}:__active:{view}"


def fresh_key(project: str, view: str, storage: str) -> str:
    return f"{project}:__fresh:{view}:{storage}"


def lock_key(project: str, view: str) -> str:
    return f"{project}:__lock:{view}"


def push_lock_key(project: str, view: str, storage: str) -> str:
    return f"{project}:__pushlock:{view}:{storage}"


def storage_of(version: str, generation: int) -> str:
    return f"{version}.{generation}"


def version_of_storage(storage: str) -> str:
    return storage.split(".", 1)[0]


def view_pattern(project: str, view: str) -> str:
    """A SCAN pattern matching every data key of every storage of a view."""
    return f"{project}:{view}:*"


def storage_in(key: str) -> str:
    """The storage a data key (of `view_pattern`) belongs to."""
    return key.split(":", 3)[2]


def key_text(column: Column) -> list[str]:
    """One join key column as the text it has inside keys."""
    if isinstance(column.values, Utf8Array):
        return [s.translate(_ESCAPES) for s in column.values.to_list()]
    return list(map(str, np.asarray(column.values, np.int64).tolist()))


def entity_bases(project: str, view: str, storage: str, entity: str,
                 key_texts: list[list[str]]) -> list[str]:
    """Each entity's base key, from each join key's `key_text` (in the entity's key order)."""
    joined = key_texts[0] if len(key_texts) == 1 else [
        "|".join(parts) for parts in zip(*key_texts, strict=True)]
    head = f"{project}:{view}:{storage}:{{{entity}|"
    return [f"{head}{tag}}}" for tag in joined]


def bases_of_table(project: str, view: str, storage: str, entity: str,
                   join_keys: tuple[tuple[str, DType], ...],
                   keys: pa.Table | pa.RecordBatch) -> list[str]:
    """`entity_bases` for the key columns of an Arrow table or batch."""
    return entity_bases(project, view, storage, entity,
                        [key_text(from_arrow(keys.column(k), t)) for k, t in join_keys])


def window_key(base: str, hop_us: int) -> str:
    return f"{base}:w{hop_us}"
