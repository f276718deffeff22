"""The status every value carries, with the same numbering offline, online and on the wire."""

from enum import IntEnum

import numpy as np
import polars as pl


class Status(IntEnum):
    PRESENT = 0
    NULL = 1
    NOT_FOUND = 2
    OUTSIDE_TTL = 3


STATUS_NAMES = [s.name for s in Status]
STATUS_DTYPE = pl.Enum(STATUS_NAMES)  # status columns of training sets and client frames

# As NumPy scalars, for hot paths (attribute access on an IntEnum is slow).
PRESENT, NULL, NOT_FOUND, OUTSIDE_TTL = (np.uint8(s) for s in Status)
