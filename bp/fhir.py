"""FHIR R4 blood-pressure Observations: build them (producer) and parse them fast (consumer).

The built resource follows the HL7 FHIR R4 vital-signs blood-pressure profile
(http://hl7.org/fhir/R4/bp.html): status final, category vital-signs, code LOINC 85354-9, a subject, an
effectiveDateTime with offset, and two components, LOINC 8480-6 (systolic) and 8462-4 (diastolic), each a
valueQuantity in UCUM mm[Hg].

Parsing: ``parse_message(raw) -> tuple[Reading, ...] | Rejected``
--------------------------------------------------------------------
Pure and fast (plain dict walking after ``orjson.loads``, no fhir.resources models); it never raises on bad
input: every failure is a :class:`~bp.reading.Rejected` whose ``reason`` is a :class:`RejectReason` code and
whose ``detail`` is a short human-readable explanation (at most 200 characters).

Accepted message (UTF-8 JSON, at most ``MAX_MESSAGE_BYTES`` = 64 KiB, no byte-order mark):

* one ``Observation`` -> one reading, or
* a ``Bundle`` of ``type`` collection, batch or transaction whose every ``entry[].resource`` is such an
  Observation -> one reading per entry, in entry order. All or nothing: if any entry is invalid the whole
  message is rejected with that entry's reason and ``entry[i]:`` in front of its detail (the message goes
  whole to the dead letters, so nothing is lost). Other bundle types (searchset, history, document, message,
  *-response) carry resources that are not new measurements and are rejected, as are nested bundles.

An Observation is accepted when:

* ``status`` is ``final``, ``amended``, ``corrected`` or ``preliminary``. Rejected: ``cancelled`` and
  ``entered-in-error`` (not a valid measurement), ``registered`` (no result yet) and ``unknown`` (the sender
  cannot vouch for it); they go to the dead letters where an operator can look at them.
* ``code.coding`` has a coding with system ``http://loinc.org`` and code 85354-9 (blood pressure panel) or the
  older 55284-4.
* ``component`` holds exactly one component coded LOINC 8480-6 (systolic) and one coded 8462-4 (diastolic), in
  any order (codings of other systems may sit beside the LOINC one; other components, e.g. heart rate, are
  ignored). Each has ``valueQuantity.value``, a JSON number without ``comparator``, whose unit is mmHg (UCUM
  ``code`` ``mm[Hg]``, or ``code``/``unit`` ``mmHg`` or ``mm[Hg]``) or kPa (converted: 1 kPa = 7.50062 mmHg,
  rounded to 0.01 mmHg). The unit is read from ``code`` when ``system`` is UCUM or absent, else from ``unit``;
  when ``code`` and ``unit`` name two different known units the value is rejected as ambiguous.
* the values, in mmHg, lie inside ``bp.clinical.SYSTOLIC_BOUNDS`` / ``DIASTOLIC_BOUNDS`` (inclusive), and
  systolic > diastolic.
* ``subject.reference`` is ``Patient/<id>`` or an absolute http(s) URL ending in ``Patient/<id>`` (an optional
  ``/_history/<version>`` is dropped); ``<id>`` must be a FHIR id (``[A-Za-z0-9-.]{1,64}``) and becomes
  ``Reading.patient_id``. ``urn:uuid:`` references, logical (identifier-only) references and other resource
  types cannot be resolved here and are rejected.
* exactly one of ``effectiveDateTime``, ``effectivePeriod.start`` or ``effectiveInstant`` is given and is
  either a full date-time with seconds and a UTC offset or ``Z`` (``2024-03-01T08:15:00+01:00``, fractional
  seconds allowed; FHIR requires the offset whenever a time is given), or a date only (``2012-09-17``),
  which FHIR allows and which is read as the start of that day in UTC (the official HL7 example
  ``observation-example-bloodpressure`` is date-only). A time without an offset, a year or year-month only,
  or anything else is rejected. The result is a timezone-aware datetime that keeps the sender's offset.
* ``id``, when present, is a FHIR id string and becomes ``Reading.observation_id`` (else None).

Reject reasons (``RejectReason`` values; stable, used as the dead-letter ``reason`` header and in metrics):

=============================  ==========================================================================
too_large                      message longer than MAX_MESSAGE_BYTES; not decoded at all
not_utf8                       bytes are not valid UTF-8
not_json                       not a single JSON value (syntax error, NaN/Infinity literals, numbers that
                               overflow a double such as 1e309, lone surrogate escapes, a BOM, empty input)
too_deep                       JSON nested deeper than orjson's limit (1024 levels)
not_object                     valid JSON, but not an object (array, string, number, true/false, null)
wrong_resource_type            ``resourceType`` missing, or not Observation/Bundle (bundle entries: not
                               Observation)
bad_bundle                     Bundle of an unsupported ``type``, ``entry`` not an array, or an entry
                               without a ``resource`` object
empty_bundle                   Bundle with no entries
bad_id                         ``id`` present but not a FHIR id string
bad_status                     ``status`` missing, not a string, or not one of the accepted statuses
not_bp_panel                   ``code`` has no LOINC 85354-9 / 55284-4 coding
missing_component              no component coded LOINC 8480-6 (systolic) or 8462-4 (diastolic)
duplicate_component            two systolic or two diastolic components, or one coded as both
bad_value                      no ``valueQuantity``, value missing, not a number (string, bool, null, ...),
                               non-finite, or qualified by a ``comparator``
unknown_unit                   unit neither mmHg nor kPa, missing, or ``code`` and ``unit`` disagree
implausible                    a value (in mmHg) outside the physiological bounds of bp.clinical
systolic_not_above_diastolic   systolic <= diastolic
missing_subject                no usable ``subject.reference`` to a Patient
bad_time                       no effective time, more than one effective[x], or an unusable time
=============================  ==========================================================================
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

import orjson

from bp.clinical import DIASTOLIC_BOUNDS, SYSTOLIC_BOUNDS
from bp.reading import Reading, Rejected

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
VITAL_SIGNS_BP_PROFILE = "http://hl7.org/fhir/StructureDefinition/bp"

BP_PANEL = "85354-9"
BP_PANEL_LEGACY = "55284-4"
SYSTOLIC = "8480-6"
DIASTOLIC = "8462-4"
MMHG_CODE = "mm[Hg]"
MMHG_UNIT = "mmHg"

CONTENT_TYPE = "application/fhir+json"
KPA_UNIT = "kPa"
MMHG_PER_KPA = 7.50062

MAX_MESSAGE_BYTES: int = 65_536
"""Documented size limit; larger messages are rejected before decoding."""


def _quantity(value: float) -> dict[str, Any]:
    number: float | int = int(value) if float(value).is_integer() else value
    return {"value": number, "unit": MMHG_UNIT, "system": UCUM, "code": MMHG_CODE}


def _component(code: str, display: str, value: float) -> dict[str, Any]:
    return {
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
        "valueQuantity": _quantity(value),
    }


def build_observation(
    reading: Reading,
    *,
    device: str | None = None,
    interpretation: str | None = None,
) -> dict[str, Any]:
    """A FHIR R4 Observation (vital-signs BP profile) for one reading.

    ``interpretation`` is an optional v3-ObservationInterpretation code (e.g. "H", "L", "N");
    ``device`` an optional display name of the measuring device. The reading must carry an observation id.
    """
    if reading.observation_id is None:
        raise ValueError("an Observation needs an id: set Reading.observation_id")
    if reading.effective.tzinfo is None:
        raise ValueError("effective time must be timezone-aware")
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": reading.observation_id,
        "meta": {"profile": [VITAL_SIGNS_BP_PROFILE]},
        "status": "final",
        "category": [
            {
                "coding": [{"system": OBSERVATION_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}],
                "text": "Vital Signs",
            }
        ],
        "code": {
            "coding": [
                {
                    "system": LOINC,
                    "code": BP_PANEL,
                    "display": "Blood pressure panel with all children optional",
                }
            ],
            "text": "Blood pressure",
        },
        "subject": {"reference": f"Patient/{reading.patient_id}"},
        "effectiveDateTime": reading.effective.isoformat(),
    }
    if interpretation is not None:
        resource["interpretation"] = [{"coding": [{"system": INTERPRETATION_SYSTEM, "code": interpretation}]}]
    if device is not None:
        resource["device"] = {"display": device}
    resource["component"] = [
        _component(SYSTOLIC, "Systolic blood pressure", reading.systolic),
        _component(DIASTOLIC, "Diastolic blood pressure", reading.diastolic),
    ]
    return resource


# ---------------------------------------------------------------------------------------------------------
# Parsing (consumer hot path): plain dict walking, no models, no I/O, never raises on bad input.


class RejectReason(StrEnum):
    """Why a message was rejected: stable codes (dead-letter header, metrics); see the module docstring."""

    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    TOO_DEEP = "too_deep"
    NOT_OBJECT = "not_object"
    WRONG_RESOURCE_TYPE = "wrong_resource_type"
    BAD_BUNDLE = "bad_bundle"
    EMPTY_BUNDLE = "empty_bundle"
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


ACCEPTED_STATUSES: tuple[str, ...] = ("final", "amended", "corrected", "preliminary")
ACCEPTED_BUNDLE_TYPES: tuple[str, ...] = ("collection", "batch", "transaction")
BP_PANEL_CODES: tuple[str, ...] = (BP_PANEL, BP_PANEL_LEGACY)
MAX_DETAIL_CHARS = 200

# mmHg per unit, keyed by the unit token found in valueQuantity.code (UCUM) or valueQuantity.unit.
_UNIT_FACTORS: dict[str, float] = {MMHG_CODE: 1.0, MMHG_UNIT: 1.0, KPA_UNIT: MMHG_PER_KPA}
_EFFECTIVE_KEYS = ("effectiveDateTime", "effectivePeriod", "effectiveInstant")

_FHIR_ID = r"[A-Za-z0-9\-.]{1,64}"
_ID_RE = re.compile(_FHIR_ID, re.ASCII)
_PATIENT_REF_RE = re.compile(rf"(?:https?://\S+/)?Patient/({_FHIR_ID})(?:/_history/{_FHIR_ID})?", re.ASCII)
# FHIR dateTime with a time: seconds required, offset required (Z or +hh:mm, at most +/-14:00).
_DATETIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-](?:(?:0\d|1[0-3]):[0-5]\d|14:00))", re.ASCII
)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


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


def parse_message(raw: bytes) -> tuple[Reading, ...] | Rejected:
    """Parse one Kafka message: an Observation or a Bundle of them. Never raises on bad input."""
    size = len(raw)
    if size > MAX_MESSAGE_BYTES:
        return _reject(RejectReason.TOO_LARGE, f"{size} bytes > limit of {MAX_MESSAGE_BYTES}")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _undecodable(raw, exc)
    if not isinstance(document, dict):
        return _reject(RejectReason.NOT_OBJECT, f"JSON {type(document).__name__}, expected an object")
    resource_type = document.get("resourceType")
    if resource_type == "Observation":
        reading = _observation(document)
        return reading if isinstance(reading, Rejected) else (reading,)
    if resource_type == "Bundle":
        return _bundle(document)
    return _reject(
        RejectReason.WRONG_RESOURCE_TYPE,
        f"resourceType {_show(resource_type)}, expected Observation or Bundle",
    )


def _undecodable(raw: bytes, exc: orjson.JSONDecodeError) -> Rejected:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return _reject(RejectReason.NOT_UTF8, f"invalid UTF-8 at byte {bad.start}")
    message = str(exc)
    if "depth limit" in message:  # orjson refuses nesting beyond 1024 levels
        return _reject(RejectReason.TOO_DEEP, "JSON nested deeper than 1024 levels")
    return _reject(RejectReason.NOT_JSON, message)


def _bundle(bundle: dict[str, Any]) -> tuple[Reading, ...] | Rejected:
    bundle_type = bundle.get("type")
    if not (isinstance(bundle_type, str) and bundle_type in ACCEPTED_BUNDLE_TYPES):
        return _reject(
            RejectReason.BAD_BUNDLE,
            f"Bundle.type {_show(bundle_type)}, expected one of {', '.join(ACCEPTED_BUNDLE_TYPES)}",
        )
    entries = bundle.get("entry")
    if entries is None or entries == []:
        return _reject(RejectReason.EMPTY_BUNDLE, "Bundle has no entries")
    if not isinstance(entries, list):
        return _reject(RejectReason.BAD_BUNDLE, f"Bundle.entry is a {type(entries).__name__}, not an array")
    readings: list[Reading] = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            return _reject(RejectReason.BAD_BUNDLE, f"entry[{index}] has no resource object")
        if resource.get("resourceType") != "Observation":
            return _reject(
                RejectReason.WRONG_RESOURCE_TYPE,
                f"entry[{index}]: resourceType {_show(resource.get('resourceType'))}, expected Observation",
            )
        reading = _observation(resource)
        if isinstance(reading, Rejected):
            return _reject(RejectReason(reading.reason), f"entry[{index}]: {reading.detail}")
        readings.append(reading)
    return tuple(readings)


def _observation(obs: dict[str, Any]) -> Reading | Rejected:
    """One Observation (its resourceType already checked) -> a Reading."""
    observation_id = obs.get("id")
    if observation_id is not None and not (isinstance(observation_id, str) and _ID_RE.fullmatch(observation_id)):
        return _reject(RejectReason.BAD_ID, f"id {_show(observation_id)} is not a FHIR id")

    status = obs.get("status")
    if not (isinstance(status, str) and status in ACCEPTED_STATUSES):
        return _reject(RejectReason.BAD_STATUS, f"status {_show(status)}, accepted: {', '.join(ACCEPTED_STATUSES)}")

    if not _has_loinc(obs.get("code"), BP_PANEL_CODES):
        return _reject(RejectReason.NOT_BP_PANEL, "code has no LOINC 85354-9 or 55284-4 coding")

    patient_id = _patient_id(obs.get("subject"))
    if patient_id is None:
        return _reject(RejectReason.MISSING_SUBJECT, "subject.reference is not Patient/<id>")

    effective = _effective(obs)
    if isinstance(effective, Rejected):
        return effective

    pair = _bp_components(obs.get("component"))
    if isinstance(pair, Rejected):
        return pair
    systolic = _mmhg(pair[0], "systolic")
    if isinstance(systolic, Rejected):
        return systolic
    diastolic = _mmhg(pair[1], "diastolic")
    if isinstance(diastolic, Rejected):
        return diastolic

    if not SYSTOLIC_BOUNDS[0] <= systolic <= SYSTOLIC_BOUNDS[1]:
        return _reject(
            RejectReason.IMPLAUSIBLE,
            f"systolic {systolic:g} mmHg outside {SYSTOLIC_BOUNDS[0]:g}-{SYSTOLIC_BOUNDS[1]:g}",
        )
    if not DIASTOLIC_BOUNDS[0] <= diastolic <= DIASTOLIC_BOUNDS[1]:
        return _reject(
            RejectReason.IMPLAUSIBLE,
            f"diastolic {diastolic:g} mmHg outside {DIASTOLIC_BOUNDS[0]:g}-{DIASTOLIC_BOUNDS[1]:g}",
        )
    if systolic <= diastolic:
        return _reject(
            RejectReason.SYSTOLIC_NOT_ABOVE_DIASTOLIC,
            f"systolic {systolic:g} <= diastolic {diastolic:g} mmHg",
        )
    return Reading(
        patient_id=patient_id,
        effective=effective,
        systolic=systolic,
        diastolic=diastolic,
        observation_id=observation_id,
    )


def _loinc_codes(concept: object) -> tuple[str, ...]:
    """The LOINC codes of a CodeableConcept (malformed parts are ignored)."""
    if not isinstance(concept, dict):
        return ()
    codings = concept.get("coding")
    if not isinstance(codings, list):
        return ()
    codes: tuple[str, ...] = ()
    for coding in codings:
        if isinstance(coding, dict) and coding.get("system") == LOINC:
            code = coding.get("code")
            if isinstance(code, str):
                codes += (code,)
    return codes


def _has_loinc(concept: object, wanted: tuple[str, ...]) -> bool:
    return any(code in wanted for code in _loinc_codes(concept))


def _bp_components(components: object) -> tuple[dict[str, Any], dict[str, Any]] | Rejected:
    """The (systolic, diastolic) components; other components are ignored."""
    systolic: dict[str, Any] | None = None
    diastolic: dict[str, Any] | None = None
    if isinstance(components, list):
        for index, component in enumerate(components):
            if not isinstance(component, dict):
                continue
            codes = _loinc_codes(component.get("code"))
            is_systolic = SYSTOLIC in codes
            is_diastolic = DIASTOLIC in codes
            if is_systolic and is_diastolic:
                return _reject(
                    RejectReason.DUPLICATE_COMPONENT, f"component[{index}] coded both systolic and diastolic"
                )
            if is_systolic:
                if systolic is not None:
                    return _reject(RejectReason.DUPLICATE_COMPONENT, "more than one systolic component")
                systolic = component
            elif is_diastolic:
                if diastolic is not None:
                    return _reject(RejectReason.DUPLICATE_COMPONENT, "more than one diastolic component")
                diastolic = component
    if systolic is None:
        return _reject(RejectReason.MISSING_COMPONENT, f"no component coded LOINC {SYSTOLIC} (systolic)")
    if diastolic is None:
        return _reject(RejectReason.MISSING_COMPONENT, f"no component coded LOINC {DIASTOLIC} (diastolic)")
    return systolic, diastolic


def _mmhg(component: dict[str, Any], name: str) -> float | Rejected:
    """The component's valueQuantity in mmHg (converted from kPa when needed)."""
    quantity = component.get("valueQuantity")
    if not isinstance(quantity, dict):
        return _reject(RejectReason.BAD_VALUE, f"{name}: no valueQuantity")
    value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _reject(RejectReason.BAD_VALUE, f"{name}: value {_show(value)} is not a number")
    if "comparator" in quantity:
        return _reject(RejectReason.BAD_VALUE, f"{name}: value has a comparator, not an exact measurement")
    try:
        number = float(value)
    except OverflowError:
        return _reject(RejectReason.BAD_VALUE, f"{name}: value too large")
    if not math.isfinite(number):
        return _reject(RejectReason.BAD_VALUE, f"{name}: value {number} is not finite")

    code = quantity.get("code")
    unit = quantity.get("unit")
    system = quantity.get("system")
    code_factor = _UNIT_FACTORS.get(code) if isinstance(code, str) and (system is None or system == UCUM) else None
    unit_factor = _UNIT_FACTORS.get(unit) if isinstance(unit, str) else None
    if code_factor is not None and unit_factor is not None and code_factor != unit_factor:
        return _reject(RejectReason.UNKNOWN_UNIT, f"{name}: code {_show(code)} and unit {_show(unit)} disagree")
    # A (UCUM) code decides; the unit text only counts when there is no usable code.
    has_code = isinstance(code, str) and (system is None or system == UCUM)
    factor = code_factor if has_code else unit_factor
    if factor is None:
        return _reject(
            RejectReason.UNKNOWN_UNIT,
            f"{name}: unit {_show(code if has_code else unit)}, expected mm[Hg] or kPa",
        )
    return number if factor == 1.0 else round(number * factor, 2)


def _patient_id(subject: object) -> str | None:
    if not isinstance(subject, dict):
        return None
    reference = subject.get("reference")
    if not isinstance(reference, str):
        return None
    match = _PATIENT_REF_RE.fullmatch(reference)
    return match.group(1) if match else None


def _effective(obs: dict[str, Any]) -> datetime | Rejected:
    present = [key for key in _EFFECTIVE_KEYS if key in obs]
    if not present:
        return _reject(RejectReason.BAD_TIME, "no effectiveDateTime, effectivePeriod or effectiveInstant")
    if len(present) > 1:
        return _reject(RejectReason.BAD_TIME, f"more than one effective[x]: {', '.join(present)}")
    key = present[0]
    value = obs[key]
    if key == "effectivePeriod":
        if not isinstance(value, dict) or "start" not in value:
            return _reject(RejectReason.BAD_TIME, "effectivePeriod has no start")
        key, value = "effectivePeriod.start", value["start"]
    if not isinstance(value, str):
        return _reject(RejectReason.BAD_TIME, f"{key} {_show(value)} is not a string")
    parsed = _parse_time(value, date_only_ok=key != "effectiveInstant")
    if parsed is None:
        return _reject(
            RejectReason.BAD_TIME,
            f"{key} {_show(value)}: need a date or a date-time with seconds and a UTC offset",
        )
    return parsed


def _parse_time(text: str, *, date_only_ok: bool) -> datetime | None:
    """A FHIR dateTime with time and offset, or (when allowed) a date read as 00:00 UTC; None otherwise."""
    try:
        if _DATETIME_RE.fullmatch(text):
            return datetime.fromisoformat(text)  # 3.11: handles Z and 1-9 fraction digits
        if date_only_ok and _DATE_RE.fullmatch(text):
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
    except ValueError:  # e.g. month 13, Feb 30, hour 24, leap second 60
        return None
    return None
