"""One benchmark run's context: endpoints, clients, children and the Kafka/Elasticsearch chores every measurement
needs (topics, offsets, pre-producing, indices, starting the consumer CLI)."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from bench.bare import make_producer
from bench.processes import Child, Children, cpu_seconds
from bench.workload import Record
from bp.errors import BenchError
from runtime.waits import wait_until

PARTITIONS = 6
POLL_S = 0.1  # committed-offset polling while timing the consumer


class KafkaAdmin(Protocol):
    """The admin calls the benchmark makes (``kafka.KafkaAdminClient``)."""

    def create_topics(self, new_topics: list[Any]) -> Any: ...
    def list_topics(self) -> list[str]: ...
    def delete_topics(self, topics: list[str]) -> Any: ...
    def list_group_offsets(self, group_id: str) -> dict[str, dict[Any, Any]]: ...


class MetadataProbe(Protocol):
    """A group-less ``kafka.KafkaConsumer`` used for metadata and end offsets only (it never polls)."""

    def topics(self) -> set[str]: ...
    def partitions_for_topic(self, topic: str) -> set[int] | None: ...
    def end_offsets(self, partitions: list[Any]) -> dict[Any, int]: ...


class EsIndices(Protocol):
    def delete(self, *, index: str, ignore_unavailable: bool) -> Any: ...
    def delete_index_template(self, *, name: str) -> Any: ...
    def refresh(self, *, index: str) -> Any: ...


class EsClient(Protocol):
    """The Elasticsearch calls the benchmark makes (``elasticsearch.Elasticsearch`` has them)."""

    @property
    def indices(self) -> EsIndices: ...
    @property
    def search(self) -> Callable[..., Any]: ...
    @property
    def info(self) -> Callable[..., Any]: ...


@dataclass
class Bench:
    """Endpoints, clients and the children of one benchmark run."""

    bootstrap: str
    es_url: str
    standin: Any  # infra.standin.StandIn | None
    run_id: str
    work: Path
    children: Children
    admin: KafkaAdmin
    es: EsClient
    probe: MetadataProbe
    classifier: dict[str, Any]
    broker: Any = None  # infra.kafka.KafkaBroker when Kafka is a real broker started for the run

    def name(self, *parts: object) -> str:
        return "-".join(["bench", self.run_id, *map(str, parts)])

    def server_cpu(self) -> float | None:
        """CPU seconds of the servers started for the run (stand-in, plus the real broker if any)."""
        pids = [server.pid for server in (self.standin, self.broker) if server is not None and server.pid]
        seconds = [cpu_seconds(pid) for pid in pids]
        known = [s for s in seconds if s is not None]
        return sum(known) if known else None

    # --- Kafka
    def create_topic(self, topic: str, partitions: int = PARTITIONS) -> None:
        from kafka.admin import NewTopic

        self.admin.create_topics([NewTopic(topic, partitions, 1)])

        def visible() -> bool:
            self.probe.topics()  # refresh metadata
            return len(self.probe.partitions_for_topic(topic) or ()) == partitions

        wait_until(visible, 15, f"topic {topic} visible with {partitions} partitions")

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
        started = time.monotonic()
        producer = make_producer(self.bootstrap, "lz4", client_id="bench-preproduce")
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

        def read_to_end() -> bool:
            for tp, batch in reader.poll(timeout_ms=500, max_records=5000).items():
                for record in batch:
                    stamps[(tp.partition, record.offset)] = record.timestamp / 1000.0
            return all(reader.position(tp) >= ends[tp.partition] for tp in tps)

        try:
            reader.assign(tps)
            reader.seek_to_beginning(*tps)
            wait_until(read_to_end, 120, f"reading back the timestamps of {topic}", interval_s=0)
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
    def start_consumer(
        self, label: str, topic: str, group: str, index: str, archive: Path, extra: Sequence[str] = ()
    ) -> Child:
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
            "--state-dir",
            str(archive.with_name(f"{archive.name}.state")),
            "--stop-when-idle",
            "120",
            "--summary-json",
            str(self.work / f"{label}.summary.json"),
            *self.classifier["consumer_flags"],
            *extra,
        ]
        return self.children.start(label, "consumer.consumer", args)


def consumer_summary(bench: Bench, label: str) -> dict[str, Any] | None:
    path = bench.work / f"{label}.summary.json"
    return orjson.loads(path.read_bytes()) if path.exists() else None


def cleanup_consumer(bench: Bench, topic: str, index: str, archive: Path, group: str) -> None:
    bench.delete_topics(f"{topic}.dlq")
    bench.drop_index(index)
    bench.drop_index(f"{index}-stats")
    shutil.rmtree(archive, ignore_errors=True)
    shutil.rmtree(archive.with_name(f"{archive.name}.state"), ignore_errors=True)
    bench.delete_topics(f"{group}.state")


