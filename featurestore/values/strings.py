"""String columns as UTF-8 bytes plus offsets (Arrow's layout); kernels decode them with
plan/utf8.py.

One compiled kernel then serves strings of any length: NumPy's fixed-width 'U' arrays would
make Numba specialize, and recompile, per width."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa


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
        import pyarrow as pa  # not at import time: the serving client runs without Arrow

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
        import pyarrow as pa
        import pyarrow.compute as pc

        offsets = pa.py_buffer(self.offsets.tobytes())
        array = pa.LargeStringArray.from_buffers(len(self), offsets, pa.py_buffer(self.data))
        if mask.any():
            array = pc.if_else(pa.array(~mask), array, pa.scalar(None, pa.large_string()))
        return array.cast(pa.string())
