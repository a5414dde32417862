"""Pure helpers of the benchmark: percentiles, medians, goal checks, the result document and the printed table.

No I/O here (the runner in ``bench.run`` does that), so every function is unit-tested in tests/unit/test_bench.py.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

RESULT_SCHEMA = 1
RESULT_KEYS = ("schema", "started_at", "finished_at", "duration_s", "config", "machine", "classifier", "results",
               "checks")  # fmt: skip
CHECK_KEYS = ("name", "value", "unit", "goal", "op", "passed")
LATENCY_QUANTILES = (50.0, 95.0, 99.0)

_PRODUCER_SUMMARY = re.compile(
    r"sent (?P<sent>\d+), acked (?P<acked>\d+), failed (?P<failed>\d+) in (?P<seconds>[\d.]+) s "
    r"\((?P<rate>\d+)/s\)"
)


def percentiles(values: Sequence[float], quantiles: Iterable[float] = LATENCY_QUANTILES) -> dict[str, float]:
    """``{"p50": ..., "p95": ...}`` by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentiles of an empty sample")
    qs = list(quantiles)
    found = np.percentile(np.asarray(values, dtype=np.float64), qs)
    return {f"p{q:g}": float(v) for q, v in zip(qs, found, strict=True)}


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """Count, p50/p95/p99, mean and max of a latency sample in seconds (all rounded to 0.1 ms); n=0 if empty."""
    if not seconds:
        return {"n": 0}
    summary: dict[str, Any] = {"n": len(seconds)}
    summary.update({k: round(v, 4) for k, v in percentiles(seconds).items()})
    summary["mean"] = round(float(np.mean(seconds)), 4)
    summary["max"] = round(float(np.max(seconds)), 4)
    summary["min"] = round(float(np.min(seconds)), 4)
    return summary


def median_of(runs: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """Median of ``run[key]`` over the runs that have a number there (None if none has)."""
    values = [run[key] for run in runs if isinstance(run.get(key), int | float) and not isinstance(run[key], bool)]
    return float(statistics.median(values)) if values else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def check(name: str, value: float | None, unit: str, op: str, goal: float) -> dict[str, Any]:
    """One row of the goal table; ``op`` is ">=" or "<"; a missing value fails."""
    if op == ">=":
        passed = value is not None and value >= goal
    elif op == "<":
        passed = value is not None and value < goal
    else:
        raise ValueError(f"unknown comparison {op!r}")
    return {"name": name, "value": value, "unit": unit, "goal": goal, "op": op, "passed": passed}


def info(name: str, value: float | None, unit: str) -> dict[str, Any]:
    """A row without a goal (shown for context, never fails)."""
    return {"name": name, "value": value, "unit": unit, "goal": None, "op": None, "passed": None}


def parse_producer_summary(stderr: str) -> dict[str, float] | None:
    """The producer CLI's last summary line: ``sent N, acked N, failed 0 in X s (R/s)`` → numbers."""
    matches = list(_PRODUCER_SUMMARY.finditer(stderr))
    if not matches:
        return None
    found = matches[-1]
    return {
        "sent": int(found["sent"]),
        "acked": int(found["acked"]),
        "failed": int(found["failed"]),
        "seconds": float(found["seconds"]),
        "rate": float(found["rate"]),
    }


def commit_latencies(
    commits: Sequence[tuple[float, Mapping[int, int]]],
    produced: Mapping[tuple[int, int], float],
) -> dict[tuple[int, int], float]:
    """Produce → committed latency of every record whose commit was observed.

    ``commits``: (observed time, {partition: committed offset}) in time order; ``produced``: {(partition, offset):
    record timestamp}, both in seconds of the same clock. A record (p, o) is committed at the first observation
    whose offset for p is > o (Kafka commits the *next* offset to read).
    """
    done: dict[tuple[int, int], float] = {}
    last: dict[int, int] = {}
    for seen_at, offsets in commits:
        for partition, committed in offsets.items():
            start = last.get(partition, 0)
            for offset in range(start, committed):
                produced_at = produced.get((partition, offset))
                if produced_at is not None:
                    done[(partition, offset)] = seen_at - produced_at
            last[partition] = max(start, committed)
    return done


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
    if unit == "ratio":
        return f"{value:.2f}"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    return f"{value:,.0f} {unit}"


def format_table(checks: Sequence[Mapping[str, Any]]) -> str:
    """The goal table as aligned text: figure, value, goal, PASS/FAIL ("-" for context rows)."""
    rows = [("figure", "value", "goal", "result")]
    for row in checks:
        goal = "" if row["goal"] is None else f"{row['op']} {fmt_value(row['goal'], row['unit'])}"
        verdict = "-" if row["passed"] is None else ("PASS" if row["passed"] else "FAIL")
        rows.append((str(row["name"]), fmt_value(row["value"], str(row["unit"])), goal, verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for index, cells in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def result_problems(doc: Mapping[str, Any]) -> list[str]:
    """What is wrong with a result document's shape (empty when it is well formed)."""
    problems = [f"missing key {key!r}" for key in RESULT_KEYS if key not in doc]
    if doc.get("schema") != RESULT_SCHEMA:
        problems.append(f"schema is {doc.get('schema')!r}, expected {RESULT_SCHEMA}")
    machine = doc.get("machine")
    if isinstance(machine, Mapping):
        for key in ("cores", "cpu_model", "python", "libraries", "endpoints"):
            if key not in machine:
                problems.append(f"machine.{key} missing")
    elif "machine" in doc:
        problems.append("machine is not an object")
    classifier = doc.get("classifier")
    if not isinstance(classifier, Mapping) or classifier.get("mode") not in ("model", "rules-only"):
        problems.append("classifier.mode must be 'model' or 'rules-only'")
    checks = doc.get("checks")
    if not isinstance(checks, list):
        problems.append("checks is not a list")
    else:
        for index, row in enumerate(checks):
            missing = [key for key in CHECK_KEYS if not isinstance(row, Mapping) or key not in row]
            if missing:
                problems.append(f"checks[{index}] lacks {missing}")
    return problems


def build_checks(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The printed table's rows: every figure, and a pass/fail check where the figure has a goal."""
    rows: list[dict[str, Any]] = []
    c = results.get("consumer_throughput")
    if c:
        rows += [
            info("consumer CLI throughput (median)", c["median"]["consumer_rate"], "msg/s"),
            info("bare consumer + orjson ceiling (median)", c["median"]["ceiling_rate"], "msg/s"),
            check("consumer / ceiling, same run (median)", c["median"]["ratio"], "ratio", ">=", 0.5),
            info("  steady state (after first commit / record)", c["median"]["steady_ratio"], "ratio"),
            info("consumer CPU per reading (median)", c["median"].get("consumer_cpu_us_per_reading"), "µs"),
            info("bare consumer CPU per reading (median)", c["median"].get("ceiling_cpu_us_per_reading"), "µs"),
            info("  bare CPU / consumer CPU (median)", c["median"].get("cpu_ratio"), "ratio"),
            info("consumer time to first commit (median)", c["median"].get("first_commit_after_s"), "s"),
            info("consumer with state in memory only (median)", c["median"].get("memory_state_rate"), "msg/s"),
            check("  state store cost, same run (median)", c["median"].get("state_store_cost"), "ratio", "<", 0.2),
        ]
    p = results.get("producer_throughput")
    if p:
        rows += [
            info("producer CLI --rate 0 (median)", p["median"]["cli_rate"], "msg/s"),
            info("bare kafka-python producer (median)", p["median"]["bare_rate"], "msg/s"),
            check("producer / bare, same run (median)", p["median"]["ratio"], "ratio", ">=", 0.8),
            check(
                "--dry-run generation, 1 core (median)", p["dry_run"]["median_rate"], "readings/s", ">=", 20_000
            ),
        ]
    lat = results.get("latency")
    if lat:
        labels = (
            ("anomaly_indexed", "anomaly produce→indexed"),
            ("normal_archived", "normal produce→archived"),
            ("committed", "any produce→committed"),
        )
        for key, label in labels:
            s = lat[key]
            rows.append(info(f"{label} p50", s.get("p50"), "s"))
            rows.append(info(f"{label} p95", s.get("p95"), "s"))
            op_row = check(f"{label} p99", s.get("p99"), "s", "<", 1.0)
            rows.append(op_row)
    m = results.get("memory")
    if m:
        for key, value in m["rss_mib"].items():
            rows.append(info(f"consumer RSS {key.replace('_', ' ')}", value, "MiB"))
    return rows

