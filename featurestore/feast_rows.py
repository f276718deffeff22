"""One row through a Feast on-demand function: what the plain-Python transforms that
`import-feast` writes (for functions it cannot translate) call, in training sets and online
alike. The row is shaped as Feast hands rows to the function (a one-row DataFrame in pandas
mode, a dict of one-item lists in python mode, a dict of values in singleton mode), so the
function runs unchanged; one row at a time, so a value never depends on the other rows of a
batch. A missing output (None, or pandas' NaN/NA/NaT in pandas mode) comes back as None,
which the transform makes NULL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

MODES = ("pandas", "python", "singleton")


def feast_row(fn: Callable[[Any], Any], mode: str, row: dict[str, Any], output: str) -> Any:
    """The value of `output` that `fn` computes for the one row `row` (input name -> value)."""
    if mode == "pandas":
        import pandas as pd

        frame = fn(pd.DataFrame({name: [value] for name, value in row.items()}))
        value = _only(frame[output].tolist(), output)
        return None if pd.api.types.is_scalar(value) and pd.isna(value) else value
    if mode == "python":
        return _only(fn({name: [value] for name, value in row.items()})[output], output)
    if mode == "singleton":
        return fn(dict(row))[output]
    raise ValueError(f"mode is one of {MODES}, not {mode!r}")


def _only(values: Sequence[Any], output: str) -> Any:
    values = list(values)
    if len(values) != 1:
        raise ValueError(f"the function returned {len(values)} values of {output!r} for one row")
    return values[0]
