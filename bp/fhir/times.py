"""The effective time of an Observation: FHIR date/dateTime/instant forms and the plausible-time window."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from bp.fhir.limits import _EARLIEST_S, _LATEST_S, ParseLimits
from bp.fhir.reasons import RejectReason, _reject, _show
from bp.reading import Rejected

_EFFECTIVE_KEYS = ("effectiveDateTime", "effectivePeriod", "effectiveInstant")
_DATETIME_ONLY = ["effectiveDateTime"]

# FHIR dateTime with a time: seconds required, offset required (Z or +hh:mm, at most +/-14:00).
_DATETIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-](?:(?:0\d|1[0-3]):[0-5]\d|14:00))", re.ASCII
)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def _window(received_ms: int | None, limits: ParseLimits) -> tuple[float, float]:
    """The plausible-time window of one message: (earliest, latest) in epoch seconds."""
    if received_ms is None:
        return limits.earliest_s, _LATEST_S
    latest = received_ms / 1000.0 + limits.future_tolerance_s
    if latest > _LATEST_S:
        latest = _LATEST_S
    elif latest < _EARLIEST_S:
        latest = _EARLIEST_S
    return limits.earliest_s, latest


def _effective(obs: dict[str, Any], window: tuple[float, float]) -> tuple[datetime, str] | Rejected:
    """(time, precision) of the reading: precision ``second`` or, for a date without a time, ``day``."""
    present = (
        _DATETIME_ONLY
        if "effectiveDateTime" in obs and "effectivePeriod" not in obs and "effectiveInstant" not in obs
        else [key for key in _EFFECTIVE_KEYS if key in obs]
    )
    if not present:
        return _reject(RejectReason.BAD_TIME, "no effectiveDateTime, effectivePeriod or effectiveInstant")
    if len(present) > 1:
        return _reject(RejectReason.BAD_TIME, f"more than one effective[x]: {', '.join(present)}")
    key = present[0]
    value = obs[key]
    if key == "effectivePeriod":
        if not isinstance(value, dict):
            return _reject(RejectReason.BAD_TIME, "effectivePeriod is not an object")
        if "start" in value:
            key, value = "effectivePeriod.start", value["start"]
        elif "end" in value:
            key, value = "effectivePeriod.end", value["end"]
        else:
            return _reject(RejectReason.BAD_TIME, "effectivePeriod has neither start nor end")
    if not isinstance(value, str):
        return _reject(RejectReason.BAD_TIME, f"{key} {_show(value)} is not a string")
    parsed = _parse_time(value, date_only_ok=key != "effectiveInstant")
    if parsed is None:
        return _reject(
            RejectReason.BAD_TIME,
            f"{key} {_show(value)}: need a date or a date-time with seconds and a UTC offset",
        )
    seconds = parsed[0].timestamp()  # aware datetimes: never overflows
    earliest, latest = window
    if seconds < earliest:
        return _reject(RejectReason.BAD_TIME, f"{key} {_show(value)} is before the earliest plausible {_iso(earliest)}")
    if seconds > latest:
        return _reject(
            RejectReason.BAD_TIME,
            f"{key} {_show(value)} is after the latest plausible {_iso(latest)} (arrival + tolerance)",
        )
    return parsed


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _parse_time(text: str, *, date_only_ok: bool) -> tuple[datetime, str] | None:
    """A FHIR dateTime with time and offset, or (when allowed) a date read as 00:00 UTC; None otherwise."""
    try:
        if _DATETIME_RE.fullmatch(text):
            return datetime.fromisoformat(text), "second"  # 3.11: handles Z and 1-9 fraction digits
        if date_only_ok and _DATE_RE.fullmatch(text):
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC), "day"
    except ValueError:  # e.g. month 13, Feb 30, hour 24, leap second 60
        return None
    return None
