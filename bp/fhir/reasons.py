"""Reject reasons of the parser (stable codes) and the short, safe detail messages that go with them."""

from __future__ import annotations

from enum import StrEnum

from bp.reading import Rejected


class RejectReason(StrEnum):
    """Why a message was rejected: stable codes (dead-letter header, metrics); see the bp.fhir docstring."""

    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    DUPLICATE_KEY = "duplicate_key"
    TOO_DEEP = "too_deep"
    NOT_OBJECT = "not_object"
    WRONG_RESOURCE_TYPE = "wrong_resource_type"
    BAD_BUNDLE = "bad_bundle"
    EMPTY_BUNDLE = "empty_bundle"
    NO_BP_READING = "no_bp_reading"
    BAD_ID = "bad_id"
    BAD_STATUS = "bad_status"
    NOT_BP_PANEL = "not_bp_panel"
    MISSING_COMPONENT = "missing_component"
    DUPLICATE_COMPONENT = "duplicate_component"
    BAD_VALUE = "bad_value"
    UNKNOWN_UNIT = "unknown_unit"
    IMPLAUSIBLE = "implausible"
    SYSTOLIC_NOT_ABOVE_DIASTOLIC = "systolic_not_above_diastolic"
    MISSING_SUBJECT = "missing_subject"
    BAD_TIME = "bad_time"


MAX_DETAIL_CHARS = 200


def _reject(reason: RejectReason, detail: str) -> Rejected:
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[: MAX_DETAIL_CHARS - 3] + "..."
    return Rejected(reason=reason.value, detail=detail)


def _show(value: object) -> str:
    """A short, safe rendering of an untrusted value for a detail message."""
    if not (isinstance(value, str | int | float | bool) or value is None):
        return type(value).__name__
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

