"""String columns as UTF-8 bytes plus offsets (Arrow's layout), decoded inside kernels.

One compiled kernel then serves strings of any length: NumPy's fixed-width 'U' arrays would
make Numba specialize, and recompile, per width."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate, pairwise

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba.cpython import unicode


@dataclass(frozen=True, slots=True)
class Utf8Array:
    offsets: np.ndarray  # int64, length n + 1
    data: np.ndarray  # uint8

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def rows(self, lo: int, hi: int) -> Utf8Array:
        """Rows lo .. hi - 1, sharing the data (offsets stay absolute)."""
        return Utf8Array(self.offsets[lo:hi + 1], self.data)

    def to_list(self) -> list[str]:
        raw, o = self.data.tobytes(), self.offsets.tolist()  # Python ints: fast slicing
        return [raw[a:b].decode() for a, b in pairwise(o)]

    @classmethod
    def from_arrow(cls, array: pa.Array) -> Utf8Array:
        """`array` is a pa.string() array without nulls (nulls filled by the caller)."""
        array = array.cast(pa.large_string())
        buffers = array.buffers()
        offsets = np.frombuffer(buffers[1], np.int64)[array.offset: array.offset + len(array) + 1]
        data = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.empty(0, np.uint8)
        return cls(offsets.copy(), data)

    @classmethod
    def from_list(cls, values: list[str]) -> Utf8Array:
        """Without a detour through Arrow, which costs ~30 us even for one string: online
        requests build their string columns here."""
        encoded = [v.encode() for v in values]
        offsets = np.fromiter(accumulate(map(len, encoded), initial=0), np.int64, len(encoded) + 1)
        return cls(offsets, np.frombuffer(b"".join(encoded), np.uint8))

    def to_arrow(self, mask: np.ndarray) -> pa.Array:
        offsets = pa.py_buffer(self.offsets.tobytes())
        array = pa.LargeStringArray.from_buffers(len(self), offsets, pa.py_buffer(self.data))
        if mask.any():
            array = pc.if_else(pa.array(~mask), array, pa.scalar(None, pa.large_string()))
        return array.cast(pa.string())


@numba.njit(cache=True, nogil=True)
def _code_point(data: np.ndarray, i: int) -> tuple[int, int]:
    b = data[i]
    if b < 0x80:
        return np.int64(b), 1
    if b < 0xE0:
        cp, width = np.int64(b & 0x1F), 2
    elif b < 0xF0:
        cp, width = np.int64(b & 0x0F), 3
    else:
        cp, width = np.int64(b & 0x07), 4
    for j in range(1, width):
        cp = (cp << 6) | (data[i + j] & 0x3F)
    return cp, width


@numba.njit(cache=True, nogil=True)
def utf8_decode(data: np.ndarray, start: int, end: int) -> str:
    """Built the way CPython builds strings: the narrowest kind that holds every code point,
    flagged ASCII only when it is (Numba's chr() flags U+0080..U+00FF as ASCII, which breaks
    lower() and upper() on Latin-1 text)."""
    length, widest, i = 0, 0, start
    while i < end:
        cp, width = _code_point(data, i)
        widest = max(widest, cp)
        length += 1
        i += width
    kind = (unicode.PY_UNICODE_1BYTE_KIND if widest < 0x100 else
            unicode.PY_UNICODE_2BYTE_KIND if widest < 0x10000 else unicode.PY_UNICODE_4BYTE_KIND)
    out = unicode._empty_string(kind, length, 1 if widest < 0x80 else 0)
    i, k = start, 0
    while i < end:
        cp, width = _code_point(data, i)
        unicode._set_code_point(out, k, cp)
        k += 1
        i += width
    return out
