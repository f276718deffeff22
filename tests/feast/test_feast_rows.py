"""featurestore.feast_rows: a Feast function called on one row, shaped as Feast shapes it, its
outputs read back as Python values, and one call per row however many outputs are read."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from featurestore.feast_rows import feast_row
from featurestore.plan.execute import RUN


def test_each_mode_gets_the_row_as_feast_shapes_it() -> None:
    seen: list[object] = []

    def pandas_fn(inputs: pd.DataFrame) -> pd.DataFrame:
        seen.append(inputs)
        return pd.DataFrame({"y": inputs["x"] * 2, "gap": inputs["x"].where(inputs["x"] > 5)})

    assert feast_row(pandas_fn, "pandas", {"x": 3}, "y") == 6
    assert feast_row(pandas_fn, "pandas", {"x": 3}, "gap") is None  # NaN in pandas: missing
    assert isinstance(seen[0], pd.DataFrame) and seen[0]["x"].tolist() == [3]
    assert type(feast_row(pandas_fn, "pandas", {"x": 3}, "y")) is int  # not a NumPy scalar
    assert feast_row(lambda d: {"y": [v + 1 for v in d["x"]]}, "python", {"x": 1.5}, "y") == 2.5
    assert feast_row(lambda d: {"y": d["x"] + 1}, "singleton", {"x": 1.5}, "y") == 2.5
    assert math.isnan(feast_row(lambda d: {"y": [math.nan]}, "python", {"x": 1.0}, "y"))


def test_one_call_per_row_within_a_run_and_rows_told_apart_by_their_bits() -> None:
    calls: list[float] = []

    def fn(inputs: dict[str, list[float]]) -> dict[str, list[float]]:
        calls.extend(inputs["x"])
        return {"inverse": [1 / x if x else math.copysign(math.inf, x) for x in inputs["x"]],
                "twice": [2 * x for x in inputs["x"]]}

    def run() -> tuple[list[float], list[float]]:
        rows = [0.0, -0.0, 1.0, 2.5]
        token = RUN.set(object())  # as run_transforms does
        try:
            return ([feast_row(fn, "python", {"x": x}, "inverse") for x in rows],
                    [feast_row(fn, "python", {"x": x}, "twice") for x in rows])
        finally:
            RUN.reset(token)

    inverse, twice = run()
    assert inverse == [math.inf, -math.inf, 1.0, 0.4] and twice == [0.0, -0.0, 2.0, 5.0]
    assert math.copysign(1, twice[1]) == -1
    assert len(calls) == 4  # the second output came from the first call of each row
    assert run() == (inverse, twice) and len(calls) == 8  # nothing kept between runs
    assert feast_row(fn, "python", {"x": 1}, "inverse") == 1.0  # int 1, outside a run
    assert feast_row(fn, "python", {"x": 1}, "twice") == 2 and len(calls) == 10


def test_what_is_not_one_value_raises() -> None:
    with pytest.raises(ValueError, match="returned 2 values as 'y' for one row"):
        feast_row(lambda d: {"y": [1, 2]}, "python", {"x": 7}, "y")
    with pytest.raises(ValueError, match="returned int 3, not a column, as 'y'"):
        feast_row(lambda d: {"y": 3}, "python", {"x": 7}, "y")
    with pytest.raises(KeyError):
        feast_row(lambda d: {"y": [3]}, "python", {"x": 8}, "z")
