"""The producer's strict FHIR R4 blood-pressure Observation (vital-signs BP profile) for one Reading."""

from __future__ import annotations

from typing import Any

from bp.fhir.codes import (
    BP_PANEL,
    DIASTOLIC,
    INTERPRETATION_SYSTEM,
    LOINC,
    OBSERVATION_CATEGORY,
    SYSTOLIC,
    UCUM,
    VITAL_SIGNS_BP_PROFILE,
)
from bp.fhir.units import MMHG_CODE, MMHG_UNIT
from bp.reading import Reading


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
