"""Transforms declared `compiled=False`: the user's function called by the Python interpreter
once per row, behind the same `run` a compiled Kernel has, so both executors (training sets,
online lookups) and the SQL functions call it exactly as they call a compiled one.

The rules are the compiled kernels' rules: an input missing and without a default makes the
output NULL without calling the function; a row for which the function raises is NULL and
counted. Two additions, since any Python can run here: returning None gives a NULL (not
counted), and returning a value the output type cannot hold (a float for Int64, an int
beyond int64, a non-str for String) counts as raising. Inputs arrive as Python scalars:
int for Int64 and Timestamp (epoch microseconds), float, bool, str."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from featurestore.definitions.types import Bool, DType, Float64, Int64, String, Timestamp
from featurestore.values.columns import Column, filled
from featurestore.values.strings import Utf8Array

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _integer(value: Any) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise TypeError(f"{value!r} is not an integer")
    value = int(value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise OverflowError(f"{value} does not fit in int64")
    return value


def _float(value: Any) -> float:
    if isinstance(value, bool | np.bool_) or not isinstance(
            value, float | int | np.floating | np.integer):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{value!r} is not a bool")
    return bool(value)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a str")
    return str(value)


# The output type -> what checks and converts a returned value, and the filler of a NULL.
_OUTPUTS: dict[DType, tuple[Callable[[Any], Any], Any]] = {
    Int64: (_integer, 0), Timestamp: (_integer, 0), Float64: (_float, 0.0),
    Bool: (_bool, False), String: (_string, "")}


@dataclass
class PythonKernel:
    """A plain-Python transform. `run` is what both executors call."""

    name: str
    input_types: list[DType]
    output: DType
    defaults: list[Any]  # per input: a default value, or None when a missing input means NULL
    fn: Callable[..., Any]  # the user's function, as defined

    def run(self, inputs: list[Column]) -> tuple[Column, int]:
        n = len(inputs[0].valid) if inputs else 0
        columns = [column if default is None else filled(column, default)
                   for column, default in zip(inputs, self.defaults, strict=True)]
        rows = np.logical_and.reduce([c.valid for c in columns]) if columns else np.ones(n, bool)
        scalars = [c.values.to_list() if isinstance(c.values, Utf8Array) else c.values.tolist()
                   for c in columns]
        convert, filler = _OUTPUTS[self.output]
        out = [filler] * n
        valid = np.zeros(n, np.bool_)
        errors = 0
        for i in np.flatnonzero(rows).tolist():
            try:
                value = self.fn(*(s[i] for s in scalars))
                if value is None:
                    continue
                out[i] = convert(value)
            except Exception:
                errors += 1
                continue
            valid[i] = True
        values = Utf8Array.from_list(out) if self.output is String else np.array(
            out, self.output.numpy)
        if not isinstance(values, Utf8Array):
            values.flags.writeable = False  # as a compiled kernel's: chained without a copy
        valid.flags.writeable = False
        return Column(values, valid), errors
