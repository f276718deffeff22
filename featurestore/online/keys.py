"""Every Redis key the online store uses, spelled here and nowhere else (P is the project):

    {P}:__registry:L2                                 the online registry (online/registry.py)
    {P}:__active:L2:<view>                            the view's served storage, a copy of the
                                                      registry's that reads fetch with their keys
    {P}:__applied:<view>:<storage>                    pushed batches a storage holds (a ZSET
                                                      of batch ids scored by ingest time)
    {P}:__fresh:<view>:<storage>                      the latest ingest time of a batch pushed
                                                      into a storage
    {P}:__lock:<view>                                 the materialization lock of a view
    {P}:__pushlock:<view>:<storage>                   held while a push merges into a storage
    P:<view>:<storage>:{<entity>|<key>}               a row view's row for one entity (its base)
    P:<view>:<storage>:{P}:<entity>|<key>             a windowed view's base, and
    <base>:w{hop_us}                                  its window key: the entity's tiles of
                                                      one hop group
    <base>:w{hop_us}:p                                its push key: the records pushes
                                                      appended since the window key's last
                                                      rewrite (read with it, as one value)
    P:__marker:{~<n>}                                 the project's marker in one Redis Cluster
                                                      slot (`marker_key`)

A storage is one generation of one view version, `<version>.<generation>`: every full
materialization writes a new one where nothing reads it, and the registry flips to it.
Generations count up from the time (ms) the registry first handed one out, so a storage name
is never reused, even after the registry was lost while keys of older storages survived.

The braces are Redis Cluster hash tags: a key's slot is that of the text between its first
'{' and the next '}'. A row view's rows are tagged by entity, so rows spread over the
cluster's nodes, and a lookup of one entity reads one slot for every row view. Everything
that one script changes atomically shares the project's tag `{P}`, so it lives in one slot:
the registry, active keys, applied sets, fresh keys and locks (a flip, a lock, a fenced push)
and the windowed views' window and push keys (a push appends to the push keys, fenced by the
registry, lock and applied set, in one script, and a rewrite folds a push key into its window
key; a read checks the fresh fence in the same MGET as the tiles).
On a Redis Cluster, the project has a marker key in every slot holding a token that the
registry records too; each row storage records the token current when it was created (before
any of its rows). A read of rows in a slot reads the slot's marker in the same call and
compares it with its storage's token, so a node that lost its data (restarted without
persistence, flushed, replaced) is told apart from entities never written: its markers are
gone, and once they are written again, with a new token, every storage older than that is
refused too. String keys escape the characters the layout uses; composite keys join their
parts with '|'."""

from __future__ import annotations

import binascii
import functools

import numba
import numpy as np

from featurestore.online.resp import decimal_size, write_decimal
from featurestore.values.columns import Column
from featurestore.values.strings import Utf8Array

_ESCAPES = str.maketrans({"%": "%25", "|": "%7C", "{": "%7B", "}": "%7D"})


# Row keys of views with a ttl outlive the ttl by this margin, so a read as of the last minute
# never meets a key expired while its row was still inside the ttl.
EXPIRY_MARGIN_US = 60_000_000


# The online layout: part of the names of the registry and the active keys, so that a server
# of a release that would misread this one's keys (layout 1: before push keys, a server that
# reads window keys without them) finds no served storage and refuses, rather than answering
# without the pushed events. Bump it with every such change, and name the old keys below.
LAYOUT = 2


def registry_key(project: str) -> str:
    return f"{{{project}}}:__registry:L{LAYOUT}"


def previous_layout_keys(project: str, view: str) -> list[str]:
    """The registry and the view's active key of the layout before this one, which a flip of
    the view deletes (in the project's slot, like the flip)."""
    return [f"{{{project}}}:__registry", f"{{{project}}}:__active:{view}"]


def applied_key(project: str, view: str, storage: str) -> str:
    return f"{{{project}}}:__applied:{view}:{storage}"


def active_key(project: str, view: str) -> str:
    return f"{{{project}}}:__active:L{LAYOUT}:{view}"


def fresh_key(project: str, view: str, storage: str) -> str:
    return f"{{{project}}}:__fresh:{view}:{storage}"


def lock_key(project: str, view: str) -> str:
    return f"{{{project}}}:__lock:{view}"


def push_lock_key(project: str, view: str, storage: str) -> str:
    return f"{{{project}}}:__pushlock:{view}:{storage}"


SLOTS = 16384  # Redis Cluster's hash slots


@functools.cache
def _slot_tags() -> tuple[str, ...]:
    """For each slot, the first '~<n>' hashing to it (computed once, about 0.2 s)."""
    tags: list[str | None] = [None] * SLOTS
    missing, n = SLOTS, 0
    while missing:
        text = f"~{n}"
        slot = binascii.crc_hqx(text.encode(), 0) % SLOTS
        if tags[slot] is None:
            tags[slot], missing = text, missing - 1
        n += 1
    return tuple(t for t in tags if t is not None)


def marker_key(project: str, slot: int) -> str:
    """The project's marker in a Redis Cluster slot (see the module's docstring)."""
    return f"{project}:__marker:{{{_slot_tags()[slot]}}}"


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
                 key_texts: list[list[str]], windowed: bool = False) -> list[str]:
    """Each entity's base key, from each join key's `key_text` (in the entity's key order):
    a row view's, or with `windowed` a windowed view's."""
    joined = key_texts[0] if len(key_texts) == 1 else [
        "|".join(parts) for parts in zip(*key_texts, strict=True)]
    if windowed:
        head = window_head(project, view, storage, entity)
        return [head + tag for tag in joined]
    head = base_head(project, view, storage, entity)
    return [f"{head}{tag}}}" for tag in joined]


def base_head(project: str, view: str, storage: str, entity: str) -> str:
    """What every base key of a row storage starts with; the entity's tag and '}' follow."""
    return f"{project}:{view}:{storage}:{{{entity}|"


def window_head(project: str, view: str, storage: str, entity: str) -> str:
    """What every base key of a windowed storage starts with (in the project's slot); the
    entity's tag follows."""
    return f"{project}:{view}:{storage}:{{{project}}}:{entity}|"


# The compiled twin of `entity_bases` for bulk writes: a row's tag from its join key values,
# Int64 keys as ints[r, k] and String keys (is_string[k]) as UTF-8 bytes
# data[starts[r, k]:][:lengths[r, k]]. Escaping works on bytes: UTF-8 puts the escaped ASCII
# characters in no other character's bytes.
_ESCAPED = np.array([ord(c) for c in "%|{}"], np.uint8)
_HEX = np.frombuffer(b"0123456789ABCDEF", np.uint8)


@numba.njit(cache=True, nogil=True, inline="always")
def _escaped(c):  # type: ignore[no-untyped-def]
    return c == _ESCAPED[0] or c == _ESCAPED[1] or c == _ESCAPED[2] or c == _ESCAPED[3]


@numba.njit(cache=True, nogil=True, inline="always")
def tag_size(r, is_string, ints, starts, lengths, data):  # type: ignore[no-untyped-def]
    size = is_string.shape[0] - 1  # the '|' between parts
    for k in range(is_string.shape[0]):
        if not is_string[k]:
            size += decimal_size(ints[r, k])
            continue
        for b in range(starts[r, k], starts[r, k] + lengths[r, k]):
            size += 3 if _escaped(data[b]) else 1
    return size


@numba.njit(cache=True, nogil=True, inline="always")
def write_tag(out, p, r, is_string, ints, starts, lengths, data):  # type: ignore[no-untyped-def]
    """Writes row r's tag at out[p:]; returns the position after it."""
    for k in range(is_string.shape[0]):
        if k:
            out[p] = 124  # '|'
            p += 1
        if not is_string[k]:
            p = write_decimal(out, p, ints[r, k])
            continue
        for b in range(starts[r, k], starts[r, k] + lengths[r, k]):
            c = data[b]
            if _escaped(c):
                out[p] = 37  # '%'
                out[p + 1] = _HEX[c >> 4]
                out[p + 2] = _HEX[c & 15]
                p += 3
            else:
                out[p] = c
                p += 1
    return p


def window_key(base: str, hop_us: int) -> str:
    return f"{base}:w{hop_us}"


PUSH_SUFFIX = ":p"


def push_key(window: str) -> str:
    """Where pushes append to a window key's value: a key of its own, so an append never
    grows (and makes Redis copy) the window key a rewrite wrote whole."""
    return window + PUSH_SUFFIX


@numba.njit(cache=True, nogil=True)
def bases(head, close, is_string, ints, starts, lengths, data):  # type: ignore[no-untyped-def]
    """Every row's base key (`head`, its tag, then '}' when `close`: a row storage's, not a
    windowed one's), as (bytes buffer, offsets)."""
    n = ints.shape[0]
    offsets = np.empty(n + 1, np.int64)
    offsets[0] = 0
    for r in range(n):
        offsets[r + 1] = offsets[r] + head.shape[0] + tag_size(r, is_string, ints, starts,
                                                               lengths, data) + (1 if close else 0)
    out = np.empty(offsets[n], np.uint8)
    for r in range(n):
        p = offsets[r]
        out[p: p + head.shape[0]] = head
        p = write_tag(out, p + head.shape[0], r, is_string, ints, starts, lengths, data)
        if close:
            out[p] = 125  # '}'
    return out, offsets
