"""Pure helpers of the benchmark (bench/report.py, bench/workload.py): no Kafka, no Elasticsearch, fast."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import presets, report
from bench.bare import read_records, write_records
from bench.consume import per_reading_us
from bench.workload import build, malformed
from bp.fhir import parse_message
from bp.reading import Rejected


def nearest_rank_linear(values: list[float], q: float) -> float:
    """Textbook linear interpolation between closest ranks (the definition, written independently)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def test_percentiles_of_one_to_hundred() -> None:
    values = [float(v) for v in range(1, 101)]
    # By hand: rank (n-1)*q = 99*0.5 = 49.5 → between 50 and 51; 99*0.99 = 98.01 → 99 + 0.01.
    assert report.percentiles(values) == pytest.approx({"p50": 50.5, "p95": 95.05, "p99": 99.01})


@pytest.mark.parametrize("q", [0.0, 12.5, 50.0, 95.0, 99.0, 100.0])
def test_percentiles_match_the_definition(q: float) -> None:
    values = [0.3, 0.01, 5.0, 0.2, 0.2, 1.7, 0.05, 0.9, 0.11]
    assert report.percentiles(values, [q])[f"p{q:g}"] == pytest.approx(nearest_rank_linear(values, q))


def test_percentiles_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        report.percentiles([])


def test_latency_summary_shape_and_order() -> None:
    summary = report.latency_summary([0.001 * i for i in range(1, 1001)])
    assert summary["n"] == 1000
    assert summary["min"] <= summary["p50"] <= summary["p95"] <= summary["p99"] <= summary["max"]
    assert summary["max"] == pytest.approx(1.0)
    assert report.latency_summary([]) == {"n": 0}


def test_median_ignores_missing_values() -> None:
    runs: list[dict[str, Any]] = [{"rate": 3.0}, {"rate": None}, {"rate": 1.0}, {}, {"rate": 2.0}, {"rate": True}]
    assert report.median_of(runs, "rate") == 2.0
    assert report.median_of([{}], "rate") is None


@pytest.mark.parametrize(
    ("value", "op", "goal", "passed"),
    [(0.5, ">=", 0.5, True), (0.49, ">=", 0.5, False), (0.99, "<", 1.0, True), (1.0, "<", 1.0, False),
     (None, ">=", 0.5, False)],
)  # fmt: skip
def test_check_compares_both_sides(value: float | None, op: str, goal: float, passed: bool) -> None:
    assert report.check("x", value, "ratio", op, goal)["passed"] is passed


def test_parse_producer_summary_takes_the_last_line() -> None:
    stderr = (
        "11:00:00 producer sent 100 (50/s), acked 90, errors 0\n"
        "producer: sent 20000, acked 19999, failed 1 in 1.2 s (16998/s), seed 7 errors: KafkaTimeoutError×1\n"
    )
    assert report.parse_producer_summary(stderr) == {
        "sent": 20000, "acked": 19999, "failed": 1, "seconds": 1.2, "rate": 16998.0,
    }  # fmt: skip
    assert report.parse_producer_summary("producer: error: cannot reach Kafka") is None


def test_commit_latencies_use_the_first_commit_past_each_offset() -> None:
    produced = {(0, 0): 10.0, (0, 1): 10.5, (0, 2): 11.0, (1, 0): 10.2}
    commits = [(10.1, {}), (11.0, {0: 2}), (11.5, {0: 2, 1: 1}), (12.0, {0: 3, 1: 1})]
    assert report.commit_latencies(commits, produced) == pytest.approx(
        {(0, 0): 1.0, (0, 1): 0.5, (1, 0): 1.3, (0, 2): 1.0}
    )


def test_table_marks_pass_fail_and_context_rows() -> None:
    rows = [report.check("ratio", 0.4, "ratio", ">=", 0.5), report.info("rate", 1234.0, "msg/s"),
            report.check("p99", 0.25, "s", "<", 1.0)]  # fmt: skip
    lines = report.format_table(rows).splitlines()
    assert lines[2].split()[-1] == "FAIL"
    assert lines[3].split()[-1] == "-"
    assert "1,234 msg/s" in lines[3]
    assert lines[4].split()[-1] == "PASS"
    assert "250 ms" in lines[4]


def well_formed() -> dict[str, Any]:
    return {
        "schema": report.RESULT_SCHEMA, "started_at": "t", "finished_at": "t", "duration_s": 1.0, "config": {},
        "machine": {"cores": 2, "cpu_model": "x", "python": "3.11", "libraries": {}, "endpoints": "stand-in"},
        "classifier": {"mode": "rules-only"}, "results": {},
        "checks": [report.check("ratio", 0.6, "ratio", ">=", 0.5)],
    }  # fmt: skip


def test_result_shape_accepts_a_well_formed_document_and_survives_json() -> None:
    doc = orjson.loads(orjson.dumps(well_formed()))
    assert report.result_problems(doc) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.pop("machine"), "missing key 'machine'"),
        (lambda d: d["machine"].pop("cores"), "machine.cores missing"),
        (lambda d: d["classifier"].update(mode="ml"), "classifier.mode"),
        (lambda d: d["checks"].append({"name": "x"}), "checks[1] lacks"),
        (lambda d: d.update(schema=99), "schema is 99"),
    ],
)
def test_result_shape_names_what_is_wrong(mutate: Any, expected: str) -> None:
    doc = well_formed()
    mutate(doc)
    assert any(expected in problem for problem in report.result_problems(doc))


def test_workload_mix_shares_and_every_reject_is_rejected() -> None:
    records = build(2000, 200, seed=3)
    kinds = Counter(record.kind for record in records)
    assert len(records) == 2000
    assert kinds["reject"] == 20
    assert kinds["anomaly"] == pytest.approx(200, abs=2)
    for record in records:
        parsed = parse_message(record.value)
        assert isinstance(parsed, Rejected) == (record.kind == "reject"), record.value[:120]


def test_every_malformed_variant_is_rejected() -> None:
    obs = orjson.loads(build(1, 1, seed=1)[0].value)
    reasons = set()
    for variant in range(11):
        result = parse_message(malformed(obs, variant))
        assert isinstance(result, Rejected)
        reasons.add(result.reason)
    assert len(reasons) >= 9


def test_record_file_round_trip(tmp_path: Any) -> None:
    pairs = [(b"pt-1", b'{"a":1}'), (b"", b""), (b"k" * 300, bytes(range(256)))]
    path = tmp_path / "records.bin"
    assert write_records(path, iter(pairs)) == 3
    assert read_records(path) == pairs


# ------------------------------------------------------------------------------------------------ presets
def test_presets_are_frozen_and_flags_replace_single_fields(tmp_path: Path) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        presets.FULL.repeat = 5  # type: ignore[misc]
    assert presets.parse_preset([]) == presets.FULL
    quick = presets.parse_preset(["--quick", "--messages", "777", "--output", str(tmp_path / "r.json")])
    assert quick.messages == 777 and quick.output == tmp_path / "r.json"
    assert quick.repeat == presets.QUICK.repeat and quick.latency_seconds == presets.QUICK.latency_seconds
    assert quick.quick and not presets.FULL.quick
    assert presets.parse_preset(["--only", "latency,memory"]).sections == ("latency", "memory")


@pytest.mark.parametrize("argv", [["--only", "consumer,nonsense"], ["--repeat", "0"]])
def test_bad_preset_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        presets.parse_preset(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_checks_show_cpu_per_reading_and_time_to_first_commit() -> None:
    median = {"consumer_rate": 10_000.0, "ceiling_rate": 40_000.0, "ratio": 0.25, "steady_ratio": 0.3,
              "consumer_cpu_us_per_reading": 180.0, "ceiling_cpu_us_per_reading": 45.0, "cpu_ratio": 0.25,
              "first_commit_after_s": 1.2}  # fmt: skip
    rows = {row["name"]: row for row in report.build_checks({"consumer_throughput": {"median": median}})}
    assert rows["consumer CPU per reading (median)"]["value"] == 180.0
    assert rows["bare consumer CPU per reading (median)"]["value"] == 45.0
    assert rows["consumer time to first commit (median)"]["value"] == 1.2
    assert rows["consumer / ceiling, same run (median)"]["passed"] is False
    table = report.format_table(list(rows.values()))
    assert "180 µs" in table and "1200 ms" in table


def test_per_reading_cpu() -> None:
    assert per_reading_us(1.5, 10_000) == 150.0
    assert per_reading_us(None, 10) is None and per_reading_us(1.0, 0) is None
