"""Memory: the consumer's RSS at start, after a checkpoint and after the largest size, with many distinct patients."""

from __future__ import annotations

import logging
from typing import Any

from bench.consume import time_consumer
from bench.context import Bench
from bench.presets import Preset
from bench.workload import build

log = logging.getLogger("bench")


def bench_memory(bench: Bench, preset: Preset) -> dict[str, Any]:
    log.info("memory: building %d readings for %d patients", preset.memory_messages, preset.memory_patients)
    records = build(preset.memory_messages, preset.memory_patients, preset.seed + 1)
    topic = bench.name("memory")
    bench.create_topic(topic)
    try:
        produce_s = bench.produce(topic, records)
        distinct = len({r.key for r in records})
        del records
        ends = bench.end_offsets(topic)
        total = sum(ends.values())
        marks = sorted({m for m in (preset.memory_checkpoint, total) if m <= total})
        run = time_consumer(bench, "memory-consumer", topic, ends, max(300.0, total / 100.0), checkpoints=marks)
    finally:
        bench.delete_topics(topic)
    at = {str(k): v["rss_mib"] for k, v in run["checkpoints"].items()}
    return {
        "messages": total,
        "patients": preset.memory_patients,
        "distinct_patient_keys": distinct,
        "preproduce_s": round(produce_s, 2),
        "rss_mib": {
            "start": run["rss_mib_before_first_commit"],
            **{f"after_{k}": v for k, v in at.items()},
            "peak": run["rss_mib_peak"],
        },
        "run": run,
    }

