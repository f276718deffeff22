"""Running a selection's transforms over columns: the one executor the offline training set and
the online lookup both call, so a transform's inputs, missing-value rule and statuses cannot
differ between the paths."""

from __future__ import annotations

import numpy as np

from featurestore.plan.plan import Selection
from featurestore.values.columns import Column
from featurestore.values.status import NULL, PRESENT


def feature_status(state: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A stored feature's status from its row's state (PRESENT, NOT_FOUND or OUTSIDE_TTL):
    a row that is there but holds a null makes the feature NULL."""
    return np.where((state == PRESENT) & ~valid, NULL, state)


def run_transforms(selection: Selection, columns: dict[str, Column], statuses: dict[str, np.ndarray],
                   requests: dict[str, Column]) -> dict[str, int]:
    """Adds each transform's output to `columns` and `statuses` (in place, in dependency order);
    returns the number of rows each transform raised for."""
    errors: dict[str, int] = {}
    for t in selection.transforms:
        inputs = [requests[i.ref] if i.kind == "request" else columns[i.ref] for i in t.inputs]
        assert t.kernel is not None
        result, raised = t.kernel.run(inputs)
        if raised:
            errors[t.name] = raised
        columns[t.name] = result
        statuses[t.name] = np.where(result.valid, PRESENT, NULL)
    return errors
