"""What every definition shares: a validated name and the place it was written."""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass
from datetime import timedelta

from featurestore.definitions.types import DType
from featurestore.errors import DefinitionError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# Column names the offline store and training sets use for their own bookkeeping.
RESERVED_NAMES = frozenset({"event_timestamp", "visible_at"})


@dataclass(frozen=True)
class Location:
    """File and line of a definition, for error messages only."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


def did_you_mean(name: str, known: object) -> str:
    """' (did you mean 'x'?)' for the closest of `known` names, or ''."""
    close = difflib.get_close_matches(name, list(known), n=1)  # type: ignore[call-overload]
    return f" (did you mean {close[0]!r}?)" if close else ""


def caller_location(depth: int = 2) -> Location:
    """Where the user's code constructed a definition (used to point errors at it)."""
    frame = sys._getframe(depth)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("featurestore."):
        frame = frame.f_back
    if frame is None:
        return Location("<unknown>", 0)
    return Location(frame.f_code.co_filename, frame.f_lineno)


def check_name(kind: str, name: object, where: Location | None = None) -> str:
    """Names end up in SQL identifiers and Redis keys, so they must be plain identifiers."""
    at = f" (at {where})" if where else ""
    if not isinstance(name, str) or not _NAME.match(name) or name.startswith("__"):
        raise DefinitionError(
            f"{kind} name {name!r}{at} is not a valid name: use letters, digits and underscores, "
            "start with a letter, at most 63 characters, no leading '__'"
        )
    return name


def check_dtype(owner: str, dtype: object, where: Location | None = None) -> DType:
    if not isinstance(dtype, DType):
        at = f" (at {where})" if where else ""
        raise DefinitionError(
            f"{owner}{at}: {dtype!r} is not a featurestore type; "
            "use one of featurestore.types Int64, Float64, Bool, String, Timestamp"
        )
    return dtype


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(owner: str, value: object) -> timedelta:
    """Accepts a timedelta or a string like '90s', '5m', '1h', '7d', '2w'."""
    if isinstance(value, timedelta):
        td = value
    elif isinstance(value, str) and re.fullmatch(r"\d+[smhdw]", value):
        td = timedelta(seconds=int(value[:-1]) * _UNITS[value[-1]])
    else:
        raise DefinitionError(
            f"{owner}: duration {value!r} is not understood; use a timedelta or a string such as "
            "'30s', '5m', '1h', '7d', '2w'"
        )
    if td <= timedelta(0):
        raise DefinitionError(f"{owner}: duration {value!r} must be positive")
    return td


def micros(td: timedelta) -> int:
    return (td.days * 86400 + td.seconds) * 1_000_000 + td.microseconds
