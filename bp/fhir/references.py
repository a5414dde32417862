"""The patient key of an Observation's subject (every R4 reference form) and of Bundle Patient entries."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from bp.fhir.reasons import RejectReason, _reject, _show
from bp.reading import Rejected

MAX_PATIENT_KEY_CHARS = 256

_FHIR_ID = r"[A-Za-z0-9\-.]{1,64}"
_ID_RE = re.compile(_FHIR_ID, re.ASCII)
_PATIENT_REF_RE = re.compile(rf"(?:https?://\S+/)?Patient/({_FHIR_ID})(?:/_history/{_FHIR_ID})?", re.ASCII)
_URN_UUID_RE = re.compile(r"urn:uuid:([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})")

# The fullUrl -> patient key map of a lone Observation (no Bundle entries to resolve urn:uuid against).
_NO_PATIENTS: Mapping[str, str | None] = {}


def _patient_resource_key(patient: dict[str, Any], full_url: str) -> str | None:
    patient_id = patient.get("id")
    if isinstance(patient_id, str) and _ID_RE.fullmatch(patient_id):
        return patient_id
    match = _URN_UUID_RE.fullmatch(full_url)
    return match.group(1).lower() if match else None


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

