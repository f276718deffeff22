"""The status every value carries, with the same numbering offline, online and on the wire."""

from enum import IntEnum


class Status(IntEnum):
    PRESENT = 0
    NULL = 1
    NOT_FOUND = 2
    OUTSIDE_TTL = 3


STATUS_NAMES = [s.name for s in Status]
