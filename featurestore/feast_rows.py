"""One row through a Feast on-demand function: what the plain-Python transforms that
`import-feast` writes (for functions it cannot translate) call, in training sets and online
alike. The row is shaped as Feast hands rows to the function (a one-row DataFrame in pandas
mode, a dict of one-item lists in python mode, a dict of values in singleton mode), so the
function runs unchanged; one row at a time, so a value never depends on the other rows of a
batch. A missing output (None, or pandas' NaN/NA/NaT in pandas mode) comes back as None,
which the transform makes NULL.

A view with several outputs is several transforms, each asking for its output of the same
rows: within one run of the executor (one training set, one request), the outputs of up to
MEMORY rows are kept, keyed by the function and the row's exact values (a float by its bits),
so the function runs once per row, not once per output. Nothing is kept from one run to the
next."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from featurestore.plan.execute import RUN

MODES = ("pandas", "python", "singleton")
MEMORY = 4096  # rows whose outputs are kept


class _Kept:
    """The outputs of the current run's rows."""

    run: object = None
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}  # noqa: RUF012 (one, module-wide)


class _NotOneValue:
    """Kept instead of an output the function gave other than one value for the row."""

    def __init__(self, got: str):
        self.got = got


def feast_row(fn: Callable[[Any], Any], mode: str, row: dict[str, Any], output: str) -> Any:
    """The value of `output` that `fn` computes for the one row `row` (input name -> value)."""
    run = RUN.get()
    key = (run, fn, mode, *((name, _exact(value)) for name, value in row.items()))
    outputs = _Kept.rows.get(key) if run is not None else None
    if outputs is None:
        outputs = _outputs(fn, mode, row)
        if run is not None:
            if len(_Kept.rows) >= MEMORY or _Kept.run is not run:
                _Kept.rows.clear()
                _Kept.run = run
            _Kept.rows[key] = outputs
    value = outputs[output]
    if isinstance(value, _NotOneValue):
        raise ValueError(f"the function returned {value.got} as {output!r} for one row")
    return value


def _outputs(fn: Callable[[Any], Any], mode: str, row: dict[str, Any]) -> dict[str, Any]:
    """Every output of the function for the row."""
    if mode == "pandas":
        import pandas as pd

        frame = fn(pd.DataFrame({name: [value] for name, value in row.items()}))
        return {name: _missing(_only(column.tolist()), pd) for name, column in frame.items()}
    if mode == "python":
        return {name: _only(values) for name, values in
                fn({name: [value] for name, value in row.items()}).items()}
    if mode == "singleton":
        return dict(fn(dict(row)))
    raise ValueError(f"mode is one of {MODES}, not {mode!r}")


def _only(values: Any) -> Any:
    """The one value of an output column."""
    if isinstance(values, str | bytes | dict) or not hasattr(values, "__len__"):
        return _NotOneValue(f"{type(values).__name__} {values!r:.40}, not a column,")
    if len(values) != 1:
        return _NotOneValue(f"{len(values)} values")
    return next(iter(values))


def _missing(value: Any, pd: Any) -> Any:
    return None if pd.api.types.is_scalar(value) and pd.isna(value) else value


def _exact(value: Any) -> tuple[type, Any]:
    """A key that tells apart what == does not: -0.0 and 0.0, 1 and 1.0 and True."""
    return (float, struct.pack("<d", value)) if isinstance(value, float) else (type(value), value)
