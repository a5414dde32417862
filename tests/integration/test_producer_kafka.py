"""The producer against a real broker: exactly N records, keyed by patient, per-patient order kept."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime

import orjson
import pytest

from tests.integration.conftest import Endpoints, read_topic, run_cli

pytestmark = pytest.mark.integration


def test_publishes_exactly_n_keyed_in_order(endpoints: Endpoints, names: dict[str, str]) -> None:
    count = 1500
    result = run_cli(
        "producer.producer",
        [
            "--topic",
            names["topic"],
            "--count",
            str(count),
            "--rate",
            "0",
            "--patients",
            "40",
            "--seed",
            "7",
            "--partitions",
            "4",
        ],
        endpoints.env(),
    )
    assert result.returncode == 0, result.stderr
    assert f"sent {count}, acked {count}, failed 0" in result.stderr

    records = read_topic(endpoints.bootstrap, names["topic"], count)
    assert len(records) == count
    by_patient: dict[str, list[tuple[int, int, datetime]]] = defaultdict(list)
    for record in records:
        observation = orjson.loads(record.value)
        patient = observation["subject"]["reference"].removeprefix("Patient/")
        assert record.key == patient.encode()
        assert dict(record.headers)["content-type"] == b"application/fhir+json"
        by_patient[patient].append(
            (record.partition, record.offset, datetime.fromisoformat(observation["effectiveDateTime"]))
        )
    assert len(by_patient) == 40
    for patient, seen in by_patient.items():
        assert len({partition for partition, _, _ in seen}) == 1, f"{patient} spread over partitions"
        in_offset_order = [effective for _, _, effective in sorted(seen)]
        assert in_offset_order == sorted(in_offset_order), f"{patient} out of order"


def test_emit_truth_adds_headers_not_fhir(endpoints: Endpoints, names: dict[str, str]) -> None:
    result = run_cli(
        "producer.producer",
        ["--topic", names["topic"], "--count", "50", "--rate", "0", "--seed", "3", "--emit-truth"],
        endpoints.env(),
    )
    assert result.returncode == 0, result.stderr
    records = read_topic(endpoints.bootstrap, names["topic"], 50)
    assert len(records) == 50
    for record in records:
        headers = dict(record.headers)
        assert headers["bp-truth-significant"] in (b"0", b"1")
        assert b"truth" not in record.value and b"episode" not in record.value


def test_unreachable_broker_is_one_line_and_exit_2(endpoints: Endpoints) -> None:
    started = time.monotonic()
    result = run_cli(
        "producer.producer",
        ["--count", "10", "--bootstrap-servers", "127.0.0.1:1"],
        endpoints.env(BP_CONNECT_TIMEOUT_S="5"),
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "cannot reach Kafka" in errors[0]
    assert elapsed < 15 + 5
