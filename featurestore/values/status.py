"""The status every value carries, with the same numbering offline, online and on the wire."""

from __future__ import annotations

from enum import IntEnum
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import polars as pl


class Status(IntEnum):
    PRESENT = 0
    NULL = 1
    NOT_FOUND = 2
    OUTSIDE_TTL = 3


STATUS_NAMES = [s.name for s in Status]

# As NumPy scalars, for hot paths (attribute access on an IntEnum is slow).
PRESENT, NULL, NOT_FOUND, OUTSIDE_TTL = (np.uint8(s) for s in Status)


@cache
def status_dtype() -> pl.Enum:
    """The Polars type of status columns (training sets, client frames); Polars is loaded on
    first use."""
    import polars as pl

    return pl.Enum(STATUS_NAMES)
