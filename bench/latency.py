"""Latency: the producer CLI at a fixed rate with the consumer running. Produce time (the Kafka record timestamp) →
indexed (ES ``ingested_at``) for anomalies, → seen in the archive for normals, → committed for every record."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from bench import report
from bench.context import PARTITIONS, POLL_S, Bench, cleanup_consumer, consumer_summary
from bench.presets import Preset
from bench.processes import rss_mib
from bp.archive import FILE_GLOB
from bp.errors import BenchError
from runtime.waits import wait_until

ARCHIVE_POLL_S = 0.05


def tail_archive(root: Path, positions: dict[Path, int], seen: dict[tuple[int, int], float]) -> None:
    """Read lines appended to the archive since the last call; stamp each (partition, offset) when first seen."""
    now = time.time()
    for path in root.glob(FILE_GLOB):
        start = positions.get(path, 0)
        try:
            with path.open("rb") as handle:
                handle.seek(start)
                chunk = handle.read()
        except OSError:
            continue
        end = chunk.rfind(b"\n")
        if end < 0:
            continue
        positions[path] = start + end + 1
        for line in chunk[: end + 1].splitlines():
            doc = orjson.loads(line)
            seen.setdefault((int(doc["source_partition"]), int(doc["source_offset"])), now)


def fetch_anomaly_latencies(bench: Bench, index: str) -> list[float]:
    """ingested_at - produced_at of every anomaly document (search_after pages; no percentiles agg needed)."""
    bench.es.indices.refresh(index=index)
    latencies: list[float] = []
    after = None
    for _ in range(1000):
        body: dict[str, Any] = {
            "size": 5000,
            "_source": ["produced_at", "ingested_at"],
            "sort": [{"source_partition": "asc"}, {"source_offset": "asc"}],
        }
        if after is not None:
            body["search_after"] = after
        hits = bench.es.search(index=index, **body)["hits"]["hits"]
        if not hits:
            break
        for hit in hits:
            src = hit["_source"]
            if src.get("produced_at") and src.get("ingested_at"):
                produced = datetime.fromisoformat(src["produced_at"])
                ingested = datetime.fromisoformat(src["ingested_at"])
                latencies.append((ingested - produced).total_seconds())
        after = hits[-1]["sort"]
    return latencies


def bench_latency(bench: Bench, preset: Preset) -> dict[str, Any]:
    topic = bench.name("latency")
    label = "latency-consumer"
    group = bench.name("latency", uuid.uuid4().hex[:6])
    index = bench.name("latency", "anom")
    archive = bench.work / "latency-archive"
    count = int(preset.rate * preset.latency_seconds)
    bench.create_topic(topic)
    consumer = producer = None
    seen: dict[tuple[int, int], float] = {}
    positions: dict[Path, int] = {}
    commits: list[tuple[float, dict[int, int]]] = []
    try:
        consumer = bench.start_consumer(label, topic, group, index, archive)

        def assigned() -> bool:
            if not consumer.alive():
                raise BenchError(f"latency consumer exited: {consumer.tail()}")
            return "partitions assigned" in consumer.stderr()

        wait_until(assigned, 60, "latency consumer: partitions assigned")
        rss_start = rss_mib(consumer.pid)
        producer = bench.children.start(
            "latency-producer",
            "producer.producer",
            ["--topic", topic, "--partitions", str(PARTITIONS), "--count", str(count), "--rate", str(preset.rate),
             "--patients", str(preset.latency_patients), "--seed", str(preset.seed), "--quiet"],
        )  # fmt: skip
        next_commit_poll = 0.0

        def caught_up() -> bool:
            """Tail the archive every tick; every POLL_S also record the committed offsets and check the end."""
            nonlocal next_commit_poll
            if not consumer.alive():
                raise BenchError(f"latency consumer exited: {consumer.tail()}")
            tail_archive(archive, positions, seen)
            now = time.monotonic()
            if now < next_commit_poll:
                return False
            offsets = bench.committed(group, topic)
            commits.append((time.time(), offsets))
            next_commit_poll = now + POLL_S
            if producer.alive():
                return False
            if producer.process.returncode != 0:
                raise BenchError(f"latency producer failed: {producer.tail()}")
            return sum(offsets.values()) >= sum(bench.end_offsets(topic).values()) == count

        wait_until(caught_up, preset.latency_seconds + 120, "latency run: the consumer catching up", ARCHIVE_POLL_S)
        tail_archive(archive, positions, seen)  # committed implies archived: the last lines are there already
        rss_end = rss_mib(consumer.pid)
        consumer.stop()
        producer_summary = report.parse_producer_summary(producer.stderr())
        ends = bench.end_offsets(topic)
        stamps = bench.record_timestamps(topic, ends)
        archived = [seen_at - stamps[key] for key, seen_at in seen.items() if key in stamps]
        committed = list(report.commit_latencies(commits, stamps).values())
        indexed = fetch_anomaly_latencies(bench, index)
        summary = consumer_summary(bench, label)
    finally:
        for child in (producer, consumer):
            if child is not None:
                child.stop()
        cleanup_consumer(bench, topic, index, archive, group)
        bench.delete_topics(topic)
    return {
        "rate": preset.rate,
        "seconds": preset.latency_seconds,
        "messages": sum(ends.values()),
        "patients": preset.latency_patients,
        "mix": "the producer CLI's natural cohort mix (see consumer_summary)",
        "method": {
            "produced": "Kafka record timestamp (CreateTime, set by the producer at send)",
            "anomaly_indexed": "ES ingested_at - produced_at (ingested_at is stamped just before the bulk request)",
            "normal_archived": f"time the bench first saw the archive line (polled every {ARCHIVE_POLL_S} s)",
            "committed": f"time the bench saw the group's committed offset pass the record (polled every {POLL_S} s)",
        },
        "anomaly_indexed": report.latency_summary(indexed),
        "normal_archived": report.latency_summary(archived),
        "committed": report.latency_summary(committed),
        "consumer_rss_mib": {"start": rss_start, "end": rss_end},
        "producer_summary": producer_summary,
        "consumer_summary": summary,
    }

