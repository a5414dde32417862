"""Real-world FHIR from public sources (tests/fixtures/real-world, see SOURCES.md) through the parser.

Every valid reading must come out with the systolic, diastolic, patient and time the independent oracle
(``make_expected.py``, standard library only) read from the file; every invalid one must be rejected with
its reason; every other Bundle entry counted as skipped.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bp.fhir import Parsed, parse_message
from bp.reading import Reading, Rejected

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "real-world"
EXPECTED: dict[str, dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))
ARRIVAL_MS = 1_798_761_600_000  # 2027-01-01T00:00:00Z: after every reading of the corpus


def _parse(name: str) -> Parsed | Rejected:
    return parse_message((CORPUS / name).read_bytes(), received_ms=ARRIVAL_MS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_message_of_the_corpus(name: str) -> None:
    expected = EXPECTED[name]
    result = _parse(name)
    if isinstance(expected.get("rejected"), str):  # the whole message holds no reading
        assert isinstance(result, Rejected), result
        assert result.reason == expected["rejected"], result.detail
        return
    if isinstance(result, Rejected):  # a lone Observation that is not a usable reading
        result = Parsed(((0, result),))
    readings = [(entry, item) for entry, item in result.entries if isinstance(item, Reading)]
    rejected = [(entry, item.reason) for entry, item in result.entries if isinstance(item, Rejected)]
    assert rejected == [(r["entry"], r["reason"]) for r in expected["rejected"]]
    assert [entry for entry, _ in readings] == [r["entry"] for r in expected["readings"]]
    for (_, reading), want in zip(readings, expected["readings"], strict=True):
        effective = datetime.fromisoformat(want["effective"])
        assert (reading.patient_id, reading.systolic, reading.diastolic) == (
            want["patient_id"],
            want["systolic"],
            want["diastolic"],
        )
        assert reading.effective == effective
        assert reading.effective.utcoffset() == effective.utcoffset()
        assert reading.effective_precision == want["effective_precision"]
    assert result.skipped == expected["skipped"]


def test_corpus_acceptance_rates() -> None:
    """All valid readings accepted (goal: at least 99 %), no invalid one."""
    valid = accepted = invalid = invalid_accepted = 0
    for name, expected in EXPECTED.items():
        result = _parse(name)
        got = result.readings if isinstance(result, Parsed) else ()
        want = expected.get("readings", [])
        valid += len(want)
        accepted += sum(1 for r in got if (r.patient_id, r.systolic, r.diastolic) in _keys(want))
        bad = expected.get("rejected")
        invalid += len(bad) if isinstance(bad, list) else 1
        invalid_accepted += len(got) - len(want) if len(got) > len(want) else 0
    assert valid >= 40 and invalid >= 7
    assert accepted / valid >= 0.99
    assert invalid_accepted == 0


def _keys(readings: list[dict[str, Any]]) -> set[tuple[str, float, float]]:
    return {(r["patient_id"], r["systolic"], r["diastolic"]) for r in readings}


def test_sources_name_every_file() -> None:
    sources = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    for name in EXPECTED:
        assert Path(name).name in sources, f"{name} has no entry in SOURCES.md"
