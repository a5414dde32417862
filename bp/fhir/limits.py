"""What the parser tolerates: the message size limit and the plausible-time window (from the settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

DEFAULT_MAX_MESSAGE_BYTES: int = 8 * 1024 * 1024
"""Default size limit (8 MiB); larger messages are rejected before decoding (setting BP_MAX_MESSAGE_BYTES)."""
DEFAULT_FUTURE_TOLERANCE_S: float = 24 * 3600.0
DEFAULT_TIME_FLOOR: date = date(1900, 1, 1)
# Times whose UTC conversion stays inside years 1-9999 whatever the offset (no later stage can overflow).
_EARLIEST_S = datetime(1, 1, 2, tzinfo=UTC).timestamp()
_LATEST_S = datetime(9999, 12, 30, tzinfo=UTC).timestamp()


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """What the parser tolerates: message size and the plausible-time window (from the settings)."""

    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    future_tolerance_s: float = DEFAULT_FUTURE_TOLERANCE_S
    floor: date = DEFAULT_TIME_FLOOR  # readings before 00:00 UTC of this day are rejected
    earliest_s: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        floor_s = datetime(self.floor.year, self.floor.month, self.floor.day, tzinfo=UTC).timestamp()
        object.__setattr__(self, "earliest_s", max(floor_s, _EARLIEST_S))


DEFAULT_LIMITS = ParseLimits()
