"""The consumer loop against an in-memory Kafka consumer: commits only what every sink confirmed, in order.

The invariant checked at every commit: every anomaly below the committed offset is in (fake) Elasticsearch,
every normal below it is in the archive, every reject below it was dead-lettered. Failures are injected in the
delivery (Elasticsearch) and in the archive; the end state must still hold everything exactly once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka.structs import TopicPartition

from bp.errors import SinkError
from bp.fhir import build_observation
from bp.reading import Reading
from bp.settings import load_settings
from consumer.batch import Batch, sort_batch
from consumer.commit import CommitProtocol
from consumer.loop import BatchProcessor, RunOptions, consume
from consumer.pipeline import Message, Pipeline
from consumer.sinks import DeadLetters, Document, ElasticsearchSink, NormalArchive
from runtime.cli import StopFlag

TOPIC = "bp"
T0 = datetime(2026, 6, 1, 8, tzinfo=UTC)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes
    timestamp: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


def value_for(partition: int, offset: int) -> tuple[bytes, str]:
    """Every 5th message an anomaly, else every 7th garbage, the rest normal. Returns (bytes, kind)."""
    if offset % 7 == 3 and offset % 5 != 0:
        return b"garbage %d/%d" % (partition, offset), "reject"
    systolic, diastolic, kind = (150, 95, "anomaly") if offset % 5 == 0 else (118, 76, "normal")
    reading = Reading(f"p{partition}", T0 + timedelta(minutes=offset), systolic, diastolic, f"o{partition}-{offset}")
    return orjson.dumps(build_observation(reading)), kind


class FakeConsumer:
    """The KafkaConsumer methods the loop uses, over an in-memory log; checks the invariant on every commit."""

    def __init__(self, partitions: int, per_partition: int, sinks: FakeSinks) -> None:
        self.log = {
            TopicPartition(TOPIC, p): [Record(TOPIC, p, o, value_for(p, o)[0], b"k") for o in range(per_partition)]
            for p in range(partitions)
        }
        self.position = dict.fromkeys(self.log, 0)
        self.committed = dict.fromkeys(self.log, 0)
        self.paused: set[TopicPartition] = set()
        self.sinks = sinks

    def assignment(self) -> set[TopicPartition]:
        return set(self.log)

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        budget = max_records or 500
        out = {}
        for tp in sorted(self.log):
            if tp in self.paused or budget <= 0:
                continue
            start = self.position[tp]
            chunk = self.log[tp][start : start + min(budget, 7)]
            if chunk:
                out[tp] = chunk
                self.position[tp] += len(chunk)
                budget -= len(chunk)
        return out

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position[tp] = offset

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        for tp, meta in offsets.items():
            assert meta.offset >= self.committed[tp], "commits must never go backwards"
            for offset in range(meta.offset):
                self.sinks.assert_has(tp.partition, offset)
            self.committed[tp] = meta.offset

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.log[tp])


class FakeSinks:
    """Fake Elasticsearch bulk client and DLQ producer; ``fail_bulk_calls`` makes those bulk calls refuse (400)."""

    def __init__(self, archive: Path, fail_bulk_calls: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.archive = archive
        self.stored: dict[str, dict[str, Any]] = {}
        self.bulk_calls = 0
        self.fail_bulk_calls = fail_bulk_calls
        self.dead: list[bytes] = []
        self.hold: tuple[int, threading.Event] | None = None  # (bulk call, event): that call waits for the event

    # Elasticsearch
    def bulk(self, *, operations: list[dict[str, Any]], refresh: bool | str = False) -> dict[str, Any]:
        self.bulk_calls += 1
        if self.hold is not None and self.hold[0] == self.bulk_calls:
            assert self.hold[1].wait(timeout=10), "the held bulk call was never released"
        if self.bulk_calls in self.fail_bulk_calls:
            error = RuntimeError("refused")
            error.status_code = 400  # type: ignore[attr-defined]
            raise error
        for action, source in zip(operations[::2], operations[1::2], strict=True):
            self.stored[action["index"]["_id"]] = source
        return {"errors": False, "items": [{"index": {"status": 201}} for _ in operations[::2]]}

    # Kafka producer (dead letters)
    def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Any:
        self.dead.append(value)

        class Done:
            def get(self, timeout: float) -> None:
                return None

        return Done()

    def flush(self, timeout: float) -> None:
        return None

    def archived(self) -> list[str]:
        return [
            orjson.loads(line)["observation_id"]
            for path in sorted(self.archive.rglob("*.jsonl"))
            for line in path.read_bytes().splitlines()
        ]

    def assert_has(self, partition: int, offset: int) -> None:
        raw, kind = value_for(partition, offset)
        if kind == "anomaly":
            assert f"o{partition}-{offset}" in self.stored, f"committed past un-indexed anomaly {partition}/{offset}"
        elif kind == "normal":
            assert f"o{partition}-{offset}" in self.archived(), (
                f"committed past un-archived normal {partition}/{offset}"
            )
        else:
            assert raw in self.dead, f"committed past a reject not dead-lettered {partition}/{offset}"


def run_loop(tmp_path: Path, sinks: FakeSinks, partitions: int = 3, per_partition: int = 60) -> FakeConsumer:
    settings = load_settings(batch_size=20, index="bpx", stats_index="bps", archive_dir=tmp_path / "archive")
    stop = StopFlag()
    fake = FakeConsumer(partitions, per_partition, sinks)
    processor = BatchProcessor(
        settings,
        Pipeline(model=None),
        NormalArchive(sinks.archive),
        ElasticsearchSink(sinks, on_wait=lambda _: None, should_stop=lambda: bool(stop)),
        DeadLetters(sinks, "bp.dlq"),
        "c1",
    )
    consume(fake, processor, RunOptions(stop_when_idle=0.3), stop)
    return fake


def expected(partitions: int, per_partition: int) -> dict[str, set[Any]]:
    kinds: dict[str, set[Any]] = {"anomaly": set(), "normal": set(), "reject": set()}
    for p in range(partitions):
        for o in range(per_partition):
            raw, kind = value_for(p, o)
            kinds[kind].add(raw if kind == "reject" else f"o{p}-{o}")
    return kinds


def check_end_state(fake: FakeConsumer, sinks: FakeSinks) -> None:
    want = expected(3, 60)
    assert all(offset == 60 for offset in fake.committed.values())
    anomalies = {key for key, doc in sinks.stored.items() if "patient_id" in doc}
    assert anomalies == want["anomaly"]
    archived = sinks.archived()
    assert len(archived) == len(set(archived)) and set(archived) == want["normal"]
    assert set(sinks.dead) == want["reject"]


def test_everything_once_and_commits_only_what_sinks_confirmed(tmp_path: Path) -> None:
    sinks = FakeSinks(tmp_path / "archive")
    fake = run_loop(tmp_path, sinks)
    check_end_state(fake, sinks)
    assert len(sinks.dead) == len(set(sinks.dead))  # no failure: no dead letter twice


@pytest.mark.parametrize("failing", [{1}, {3}, {2, 3}, {4, 6, 7}])
def test_delivery_failures_rewind_and_replay_without_loss(tmp_path: Path, failing: set[int]) -> None:
    sinks = FakeSinks(tmp_path / "archive", fail_bulk_calls=failing)
    fake = run_loop(tmp_path, sinks)
    check_end_state(fake, sinks)


def test_archive_failure_while_the_batch_in_flight_fails_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Batch 2's delivery (bulk call 2) is held until batch 3's archive write has failed, then fails as well:
    # both must be replayed from batch 2's offsets, none skipped.
    sinks = FakeSinks(tmp_path / "archive", fail_bulk_calls={2})
    archive_failed = threading.Event()
    sinks.hold = (2, archive_failed)
    calls = {"n": 0}
    original = NormalArchive.write

    def flaky(self: NormalArchive, lines: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            archive_failed.set()
            raise SinkError("disk full")
        return original(self, lines)

    monkeypatch.setattr(NormalArchive, "write", flaky)
    monkeypatch.setattr("consumer.loop.ARCHIVE_RETRY_S", 0.0)
    fake = run_loop(tmp_path, sinks)
    check_end_state(fake, sinks)


# ------------------------------------------------------------------------------------ the commit protocol alone
def decided(tmp_path: Path, offsets: range, partition: int = 0) -> Batch:
    messages = [Message(value_for(partition, o)[0], b"k", TOPIC, partition, o) for o in offsets]
    archive = NormalArchive(tmp_path / "archive")
    batch = sort_batch(
        messages,
        Pipeline(model=None).decide_batch(messages),
        archive_line=archive.line_for,
        anomaly_document=lambda outcome, _: Document("bpx", f"o-{outcome.message.offset}", {}, outcome.message),
    )
    archive.write(batch.normals)  # as the loop does before handing a batch to the protocol
    return batch


def test_sort_batch_sorts_once_by_destination(tmp_path: Path) -> None:
    batch = decided(tmp_path, range(10, 20))
    kinds = [value_for(0, o)[1] for o in range(10, 20)]
    assert len(batch.normals) == kinds.count("normal") == batch.counts.normal
    assert [doc.origin.offset for doc in batch.documents if doc.origin] == [10, 15]
    assert [message.offset for message, _ in batch.dead_letters] == [
        o for o in range(10, 20) if kinds[o - 10] == "reject"
    ]
    assert batch.counts.messages == 10 and batch.counts.total == 10
    assert (batch.first_offsets, batch.next_offsets) == ({(TOPIC, 0): 10}, {(TOPIC, 0): 20})


class Journal:
    """Records the protocol's steps in order."""

    def __init__(self, fail_checkpoint: bool = False) -> None:
        self.steps: list[str] = []
        self.fail_checkpoint = fail_checkpoint

    def deliver(self, batch: Batch) -> int:
        self.steps.append(f"deliver {batch.first_offsets[(TOPIC, 0)]}")
        return len(batch.documents)

    def checkpoint(self, batch: Batch) -> None:
        self.steps.append("checkpoint")
        if self.fail_checkpoint:
            raise SinkError("state store unwritable")

    def committed(self, batch: Batch, receipt: int) -> None:
        self.steps.append(f"committed {batch.next_offsets[(TOPIC, 0)]} ({receipt} docs)")

    def failed(self, batch: Batch, error: SinkError) -> None:
        self.steps.append(f"failed: {error}")


def protocol_over(fake: FakeConsumer, journal: Journal) -> CommitProtocol[int]:
    return CommitProtocol(
        fake, journal.deliver, on_committed=journal.committed, on_failed=journal.failed, checkpoint=journal.checkpoint
    )


def test_protocol_delivers_then_checkpoints_then_commits(tmp_path: Path) -> None:
    sinks = FakeSinks(tmp_path / "archive")
    fake = FakeConsumer(1, 20, sinks)
    journal = Journal()
    protocol = protocol_over(fake, journal)
    batch = decided(tmp_path, range(5))
    protocol.start(batch)
    with pytest.raises(RuntimeError, match="settle"):  # one batch in flight at a time
        protocol.start(batch)
    sinks.stored["o0-0"] = {}  # the fake consumer's invariant checks the sinks at the commit
    sinks.dead.append(value_for(0, 3)[0])
    assert protocol.settle() and protocol.in_flight is None
    protocol.close()
    assert journal.steps == ["deliver 0", "checkpoint", "committed 5 (1 docs)"]
    assert fake.committed[TopicPartition(TOPIC, 0)] == 5


def test_protocol_failed_checkpoint_commits_nothing_and_rewinds_both_batches(tmp_path: Path) -> None:
    fake = FakeConsumer(1, 20, FakeSinks(tmp_path / "archive"))
    fake.position[TopicPartition(TOPIC, 0)] = 12  # two batches polled: 0..5 in flight, 5..12 prepared
    journal = Journal(fail_checkpoint=True)
    protocol = protocol_over(fake, journal)
    protocol.start(decided(tmp_path, range(5)))
    later = decided(tmp_path, range(5, 12))
    assert not protocol.settle(later.first_offsets)
    protocol.close()
    assert journal.steps == ["deliver 0", "checkpoint", "failed: state store unwritable"]
    assert fake.committed[TopicPartition(TOPIC, 0)] == 0 and fake.position[TopicPartition(TOPIC, 0)] == 0
