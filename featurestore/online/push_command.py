"""A push's call of the fenced append script (online/store.py, WRITE_PUSH) as one RESP
command, packed in compiled code: every push key and its record/expiry pair are written
straight from the records' buffers (online/tiles.py WindowWrites), with no Python object per
key. redis-py builds the same command from a list of thousands of arguments in about the
time Redis takes to run it."""

from __future__ import annotations

import numba
import numpy as np

from featurestore.online.keys import push_key, window_key
from featurestore.online.resp import (
    decimal_size,
    write_bulk_head,
    write_bytes,
    write_crlf,
    write_decimal,
)
from featurestore.online.tiles import WindowWrites

BULK_FRAMING = 24  # '$', up to 19 digits of length and two CRLFs: a bulk string's framing


def pack_eval(sha: str, fenced: list[str], args: list[str | int],
              writes: list[WindowWrites]) -> np.ndarray:
    """EVALSHA sha with KEYS = `fenced` then every write's push keys, and ARGV = `args` then
    each push key's record and expiry (ms), as RESP bytes."""
    count = sum(len(w.owners) for w in writes)
    head = _bulk([b"EVALSHA", sha.encode(), str(len(fenced) + count).encode(),
                  *(k.encode() for k in fenced)])
    middle = _bulk([str(a).encode() for a in args])
    array = f"*{3 + len(fenced) + len(args) + 3 * count}\r\n".encode()
    bound = len(array) + len(head) + len(middle) + sum(
        _keys_bound(w) + _values_bound(w) for w in writes)
    out = np.empty(bound, np.uint8)
    p = 0
    for part in (array, head):
        p = _put(out, p, part)
    for w in writes:
        p = _write_keys(out, p, w.bases.data, w.bases.offsets, w.owners, _suffix(w))
    p = _put(out, p, middle)
    for w in writes:
        p = _write_values(out, p, w.data, w.offsets, w.expiry)
    return out[:p]


def _bulk(parts: list[bytes]) -> bytes:
    return b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in parts)


def _put(out: np.ndarray, p: int, data: bytes) -> int:
    out[p:p + len(data)] = np.frombuffer(data, np.uint8)
    return p + len(data)


def _suffix(w: WindowWrites) -> np.ndarray:
    """What a push key adds to its base (online/keys.py window_key, push_key)."""
    return np.frombuffer(push_key(window_key("", w.group.hop_us)).encode(), np.uint8)


def _keys_bound(w: WindowWrites) -> int:
    lengths = np.diff(w.bases.offsets)[w.owners]
    return int(lengths.sum()) + len(w.owners) * (BULK_FRAMING + len(_suffix(w)))


def _values_bound(w: WindowWrites) -> int:
    return len(w.data) + len(w.owners) * (2 * BULK_FRAMING + 20)


@numba.njit(cache=True, nogil=True)
def _write_keys(out, p, data, offsets, owners, suffix):  # type: ignore[no-untyped-def]
    """Each owner's base key and `suffix` as a bulk string."""
    for i in range(owners.shape[0]):
        lo, hi = offsets[owners[i]], offsets[owners[i] + 1]
        p = write_bulk_head(out, p, hi - lo + suffix.shape[0])
        out[p:p + hi - lo] = data[lo:hi]
        p = write_bytes(out, p + hi - lo, suffix)
        p = write_crlf(out, p)
    return p


@numba.njit(cache=True, nogil=True)
def _write_values(out, p, data, offsets, expiry):  # type: ignore[no-untyped-def]
    """Each value and its expiry (as decimal text), as two bulk strings."""
    for i in range(offsets.shape[0] - 1):
        lo, hi = offsets[i], offsets[i + 1]
        p = write_bulk_head(out, p, hi - lo)
        out[p:p + hi - lo] = data[lo:hi]
        p = write_crlf(out, p + hi - lo)
        p = write_bulk_head(out, p, decimal_size(expiry[i]))
        p = write_decimal(out, p, expiry[i])
        p = write_crlf(out, p)
    return p
