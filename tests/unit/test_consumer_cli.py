"""The consumer without Kafka: --check, model loading and its refusals, flag errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import joblib
import orjson
import pytest

from bp.cohort import Cohort
from bp.errors import ModelError
from bp.features import FEATURE_NAMES
from bp.fhir import build_observation
from bp.reading import Reading
from consumer.pipeline import Message, Pipeline
from consumer.scoring import load_model
from tests.small_model import fit_small_model

ROOT = Path(__file__).resolve().parents[2]
HL7_EXAMPLE = ROOT / "tests" / "fixtures" / "observation-example-bloodpressure.json"


def consumer(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "consumer.consumer", *args],
        cwd=ROOT, input=stdin, capture_output=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model fitted here on simulated data, saved in the artifact format the consumer checks."""
    return fit_small_model(tmp_path_factory.mktemp("model"))


def test_check_runs_the_official_hl7_example() -> None:
    result = consumer("--check", str(HL7_EXAMPLE), "--rules-only")
    assert result.returncode == 0, result.stderr
    (decision,) = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert (decision["systolic"], decision["diastolic"], decision["patient_id"]) == (107, 60, "example")
    assert decision["decision"] == "normal"


def test_check_reads_json_lines_from_stdin_with_a_model(small_model: Path) -> None:
    start = datetime(2026, 1, 1, 8, tzinfo=UTC)
    lines = [orjson.dumps(build_observation(sim.reading)) for sim in Cohort(5, 1, start).take(30)]
    stdin = b"\n".join([*lines, b"{broken", b'{"resourceType": "Patient"}'])
    result = consumer("--check", "-", "--model", str(small_model), stdin=stdin)
    assert result.returncode == 0, result.stderr
    decisions = [d for d in map(orjson.loads, result.stdout.splitlines()) if "decision" in d]
    assert len(decisions) == 32
    assert [d["reason"] for d in decisions[-2:]] == ["not_json", "wrong_resource_type"]
    assert all(0.0 <= d["risk"] <= 1.0 for d in decisions[:30])


def test_loaded_model_scores_a_batch(small_model: Path) -> None:
    model = load_model(small_model)
    assert model.threshold == 0.4 and model.version == "test-small"
    start = datetime(2026, 1, 1, 8, tzinfo=UTC)
    messages = [Message(orjson.dumps(build_observation(s.reading))) for s in Cohort(10, 2, start).take(200)]
    outcomes = Pipeline(model).decide_batch(messages)
    assert len(outcomes) == 200 and all(o.decision.risk is not None for o in outcomes)  # type: ignore[union-attr]


def copy_model(small_model: Path, tmp_path: Path) -> Path:
    target = tmp_path / small_model.name
    target.write_bytes(small_model.read_bytes())
    target.with_suffix(".json").write_bytes(small_model.with_suffix(".json").read_bytes())
    return target


def test_refuses_a_tampered_artifact(small_model: Path, tmp_path: Path) -> None:
    path = copy_model(small_model, tmp_path)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="checksum"):
        load_model(path)


def test_refuses_mismatched_features_and_says_how_to_retrain(small_model: Path, tmp_path: Path) -> None:
    path = copy_model(small_model, tmp_path)
    bundle = joblib.load(path)
    bundle["metadata"]["feature_names"] = list(FEATURE_NAMES[:-1])
    joblib.dump(bundle, path)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(ModelError, match=r"python -m ml\.train_model"):
        load_model(path)
    result = consumer("--check", str(HL7_EXAMPLE), "--model", str(path))
    assert result.returncode == 3
    assert result.stderr.count(b"\n") == 1 and b"features do not match" in result.stderr


def test_missing_model_is_one_line(tmp_path: Path) -> None:
    result = consumer("--check", str(HL7_EXAMPLE), "--model", str(tmp_path / "none.joblib"))
    assert result.returncode == 3 and b"not found" in result.stderr and b"Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--batch-size", "0", "--check", "-", "--rules-only"], 2, b"batch_size"),
        (["--stop-when-idle", "soon"], 2, b"usage:"),
        (["--check", "/nonexistent/file.json", "--rules-only"], 2, b"cannot read"),
        (["--es-url", "http://127.0.0.1:1", "--rules-only", "--check", "-"], 0, b""),  # --check needs no ES
    ],
)
def test_bad_flags_are_one_readable_line(args: list[str], code: int, needle: bytes) -> None:
    result = consumer(*args, stdin=b"")
    assert result.returncode == code, result.stderr
    assert needle in result.stderr and b"Traceback" not in result.stderr


SECRET = "S3CRET-do-not-print"


@pytest.mark.parametrize(
    ("module", "args", "env", "shown"),
    [
        ("consumer.consumer", ["--es-url", f"http://bp:{SECRET}@127.0.0.1:1"], {}, b"http://bp:***@127.0.0.1:1"),
        ("consumer.consumer", ["--es-url", f"http://bp:{SECRET}@127.0.0.1:port"], {}, b"http://bp:***@127.0.0.1:port"),
        ("consumer.consumer", ["--es-url", "http://127.0.0.1:1", "--es-password", SECRET, "--es-username", "bp"], {},
         b"cannot reach Elasticsearch"),
        ("producer.producer", ["--bootstrap-servers", "127.0.0.1:1", "--count", "1"],
         {"BP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "BP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
          "BP_KAFKA_SASL_USERNAME": "bp", "BP_KAFKA_SASL_PASSWORD": SECRET}, b"cannot reach Kafka"),
        ("producer.producer", ["--kafka-sasl-password", SECRET], {}, b"SASL settings given"),
        ("consumer.consumer", ["--kafka-security-protocol", "SASL_SSL", "--kafka-sasl-mechanism", "PLAIN",
                               "--kafka-sasl-username", "bp", "--kafka-sasl-password", SECRET,
                               "--kafka-ssl-cafile", "/nonexistent/ca.pem"], {}, b"/nonexistent/ca.pem not found"),
    ],
    ids=["es-url-password", "malformed-es-url", "es-password", "kafka-sasl-password", "sasl-password-flag-alone",
         "consumer-security-flags"],
)  # fmt: skip
def test_failing_runs_never_print_a_secret(module: str, args: list[str], env: dict[str, str], shown: bytes) -> None:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BP_")},
        "BP_CONNECT_TIMEOUT_S": "1",
        "BP_RULES_ONLY": "true",
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT, env=environment, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert shown in output and SECRET.encode() not in output
    assert b"Traceback" not in output and result.stderr.count(b": error: ") == 1


def test_check_prints_alert_events_after_the_readings(small_model: Path) -> None:
    start = datetime(2026, 1, 1, 8, tzinfo=UTC)
    normal = [(118, 76)] * 10
    crisis = [(196, 124), (205, 126), (210, 128)]  # confirmed crisis: opens a critical alert
    after = [(120, 78)] * 12  # back in range: resolves it
    values = normal + crisis + after
    lines = [
        orjson.dumps(build_observation(Reading("pt-1", start + i * timedelta(minutes=15), s, d, f"obs-{i}")))
        for i, (s, d) in enumerate(values)
    ]
    for flags in (["--model", str(small_model)], ["--rules-only"]):
        result = consumer("--check", "-", *flags, stdin=b"\n".join(lines))
        assert result.returncode == 0, result.stderr
        records = [orjson.loads(line) for line in result.stdout.splitlines()]
        assert ["decision" in r for r in records[: len(values)]] == [True] * len(values)  # readings first ...
        alerts = records[len(values) :]  # ... then the alert events, in the order they happened
        assert [(a["status"], a["kind"], a["severity"]) for a in alerts] == [
            ("opened", "hypertensive", "critical"),
            ("resolved", "hypertensive", "critical"),
        ], flags
        opened, resolved = alerts
        assert opened["alert_id"] == resolved["alert_id"] == f"pt-1:hypertensive:{opened['observation_id']}"
        assert opened["observation_id"] in {"obs-10", "obs-11"}  # the first or second crisis reading
        assert resolved["observation_id"].startswith("obs-") and int(resolved["observation_id"][4:]) >= 13
        assert set(opened) >= {"alert_id", "patient_id", "kind", "status", "at", "observation_id"}
        summary = orjson.loads(result.stderr.decode().split("consumer: ", 1)[1])
        assert summary["alerts"] == {"opened/hypertensive": 1, "resolved/hypertensive": 1}


def test_an_artifact_without_an_alert_policy_is_refused(small_model: Path, tmp_path: Path) -> None:
    bundle = joblib.load(small_model)
    del bundle["metadata"]["alert_policy"]
    path = tmp_path / "old.joblib"
    joblib.dump(bundle, path)
    sidecar = {**bundle["metadata"], "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(ModelError, match="alert policy"):
        load_model(path)
