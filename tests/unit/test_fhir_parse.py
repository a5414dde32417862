"""bp.fhir.parse_message: accepted shapes, every reject reason, properties; build_observation conformance.

Expected values are written out here from the FHIR spec and the brief (codes, units, bounds, reason strings),
never read back from the module under test.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bp.fhir
from bp.fhir import DEFAULT_MAX_MESSAGE_BYTES, Parsed, ParseLimits, RejectReason, build_observation
from bp.fhir import parse_message as parse_with_limits
from bp.reading import Reading, Rejected

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

LIMIT = 65_536  # a small size limit for the tests (the default is 8 MiB)
SMALL = ParseLimits(max_bytes=LIMIT)
RECEIVED_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, the arrival time the tests' records carry


def parse_message(message: bytes) -> Parsed | Rejected:
    """The parser with a 64 KiB limit and a fixed arrival time (2026-01-01T00:00Z)."""
    return parse_with_limits(message, received_ms=RECEIVED_MS, limits=SMALL)


ALL_REASONS = {
    "too_large",
    "not_utf8",
    "not_json",
    "too_deep",
    "not_object",
    "wrong_resource_type",
    "bad_bundle",
    "empty_bundle",
    "bad_id",
    "bad_status",
    "not_bp_panel",
    "missing_component",
    "duplicate_component",
    "duplicate_key",
    "no_bp_reading",
    "bad_value",
    "unknown_unit",
    "implausible",
    "systolic_not_above_diastolic",
    "missing_subject",
    "bad_time",
}


# --- a valid Observation written by hand (independent of build_observation) ------------------------------


def _component(code: str, value: object, unit: str = "mmHg", ucum: str = "mm[Hg]") -> dict[str, Any]:
    return {
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": ucum},
    }


def obs(systolic: object = 120, diastolic: object = 80, **fields: Any) -> dict[str, Any]:
    """A valid BP Observation; keyword fields replace top-level keys (value None deletes the key)."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "obs-1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Patient/p-001"},
        "effectiveDateTime": "2024-03-01T08:15:30+01:00",
        "component": [_component("8480-6", systolic), _component("8462-4", diastolic)],
    }
    for key, value in fields.items():
        if value is None:
            resource.pop(key, None)
        else:
            resource[key] = value
    return resource


def raw(resource: object) -> bytes:
    return orjson.dumps(resource)


def with_quantity(**quantity: Any) -> dict[str, Any]:
    """Observation whose systolic valueQuantity is exactly ``quantity``."""
    resource = obs()
    resource["component"][0]["valueQuantity"] = quantity
    return resource


def with_literal_value(literal: bytes) -> bytes:
    """Observation bytes whose systolic value is a raw JSON token (NaN, Infinity, 1e309 ...)."""
    text = raw(obs(systolic="__VALUE__"))
    assert text.count(b'"__VALUE__"') == 1
    return text.replace(b'"__VALUE__"', literal)


def bundle(*resources: object, bundle_type: str = "collection") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": bundle_type, "entry": [{"resource": r} for r in resources]}


def padded_to(size: int) -> bytes:
    body = raw(obs())
    return body + b" " * (size - len(body))


NESTED_DEEP = b"[" * 2_000 + b"]" * 2_000  # 4 kB; Python's json raises RecursionError on it


# --- accepted messages -----------------------------------------------------------------------------------

P01 = timezone(timedelta(hours=1))
EFFECTIVE = datetime(2024, 3, 1, 8, 15, 30, tzinfo=P01)


def only(result: Parsed | Rejected) -> Reading:
    assert isinstance(result, Parsed), result
    assert len(result.entries) == 1
    _, reading = result.entries[0]
    assert isinstance(reading, Reading), reading
    return reading


def test_round_trip_through_build_observation() -> None:
    reading = Reading(
        patient_id="p-042",
        effective=datetime(2024, 5, 17, 21, 4, 9, 250000, tzinfo=timezone(timedelta(hours=-5))),
        systolic=128.5,
        diastolic=81.0,
        observation_id="3f2a9c1e-0b7d-4d5e-9a61-2c8f7e4b1d00",
    )
    parsed = only(parse_message(orjson.dumps(build_observation(reading, device="cuff", interpretation="N"))))
    assert parsed == reading
    assert parsed.effective.utcoffset() == timedelta(hours=-5)


def test_hand_written_observation() -> None:
    assert only(parse_message(raw(obs()))) == Reading("p-001", EFFECTIVE, 120.0, 80.0, "obs-1")


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(
            obs(component=[_component("8462-4", 70), _component("8480-6", 110)]),
            Reading("p-001", EFFECTIVE, 110.0, 70.0, "obs-1"),
            id="components-reversed",
        ),
        pytest.param(
            obs(
                component=[
                    {
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                        "valueQuantity": {"value": 72, "unit": "/min", "code": "/min"},
                    },
                    _component("8480-6", 118),
                    "not a component",
                    _component("8462-4", 76),
                ]
            ),
            Reading("p-001", EFFECTIVE, 118.0, 76.0, "obs-1"),
            id="heart-rate-and-junk-components-ignored",
        ),
        pytest.param(
            obs(
                component=[
                    _component("8480-6", 16, unit="kPa", ucum="kPa"),
                    _component("8462-4", 10.5, unit="kPa", ucum="kPa"),
                ]
            ),
            # 16 x 7.50062 = 120.00992 -> 120.01 ; 10.5 x 7.50062 = 78.75651 -> 78.76
            Reading("p-001", EFFECTIVE, 120.01, 78.76, "obs-1"),
            id="kPa-converted",
        ),
        pytest.param(
            obs(code={"coding": [{"system": "http://loinc.org", "code": "55284-4"}]}),
            Reading("p-001", EFFECTIVE, 120.0, 80.0, "obs-1"),
            id="legacy-panel-55284-4",
        ),
        pytest.param(
            obs(
                code={
                    "coding": [
                        {"system": "http://snomed.info/sct", "code": "75367002"},
                        {"system": "http://loinc.org", "code": "85354-9"},
                    ]
                }
            ),
            Reading("p-001", EFFECTIVE, 120.0, 80.0, "obs-1"),
            id="panel-coding-not-first",
        ),
        pytest.param(
            obs(effectiveDateTime=None, effectivePeriod={"start": "2024-03-01T07:15:30Z"}),
            Reading("p-001", datetime(2024, 3, 1, 7, 15, 30, tzinfo=UTC), 120.0, 80.0, "obs-1"),
            id="effectivePeriod.start",
        ),
        pytest.param(
            obs(effectiveDateTime=None, effectiveInstant="2024-03-01T07:15:30.000Z"),
            Reading("p-001", datetime(2024, 3, 1, 7, 15, 30, tzinfo=UTC), 120.0, 80.0, "obs-1"),
            id="effectiveInstant",
        ),
        pytest.param(
            obs(effectiveDateTime="2024-03-01T08:15:30.123456789+01:00"),
            Reading("p-001", EFFECTIVE.replace(microsecond=123456), 120.0, 80.0, "obs-1"),
            id="nine-fraction-digits",
        ),
        pytest.param(
            obs(effectiveDateTime="2012-09-17"),
            Reading("p-001", datetime(2012, 9, 17, tzinfo=UTC), 120.0, 80.0, "obs-1", effective_precision="day"),
            id="date-only-is-midnight-utc-precision-day",
        ),
        pytest.param(
            obs(subject={"reference": "https://fhir.example.org/r4/Patient/p-001"}),
            Reading("p-001", EFFECTIVE, 120.0, 80.0, "obs-1"),
            id="absolute-subject-url",
        ),
        pytest.param(
            obs(subject={"reference": "Patient/p-001/_history/3", "display": "Amy"}),
            Reading("p-001", EFFECTIVE, 120.0, 80.0, "obs-1"),
            id="versioned-subject",
        ),
        pytest.param(obs(id=None), Reading("p-001", EFFECTIVE, 120.0, 80.0, None), id="no-id-gives-none"),
        pytest.param(obs(status="amended"), Reading("p-001", EFFECTIVE, 120.0, 80.0, "obs-1"), id="status-amended"),
        pytest.param(obs(status="corrected"), Reading("p-001", EFFECTIVE, 120.0, 80.0, "obs-1"), id="status-corrected"),
        pytest.param(
            obs(status="preliminary"),
            Reading("p-001", EFFECTIVE, 120.0, 80.0, "obs-1"),
            id="status-preliminary",
        ),
        pytest.param(
            with_quantity(value=121.5, unit="mm[Hg]"),
            Reading("p-001", EFFECTIVE, 121.5, 80.0, "obs-1"),
            id="unit-text-only-old-hl7-style",
        ),
        pytest.param(
            with_quantity(value=121, code="mmHg"),
            Reading("p-001", EFFECTIVE, 121.0, 80.0, "obs-1"),
            id="code-mmHg-without-system",
        ),
        pytest.param(
            with_quantity(value=121, unit="millimetres of mercury", system="http://unitsofmeasure.org", code="mm[Hg]"),
            Reading("p-001", EFFECTIVE, 121.0, 80.0, "obs-1"),
            id="ucum-code-wins-over-free-text-unit",
        ),
        # plausibility bounds are inclusive: 40-300 systolic, 20-200 diastolic
        pytest.param(obs(40, 20), Reading("p-001", EFFECTIVE, 40.0, 20.0, "obs-1"), id="lowest-bounds"),
        pytest.param(obs(300, 200), Reading("p-001", EFFECTIVE, 300.0, 200.0, "obs-1"), id="highest-bounds"),
        pytest.param(obs(80.5, 80), Reading("p-001", EFFECTIVE, 80.5, 80.0, "obs-1"), id="systolic-just-above"),
    ],
)
def test_accepted(resource: dict[str, Any], expected: Reading) -> None:
    parsed = only(parse_message(raw(resource)))
    assert parsed == expected
    assert parsed.effective.tzinfo is not None
    assert parsed.effective.utcoffset() == expected.effective.utcoffset()


def test_bundle_of_three_gives_three_readings_in_order() -> None:
    message = bundle(
        obs(110, 70, id="a"),
        obs(150, 95, id="b", subject={"reference": "Patient/p-002"}),
        obs(95, 58, id="c", effectiveDateTime="2024-03-02T09:00:00Z"),
        bundle_type="transaction",
    )
    result = parse_message(raw(message))
    assert result == Parsed(
        (
            (0, Reading("p-001", EFFECTIVE, 110.0, 70.0, "a")),
            (1, Reading("p-002", EFFECTIVE, 150.0, 95.0, "b")),
            (2, Reading("p-001", datetime(2024, 3, 2, 9, tzinfo=UTC), 95.0, 58.0, "c")),
        ),
        skipped=0,
    )


def test_message_of_exactly_the_limit_is_accepted() -> None:
    message = padded_to(LIMIT)
    assert len(message) == LIMIT
    assert only(parse_message(message)).systolic == 120.0


def test_official_hl7_r4_example() -> None:
    """HL7 R4 observation-example-bloodpressure: 107/60 mmHg, Patient/example, date-only effectiveDateTime."""
    data = (FIXTURES / "observation-example-bloodpressure.json").read_bytes()
    document = json.loads(data)
    assert document["effectiveDateTime"] == "2012-09-17"  # the real example has no time: read as 00:00Z
    reading = only(parse_message(data))
    assert reading == Reading(
        patient_id="example",
        effective=datetime(2012, 9, 17, tzinfo=UTC),
        systolic=107.0,
        diastolic=60.0,
        observation_id="blood-pressure",
        effective_precision="day",
    )


# --- rejected messages -----------------------------------------------------------------------------------


def _two_systolic() -> dict[str, Any]:
    resource = obs()
    resource["component"].append(_component("8480-6", 130))
    return resource


def _both_codes_one_component() -> dict[str, Any]:
    resource = obs()
    resource["component"][0]["code"]["coding"].append({"system": "http://loinc.org", "code": "8462-4"})
    return resource


def _uncoded_systolic() -> dict[str, Any]:
    resource = obs()
    resource["component"][0]["code"] = {"coding": [{"system": "http://snomed.info/sct", "code": "8480-6"}]}
    return resource


def _systolic_without_code() -> dict[str, Any]:
    resource = obs()
    del resource["component"][0]["code"]
    return resource


def _systolic_without_quantity() -> dict[str, Any]:
    resource = obs()
    del resource["component"][0]["valueQuantity"]
    resource["component"][0]["dataAbsentReason"] = {"text": "not asked"}
    return resource


REJECTED: list[Any] = [
    # size and encoding
    pytest.param(padded_to(LIMIT + 1), "too_large", id="limit-plus-one-byte"),
    pytest.param(b"[" * 100_000, "too_large", id="100k-nested-brackets"),
    pytest.param(b"\xff\xfe{", "not_utf8", id="utf16-bom-bytes"),
    pytest.param(raw(obs(id="x")).replace(b'"x"', b'"\xc3\x28"'), "not_utf8", id="bad-utf8-inside-string"),
    pytest.param(b"\xef\xbb\xbf" + raw(obs()), "not_json", id="utf8-bom"),
    # JSON
    pytest.param(b"", "not_json", id="empty"),
    pytest.param(b"{", "not_json", id="truncated"),
    pytest.param(raw(obs()) + b"{}", "not_json", id="trailing-data"),
    pytest.param(with_literal_value(b"NaN"), "not_json", id="NaN-literal"),
    pytest.param(with_literal_value(b"Infinity"), "not_json", id="Infinity-literal"),
    pytest.param(with_literal_value(b"-Infinity"), "not_json", id="minus-Infinity-literal"),
    pytest.param(with_literal_value(b"1e309"), "not_json", id="1e309-overflows-double"),
    pytest.param(NESTED_DEEP, "too_deep", id="2000-nested-arrays"),
    pytest.param(b'{"a":' * 1_500 + b"1" + b"}" * 1_500, "too_deep", id="1500-nested-objects"),
    pytest.param(b"[]", "not_object", id="list"),
    pytest.param(b"[" + raw(obs()) + b"]", "not_object", id="observation-in-a-list"),
    pytest.param(b"42", "not_object", id="number"),
    pytest.param(b'"Observation"', "not_object", id="string"),
    pytest.param(b"null", "not_object", id="null"),
    pytest.param(b"true", "not_object", id="true"),
    # resource type, id, status, code
    pytest.param(raw(obs(resourceType="Patient")), "wrong_resource_type", id="patient"),
    pytest.param(raw(obs(resourceType=None)), "wrong_resource_type", id="no-resourceType"),
    pytest.param(raw(obs(resourceType=["Observation"])), "wrong_resource_type", id="resourceType-list"),
    pytest.param(raw(obs(id=17)), "bad_id", id="numeric-id"),
    pytest.param(raw(obs(id="has space")), "bad_id", id="id-with-space"),
    pytest.param(raw(obs(id="")), "bad_id", id="empty-id"),
    pytest.param(raw(obs(status="entered-in-error")), "bad_status", id="entered-in-error"),
    pytest.param(raw(obs(status="cancelled")), "bad_status", id="cancelled"),
    pytest.param(raw(obs(status="registered")), "bad_status", id="registered"),
    pytest.param(raw(obs(status="unknown")), "bad_status", id="unknown"),
    pytest.param(raw(obs(status="FINAL")), "bad_status", id="uppercase-final"),
    pytest.param(raw(obs(status=None)), "bad_status", id="no-status"),
    pytest.param(raw(obs(status=["final"])), "bad_status", id="status-list-unhashable"),
    pytest.param(
        raw(obs(code={"coding": [{"system": "http://loinc.org", "code": "8867-4"}]})),
        "not_bp_panel",
        id="heart-rate-code",
    ),
    pytest.param(
        raw(obs(code={"coding": [{"system": "http://snomed.info/sct", "code": "85354-9"}]})),
        "not_bp_panel",
        id="panel-code-wrong-system",
    ),
    pytest.param(raw(obs(code={"text": "Blood pressure"})), "not_bp_panel", id="text-only-code"),
    pytest.param(raw(obs(code=None)), "not_bp_panel", id="no-code"),
    # components
    pytest.param(raw(obs(component=None)), "missing_component", id="no-components"),
    pytest.param(raw(obs(component={"a": 1})), "missing_component", id="component-object"),
    pytest.param(raw(obs(component=[_component("8480-6", 120)])), "missing_component", id="only-systolic"),
    pytest.param(raw(obs(component=[_component("8462-4", 80)])), "missing_component", id="only-diastolic"),
    pytest.param(raw(_uncoded_systolic()), "missing_component", id="systolic-not-loinc"),
    pytest.param(raw(_systolic_without_code()), "missing_component", id="systolic-without-code"),
    pytest.param(raw(_two_systolic()), "duplicate_component", id="two-systolic"),
    pytest.param(raw(_both_codes_one_component()), "duplicate_component", id="one-component-both-codes"),
    # values
    pytest.param(raw(obs(systolic="120")), "bad_value", id="string-value"),
    pytest.param(raw(obs(systolic=True)), "bad_value", id="true-value"),
    pytest.param(raw(obs(diastolic=False)), "bad_value", id="false-value"),
    pytest.param(raw(obs(systolic=None)), "bad_value", id="null-value"),
    pytest.param(raw(obs(systolic=[120])), "bad_value", id="list-value"),
    pytest.param(raw(with_quantity(unit="mmHg", code="mm[Hg]")), "bad_value", id="no-value"),
    pytest.param(raw(_systolic_without_quantity()), "bad_value", id="data-absent"),
    pytest.param(raw(with_quantity(value=300, comparator=">", code="mm[Hg]")), "bad_value", id="comparator"),
    # units
    pytest.param(raw(with_quantity(value=120, code="cm[H2O]")), "unknown_unit", id="cmH2O"),
    pytest.param(raw(with_quantity(value=120, unit="mm")), "unknown_unit", id="mm-without-mercury"),
    pytest.param(raw(with_quantity(value=120)), "unknown_unit", id="no-unit"),
    pytest.param(raw(with_quantity(value=120, code="mm[Hg]", unit="kPa")), "unknown_unit", id="code-vs-unit"),
    pytest.param(
        raw(with_quantity(value=120, system="http://snomed.info/sct", code="259018001")),
        "unknown_unit",
        id="non-ucum-code-no-unit",
    ),
    # plausibility: both sides of every bound (inclusive bounds are accepted above)
    pytest.param(raw(obs(39.9, 20)), "implausible", id="systolic-39.9"),
    pytest.param(raw(obs(300.1, 100)), "implausible", id="systolic-300.1"),
    pytest.param(raw(obs(100, 19.9)), "implausible", id="diastolic-19.9"),
    pytest.param(raw(obs(250, 200.1)), "implausible", id="diastolic-200.1"),
    pytest.param(raw(obs(-120, -180)), "implausible", id="negative"),
    pytest.param(raw(obs(1e300, 80)), "implausible", id="huge"),
    pytest.param(
        # 40 kPa = 300.02 mmHg: bounds apply after conversion
        raw(obs(component=[_component("8480-6", 40, "kPa", "kPa"), _component("8462-4", 10, "kPa", "kPa")])),
        "implausible",
        id="kPa-40-is-above-300-mmHg",
    ),
    pytest.param(
        # 120 read as kPa would be 900 mmHg
        raw(obs(component=[_component("8480-6", 120, "kPa", "kPa"), _component("8462-4", 80)])),
        "implausible",
        id="mmHg-value-labelled-kPa",
    ),
    pytest.param(raw(obs(80, 80)), "systolic_not_above_diastolic", id="equal"),
    pytest.param(raw(obs(70, 90)), "systolic_not_above_diastolic", id="swapped"),
    # subject
    pytest.param(raw(obs(subject=None)), "missing_subject", id="no-subject"),
    pytest.param(raw(obs(subject={"reference": ""})), "missing_subject", id="empty-reference"),
    pytest.param(raw(obs(subject={"reference": "Patient/"})), "missing_subject", id="no-patient-id"),
    pytest.param(raw(obs(subject={"reference": "Group/g1"})), "missing_subject", id="group"),
    pytest.param(raw(obs(subject={"reference": "urn:uuid:0b7d4d5e-9a61-2c8f"})), "missing_subject", id="urn-uuid"),
    pytest.param(raw(obs(subject={"identifier": {"system": "urn:mrn"}})), "missing_subject", id="identifier-no-value"),
    pytest.param(raw(obs(subject={"display": "Amy Shaw"})), "missing_subject", id="display-only"),
    pytest.param(
        raw(obs(subject={"reference": "urn:uuid:0b7d4d5e-9a61-4c8f-8e2a-2c8f7e4b1d00", "type": "Group"})),
        "missing_subject",
        id="typed-group",
    ),
    pytest.param(raw(obs(subject={"reference": "#p1"})), "missing_subject", id="contained-missing"),
    pytest.param(
        raw(obs(subject={"reference": "Patient?name=peter&birthdate=2000-01-01"})),
        "missing_subject",
        id="conditional-search-not-an-identifier",
    ),
    pytest.param(
        raw(obs(subject={"reference": "#p1"}, contained=[{"resourceType": "Patient", "id": "p1"}])),
        "missing_subject",
        id="contained-patient-without-identifier",
    ),
    pytest.param(
        raw(obs(subject={"reference": "#d1"}, contained=[{"resourceType": "Device", "id": "d1"}])),
        "missing_subject",
        id="contained-device",
    ),
    pytest.param(raw(obs(subject="Patient/p-001")), "missing_subject", id="subject-string"),
    pytest.param(raw(obs(subject={"reference": 7})), "missing_subject", id="reference-number"),
    # time
    pytest.param(raw(obs(effectiveDateTime=None)), "bad_time", id="no-time"),
    pytest.param(raw(obs(effectiveDateTime="2024-03-01T08:15:30")), "bad_time", id="naive-time"),
    pytest.param(raw(obs(effectiveDateTime="2024-03-01T08:15+01:00")), "bad_time", id="no-seconds"),
    pytest.param(raw(obs(effectiveDateTime="2024-03")), "bad_time", id="year-month"),
    pytest.param(raw(obs(effectiveDateTime="2024")), "bad_time", id="year"),
    pytest.param(raw(obs(effectiveDateTime="yesterday")), "bad_time", id="garbage"),
    pytest.param(raw(obs(effectiveDateTime="2024-02-30T08:00:00Z")), "bad_time", id="february-30"),
    pytest.param(raw(obs(effectiveDateTime="2024-03-01T24:00:00Z")), "bad_time", id="hour-24"),
    pytest.param(raw(obs(effectiveDateTime="2024-03-01T08:00:00+15:00")), "bad_time", id="offset-15h"),
    pytest.param(raw(obs(effectiveDateTime="2024-03-01 08:00:00Z")), "bad_time", id="space-separator"),
    pytest.param(raw(obs(effectiveDateTime="２０２４-03-01")), "bad_time", id="fullwidth-digits"),
    pytest.param(raw(obs(effectiveDateTime=1709277330)), "bad_time", id="epoch-number"),
    pytest.param(raw(obs(effectivePeriod={"start": "2024-03-01T08:15:30Z"})), "bad_time", id="two-effective-x"),
    pytest.param(raw(obs(effectiveDateTime=None, effectivePeriod={})), "bad_time", id="empty-period"),
    pytest.param(raw(obs(effectiveDateTime=None, effectivePeriod="2024")), "bad_time", id="period-string"),
    # plausible-time window (arrival 2026-01-01T00:00Z, tolerance 24 h, floor 1900-01-01)
    pytest.param(raw(obs(effectiveDateTime="2026-01-02T00:00:01Z")), "bad_time", id="future-beyond-24h"),
    pytest.param(raw(obs(effectiveDateTime="2026-01-03")), "bad_time", id="future-date-only"),
    pytest.param(raw(obs(effectiveDateTime="1899-12-31T23:59:59Z")), "bad_time", id="before-floor"),
    pytest.param(raw(obs(effectiveDateTime="1000-06-01")), "bad_time", id="year-1000"),
    pytest.param(raw(obs(effectiveDateTime="9999-12-31T23:00:00-05:00")), "bad_time", id="year-9999-minus-5h"),
    pytest.param(raw(obs(effectiveDateTime="0001-01-01T00:00:00+14:00")), "bad_time", id="year-1-plus-14h"),
    pytest.param(raw(obs(effectiveDateTime="9999-12-31")), "bad_time", id="year-9999-date"),
    pytest.param(raw(obs(effectiveDateTime=None, effectiveInstant="2024-03-01")), "bad_time", id="date-only-instant"),
    # bundles
    pytest.param(raw(bundle()), "empty_bundle", id="empty-bundle"),
    pytest.param(raw({"resourceType": "Bundle", "type": "collection"}), "empty_bundle", id="bundle-no-entry"),
    pytest.param(raw(bundle(obs(), bundle_type="transaction-reply")), "bad_bundle", id="unknown-bundle-type"),
    pytest.param(raw({"resourceType": "Bundle", "entry": [{"resource": obs()}]}), "bad_bundle", id="bundle-no-type"),
    pytest.param(
        raw({"resourceType": "Bundle", "type": "batch", "entry": {"resource": obs()}}),
        "bad_bundle",
        id="entry-object",
    ),
    pytest.param(
        raw({"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "DELETE"}}]}),
        "no_bp_reading",
        id="entry-without-resource",
    ),
    pytest.param(
        raw(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"resource": obs(), "request": {"method": "DELETE", "url": "Observation/obs-1"}}],
            }
        ),
        "no_bp_reading",
        id="delete-is-not-a-reading",
    ),
    pytest.param(
        raw(
            bundle(
                {"resourceType": "Patient", "id": "p-001"},
                obs(code={"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}),
            )
        ),
        "no_bp_reading",
        id="bundle-patient-and-heart-rate",
    ),
    pytest.param(raw(bundle(bundle(obs()))), "no_bp_reading", id="nested-bundle"),
    # repeated keys (FHIR JSON forbids them; last-wins would turn cancelled into final)
    pytest.param(
        b'{"resourceType":"Observation","status":"cancelled",' + raw(obs())[1:],
        "duplicate_key",
        id="repeated-status-compact",
    ),
    pytest.param(
        json.dumps(obs(), indent=2).replace('"id": "obs-1"', '"id": "obs-0", "id": "obs-1"').encode(),
        "duplicate_key",
        id="repeated-id-pretty",
    ),
    pytest.param(
        raw(obs()).replace(b'"code":"mm[Hg]"', b'"code":"mm[Hg]","value":999', 1),
        "duplicate_key",
        id="repeated-key-deep-inside",
    ),
    pytest.param(
        raw(obs(extension=[{'q"': 1}])).replace(b'{"q\\"":1}', b'{"q\\"":1,"q\\"":2}'),
        "duplicate_key",
        id="repeated-key-ending-in-an-escaped-quote",
    ),
    pytest.param(
        json.dumps(obs(note=[{"text": 'a "quoted": colon'}]))
        .replace('"id": "obs-1"', '"id": "x", "id": "obs-1"')
        .encode(),
        "duplicate_key",
        id="repeated-key-with-quote-colon-in-a-string",
    ),
]


@pytest.mark.parametrize(("message", "reason"), REJECTED)
def test_rejected(message: bytes, reason: str) -> None:
    result = parse_message(message)
    assert isinstance(result, Rejected), result
    assert result.reason == reason, result.detail
    assert result.stage == "parse"
    assert 0 < len(result.detail) <= 200


def test_every_reason_is_tested_and_documented() -> None:
    assert {reason.value for reason in RejectReason} == ALL_REASONS
    tested = {param.values[1] for param in REJECTED}
    assert tested == ALL_REASONS
    doc = bp.fhir.__doc__ or ""
    for reason in ALL_REASONS:
        assert f"\n{reason} " in doc, f"{reason} is not documented in the module docstring"


def test_deep_nesting_case_really_breaks_stdlib_json() -> None:
    with pytest.raises(RecursionError):
        json.loads(NESTED_DEEP)


def test_bundle_with_one_bad_entry_keeps_the_others_and_names_the_entry() -> None:
    message = bundle(obs(id="a"), obs(id="b"), obs(80, 80, id="c"), obs(id="d"))
    result = parse_message(raw(message))
    assert isinstance(result, Parsed)
    assert [entry for entry, _ in result.entries] == [0, 1, 2, 3]
    assert [r.observation_id for r in result.readings] == ["a", "b", "d"]
    bad = result.entries[2][1]
    assert isinstance(bad, Rejected)
    assert (bad.reason, bad.detail[:9]) == ("systolic_not_above_diastolic", "entry[2]:")


def test_bundle_entry_reason_is_the_entrys_reason() -> None:
    result = parse_message(raw(bundle(obs(), obs(status="entered-in-error"))))
    assert isinstance(result, Parsed)
    bad = result.entries[1][1]
    assert isinstance(bad, Rejected)
    assert (bad.reason, bad.detail[:8]) == ("bad_status", "entry[1]")


def test_details_stay_short_with_huge_untrusted_strings() -> None:
    big = "x" * 60_000
    for resource in (obs(status=big), obs(resourceType=big), obs(effectiveDateTime=big)):
        result = parse_message(raw(resource))
        assert isinstance(result, Rejected)
        assert len(result.detail) <= 200


# --- build_observation conformance (fhir.resources as oracle) -------------------------------------------


def test_build_observation_validates_with_fhir_resources_r4b() -> None:
    from fhir.resources.R4B.observation import Observation

    reading = Reading("p-7", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), 141.0, 92.5, "obs-7")
    model = Observation.model_validate(build_observation(reading, device="Omron M3", interpretation="H"))
    validated: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    assert validated["resourceType"] == "Observation"
    assert validated["status"] == "final"
    assert validated["subject"] == {"reference": "Patient/p-7"}
    assert validated["effectiveDateTime"].startswith("2024-01-02T03:04:05")
    assert [(c["system"], c["code"]) for c in validated["code"]["coding"]] == [("http://loinc.org", "85354-9")]
    assert [(c["system"], c["code"]) for c in validated["category"][0]["coding"]] == [
        ("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs")
    ]
    parts = {comp["code"]["coding"][0]["code"]: comp for comp in validated["component"]}
    assert set(parts) == {"8480-6", "8462-4"}
    for code, value in (("8480-6", 141), ("8462-4", 92.5)):
        component = parts[code]
        assert component["code"]["coding"][0]["system"] == "http://loinc.org"
        quantity = component["valueQuantity"]
        assert (quantity["system"], quantity["code"], quantity["unit"]) == (
            "http://unitsofmeasure.org",
            "mm[Hg]",
            "mmHg",
        )
        assert float(quantity["value"]) == value


def test_fixture_validates_with_fhir_resources_r4b() -> None:
    from fhir.resources.R4B.observation import Observation

    model = Observation.model_validate_json((FIXTURES / "observation-example-bloodpressure.json").read_bytes())
    assert model.id == "blood-pressure"


# --- property tests ---------------------------------------------------------------------------------------

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _paths(node: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found: list[tuple[str | int, ...]] = []
    items: list[tuple[str | int, object]] = []
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


BASE = obs()
BASE_PATHS = _paths(BASE)


def _mutate(resource: dict[str, Any], path: tuple[str | int, ...], action: str, value: object) -> None:
    parent: Any = resource
    for key in path[:-1]:
        try:
            parent = parent[key]
        except (KeyError, IndexError, TypeError):
            return  # an earlier mutation removed this branch
    last = path[-1]
    if not isinstance(parent, dict | list) or isinstance(parent, dict) != isinstance(last, str):
        return  # the path no longer fits the (already mutated) shape
    container: Any = parent
    try:
        if action == "drop":
            del container[last]
        else:
            container[last] = value
    except (KeyError, IndexError, TypeError):
        return


def _check_result(result: object) -> None:
    if isinstance(result, Rejected):
        assert result.reason in ALL_REASONS
        assert len(result.detail) <= 200
        return
    assert isinstance(result, Parsed)
    assert result.entries, "an accepted message has at least one blood-pressure Observation"
    assert result.skipped >= 0
    for _, reading in result.entries:
        if isinstance(reading, Rejected):
            assert reading.reason in ALL_REASONS
            continue
        assert isinstance(reading, Reading)
        assert 40.0 <= reading.systolic <= 300.0
        assert 20.0 <= reading.diastolic <= 200.0
        assert reading.systolic > reading.diastolic
        assert reading.effective.tzinfo is not None
        assert reading.patient_id


@PROPERTY
@given(st.binary(max_size=2_000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    _check_result(parse_message(data))


@PROPERTY
@given(json_values)
def test_arbitrary_json_never_raises(value: object) -> None:
    _check_result(parse_message(orjson.dumps(value)))


@PROPERTY
@given(
    st.lists(
        st.tuples(st.sampled_from(BASE_PATHS), st.sampled_from(["drop", "replace"]), json_values),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
def test_mutated_observations_never_raise(
    mutations: list[tuple[tuple[str | int, ...], str, object]], in_bundle: bool
) -> None:
    resource = copy.deepcopy(BASE)
    for path, action, value in mutations:
        _mutate(resource, path, action, value)
    message: object = bundle(obs(), resource) if in_bundle else resource
    _check_result(parse_message(orjson.dumps(message)))


numbers = st.one_of(
    st.integers(min_value=-50, max_value=400),
    st.floats(min_value=-50, max_value=400, allow_nan=False),
    st.sampled_from([19.9, 20, 39.9, 40, 200, 200.1, 300, 300.1]),
)


@PROPERTY
@given(numbers, numbers)
def test_acceptance_matches_the_plausibility_rules(systolic: float, diastolic: float) -> None:
    result = parse_message(raw(obs(systolic, diastolic)))
    plausible = 40 <= systolic <= 300 and 20 <= diastolic <= 200 and systolic > diastolic
    if plausible:
        assert only(result) == Reading("p-001", EFFECTIVE, float(systolic), float(diastolic), "obs-1")
    else:
        assert isinstance(result, Rejected)
        assert result.reason in {"implausible", "systolic_not_above_diastolic"}


@PROPERTY
@given(
    st.floats(min_value=1, max_value=50, allow_nan=False),
    st.floats(min_value=1, max_value=50, allow_nan=False),
)
def test_kpa_readings_obey_bounds_after_conversion(systolic_kpa: float, diastolic_kpa: float) -> None:
    message = obs(
        component=[
            _component("8480-6", systolic_kpa, "kPa", "kPa"),
            _component("8462-4", diastolic_kpa, "kPa", "kPa"),
        ]
    )
    result = parse_message(raw(message))
    _check_result(result)
    if not isinstance(result, Rejected):
        assert only(result).systolic == pytest.approx(systolic_kpa * 7.50062, abs=0.005)


# --- real-world forms (issue 14) --------------------------------------------------------------------------

UUID = "475d72ca-91c7-7211-97e3-f000af33fc04"


def _entry(resource: dict[str, Any], full_url: str | None = None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, **extra}
    if full_url is not None:
        entry["fullUrl"] = full_url
    return entry


def _bundle_of(*entries: dict[str, Any], bundle_type: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": bundle_type, "entry": list(entries)}


@pytest.mark.parametrize(
    ("subject", "contained", "expected"),
    [
        pytest.param({"reference": "Patient/123"}, None, "123", id="relative"),
        pytest.param({"reference": "https://fhir.example.org/r4/Patient/123"}, None, "123", id="absolute"),
        pytest.param({"reference": "http://x/fhir/Patient/123/_history/2"}, None, "123", id="absolute-versioned"),
        pytest.param({"reference": "Patient/123/_history/2"}, None, "123", id="versioned"),
        pytest.param({"reference": "Patient/123", "type": "Patient"}, None, "123", id="typed"),
        pytest.param({"reference": f"urn:uuid:{UUID.upper()}"}, None, UUID, id="urn-uuid-standalone-lowercased"),
        pytest.param(
            {"identifier": {"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}},
            None,
            "urn:oid:1.2.36.146.595.217.0.1|12345",
            id="identifier-only",
        ),
        pytest.param({"identifier": {"value": "MRN-1"}}, None, "|MRN-1", id="identifier-without-system"),
        pytest.param(
            {"reference": "Patient?identifier=https://mrn.example%7CA7"},
            None,
            "https://mrn.example|A7",
            id="conditional-identifier",
        ),
        pytest.param(
            {"reference": "#pat"},
            [
                {"resourceType": "Device", "id": "dev"},
                {
                    "resourceType": "Patient",
                    "id": "pat",
                    "identifier": [{"use": "old"}, {"system": "https://mrn.example", "value": "A7"}],
                },
            ],
            "https://mrn.example|A7",
            id="contained",
        ),
    ],
)
def test_subject_forms(subject: dict[str, Any], contained: list[Any] | None, expected: str) -> None:
    assert only(parse_message(raw(obs(subject=subject, contained=contained)))).patient_id == expected


def test_urn_uuid_resolves_through_the_bundle_to_the_patient_id() -> None:
    message = _bundle_of(
        _entry({"resourceType": "Patient", "id": "pt-77"}, f"urn:uuid:{UUID}"),
        _entry({"resourceType": "Encounter", "id": "e1"}, "urn:uuid:11111111-2222-4333-8444-555555555555"),
        _entry(obs(subject={"reference": f"urn:uuid:{UUID}"}), "urn:uuid:aaaaaaaa-2222-4333-8444-555555555555"),
    )
    result = parse_message(raw(message))
    assert isinstance(result, Parsed)
    assert [(entry, r.patient_id) for entry, r in result.entries if isinstance(r, Reading)] == [(2, "pt-77")]
    assert result.skipped == 2


def test_urn_uuid_of_a_patient_without_id_is_the_uuid() -> None:
    message = _bundle_of(
        _entry({"resourceType": "Patient"}, f"urn:uuid:{UUID}"),
        _entry(obs(subject={"reference": f"urn:uuid:{UUID}"})),
    )
    assert only_reading(parse_message(raw(message))).patient_id == UUID


def test_urn_uuid_pointing_at_a_non_patient_entry_is_rejected() -> None:
    message = _bundle_of(
        _entry({"resourceType": "Group", "id": "g"}, f"urn:uuid:{UUID}"),
        _entry(obs(subject={"reference": f"urn:uuid:{UUID}"})),
    )
    result = parse_message(raw(message))
    assert isinstance(result, Parsed)
    assert isinstance(result.entries[0][1], Rejected)
    assert result.entries[0][1].reason == "missing_subject"


def only_reading(result: Parsed | Rejected) -> Reading:
    assert isinstance(result, Parsed), result
    readings = result.readings
    assert len(readings) == 1, result
    return readings[0]


@pytest.mark.parametrize(
    "bundle_type",
    [
        "collection",
        "transaction",
        "batch",
        "searchset",
        "document",
        "message",
        "history",
        "transaction-response",
        "batch-response",
    ],
)
def test_every_bundle_type_yields_its_bp_readings_and_counts_the_rest(bundle_type: str) -> None:
    heart_rate = obs(code={"coding": [{"system": "http://loinc.org", "code": "8867-4"}]})
    message = _bundle_of(
        _entry({"resourceType": "MessageHeader", "id": "m"}),
        _entry({"resourceType": "Patient", "id": "p-001"}, "urn:uuid:" + UUID),
        _entry(heart_rate),
        _entry(obs(id="bp-1")),
        {"response": {"status": "201 Created", "location": "Observation/9/_history/1"}},
        _entry(obs(id="bp-2"), request={"method": "DELETE", "url": "Observation/bp-2"}),
        bundle_type=bundle_type,
    )
    result = parse_message(raw(message))
    assert isinstance(result, Parsed)
    assert [(entry, r.observation_id) for entry, r in result.entries if isinstance(r, Reading)] == [(3, "bp-1")]
    assert result.skipped == 5


def test_identical_repeated_component_is_accepted_conflicting_is_not() -> None:
    twice = obs(component=[_component("8480-6", 120), _component("8462-4", 80), _component("8462-4", 80)])
    assert only(parse_message(raw(twice))).diastolic == 80.0
    same_in_kpa = obs(component=[_component("8480-6", 120), _component("8462-4", 80), _component("8462-4", 80)])
    same_in_kpa["component"][2]["valueQuantity"] = {"value": 80, "unit": "mm Hg"}
    assert only(parse_message(raw(same_in_kpa))).diastolic == 80.0
    conflicting = obs(component=[_component("8480-6", 120), _component("8462-4", 80), _component("8462-4", 82)])
    result = parse_message(raw(conflicting))
    assert isinstance(result, Rejected)
    assert result.reason == "duplicate_component"


@pytest.mark.parametrize(
    "system", ["http://loinc.org", "urn:oid:2.16.840.1.113883.6.1", "https://loinc.org", "http://loinc.org/"]
)
def test_loinc_by_url_or_oid(system: str) -> None:
    resource = obs(code={"coding": [{"system": system, "code": "85354-9"}]})
    for component in resource["component"]:
        component["code"]["coding"][0]["system"] = system
    assert only(parse_message(raw(resource))).systolic == 120.0


def test_period_end_when_there_is_no_start() -> None:
    resource = obs(effectiveDateTime=None, effectivePeriod={"end": "2024-03-01T07:15:30Z"})
    assert only(parse_message(raw(resource))).effective == datetime(2024, 3, 1, 7, 15, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("mmHg", 121.0),
        ("mm Hg", 121.0),
        ("mmhg", 121.0),
        ("MMHG", 121.0),
        ("mm(Hg)", 121.0),
        ("mm of Hg", 121.0),
        ("mm  of mercury", 121.0),
        ("millimeter of mercury", 121.0),
        ("Millimeters of mercury", 121.0),
        ("millimetres of mercury", 121.0),
        ("kilopascal", 907.58),  # 121 kPa: the conversion happens, then the bounds reject it below
    ],
)
def test_unit_spellings_without_a_code(unit: str, expected: float) -> None:
    result = parse_message(raw(with_quantity(value=121, unit=unit)))
    if expected > 300:
        assert isinstance(result, Rejected)
        assert (result.reason, "907.58" in result.detail) == ("implausible", True)
    else:
        assert only(result).systolic == expected


def test_ucum_oid_system_and_kpa_spelling() -> None:
    resource = obs()
    resource["component"][0]["valueQuantity"] = {
        "value": 16,
        "unit": "kilopascals",
        "system": "urn:oid:2.16.840.1.113883.6.8",
        "code": "kPa",
    }
    assert only(parse_message(raw(resource))).systolic == 120.01


def test_extras_of_real_profiles_are_fine() -> None:
    resource = obs(
        meta={"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-blood-pressure|6.1.0"]},
        extension=[
            {"url": "http://hl7.org/fhir/StructureDefinition/observation-bodyPosition", "valueCodeableConcept": {}}
        ],
        contained=[{"resourceType": "Device", "id": "cuff"}],
        text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">BP "x": 120/80</div>'},
    )
    resource["code"]["coding"].insert(0, {"system": "http://snomed.info/sct", "code": "75367002"})
    assert only(parse_message(json.dumps(resource, indent=2).encode())).systolic == 120.0


def test_date_only_keeps_day_precision_full_time_keeps_seconds() -> None:
    assert only(parse_message(raw(obs(effectiveDateTime="2024-03-01")))).effective_precision == "day"
    assert only(parse_message(raw(obs()))).effective_precision == "second"


# --- plausible time window ---------------------------------------------------------------------------------


def test_future_tolerance_is_measured_from_arrival() -> None:
    at_edge = raw(obs(effectiveDateTime="2026-01-02T00:00:00Z"))  # arrival 2026-01-01T00:00Z + 24 h exactly
    assert only(parse_message(at_edge)).effective == datetime(2026, 1, 2, tzinfo=UTC)
    later_arrival = parse_with_limits(
        raw(obs(effectiveDateTime="2026-01-02T00:00:01Z")), received_ms=RECEIVED_MS + 1000
    )
    assert isinstance(later_arrival, Parsed)
    tight = ParseLimits(future_tolerance_s=60.0)
    result = parse_with_limits(
        raw(obs(effectiveDateTime="2026-01-01T00:01:01Z")), received_ms=RECEIVED_MS, limits=tight
    )
    assert isinstance(result, Rejected)
    assert result.reason == "bad_time"


def test_floor_is_a_setting() -> None:
    old = raw(obs(effectiveDateTime="1950-06-01T10:00:00Z"))
    assert isinstance(parse_with_limits(old, received_ms=RECEIVED_MS), Parsed)
    result = parse_with_limits(old, received_ms=RECEIVED_MS, limits=ParseLimits(floor=date(2000, 1, 1)))
    assert isinstance(result, Rejected)
    assert result.reason == "bad_time"
    assert "2000-01-01" in result.detail


def test_without_arrival_time_only_floor_and_calendar_apply() -> None:
    assert isinstance(parse_with_limits(raw(obs(effectiveDateTime="2999-01-01T00:00:00Z"))), Parsed)
    result = parse_with_limits(raw(obs(effectiveDateTime="9999-12-31T23:00:00-05:00")))
    assert isinstance(result, Rejected)
    assert result.reason == "bad_time"


@PROPERTY
@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
    st.one_of(st.none(), st.integers(min_value=-(2**62), max_value=2**62)),
)
def test_any_date_and_offset_never_raises_and_stays_convertible(
    moment: datetime, offset_min: int, received: int | None
) -> None:
    sign = "+" if offset_min >= 0 else "-"
    text = (
        moment.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0")
        + f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    )
    result = parse_with_limits(raw(obs(effectiveDateTime=text)), received_ms=received)
    if isinstance(result, Parsed):
        reading = only(result)
        reading.effective.astimezone(UTC)  # what the archive and the index do: must not overflow
        assert reading.effective.year >= 1900
    else:
        assert result.reason == "bad_time"


# --- size limit ---------------------------------------------------------------------------------------------


def test_default_size_limit_fits_patient_bundles() -> None:
    assert DEFAULT_MAX_MESSAGE_BYTES == 8 * 1024 * 1024
    assert ParseLimits().max_bytes == 8 * 1024 * 1024
    big = padded_to(LIMIT + 1)
    assert isinstance(parse_with_limits(big), Parsed)
    assert isinstance(parse_message(big), Rejected)


def test_large_bundle_with_urn_references() -> None:
    entries: list[dict[str, Any]] = []
    for n in range(3_000):
        urn = f"urn:uuid:{n:08x}-0000-4000-8000-000000000000"
        entries.append(_entry({"resourceType": "Patient", "id": f"p{n}"}, urn))
        entries.append(_entry(obs(id=f"o{n}", subject={"reference": urn})))
    result = parse_with_limits(raw(_bundle_of(*entries)), received_ms=RECEIVED_MS)
    assert isinstance(result, Parsed)
    assert result.skipped == 3_000
    assert [r.patient_id for r in result.readings] == [f"p{n}" for n in range(3_000)]


# --- duplicate keys: the cheap checks must not hide a repeat, nor invent one ------------------------------


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(raw(obs()), id="compact"),
        pytest.param(json.dumps(obs(), indent=2).encode(), id="pretty"),
        pytest.param(json.dumps(obs(note=[{"text": 'said "x": y'}])).encode(), id="quote-colon-in-a-string"),
        pytest.param(raw(obs()) + b"\n", id="trailing-newline"),
        pytest.param(raw(obs(extension=[{'quote"': 1, "back\\": 2}])), id="keys-ending-in-quote-or-backslash"),
        pytest.param(raw(obs(n=2)).replace(b'"n":2', b'"n":1180591620717411303424'), id="integer-beyond-64-bits"),
    ],
)
def test_no_false_duplicate_key(message: bytes) -> None:
    assert isinstance(parse_message(message), Parsed)


@PROPERTY
@given(json_values, st.text(max_size=5))
def test_a_repeated_key_anywhere_is_found(value: object, key: str) -> None:
    document = obs(note=[{"text": "n", "extra": value}])
    text = raw(document)
    quoted = orjson.dumps(key)
    doubled = text.replace(b'"text":"n"', b'"text":"n",' + quoted + b":1," + quoted + b":2", 1)
    result = parse_message(doubled)
    assert isinstance(result, Rejected)
    assert result.reason == "duplicate_key"


def test_repeated_key_check_too_deep_for_the_standard_library_is_too_deep() -> None:
    # orjson accepts 1,000 levels; the exact check falls back to json.loads (a string holds `":`), whose
    # recursion limit is lower: the message is rejected as too deep, never a RecursionError.
    deep = b'{"resourceType":"Observation","note":"a \\":","x":' + b"[" * 1_000 + b"]" * 1_000 + b"}"
    deep = deep.replace(b'"note"', b' "note"')  # not compact: the cheap checks cannot decide
    result = parse_message(deep)
    assert isinstance(result, Rejected)
    assert result.reason == "too_deep"
