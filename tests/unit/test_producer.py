"""The producer's output without Kafka: FHIR R4 conformance, exact codes, determinism, pacing, CLI errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B.observation import Observation

from producer.options import parse_run
from producer.producer import final_flush, paced, readings_to_send, run_dry

ROOT = Path(__file__).resolve().parents[2]
START = "2026-02-01T06:00:00+01:00"


def dry_run(*flags: str) -> list[bytes]:
    run, _ = parse_run(["--dry-run", "--rate", "0", "--start", START, *flags])
    out = io.BytesIO()

    class Never:
        stopped = False

    run_dry(run, out, Never())  # type: ignore[arg-type]
    return out.getvalue().splitlines()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_observation_conforms_and_carries_exact_codes(seed: int) -> None:
    lines = dry_run("--count", "1000", "--seed", str(seed), "--patients", "30")
    assert len(lines) == 1000
    for line in lines:
        resource = orjson.loads(line)
        Observation.model_validate(resource)  # the reference model of FHIR R4B: raises if it does not conform
        assert resource["status"] == "final"
        category = resource["category"][0]["coding"][0]
        assert category["system"] == "http://terminology.hl7.org/CodeSystem/observation-category"
        assert category["code"] == "vital-signs"
        assert resource["code"]["coding"][0] == {
            "system": "http://loinc.org",
            "code": "85354-9",
            "display": "Blood pressure panel with all children optional",
        }
        assert resource["subject"]["reference"].startswith("Patient/pt-")
        assert resource["effectiveDateTime"].endswith("+01:00")
        codes = [component["code"]["coding"][0]["code"] for component in resource["component"]]
        assert codes == ["8480-6", "8462-4"]
        for component in resource["component"]:
            quantity = component["valueQuantity"]
            assert quantity["system"] == "http://unitsofmeasure.org"
            assert quantity["code"] == "mm[Hg]" and quantity["unit"] == "mmHg"
            assert isinstance(quantity["value"], int | float)
        assert b"truth" not in line and b"episode" not in line  # ground truth never enters the resource


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    first = dry_run("--count", "300", "--seed", "5")
    assert first == dry_run("--count", "300", "--seed", "5")
    assert first != dry_run("--count", "300", "--seed", "6")


def test_paced_keeps_the_overall_rate_without_drift() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    items = list(paced(iter(range(11)), rate=5.0, clock=lambda: now[0], sleep=sleep))
    assert items == list(range(11))
    assert now[0] == pytest.approx(2.0)  # 10 intervals of 0.2 s
    assert list(paced(iter(range(3)), rate=0, clock=lambda: 0.0, sleep=sleep)) == [0, 1, 2]


@pytest.mark.parametrize(
    "flags",
    [
        ["--rate", "-1"],
        ["--count", "x"],
        ["--patients", "0"],
        ["--start", "2026-01-01T00:00:00"],
        ["--nope"],
        ["--schedule", "weekly"],
        ["--prevalence", "often"],
        ["--prevalence", "-1"],
        ["--profile-mix", "nobody=1"],
        ["--emit-truth"],  # with --dry-run: where would the truth go?
        ["--truth-file", "truth.jsonl"],  # without --emit-truth
    ],
)
def test_bad_flags_give_a_usage_error(flags: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "producer.producer", "--dry-run", *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "usage:" in result.stderr and "Traceback" not in result.stderr


def test_dry_run_cli_writes_json_lines_and_a_summary() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "producer.producer", "--dry-run", "--count", "20", "--rate", "0", "--seed", "1"],
        cwd=ROOT, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 20
    assert b"sent 20, acked 20, failed 0" in result.stderr


def test_dry_run_truth_file_joins_on_observation_id(tmp_path: Path) -> None:
    truth_file = tmp_path / "truth.jsonl"
    flags = ["--count", "400", "--rate", "0", "--seed", "3", "--patients", "4", "--schedule", "home"]
    flags += ["--prevalence", "30", "--profile-mix", "shifted", "--emit-truth", "--truth-file", str(truth_file)]
    result = subprocess.run(
        [sys.executable, "-m", "producer.producer", "--dry-run", *flags],
        cwd=ROOT, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    observations = [json.loads(line) for line in result.stdout.splitlines()]
    truths = [json.loads(line) for line in truth_file.read_text().splitlines()]
    assert len(observations) == len(truths) == 400
    for obs, truth in zip(observations, truths, strict=True):
        assert set(truth) == {"observation_id", "patient_id", "effective", "episode_id", "episode_type", "significant"}
        assert obs["id"] == truth["observation_id"]
        assert obs["subject"]["reference"] == f"Patient/{truth['patient_id']}"
        assert obs["effectiveDateTime"] == truth["effective"]
        assert (truth["episode_id"] is None) == (truth["episode_type"] is None)
        assert truth["significant"] in (True, False)
        assert "episode" not in json.dumps(obs)
    assert any(t["episode_id"] for t in truths)  # 30 episodes per patient-month: some in 400 readings


@pytest.mark.parametrize(
    ("flags", "pacing", "simulated"),
    [
        (["--dry-run"], 0.0, 5.0),  # a dry run without --rate is not paced, and shows the live default's data
        (["--dry-run", "--rate", "20"], 20.0, 20.0),
        (["--dry-run", "--rate", "0"], 0.0, 0.0),
        ([], 5.0, 5.0),  # live: the default rate paces
        (["--rate", "0"], 0.0, 0.0),
    ],
)
def test_a_dry_run_is_paced_only_when_asked(flags: list[str], pacing: float, simulated: float) -> None:
    run, _ = parse_run(flags)
    assert run.pacing_rate == pacing
    assert run.simulated_rate == simulated


def test_a_dry_run_without_rate_never_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s")

    monkeypatch.setattr(time, "sleep", no_sleep)
    run, _ = parse_run(["--dry-run", "--count", "50", "--seed", "1", "--start", START])
    assert len(list(readings_to_send(run))) == 50


class FlakyFlush:
    """A publisher whose flush() raises as kafka-python 3.0.12's does while it resends a split batch."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.flushes = 0

    def send(self, *args: object, **kwargs: object) -> object:
        raise NotImplementedError

    def flush(self, timeout: float | None = None) -> None:
        from kafka.errors import UnknownError

        self.flushes += 1
        if self.flushes <= self.failures:
            raise UnknownError("Future not done")

    def close(self, timeout: float | None = None) -> None:
        pass


@pytest.mark.parametrize("failures", [0, 1, 3])
def test_final_flush_flushes_again_after_kafka_pythons_split_batch_error(failures: int) -> None:
    publisher = FlakyFlush(failures)
    assert final_flush(publisher, timeout_s=10)
    assert publisher.flushes == failures + 1


def test_final_flush_gives_up_after_its_deadline() -> None:
    publisher = FlakyFlush(failures=10**9)
    assert not final_flush(publisher, timeout_s=0.3)
    assert publisher.flushes >= 1
