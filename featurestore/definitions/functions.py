"""The aggregate functions a view can declare: the one table of them. An entry gives the
column types a function aggregates and the type of its result; the function's kernels are
the unit of the same name in featurestore/aggregation/functions/. Adding a function is an
entry here and one module there."""

from __future__ import annotations

from dataclasses import dataclass

from featurestore.definitions.types import Bool, DType, Float64, Int64, String, Timestamp


@dataclass(frozen=True)
class Signature:
    accepts: tuple[DType, ...]
    result: DType | None = None  # None: the type of the aggregated column

    def output(self, column: DType) -> DType:
        return self.result or column


_ANY = (Int64, Float64, Bool, String, Timestamp)
_NUMBERS = (Int64, Float64)
_ORDERED = (Int64, Float64, Timestamp)

AGGREGATE_FUNCTIONS: dict[str, Signature] = {
    "count": Signature(_ANY, Int64),
    "sum": Signature(_NUMBERS),
    "mean": Signature(_NUMBERS, Float64),
    "var": Signature(_NUMBERS, Float64),
    "stddev": Signature(_NUMBERS, Float64),
    "min": Signature(_ORDERED),
    "max": Signature(_ORDERED),
    "first": Signature((Int64, Float64, Bool, Timestamp)),
    "last": Signature((Int64, Float64, Bool, Timestamp)),
    "count_distinct": Signature(_ANY, Int64),
}
