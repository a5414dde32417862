"""Producer throughput: the producer CLI (``--rate 0``) against a bare kafka-python producer sending the same bytes
with the same settings, in the same run; and the ``--dry-run`` generation + serialisation rate."""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from bench import report
from bench.bare import write_records
from bench.context import PARTITIONS, Bench
from bench.presets import Preset
from bench.workload import BENCH_START
from bp.cohort import Cohort
from bp.errors import BenchError

log = logging.getLogger("bench")


def bench_producer(bench: Bench, preset: Preset) -> dict[str, Any]:
    from producer.producer import encode

    count, patients, seed = preset.producer_messages, preset.producer_patients, preset.seed
    start = BENCH_START.isoformat()
    # The exact readings the CLI will publish: make_cohort with --rate 0 → interval 900 s.
    cohort = Cohort(patients=patients, seed=seed, start=BENCH_START, interval=timedelta(seconds=900))
    pairs = [(sim.reading.patient_id.encode(), encode(sim)) for sim in cohort.take(count)]
    values_file = bench.work / "producer-input.bin"
    write_records(values_file, iter(pairs))
    common = [
        "--count",
        str(count),
        "--patients",
        str(patients),
        "--seed",
        str(seed),
        "--start",
        start,
        "--rate",
        "0",
        "--quiet",
    ]
    runs = []
    dry_runs = []
    try:
        for rep in range(preset.repeat):
            run: dict[str, Any] = {}
            order = ("bare", "cli") if rep % 2 == 0 else ("cli", "bare")
            run["order"] = list(order)
            for what in order:
                topic = bench.name("produce", what, rep)
                bench.create_topic(topic)
                cpu_server0 = bench.server_cpu()
                try:
                    if what == "bare":
                        child = bench.children.start(
                            f"bare-producer{rep}",
                            "bench.bare",
                            ["produce", "--bootstrap", bench.bootstrap, "--topic", topic, "--input", str(values_file)],
                        )
                        rc = child.wait(600)
                        if rc != 0:
                            raise BenchError(f"bare producer failed (rc {rc}): {child.tail()}")
                        out = orjson.loads(child.stdout_path.read_bytes().strip().splitlines()[-1])
                        run["bare"] = {
                            "sent": out["sent"],
                            "acked": out["acked"],
                            "failed": out["failed"],
                            "seconds": round(out["seconds"], 3),
                            "rate": round(out["rate"], 1),
                            "process_seconds": round(time.monotonic() - child.started, 3),
                        }
                    else:
                        child = bench.children.start(
                            f"producer{rep}",
                            "producer.producer",
                            ["--topic", topic, "--partitions", str(PARTITIONS), *common],
                        )
                        rc = child.wait(600)
                        summary = report.parse_producer_summary(child.stderr())
                        if rc != 0 or summary is None:
                            raise BenchError(f"producer CLI failed (rc {rc}): {child.tail()}")
                        summary["process_seconds"] = round(time.monotonic() - child.started, 3)
                        run["cli"] = summary
                    ends = bench.end_offsets(topic)
                    run[what]["end_offsets_total"] = sum(ends.values())
                    cpu_server1 = bench.server_cpu()
                    if cpu_server0 is not None and cpu_server1 is not None:
                        run[what]["server_cpu_s"] = round(cpu_server1 - cpu_server0, 2)
                finally:
                    bench.delete_topics(topic)
                log.info("  run %d %s producer: %.0f msg/s", rep + 1, what, run[what]["rate"])
            run["ratio"] = round(run["cli"]["rate"] / run["bare"]["rate"], 3)
            runs.append(run)
            dry_runs.append(dry_run(bench, rep, common, pairs if rep == 0 else None))
            log.info("  run %d dry-run: %.0f readings/s", rep + 1, dry_runs[-1]["rate"])
    finally:
        values_file.unlink(missing_ok=True)
    return {
        "messages": count,
        "patients": patients,
        "avg_value_bytes": round(sum(len(v) for _, v in pairs) / len(pairs), 1),
        "settings": "acks=all, idempotent, linger_ms=10, batch_size=131072, lz4 (as producer.make_producer)",
        "timing": "CLI: its own summary line (Stats start → flushed, includes generation); "
        "bare: first send → flush() returned, values pre-encoded",
        "runs": runs,
        "median": {
            "cli_rate": report.median_of([r["cli"] for r in runs], "rate"),
            "bare_rate": report.median_of([r["bare"] for r in runs], "rate"),
            "ratio": report.median_of(runs, "ratio"),
        },
        "dry_run": {
            "runs": dry_runs,
            "median_rate": report.median_of(dry_runs, "rate"),
            "same_bytes_as_bare_input": dry_runs[0].get("same_bytes") if dry_runs else None,
        },
    }


def dry_run(bench: Bench, rep: int, common: list[str], expected: list[tuple[bytes, bytes]] | None) -> dict[str, Any]:
    """Timed with stdout to /dev/null (generation + serialisation, no disk); when ``expected`` is given, a second
    untimed run to a file checks that the CLI publishes exactly the bytes the bare producer was given."""
    child = bench.children.start(f"dry-run{rep}", "producer.producer", ["--dry-run", *common], stdout=Path(os.devnull))
    rc = child.wait(600)
    summary = report.parse_producer_summary(child.stderr())
    if rc != 0 or summary is None:
        raise BenchError(f"producer --dry-run failed (rc {rc}): {child.tail()}")
    result: dict[str, Any] = {**summary, "process_seconds": round(time.monotonic() - child.started, 3)}
    if expected is None:
        return result
    out_path = bench.work / f"dry-run{rep}.jsonl"
    child = bench.children.start(f"dry-run{rep}-bytes", "producer.producer", ["--dry-run", *common], stdout=out_path)
    try:
        if child.wait(600) != 0:
            raise BenchError(f"producer --dry-run failed: {child.tail()}")
        result["same_bytes"] = out_path.read_bytes().splitlines() == [value for _, value in expected]
        return result
    finally:
        out_path.unlink(missing_ok=True)

