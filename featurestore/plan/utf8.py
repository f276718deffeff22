"""UTF-8 decoding inside kernels: string inputs reach compiled transforms as the bytes and
offsets of a values.strings.Utf8Array and become Python-compatible str objects here."""

from __future__ import annotations

import numba
import numpy as np
from numba.cpython import unicode


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
