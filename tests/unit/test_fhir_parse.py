"""bp.fhir.parse_message: accepted shapes, every reject reason, properties; build_observation conformance.

Expected values are written out here from the FHIR spec and the brief (codes, units, bounds, reason strings),
never read back from the module under test.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bp.fhir
from bp.fhir import MAX_MESSAGE_BYTES, RejectReason, build_observation, parse_message
from bp.reading import Reading, Rejected

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

LIMIT = 65_536  # the documented message size limit

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


def only(result: tuple[Reading, ...] | Rejected) -> Reading:
    assert not isinstance(result, Rejected), result
    assert len(result) == 1
    return result[0]


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
            Reading("p-001", datetime(2012, 9, 17, tzinfo=UTC), 120.0, 80.0, "obs-1"),
            id="date-only-is-midnight-utc",
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
    assert result == (
        Reading("p-001", EFFECTIVE, 110.0, 70.0, "a"),
        Reading("p-002", EFFECTIVE, 150.0, 95.0, "b"),
        Reading("p-001", datetime(2024, 3, 2, 9, tzinfo=UTC), 95.0, 58.0, "c"),
    )


@pytest.mark.parametrize("bundle_type", ["collection", "batch", "transaction"])
def test_accepted_bundle_types(bundle_type: str) -> None:
    result = parse_message(raw(bundle(obs(), bundle_type=bundle_type)))
    assert not isinstance(result, Rejected)
    assert len(result) == 1


def test_message_of_exactly_the_limit_is_accepted() -> None:
    assert MAX_MESSAGE_BYTES == LIMIT
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
    pytest.param(raw(with_quantity(value=120, unit="mmhg")), "unknown_unit", id="lowercase-mmhg"),
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
    pytest.param(raw(obs(subject={"identifier": {"value": "MRN1"}})), "missing_subject", id="identifier-only"),
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
    pytest.param(
        raw(obs(effectiveDateTime=None, effectivePeriod={"end": "2024-03-01T08:15:30Z"})),
        "bad_time",
        id="period-without-start",
    ),
    pytest.param(raw(obs(effectiveDateTime=None, effectiveInstant="2024-03-01")), "bad_time", id="date-only-instant"),
    # bundles
    pytest.param(raw(bundle()), "empty_bundle", id="empty-bundle"),
    pytest.param(raw({"resourceType": "Bundle", "type": "collection"}), "empty_bundle", id="bundle-no-entry"),
    pytest.param(raw(bundle(obs(), bundle_type="searchset")), "bad_bundle", id="searchset"),
    pytest.param(raw(bundle(obs(), bundle_type="history")), "bad_bundle", id="history"),
    pytest.param(raw({"resourceType": "Bundle", "entry": [{"resource": obs()}]}), "bad_bundle", id="bundle-no-type"),
    pytest.param(
        raw({"resourceType": "Bundle", "type": "batch", "entry": {"resource": obs()}}),
        "bad_bundle",
        id="entry-object",
    ),
    pytest.param(
        raw({"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "DELETE"}}]}),
        "bad_bundle",
        id="entry-without-resource",
    ),
    pytest.param(
        raw(bundle(obs(), {"resourceType": "Patient", "id": "p-001"})),
        "wrong_resource_type",
        id="bundle-with-patient",
    ),
    pytest.param(raw(bundle(bundle(obs()))), "wrong_resource_type", id="nested-bundle"),
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


def test_bundle_with_one_bad_entry_rejects_whole_message_naming_the_entry() -> None:
    message = bundle(obs(id="a"), obs(id="b"), obs(80, 80, id="c"), obs(id="d"))
    result = parse_message(raw(message))
    assert isinstance(result, Rejected)
    assert result.reason == "systolic_not_above_diastolic"
    assert result.detail.startswith("entry[2]")


def test_bundle_entry_reason_is_the_entrys_reason() -> None:
    result = parse_message(raw(bundle(obs(), obs(status="entered-in-error"))))
    assert isinstance(result, Rejected)
    assert (result.reason, result.detail[:8]) == ("bad_status", "entry[1]")


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
    assert isinstance(result, tuple)
    assert result, "an accepted message has at least one reading"
    for reading in result:
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
