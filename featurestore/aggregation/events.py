"""Events grouped by entity and sorted by event time: what every evaluation and tile build
reads, whether it came out of DuckDB or a pushed batch."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa

from featurestore.values.columns import Column
from featurestore.values.strings import Utf8Array


@dataclass
class Events:
    """Events grouped by entity and sorted by event time; entity e's are [starts[e], ends[e]).
    `keys` holds each entity's join key values, in entity order."""

    keys: pa.Table
    ts: np.ndarray
    created: np.ndarray
    columns: dict[str, Column]
    starts: np.ndarray
    ends: np.ndarray

    @classmethod
    def from_sorted(cls, table: pa.Table, keys: list[str], ts: np.ndarray, created: np.ndarray,
                    columns: dict[str, Column]) -> Events:
        """Events from rows sorted by the key columns `keys` of `table`, then event time:
        the one grouping both the offline store's reads and pushed batches go through."""
        n = table.num_rows
        change = np.zeros(n, np.bool_)
        if n:
            change[0] = True
            for k in keys:
                values = table.column(k).to_numpy(zero_copy_only=False)
                change[1:] |= values[1:] != values[:-1]
        starts = np.flatnonzero(change).astype(np.int64)
        return cls(keys=table.select(keys).take(pa.array(starts, pa.int64())), ts=ts,
                   created=created, columns=columns, starts=starts,
                   ends=np.append(starts[1:], n).astype(np.int64))

    def __len__(self) -> int:
        return len(self.ts)

    def entities(self, first: int, stop: int) -> Events:
        """The events of entities first .. stop - 1, renumbered from 0."""
        lo = self.starts[first] if first < len(self.starts) else len(self.ts)
        hi = self.ends[stop - 1] if stop > first else lo
        return Events(self.keys.slice(first, stop - first), self.ts[lo:hi], self.created[lo:hi],
                      {c: Column(col.values.rows(lo, hi) if isinstance(col.values, Utf8Array)
                                 else col.values[lo:hi], col.valid[lo:hi])
                       for c, col in self.columns.items()},
                      self.starts[first:stop] - lo, self.ends[first:stop] - lo)


@numba.njit(cache=True, nogil=True)
def lower_bound(a, lo, hi, x):  # type: ignore[no-untyped-def]
    """The first index in [lo, hi) of the sorted a whose value is >= x (hi if none)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo
