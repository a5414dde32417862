"""FHIR R4 blood-pressure Observations: build them (producer) and parse them fast (consumer).

The built resource follows the HL7 FHIR R4 vital-signs blood-pressure profile
(http://hl7.org/fhir/R4/bp.html): status final, category vital-signs, code LOINC 85354-9, a subject, an
effectiveDateTime with offset, and two components, LOINC 8480-6 (systolic) and 8462-4 (diastolic), each a
valueQuantity in UCUM mm[Hg]. The producer always emits that strict shape; the parser accepts what real
senders send (below).

Parsing: ``parse_message(raw, received_ms=..., limits=...) -> Parsed | Rejected``
-------------------------------------------------------------------------------
Pure and fast (plain dict walking after ``orjson.loads``, no fhir.resources models); it never raises on bad
input: every failure is a :class:`~bp.reading.Rejected` whose ``reason`` is a :class:`RejectReason` code and
whose ``detail`` is a short human-readable explanation (at most 200 characters). ``received_ms`` is the
reference time of the plausible-time window (the pipeline passes the Kafka record timestamp, or now);
``limits`` (:class:`ParseLimits`) holds the size limit and the window, from the ``BP_MAX_MESSAGE_BYTES``,
``BP_FUTURE_TOLERANCE_HOURS`` and ``BP_TIME_FLOOR`` settings.

Accepted message: UTF-8 JSON, at most ``limits.max_bytes`` (default 8 MiB, enough for a Synthea patient
Bundle), no byte-order mark, no object with a repeated key (FHIR JSON forbids them; last-wins reading would
let ``"status":"cancelled", ..., "status":"final"`` through), and either

* one ``Observation`` -> one reading (or one rejection), or
* a ``Bundle`` of any ``type`` (collection, transaction, batch, searchset, document, message, history,
  transaction-response, batch-response). Every entry whose resource is a blood-pressure Observation (its
  ``code`` has a BP panel coding) is one reading or one rejection of its own, in entry order; the others
  (Patient, Encounter, heart-rate Observation, Composition, MessageHeader, OperationOutcome, nested Bundles,
  ``request.method`` DELETE, entries with only a ``response``) are not readings: they are skipped and
  counted in :attr:`Parsed.skipped` (the consumer's ``skipped_entries``). Patient entries also resolve
  ``urn:uuid`` references. A Bundle without any blood-pressure Observation is rejected (``no_bp_reading``).
  One bad Observation does not sink the others: its rejection names the entry (``entry[3]: ...``) and the
  message goes to the dead letters once, while its valid readings are processed.

An Observation is a reading when:

* ``status`` is ``final``, ``amended``, ``corrected`` or ``preliminary``. Rejected: ``cancelled`` and
  ``entered-in-error`` (not a valid measurement), ``registered`` (no result yet) and ``unknown`` (the sender
  cannot vouch for it); they go to the dead letters where an operator can look at them.
* ``code.coding`` has a LOINC coding 85354-9 (blood pressure panel), or the older 55284-4 or 35094-2. LOINC
  is recognised by its URL ``http://loinc.org`` (also https and a trailing slash) or its OID
  ``urn:oid:2.16.840.1.113883.6.1``; codings of other systems may sit beside it.
* ``component`` holds a component coded LOINC 8480-6 (systolic) and one coded 8462-4 (diastolic), in any
  order (other components, e.g. heart rate, are ignored). Repeating a component with the same value is
  accepted (legal in base R4); repeats with different values are rejected as conflicting. Each has
  ``valueQuantity.value``, a JSON number without ``comparator``, in mmHg or kPa (converted: 1 kPa =
  7.50062 mmHg, rounded to 0.01 mmHg). The unit is read from ``code`` when ``system`` is UCUM
  (``http://unitsofmeasure.org`` or ``urn:oid:2.16.840.1.113883.6.8``) or absent, else from ``unit``; when
  ``code`` and ``unit`` name two different known units the value is rejected as ambiguous. Known spellings
  (case and spacing ignored): mmHg = ``mm[Hg]``, ``mmHg``, ``mm Hg``, ``mm(Hg)``, ``mm of Hg``,
  ``mm mercury``, ``mm of mercury``, ``millimeter(s) of mercury``, ``millimetre(s) of mercury``; kPa =
  ``kPa``, ``kilopascal(s)``.
* the values, in mmHg, lie inside ``bp.clinical.SYSTOLIC_BOUNDS`` / ``DIASTOLIC_BOUNDS`` (inclusive), and
  systolic > diastolic.
* ``subject`` names a patient; ``Reading.patient_id`` is derived from every form R4 allows:

  ===========================================  ===================================================
  ``Patient/123``                              ``123``
  ``https://server/fhir/Patient/123``          ``123`` (the server base is dropped)
  ``Patient/123/_history/2``                   ``123`` (the version is dropped)
  ``urn:uuid:<uuid>`` inside a Bundle          the ``id`` of the Patient entry whose ``fullUrl`` is
                                               that urn (the uuid itself if that Patient has no id)
  ``urn:uuid:<uuid>`` standalone               ``<uuid>`` (lower case)
  ``#p1`` (a contained Patient)                ``system|value`` of that Patient's first identifier
  ``identifier`` only (no ``reference``)       ``system|value`` (``|value`` without a system)
  ``Patient?identifier=system|value``          ``system|value`` (a conditional reference)
  ===========================================  ===================================================

  So ``Patient/123``, its absolute and versioned forms, and a ``urn:uuid`` resolved to a Patient whose id is
  123 are one patient; an identifier (``system|value``) is never matched to a Patient id (nothing here
  knows the mapping), and the same id on two servers is one key. Ids must be FHIR ids
  (``[A-Za-z0-9-.]{1,64}``); a reference to anything but a Patient (``Group/1``, a non-Patient Bundle entry,
  ``subject.type`` other than Patient) is rejected.
* exactly one of ``effectiveDateTime``, ``effectivePeriod`` (its ``start``, else its ``end``) or
  ``effectiveInstant`` is given and is either a full date-time with seconds and a UTC offset or ``Z``
  (``2024-03-01T08:15:00+01:00``, fractional seconds allowed; FHIR requires the offset whenever a time is
  given), or a date only (``2012-09-17``, not for an instant), which is read as the start of that day in
  UTC with ``Reading.effective_precision`` ``day`` (features that depend on the hour treat it as unknown).
  A time without an offset, a year or year-month only, or anything else is rejected. The result is a
  timezone-aware datetime that keeps the sender's offset.
* the time is plausible: not more than ``limits.future_tolerance_s`` (default 24 h) after ``received_ms``
  (no upper bound but the calendar's when it is None), and not before ``limits.floor`` (default
  1900-01-01, 00:00 UTC). Dates whose UTC conversion would leave years 1-9999 are always rejected, so no
  later stage can overflow.
* ``id``, when present, is a FHIR id string and becomes ``Reading.observation_id`` (else None).

Reject reasons (``RejectReason`` values; stable, used as the dead-letter ``reason`` header and in metrics):

=============================  ==========================================================================
too_large                      message longer than ``limits.max_bytes``; not decoded at all
not_utf8                       bytes are not valid UTF-8
not_json                       not a single JSON value (syntax error, NaN/Infinity literals, numbers that
                               overflow a double such as 1e309, lone surrogate escapes, a BOM, empty input)
duplicate_key                  an object (anywhere in the message) repeats a key
too_deep                       JSON nested deeper than orjson's limit (1024 levels)
not_object                     valid JSON, but not an object (array, string, number, true/false, null)
wrong_resource_type            ``resourceType`` missing, or not Observation/Bundle
bad_bundle                     Bundle without a known ``type``, or ``entry`` not an array
empty_bundle                   Bundle with no entries
no_bp_reading                  Bundle with entries, none of them a blood-pressure Observation
bad_id                         ``id`` present but not a FHIR id string
bad_status                     ``status`` missing, not a string, or not one of the accepted statuses
not_bp_panel                   ``code`` has no LOINC 85354-9 / 55284-4 / 35094-2 coding
missing_component              no component coded LOINC 8480-6 (systolic) or 8462-4 (diastolic)
duplicate_component            conflicting systolic or diastolic components, or one coded as both
bad_value                      no ``valueQuantity``, value missing, not a number (string, bool, null, ...),
                               non-finite, or qualified by a ``comparator``
unknown_unit                   unit neither mmHg nor kPa, missing, or ``code`` and ``unit`` disagree
implausible                    a value (in mmHg) outside the physiological bounds of bp.clinical
systolic_not_above_diastolic   systolic <= diastolic
missing_subject                no usable patient in ``subject`` (see the table above)
bad_time                       no effective time, more than one effective[x], an unusable time, or one
                               outside the plausible window (future beyond tolerance, before the floor)
=============================  ==========================================================================
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
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
BP_PANEL_OLD = "35094-2"
SYSTOLIC = "8480-6"
DIASTOLIC = "8462-4"
MMHG_CODE = "mm[Hg]"
MMHG_UNIT = "mmHg"

CONTENT_TYPE = "application/fhir+json"
KPA_UNIT = "kPa"
MMHG_PER_KPA = 7.50062

DEFAULT_MAX_MESSAGE_BYTES: int = 8 * 1024 * 1024
"""Default size limit (8 MiB); larger messages are rejected before decoding (setting BP_MAX_MESSAGE_BYTES)."""
DEFAULT_FUTURE_TOLERANCE_S: float = 24 * 3600.0
DEFAULT_TIME_FLOOR: date = date(1900, 1, 1)
# Times whose UTC conversion stays inside years 1-9999 whatever the offset (no later stage can overflow).
_EARLIEST_S = datetime(1, 1, 2, tzinfo=UTC).timestamp()
_LATEST_S = datetime(9999, 12, 30, tzinfo=UTC).timestamp()


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


@dataclass(frozen=True, slots=True)
class Parsed:
    """A message that held at least one blood-pressure Observation.

    ``entries`` pairs each one's position (its index in the Bundle, 0 for a lone Observation) with its
    reading or its rejection; ``skipped`` counts Bundle entries that are not blood-pressure Observations.
    """

    entries: tuple[tuple[int, Reading | Rejected], ...]
    skipped: int = 0

    @property
    def readings(self) -> tuple[Reading, ...]:
        return tuple(item for _, item in self.entries if isinstance(item, Reading))


ACCEPTED_STATUSES: tuple[str, ...] = ("final", "amended", "corrected", "preliminary")
BUNDLE_TYPES: tuple[str, ...] = (
    "collection",
    "transaction",
    "batch",
    "searchset",
    "document",
    "message",
    "history",
    "transaction-response",
    "batch-response",
)
BP_PANEL_CODES: tuple[str, ...] = (BP_PANEL, BP_PANEL_LEGACY, BP_PANEL_OLD)
_COMPONENT_CODES = (SYSTOLIC, DIASTOLIC)
LOINC_SYSTEMS = frozenset(
    {LOINC, "http://loinc.org/", "https://loinc.org", "https://loinc.org/", "urn:oid:2.16.840.1.113883.6.1"}
)
UCUM_SYSTEMS = frozenset({UCUM, "urn:oid:2.16.840.1.113883.6.8"})
MAX_DETAIL_CHARS = 200
MAX_PATIENT_KEY_CHARS = 256

# mmHg per unit, keyed by the unit token found in valueQuantity.code (UCUM) or valueQuantity.unit: exact
# spellings first (the hot path), then any spelling below after lower-casing and collapsing spaces.
_UNIT_FACTORS: dict[str, float] = {MMHG_CODE: 1.0, MMHG_UNIT: 1.0, KPA_UNIT: MMHG_PER_KPA}
UNIT_SPELLINGS: dict[str, float] = {
    **{
        spelling: 1.0
        for spelling in (
            "mm[hg]",
            "mmhg",
            "mm hg",
            "mm(hg)",
            "mm of hg",
            "mm mercury",
            "mm of mercury",
            "millimeter of mercury",
            "millimeters of mercury",
            "millimetre of mercury",
            "millimetres of mercury",
        )
    },
    **{spelling: MMHG_PER_KPA for spelling in ("kpa", "kilopascal", "kilopascals")},
}
_EFFECTIVE_KEYS = ("effectiveDateTime", "effectivePeriod", "effectiveInstant")
_DATETIME_ONLY = ["effectiveDateTime"]

_FHIR_ID = r"[A-Za-z0-9\-.]{1,64}"
_ID_RE = re.compile(_FHIR_ID, re.ASCII)
_PATIENT_REF_RE = re.compile(rf"(?:https?://\S+/)?Patient/({_FHIR_ID})(?:/_history/{_FHIR_ID})?", re.ASCII)
_URN_UUID_RE = re.compile(r"urn:uuid:([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})")
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


def parse_message(
    raw: bytes, *, received_ms: int | None = None, limits: ParseLimits = DEFAULT_LIMITS
) -> Parsed | Rejected:
    """Parse one Kafka message: an Observation or a Bundle. Never raises on bad input.

    ``received_ms`` (epoch milliseconds) anchors the plausible-time window: readings later than it plus
    ``limits.future_tolerance_s`` are rejected; None checks only the floor and the calendar.
    """
    size = len(raw)
    if size > limits.max_bytes:
        return _reject(RejectReason.TOO_LARGE, f"{size} bytes > limit of {limits.max_bytes}")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _undecodable(raw, exc)
    if not isinstance(document, dict):
        return _reject(RejectReason.NOT_OBJECT, f"JSON {type(document).__name__}, expected an object")
    repeated = _duplicate_key(raw, document)
    if repeated is not None:
        return repeated
    window = _window(received_ms, limits)
    resource_type = document.get("resourceType")
    if resource_type == "Observation":
        reading = _observation(document, window, _NO_PATIENTS)
        return reading if isinstance(reading, Rejected) else Parsed(((0, reading),))
    if resource_type == "Bundle":
        return _bundle(document, window)
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


# --- duplicate keys ----------------------------------------------------------------------------------------
# orjson keeps the last of repeated keys silently. Three steps, cheapest first, all exact:
# 1. re-serialise the parsed document (compact, as orjson writes it): if that gives back the very bytes (the
#    producer's messages), every key of the text is in the document, so none repeats (~1 us per message);
# 2. count keys: in the compact re-serialisation every key ends with `":` and nothing else does (string
#    contents escape `"`; when a `\":` shows up the parsed document is walked instead); in the text, after
#    deleting whitespace, every key ends with `":` too, and string contents can only add matches. Equal
#    counts mean no key was lost (pretty-printed senders end here; linear, in C);
# 3. more matches than keys (a repeated key, or a string containing `":`): ask the standard library, whose
#    object_pairs_hook sees every pair.


class _RepeatedKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _RepeatedKeyError(key)
        seen.add(key)
    return {}  # the values are not needed


def _duplicate_key(raw: bytes, document: dict[str, Any]) -> Rejected | None:
    try:
        compact: bytes | None = orjson.dumps(document)
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits: count by walking
        compact = None
    if compact == raw:
        return None
    keys = compact.count(b'":') if compact is not None and b'\\":' not in compact else _count_keys(document)
    if raw.translate(None, b" \t\n\r").count(b'":') == keys:
        return None
    try:
        json.loads(raw, object_pairs_hook=_no_repeats)
    except _RepeatedKeyError as repeated:
        return _reject(RejectReason.DUPLICATE_KEY, f"key {_show(repeated.key)} repeated in one object")
    except RecursionError:
        return _reject(RejectReason.TOO_DEEP, "JSON nested too deep to check for repeated keys")
    except ValueError:  # orjson accepted it; the standard library should too
        return None
    return None


def _count_keys(document: object) -> int:
    """Keys of every object in a parsed JSON document (iterative: no recursion limit)."""
    count = 0
    stack = [document]
    pop = stack.pop
    extend = stack.extend
    while stack:
        node = pop()
        if type(node) is dict:
            count += len(node)
            extend(node.values())
        elif type(node) is list:
            extend(node)
    return count


# --- bundles -----------------------------------------------------------------------------------------------
_NO_PATIENTS: Mapping[str, str | None] = {}


def _bundle(bundle: dict[str, Any], window: tuple[float, float]) -> Parsed | Rejected:
    bundle_type = bundle.get("type")
    if not (isinstance(bundle_type, str) and bundle_type in BUNDLE_TYPES):
        return _reject(RejectReason.BAD_BUNDLE, f"Bundle.type {_show(bundle_type)} is not a FHIR R4 Bundle type")
    entries = bundle.get("entry")
    if entries is None or entries == []:
        return _reject(RejectReason.EMPTY_BUNDLE, "Bundle has no entries")
    if not isinstance(entries, list):
        return _reject(RejectReason.BAD_BUNDLE, f"Bundle.entry is a {type(entries).__name__}, not an array")
    # fullUrl -> patient key (None: that entry is not a Patient), for urn:uuid subjects
    patients: dict[str, str | None] = {}
    observations: list[tuple[int, dict[str, Any]]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        request = entry.get("request")
        if not isinstance(resource, dict) or (isinstance(request, dict) and request.get("method") == "DELETE"):
            continue  # response-only entry, or a deletion: no reading
        resource_type = resource.get("resourceType")
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str):
            patients[full_url] = _patient_resource_key(resource, full_url) if resource_type == "Patient" else None
        if resource_type == "Observation" and _has_loinc(resource.get("code"), BP_PANEL_CODES):
            observations.append((index, resource))
    if not observations:
        return _reject(
            RejectReason.NO_BP_READING,
            f"{bundle_type} Bundle of {len(entries)} entries holds no blood-pressure Observation",
        )
    results: list[tuple[int, Reading | Rejected]] = []
    for index, resource in observations:
        result = _observation(resource, window, patients)
        if isinstance(result, Rejected):
            result = _reject(RejectReason(result.reason), f"entry[{index}]: {result.detail}")
        results.append((index, result))
    return Parsed(tuple(results), len(entries) - len(observations))


def _patient_resource_key(patient: dict[str, Any], full_url: str) -> str | None:
    patient_id = patient.get("id")
    if isinstance(patient_id, str) and _ID_RE.fullmatch(patient_id):
        return patient_id
    match = _URN_UUID_RE.fullmatch(full_url)
    return match.group(1).lower() if match else None


# --- one Observation ---------------------------------------------------------------------------------------
def _observation(
    obs: dict[str, Any], window: tuple[float, float], patients: Mapping[str, str | None]
) -> Reading | Rejected:
    """One Observation (its resourceType already checked) -> a Reading."""
    observation_id = obs.get("id")
    if observation_id is not None and not (isinstance(observation_id, str) and _ID_RE.fullmatch(observation_id)):
        return _reject(RejectReason.BAD_ID, f"id {_show(observation_id)} is not a FHIR id")

    status = obs.get("status")
    if not (isinstance(status, str) and status in ACCEPTED_STATUSES):
        return _reject(RejectReason.BAD_STATUS, f"status {_show(status)}, accepted: {', '.join(ACCEPTED_STATUSES)}")

    if not _has_loinc(obs.get("code"), BP_PANEL_CODES):
        return _reject(RejectReason.NOT_BP_PANEL, "code has no LOINC 85354-9, 55284-4 or 35094-2 coding")

    patient_id = _patient_key(obs, patients)
    if isinstance(patient_id, Rejected):
        return patient_id

    effective = _effective(obs, window)
    if isinstance(effective, Rejected):
        return effective

    pair = _bp_components(obs.get("component"))
    if isinstance(pair, Rejected):
        return pair
    systolic = _mmhg(pair[0][0], "systolic") if len(pair[0]) == 1 else _component_mmhg(pair[0], "systolic")
    if isinstance(systolic, Rejected):
        return systolic
    diastolic = _mmhg(pair[1][0], "diastolic") if len(pair[1]) == 1 else _component_mmhg(pair[1], "diastolic")
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
        effective=effective[0],
        systolic=systolic,
        diastolic=diastolic,
        observation_id=observation_id,
        effective_precision=effective[1],
    )


def _has_loinc(concept: object, wanted: tuple[str, ...]) -> bool:
    if not isinstance(concept, dict):
        return False
    codings = concept.get("coding")
    if not isinstance(codings, list):
        return False
    for coding in codings:
        if isinstance(coding, dict) and coding.get("code") in wanted:
            system = coding.get("system")
            if system == LOINC or (isinstance(system, str) and system in LOINC_SYSTEMS):
                return True
    return False


def _bp_components(components: object) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | Rejected:
    """The systolic and the diastolic components (each one or more); other components are ignored."""
    systolic: list[dict[str, Any]] = []
    diastolic: list[dict[str, Any]] = []
    if isinstance(components, list):
        for index, component in enumerate(components):
            if not isinstance(component, dict):
                continue
            is_systolic = is_diastolic = False
            concept = component.get("code")
            codings = concept.get("coding") if isinstance(concept, dict) else None
            for coding in codings if isinstance(codings, list) else ():
                if isinstance(coding, dict):
                    code = coding.get("code")
                    if code in _COMPONENT_CODES:
                        system = coding.get("system")
                        if system == LOINC or (isinstance(system, str) and system in LOINC_SYSTEMS):
                            is_systolic = is_systolic or code == SYSTOLIC
                            is_diastolic = is_diastolic or code == DIASTOLIC
            if is_systolic and is_diastolic:
                return _reject(
                    RejectReason.DUPLICATE_COMPONENT, f"component[{index}] coded both systolic and diastolic"
                )
            if is_systolic:
                systolic.append(component)
            elif is_diastolic:
                diastolic.append(component)
    if not systolic:
        return _reject(RejectReason.MISSING_COMPONENT, f"no component coded LOINC {SYSTOLIC} (systolic)")
    if not diastolic:
        return _reject(RejectReason.MISSING_COMPONENT, f"no component coded LOINC {DIASTOLIC} (diastolic)")
    return systolic, diastolic


def _component_mmhg(components: list[dict[str, Any]], name: str) -> float | Rejected:
    """The value in mmHg of one component, or of repeats that all agree on it."""
    value = _mmhg(components[0], name)
    if len(components) == 1:
        return value
    for repeat in components[1:]:
        again = _mmhg(repeat, name)
        if isinstance(value, Rejected):
            return value
        if isinstance(again, Rejected):
            return again
        if again != value:
            return _reject(
                RejectReason.DUPLICATE_COMPONENT, f"conflicting {name} components: {value:g} and {again:g} mmHg"
            )
    return value


def _unit_factor(token: object) -> float | None:
    if not isinstance(token, str):
        return None
    factor = _UNIT_FACTORS.get(token)
    if factor is None and len(token) <= 40:
        factor = UNIT_SPELLINGS.get(" ".join(token.lower().split()))
    return factor


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
    # A (UCUM) code decides; the unit text only counts when there is no usable code.
    if isinstance(code, str) and (
        system is None or system == UCUM or (isinstance(system, str) and system in UCUM_SYSTEMS)
    ):
        has_code = True
        code_factor = _UNIT_FACTORS.get(code) or _unit_factor(code)  # exact spelling first
    else:
        has_code = False
        code_factor = None
    unit_factor = (_UNIT_FACTORS.get(unit) or _unit_factor(unit)) if isinstance(unit, str) else None
    if code_factor is not None and unit_factor is not None and code_factor != unit_factor:
        return _reject(RejectReason.UNKNOWN_UNIT, f"{name}: code {_show(code)} and unit {_show(unit)} disagree")
    factor = code_factor if has_code else unit_factor
    if factor is None:
        return _reject(
            RejectReason.UNKNOWN_UNIT,
            f"{name}: unit {_show(code if has_code else unit)}, expected mm[Hg] or kPa",
        )
    return number if factor == 1.0 else round(number * factor, 2)


# --- subject -----------------------------------------------------------------------------------------------
def _patient_key(obs: dict[str, Any], patients: Mapping[str, str | None]) -> str | Rejected:
    """The patient key of ``subject`` (every R4 form; see the table in the module docstring)."""
    subject = obs.get("subject")
    if not isinstance(subject, dict):
        return _reject(RejectReason.MISSING_SUBJECT, "no subject")
    kind = subject.get("type")
    if kind is not None and kind != "Patient":
        return _reject(RejectReason.MISSING_SUBJECT, f"subject.type {_show(kind)} is not Patient")
    reference = subject.get("reference")
    if reference is None:
        key = _identifier_key(subject.get("identifier"))
        if key is None:
            return _reject(RejectReason.MISSING_SUBJECT, "subject has neither a reference nor an identifier value")
        return key
    if not isinstance(reference, str):
        return _reject(RejectReason.MISSING_SUBJECT, f"subject.reference {_show(reference)} is not a string")
    if reference.startswith("Patient/") and _ID_RE.fullmatch(reference, 8):  # the common form, fast
        return reference[8:]
    match = _PATIENT_REF_RE.fullmatch(reference)
    if match:
        return match.group(1)
    if reference.startswith("urn:uuid:"):
        if reference in patients:
            key = patients[reference]
            if key is None:
                return _reject(
                    RejectReason.MISSING_SUBJECT, f"subject {_show(reference)} is a Bundle entry, not a Patient"
                )
            return key
        uuid = _URN_UUID_RE.fullmatch(reference)
        if uuid:
            return uuid.group(1).lower()
    elif reference.startswith("#"):
        return _contained_patient_key(obs.get("contained"), reference[1:])
    elif reference.startswith("Patient?identifier="):  # a conditional reference (transaction Bundles)
        token = urllib.parse.unquote(reference[19:])
        if "&" not in token and token.strip("|"):
            system, bar, value = token.rpartition("|")
            key = _identifier_key({"system": system or None, "value": value} if bar else {"value": value})
            if key is not None:
                return key
    return _reject(RejectReason.MISSING_SUBJECT, f"subject.reference {_show(reference)} is not a Patient reference")


def _identifier_key(identifier: object) -> str | None:
    """``system|value`` of an Identifier (``|value`` without a system); None when it has no usable value."""
    if not isinstance(identifier, dict):
        return None
    value = identifier.get("value")
    system = identifier.get("system")
    if not isinstance(value, str) or not value.strip() or (system is not None and not isinstance(system, str)):
        return None
    key = f"{system or ''}|{value}"
    return key if len(key) <= MAX_PATIENT_KEY_CHARS else None


def _contained_patient_key(contained: object, local_id: str) -> str | Rejected:
    if isinstance(contained, list):
        for resource in contained:
            if isinstance(resource, dict) and resource.get("id") == local_id:
                if resource.get("resourceType") != "Patient":
                    break
                identifiers = resource.get("identifier")
                for identifier in identifiers if isinstance(identifiers, list) else ():
                    key = _identifier_key(identifier)
                    if key is not None:
                        return key
                return _reject(
                    RejectReason.MISSING_SUBJECT, f"contained Patient #{_show(local_id)} has no identifier value"
                )
    return _reject(RejectReason.MISSING_SUBJECT, f"subject #{_show(local_id)} is not a contained Patient")


# --- time --------------------------------------------------------------------------------------------------
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
