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

from bp.fhir.build import build_observation
from bp.fhir.codes import (
    ACCEPTED_STATUSES,
    BP_PANEL,
    BP_PANEL_CODES,
    BP_PANEL_LEGACY,
    BP_PANEL_OLD,
    BUNDLE_TYPES,
    CONTENT_TYPE,
    DIASTOLIC,
    INTERPRETATION_SYSTEM,
    LOINC,
    LOINC_SYSTEMS,
    OBSERVATION_CATEGORY,
    SYSTOLIC,
    UCUM,
    UCUM_SYSTEMS,
    VITAL_SIGNS_BP_PROFILE,
)
from bp.fhir.limits import (
    DEFAULT_FUTURE_TOLERANCE_S,
    DEFAULT_LIMITS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TIME_FLOOR,
    ParseLimits,
)
from bp.fhir.parse import Parsed, parse_message
from bp.fhir.reasons import MAX_DETAIL_CHARS, RejectReason
from bp.fhir.references import MAX_PATIENT_KEY_CHARS
from bp.fhir.units import KPA_UNIT, MMHG_CODE, MMHG_PER_KPA, MMHG_UNIT, UNIT_SPELLINGS

__all__ = [
    "ACCEPTED_STATUSES",
    "BP_PANEL",
    "BP_PANEL_CODES",
    "BP_PANEL_LEGACY",
    "BP_PANEL_OLD",
    "BUNDLE_TYPES",
    "CONTENT_TYPE",
    "DEFAULT_FUTURE_TOLERANCE_S",
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TIME_FLOOR",
    "DIASTOLIC",
    "INTERPRETATION_SYSTEM",
    "KPA_UNIT",
    "LOINC",
    "LOINC_SYSTEMS",
    "MAX_DETAIL_CHARS",
    "MAX_PATIENT_KEY_CHARS",
    "MMHG_CODE",
    "MMHG_PER_KPA",
    "MMHG_UNIT",
    "OBSERVATION_CATEGORY",
    "SYSTOLIC",
    "UCUM",
    "UCUM_SYSTEMS",
    "UNIT_SPELLINGS",
    "VITAL_SIGNS_BP_PROFILE",
    "ParseLimits",
    "Parsed",
    "RejectReason",
    "build_observation",
    "parse_message",
]
