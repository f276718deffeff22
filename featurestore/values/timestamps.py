"""Time as every part holds it: int64 microseconds since the Unix epoch, UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from featurestore.errors import FeatureStoreError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# the times featurestore takes (event times, as_of): 0001-01-01 .. 9999-12-31, what every
# part (Python datetimes, Arrow, DuckDB) represents
MIN_TIME_US = -62_135_596_800_000_000
MAX_TIME_US = 253_402_300_799_999_999


def to_micros(when: datetime) -> int:
    """Exact (no float detour); a naive datetime is refused, never guessed."""
    if when.tzinfo is None:
        raise FeatureStoreError(
            f"{when} has no time zone; pass a zone-aware datetime (e.g. tzinfo=timezone.utc)")
    delta = when - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def now_us() -> int:
    return time.time_ns() // 1000
