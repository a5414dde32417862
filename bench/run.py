"""``python -m bench.run`` (``make bench``): throughput, latency and memory of bp-stream against raw kafka-python.

Runs against a throwaway noida-db stand-in on free loopback ports (started and stopped here, also on failure or
Ctrl-C), or against the servers named by BP_KAFKA_BOOTSTRAP and BP_ES_URL. Writes bench/results/latest.json and a
timestamped copy, and prints a table of every figure with its goal.

- consumer: N pre-produced readings (10 % anomalies, 1 % malformed) on a 6-partition topic; the consumer CLI is
  timed from its spawn until the group's committed offsets equal the end offsets; in the same run, a bare
  kafka-python consumer (+ orjson.loads) reads the same topic (the ceiling). Ratio goal ≥ 0.5.
- producer: the producer CLI (--rate 0) vs a bare kafka-python producer with the same settings sending the same
  bytes, in the same run (ratio goal ≥ 0.8); and the --dry-run generation + serialisation rate (goal ≥ 20,000/s).
- latency: producer at a fixed rate with the consumer running: produce time (Kafka record timestamp) → indexed
  (ES ingested_at) for anomalies, → seen in the archive for normals, → committed for every record. Goal p99 < 1 s.
- memory: consumer RSS at start, after 100k and after the largest size, with 100k distinct patients.
Every run uses its own topics, group, index and archive directory, removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import logging
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from bench import report
from bench.bare import write_records
from bench.processes import ROOT, Child, Children, cpu_seconds, rss_mib
from bench.workload import BENCH_START, Record, build
from bp.cohort import Cohort

log = logging.getLogger("bench")

RESULTS_DIR = ROOT / "bench" / "results"
PARTITIONS = 6
POLL_S = 0.1  # committed-offset polling while timing the consumer
ARCHIVE_POLL_S = 0.05
LIBRARIES = (
    "kafka-python",
    "elasticsearch",
    "elastic-transport",
    "orjson",
    "lz4",
    "numpy",
    "scikit-learn",
    "joblib",
    "noida-db",
    "pydantic",
)


class BenchError(RuntimeError):
    """A benchmark step failed (a child exited early, a deadline passed)."""


# ------------------------------------------------------------------------------------------------ context
@dataclass
class Bench:
    """Endpoints, clients and the children of one benchmark run."""

    bootstrap: str
    es_url: str
    standin: Any  # infra.standin.StandIn | None
    run_id: str
    work: Path
    children: Children
    admin: Any
    es: Any
    probe: Any  # a group-less KafkaConsumer used only for metadata and end offsets (never polls)
    classifier: dict[str, Any]

    def name(self, *parts: object) -> str:
        return "-".join(["bench", self.run_id, *map(str, parts)])

    def server_cpu(self) -> float | None:
        return cpu_seconds(self.standin.pid) if self.standin is not None and self.standin.pid else None

    # --- Kafka
    def create_topic(self, topic: str, partitions: int = PARTITIONS) -> None:
        from kafka.admin import NewTopic

        self.admin.create_topics([NewTopic(topic, partitions, 1)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            self.probe.topics()  # refresh metadata
            found = self.probe.partitions_for_topic(topic)
            if found and len(found) == partitions:
                return
            time.sleep(0.1)
        raise BenchError(f"topic {topic} not visible after 15 s")

    def delete_topics(self, *topics: str) -> None:
        existing = set(self.admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            with contextlib.suppress(Exception):
                self.admin.delete_topics(doomed)

    def end_offsets(self, topic: str) -> dict[int, int]:
        from kafka import TopicPartition

        partitions = self.probe.partitions_for_topic(topic) or set()
        ends = self.probe.end_offsets([TopicPartition(topic, p) for p in sorted(partitions)])
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    def committed(self, group: str, topic: str) -> dict[int, int]:
        try:
            offsets = self.admin.list_group_offsets(group).get(group, {})
        except Exception:  # group not there yet, coordinator loading...
            return {}
        return {tp.partition: int(m.offset) for tp, m in offsets.items() if tp.topic == topic and m.offset >= 0}

    def produce(self, topic: str, records: Sequence[Record]) -> float:
        """Pre-produce records (lz4, acks=all, idempotent); returns the seconds it took."""
        from kafka import KafkaProducer

        started = time.monotonic()
        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=10,
            batch_size=128 * 1024,
            compression_type="lz4",
            client_id="bench-preproduce",
        )
        failures: list[BaseException] = []
        headers = [("content-type", b"application/fhir+json")]
        for record in records:
            producer.send(topic, value=record.value, key=record.key, headers=headers).add_errback(failures.append)
        producer.flush(timeout=300)
        producer.close(timeout=10)
        if failures:
            raise BenchError(f"pre-producing to {topic}: {len(failures)} sends failed: {failures[0]}")
        return time.monotonic() - started

    def record_timestamps(self, topic: str, ends: dict[int, int]) -> dict[tuple[int, int], float]:
        """Every record's timestamp (seconds since the epoch) read back from the topic."""
        from kafka import KafkaConsumer, TopicPartition

        tps = [TopicPartition(topic, p) for p in ends]
        reader = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False)
        stamps: dict[tuple[int, int], float] = {}
        try:
            reader.assign(tps)
            reader.seek_to_beginning(*tps)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and any(reader.position(tp) < ends[tp.partition] for tp in tps):
                for tp, batch in reader.poll(timeout_ms=500, max_records=5000).items():
                    for record in batch:
                        stamps[(tp.partition, record.offset)] = record.timestamp / 1000.0
        finally:
            reader.close()
        return stamps

    # --- Elasticsearch
    def drop_index(self, index: str) -> None:
        with contextlib.suppress(Exception):
            self.es.indices.delete(index=index, ignore_unavailable=True)
        with contextlib.suppress(Exception):
            self.es.indices.delete_index_template(name=index)

    # --- the consumer CLI
    def start_consumer(self, label: str, topic: str, group: str, index: str, archive: Path) -> Child:
        args = [
            "--topic",
            topic,
            "--dlq-topic",
            f"{topic}.dlq",
            "--group",
            group,
            "--index",
            index,
            "--stats-index",
            f"{index}-stats",
            "--archive-dir",
            str(archive),
            "--stop-when-idle",
            "120",
            "--summary-json",
            str(self.work / f"{label}.summary.json"),
            *self.classifier["consumer_flags"],
        ]
        return self.children.start(label, "consumer.consumer", args)


def consumer_summary(bench: Bench, label: str) -> dict[str, Any] | None:
    path = bench.work / f"{label}.summary.json"
    return orjson.loads(path.read_bytes()) if path.exists() else None


def cleanup_consumer(bench: Bench, topic: str, index: str, archive: Path) -> None:
    bench.delete_topics(f"{topic}.dlq")
    bench.drop_index(index)
    bench.drop_index(f"{index}-stats")
    shutil.rmtree(archive, ignore_errors=True)


# ---------------------------------------------------------------------------------------- consumer timing
def time_consumer(
    bench: Bench, label: str, topic: str, ends: dict[int, int], deadline_s: float, checkpoints: Sequence[int] = ()
) -> dict[str, Any]:
    """Spawn the consumer CLI, poll the group's committed offsets until they reach ``ends``, then SIGTERM it."""
    group = bench.name(label, uuid.uuid4().hex[:6])
    index = bench.name(label, "anom")
    archive = bench.work / f"{label}-archive"
    total = sum(ends.values())
    cpu_server0 = bench.server_cpu()
    child = bench.start_consumer(label, topic, group, index, archive)
    t0 = child.started
    rss_samples: list[tuple[float, float, int]] = []  # (t since spawn, MiB, committed)
    t_first_commit = committed_first = t_done = None
    marks: dict[int, dict[str, float | None]] = {}
    rss_before_first_commit = None
    consumer_cpu = None
    try:
        deadline = t0 + deadline_s
        while time.monotonic() < deadline:
            if not child.alive():
                raise BenchError(f"consumer exited early (rc {child.process.returncode}): {child.tail()}")
            done = sum(bench.committed(group, topic).values())
            now = time.monotonic()
            rss = rss_mib(child.pid)
            if rss is not None:
                rss_samples.append((round(now - t0, 3), round(rss, 1), done))
            if done == 0:
                rss_before_first_commit = rss
            elif t_first_commit is None:
                t_first_commit, committed_first = now, done
            for mark in checkpoints:
                if mark not in marks and done >= mark:
                    marks[mark] = {"committed": done, "seconds": round(now - t0, 2), "rss_mib": rss}
            if done >= total:
                t_done = now
                break
            time.sleep(POLL_S)
        consumer_cpu = cpu_seconds(child.pid)
        if t_done is None:
            raise BenchError(f"consumer {label}: committed {done} of {total} within {deadline_s:.0f} s")
    finally:
        rc = child.stop()
        cleanup_consumer(bench, topic, index, archive)
    cpu_server1 = bench.server_cpu()
    seconds = t_done - t0
    steady = None
    if t_first_commit is not None and t_done > t_first_commit and committed_first is not None:
        steady = (total - committed_first) / (t_done - t_first_commit)
    peak = max((s[1] for s in rss_samples), default=None)
    return {
        "messages": total,
        "seconds": round(seconds, 3),
        "rate": round(total / seconds, 1),
        "first_commit_after_s": None if t_first_commit is None else round(t_first_commit - t0, 3),
        "steady_rate": None if steady is None else round(steady, 1),
        "consumer_cpu_s": consumer_cpu,
        "server_cpu_s": None if cpu_server0 is None or cpu_server1 is None else round(cpu_server1 - cpu_server0, 2),
        "rss_mib_before_first_commit": rss_before_first_commit,
        "rss_mib_peak": peak,
        "checkpoints": {str(k): v for k, v in sorted(marks.items())},
        "rss_samples_every_s": POLL_S,
        "rss_samples": rss_samples[:: max(1, len(rss_samples) // 200)],
        "exit_code": rc,
        "summary": consumer_summary(bench, label),
    }


def time_ceiling(bench: Bench, label: str, topic: str, total: int, deadline_s: float) -> dict[str, Any]:
    group = bench.name(label, uuid.uuid4().hex[:6])
    cpu_server0 = bench.server_cpu()
    child = bench.children.start(
        label,
        "bench.bare",
        [
            "consume",
            "--bootstrap",
            bench.bootstrap,
            "--topic",
            topic,
            "--group",
            group,
            "--expect",
            str(total),
            "--timeout",
            str(deadline_s),
        ],
    )
    try:
        rc = child.wait(deadline_s + 30)
    finally:
        child.stop()
    if rc != 0:
        raise BenchError(f"bare consumer failed (rc {rc}): {child.tail()}")
    out = orjson.loads(child.stdout_path.read_bytes().strip().splitlines()[-1])
    if out["count"] < total or out["t_last"] is None:
        raise BenchError(f"bare consumer read {out['count']} of {total}")
    seconds = out["t_last"] - child.started
    steady = (out["count"] - 1) / (out["t_last"] - out["t_first"]) if out["t_last"] > out["t_first"] else None
    cpu_server1 = bench.server_cpu()
    return {
        "messages": out["count"],
        "decoded": out["decoded"],
        "decode_failed": out["decode_failed"],
        "seconds": round(seconds, 3),
        "rate": round(out["count"] / seconds, 1),
        "first_record_after_s": round(out["t_first"] - child.started, 3),
        "steady_rate": None if steady is None else round(steady, 1),
        "server_cpu_s": None if cpu_server0 is None or cpu_server1 is None else round(cpu_server1 - cpu_server0, 2),
    }


def bench_consumer(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    log.info("consumer throughput: building %d readings (%d patients)", args.messages, args.patients)
    records = build(args.messages, args.patients, args.seed)
    kinds = {k: sum(1 for r in records if r.kind == k) for k in ("normal", "anomaly", "reject")}
    topic = bench.name("consume")
    bench.create_topic(topic)
    try:
        produce_s = bench.produce(topic, records)
        del records
        ends = bench.end_offsets(topic)
        total = sum(ends.values())
        log.info("pre-produced %d messages in %.1f s", total, produce_s)
        deadline = max(120.0, total / 200.0)
        runs = []
        for rep in range(args.repeat):
            order = ("ceiling", "consumer") if rep % 2 == 0 else ("consumer", "ceiling")
            run: dict[str, Any] = {"order": list(order)}
            for what in order:
                if what == "ceiling":
                    run["ceiling"] = time_ceiling(bench, f"ceiling{rep}", topic, total, deadline)
                else:
                    run["consumer"] = time_consumer(bench, f"consumer{rep}", topic, ends, deadline)
                log.info("  run %d %s: %.0f msg/s", rep + 1, what, run[what]["rate"])
            run["ratio"] = round(run["consumer"]["rate"] / run["ceiling"]["rate"], 3)
            c_steady, b_steady = run["consumer"]["steady_rate"], run["ceiling"]["steady_rate"]
            run["steady_ratio"] = round(c_steady / b_steady, 3) if c_steady and b_steady else None
            runs.append(run)
    finally:
        bench.delete_topics(topic)
    return {
        "messages": total,
        "mix": kinds,
        "partitions": PARTITIONS,
        "compression": "lz4",
        "preproduce_s": round(produce_s, 2),
        "timing": "consumer: from spawn to committed offsets == end offsets (polled every "
        f"{POLL_S} s); ceiling: from spawn to its last record (orjson.loads of each)",
        "runs": runs,
        "median": {
            "consumer_rate": report.median_of([r["consumer"] for r in runs], "rate"),
            "ceiling_rate": report.median_of([r["ceiling"] for r in runs], "rate"),
            "ratio": report.median_of(runs, "ratio"),
            "steady_ratio": report.median_of(runs, "steady_ratio"),
        },
    }


# ------------------------------------------------------------------------------------------------ producer
def bench_producer(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    from producer.producer import encode

    count, patients, seed = args.producer_messages, args.producer_patients, args.seed
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
        for rep in range(args.repeat):
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


# ------------------------------------------------------------------------------------------------- latency
def tail_archive(root: Path, positions: dict[Path, int], seen: dict[tuple[int, int], float]) -> None:
    """Read lines appended to the archive since the last call; stamp each (partition, offset) when first seen."""
    now = time.time()
    for path in root.glob("*/*.jsonl"):
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


def bench_latency(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    topic = bench.name("latency")
    label = "latency-consumer"
    group = bench.name("latency", uuid.uuid4().hex[:6])
    index = bench.name("latency", "anom")
    archive = bench.work / "latency-archive"
    count = int(args.rate * args.latency_seconds)
    bench.create_topic(topic)
    consumer = producer = None
    seen: dict[tuple[int, int], float] = {}
    positions: dict[Path, int] = {}
    commits: list[tuple[float, dict[int, int]]] = []
    try:
        consumer = bench.start_consumer(label, topic, group, index, archive)
        deadline = time.monotonic() + 60
        while "partitions assigned" not in consumer.stderr():
            if not consumer.alive() or time.monotonic() > deadline:
                raise BenchError(f"latency consumer never got its partitions: {consumer.tail()}")
            time.sleep(0.1)
        rss_start = rss_mib(consumer.pid)
        producer = bench.children.start(
            "latency-producer",
            "producer.producer",
            [
                "--topic",
                topic,
                "--partitions",
                str(PARTITIONS),
                "--count",
                str(count),
                "--rate",
                str(args.rate),
                "--patients",
                str(args.latency_patients),
                "--seed",
                str(args.seed),
                "--quiet",
            ],
        )
        hard_deadline = time.monotonic() + args.latency_seconds + 120
        next_commit_poll = 0.0
        caught_up_at = None
        while time.monotonic() < hard_deadline:
            if not consumer.alive():
                raise BenchError(f"latency consumer exited: {consumer.tail()}")
            tail_archive(archive, positions, seen)
            now = time.monotonic()
            if now >= next_commit_poll:
                offsets = bench.committed(group, topic)
                commits.append((time.time(), offsets))
                next_commit_poll = now + POLL_S
                if not producer.alive():
                    if producer.process.returncode != 0:
                        raise BenchError(f"latency producer failed: {producer.tail()}")
                    ends = bench.end_offsets(topic)
                    if sum(offsets.values()) >= sum(ends.values()) == count:
                        caught_up_at = now
                        break
            time.sleep(ARCHIVE_POLL_S)
        if caught_up_at is None:
            raise BenchError("latency run: the consumer did not catch up before the deadline")
        time.sleep(0.2)
        tail_archive(archive, positions, seen)
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
        cleanup_consumer(bench, topic, index, archive)
        bench.delete_topics(topic)
    return {
        "rate": args.rate,
        "seconds": args.latency_seconds,
        "messages": sum(ends.values()),
        "patients": args.latency_patients,
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


# -------------------------------------------------------------------------------------------------- memory
def bench_memory(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    log.info("memory: building %d readings for %d patients", args.memory_messages, args.memory_patients)
    records = build(args.memory_messages, args.memory_patients, args.seed + 1)
    topic = bench.name("memory")
    bench.create_topic(topic)
    try:
        produce_s = bench.produce(topic, records)
        distinct = len({r.key for r in records})
        del records
        ends = bench.end_offsets(topic)
        total = sum(ends.values())
        marks = sorted({m for m in (args.memory_checkpoint, total) if m <= total})
        run = time_consumer(bench, "memory-consumer", topic, ends, max(300.0, total / 100.0), checkpoints=marks)
    finally:
        bench.delete_topics(topic)
    at = {str(k): v["rss_mib"] for k, v in run["checkpoints"].items()}
    return {
        "messages": total,
        "patients": args.memory_patients,
        "distinct_patient_keys": distinct,
        "preproduce_s": round(produce_s, 2),
        "rss_mib": {
            "start": run["rss_mib_before_first_commit"],
            **{f"after_{k}": v for k, v in at.items()},
            "peak": run["rss_mib_peak"],
        },
        "run": run,
    }


# --------------------------------------------------------------------------------------------------- facts
def choose_classifier(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    if args.rules_only:
        return {"mode": "rules-only", "reason": "--rules-only given", "consumer_flags": ["--rules-only"]}
    from bp.errors import ModelError
    from consumer.scoring import load_model, sidecar_path

    # A private copy: another engineer retraining mid-run must not change (or remove) the model under us.
    copy = work / "model" / args.model.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copy2(args.model, copy)
        shutil.copy2(sidecar_path(args.model), sidecar_path(copy))
        model = load_model(copy)
    except (OSError, ModelError) as exc:
        return {"mode": "rules-only", "reason": f"model not usable: {exc}", "consumer_flags": ["--rules-only"]}
    return {
        "mode": "model",
        "model_path": str(args.model),
        "model_version": model.version,
        "threshold": model.threshold,
        "sha256": hashlib.sha256(copy.read_bytes()).hexdigest(),
        "consumer_flags": ["--model", str(copy)],
    }


def machine_facts(bench: Bench) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    libs: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            libs[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            libs[name] = None
    mem_total = None
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        mem_total = round(int(handle.readline().split()[1]) / 1024 / 1024, 1)
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": mem_total,
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": libs,
        "endpoints": "stand-in (noida-db, throwaway data dir)" if bench.standin is not None else "real (from env)",
        "kafka_bootstrap": bench.bootstrap,
        "es_url": bench.es_url,
        "es_version": bench.es.info()["version"]["number"],
    }


def build_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    c = results.get("consumer_throughput")
    if c:
        rows += [
            report.info("consumer CLI throughput (median)", c["median"]["consumer_rate"], "msg/s"),
            report.info("bare consumer + orjson ceiling (median)", c["median"]["ceiling_rate"], "msg/s"),
            report.check("consumer / ceiling, same run (median)", c["median"]["ratio"], "ratio", ">=", 0.5),
            report.info("  steady state (after first commit / record)", c["median"]["steady_ratio"], "ratio"),
        ]
    p = results.get("producer_throughput")
    if p:
        rows += [
            report.info("producer CLI --rate 0 (median)", p["median"]["cli_rate"], "msg/s"),
            report.info("bare kafka-python producer (median)", p["median"]["bare_rate"], "msg/s"),
            report.check("producer / bare, same run (median)", p["median"]["ratio"], "ratio", ">=", 0.8),
            report.check(
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
            rows.append(report.info(f"{label} p50", s.get("p50"), "s"))
            rows.append(report.info(f"{label} p95", s.get("p95"), "s"))
            op_row = report.check(f"{label} p99", s.get("p99"), "s", "<", 1.0)
            rows.append(op_row)
    m = results.get("memory")
    if m:
        for key, value in m["rss_mib"].items():
            rows.append(report.info(f"consumer RSS {key.replace('_', ' ')}", value, "MiB"))
    return rows


# ---------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke run (~1 min): small sizes, one repeat, 15 s latency")
    add("--repeat", type=int, help="repeats of the throughput runs (default 3; --quick 1)")
    add("--messages", type=int, help="consumer throughput: messages (default 100000; --quick 20000)")
    add("--patients", type=int, default=10_000, help="consumer throughput: cohort size (default 10000)")
    add("--producer-messages", type=int, help="producer throughput: messages (default 100000; --quick 20000)")
    add("--producer-patients", type=int, default=1000, help="producer throughput: cohort size (default 1000)")
    add("--rate", type=float, default=1000.0, help="latency: readings/s (default 1000)")
    add("--latency-seconds", type=float, help="latency: duration (default 60; --quick 15)")
    add("--latency-patients", type=int, default=1000, help="latency: cohort size (default 1000)")
    add("--memory-messages", type=int, help="memory: largest size (default 300000; --quick 30000)")
    add("--memory-checkpoint", type=int, help="memory: intermediate RSS point (default 100000; --quick 10000)")
    add("--memory-patients", type=int, help="memory: distinct patients (default 100000; --quick 10000)")
    add("--seed", type=int, default=2026)
    add("--only", help="comma list of consumer,producer,latency,memory (default all)")
    add("--rules-only", action="store_true", help="benchmark the consumer without the model")
    add("--model", type=Path, default=Path("ml/artifacts/bp_logreg.joblib"))
    add("--output", type=Path, default=RESULTS_DIR / "latest.json")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "repeat": (3, 1),
        "messages": (100_000, 20_000),
        "producer_messages": (100_000, 20_000),
        "latency_seconds": (60.0, 15.0),
        "memory_messages": (300_000, 30_000),
        "memory_checkpoint": (100_000, 10_000),
        "memory_patients": (100_000, 10_000),
    }
    for key, (full, small) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, small if quick else full)
    args.sections = ["consumer", "producer", "latency", "memory"] if not args.only else args.only.split(",")
    if args.repeat < 1:
        parser.error("--repeat must be ≥ 1")
    return args


@contextlib.contextmanager
def endpoints(work: Path) -> Iterator[tuple[str, str, Any]]:
    bootstrap, es_url = os.environ.get("BP_KAFKA_BOOTSTRAP"), os.environ.get("BP_ES_URL")
    if bootstrap or es_url:
        if not (bootstrap and es_url):
            raise BenchError("set both BP_KAFKA_BOOTSTRAP and BP_ES_URL to use real endpoints (or neither)")
        yield bootstrap, es_url, None
        return
    from infra.standin import StandIn, free_port

    standin = StandIn(work / "standin", free_port(), free_port())
    log.info("starting the stand-in (Kafka %s, ES %s)", standin.bootstrap, standin.es_url)
    standin.start()
    try:
        yield standin.bootstrap, standin.es_url, standin
    finally:
        standin.stop()
        log.info("stand-in stopped")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.now(UTC)
    t_start = time.monotonic()
    run_id = started.strftime("%H%M%S") + "-" + uuid.uuid4().hex[:4]
    work = Path(tempfile.mkdtemp(prefix="bp-bench-"))
    classifier = choose_classifier(args, work)
    log.info("classifier: %s%s", classifier["mode"], f" ({classifier.get('reason')})" if "reason" in classifier else "")
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    load: dict[str, list[float]] = {"start": [round(x, 2) for x in os.getloadavg()]}
    children = None
    try:
        with endpoints(work) as (bootstrap, es_url, standin):
            from elasticsearch import Elasticsearch
            from kafka import KafkaAdminClient, KafkaConsumer

            env = {k: v for k, v in os.environ.items() if not k.startswith("BP_")}
            env.update(BP_KAFKA_BOOTSTRAP=bootstrap, BP_ES_URL=es_url, PYTHONUNBUFFERED="1")
            (work / "logs").mkdir()
            children = Children(work / "logs", env)
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-admin")
            probe = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
            es = Elasticsearch(es_url, request_timeout=60)
            bench = Bench(bootstrap, es_url, standin, run_id, work, children, admin, es, probe, classifier)
            machine = machine_facts(bench)
            try:
                sections = (
                    ("consumer", bench_consumer),
                    ("producer", bench_producer),
                    ("latency", bench_latency),
                    ("memory", bench_memory),
                )
                for section, func in sections:
                    if section not in args.sections:
                        continue
                    key = {"consumer": "consumer_throughput", "producer": "producer_throughput"}.get(section, section)
                    log.info("== %s", section)
                    load[f"{section}_start"] = [round(x, 2) for x in os.getloadavg()]
                    try:
                        results[key] = func(bench, args)
                    except BenchError as exc:
                        log.error("%s failed: %s", section, exc)
                        errors[section] = str(exc)
                    finally:
                        children.stop_all()
            finally:
                children.stop_all()
                admin.close()
                probe.close()
                es.close()
    except KeyboardInterrupt:
        log.error("interrupted: children and stand-in stopped, no results written")
        return 130
    finally:
        if children is not None:
            children.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    load["end"] = [round(x, 2) for x in os.getloadavg()]
    machine["load_average_1_5_15_min"] = load  # other work on a shared machine skews every figure
    checks = build_checks(results)
    doc = {
        "schema": report.RESULT_SCHEMA,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_s": round(time.monotonic() - t_start, 1),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine,
        "classifier": {k: v for k, v in classifier.items() if k != "consumer_flags"},
        "results": results,
        "errors": errors,
        "checks": checks,
    }
    problems = report.result_problems(doc)
    if problems:
        log.error("result document malformed: %s", problems)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    args.output.write_bytes(data)
    stamped = args.output.parent / f"{started.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    stamped.write_bytes(data)
    print()
    print(
        f"bp-stream benchmark ({machine['endpoints']}, {machine['cores']} cores, {machine['cpu_model']}, "
        f"Python {machine['python']}; consumer {classifier['mode']}; repeat {args.repeat})"
    )
    print(report.format_table(checks))
    for section, message in errors.items():
        print(f"{section}: FAILED: {message}")
    print(f"\nresults: {args.output} (and {stamped.name})")
    failed = bool(errors) or any(row["passed"] is False for row in checks)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
