"""Parsing (consumer hot path): plain dict walking, no models, no I/O, never raises on bad input.

The contract (accepted shapes, reject reasons) is the docstring of :mod:`bp.fhir`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from bp.clinical import DIASTOLIC_BOUNDS, SYSTOLIC_BOUNDS
from bp.fhir.codes import (
    _COMPONENT_CODES,
    ACCEPTED_STATUSES,
    BP_PANEL_CODES,
    BUNDLE_TYPES,
    DIASTOLIC,
    LOINC,
    LOINC_SYSTEMS,
    SYSTOLIC,
)
from bp.fhir.decode import _duplicate_key, _undecodable
from bp.fhir.limits import DEFAULT_LIMITS, ParseLimits
from bp.fhir.reasons import RejectReason, _reject, _show
from bp.fhir.references import _ID_RE, _NO_PATIENTS, _patient_key, _patient_resource_key
from bp.fhir.times import _effective, _window
from bp.fhir.units import _component_mmhg, _mmhg
from bp.reading import Reading, Rejected


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
