"""Running a selection's transforms over columns: the one executor the offline training set and
the online lookup both call, so a transform's inputs, missing-value rule and statuses cannot
differ between the paths."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Protocol

import numpy as np

from featurestore.plan.plan import Selection
from featurestore.values.columns import Column
from featurestore.values.status import NULL, PRESENT


def feature_status(state: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A stored feature's status from its row's state (PRESENT, NOT_FOUND or OUTSIDE_TTL):
    a row that is there but holds a null makes the feature NULL."""
    return np.where((state == PRESENT) & ~valid, NULL, state)


def computed_status(valid: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """A computed value's status (a transform's or a windowed aggregate's): PRESENT or NULL,
    written into `out` (uint8) when given. PRESENT is 0 and NULL 1, so it is `not valid`."""
    if out is None:
        out = np.empty(len(valid), np.uint8)
    np.logical_not(valid, out=out.view(np.bool_))
    return out


assert (PRESENT, NULL) == (0, 1)  # computed_status relies on it


# A new object for each run of run_transforms: what plain-Python transforms may remember
# (featurestore.feast_rows) never outlives the training set or the request it was computed for.
RUN: ContextVar[object] = ContextVar("featurestore_transform_run", default=None)


class Columns(Protocol):
    def __getitem__(self, ref: str) -> Column: ...

    def __setitem__(self, ref: str, column: Column) -> None: ...


def run_transforms(selection: Selection, columns: Columns, requests: dict[str, Column]
                   ) -> dict[str, int]:
    """Adds each transform's output to `columns` (in dependency order); returns the number of
    rows each transform raised for. Their statuses follow from validity (computed_status)."""
    errors: dict[str, int] = {}
    run = RUN.set(object())
    try:
        for t in selection.transforms:
            inputs = [requests[i.ref] if i.kind == "request" else columns[i.ref]
                      for i in t.inputs]
            assert t.kernel is not None
            result, raised = t.kernel.run(inputs)
            if raised:
                errors[t.name] = raised
            columns[t.name] = result
    finally:
        RUN.reset(run)
    return errors
