"""The consumer loop against an in-memory Kafka consumer: commits only what every sink confirmed, in order.

The invariant checked at every commit: every anomaly below the committed offset is in (fake) Elasticsearch,
every normal below it is in the archive, every reject below it was dead-lettered. Failures are injected in the
delivery (Elasticsearch) and in the archive; the end state must still hold everything exactly once.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka.structs import TopicPartition

from bp.errors import SinkError
from bp.fhir import build_observation
from bp.reading import Reading
from bp.settings import load_settings
from consumer.archive import NormalArchive
from consumer.batch import Batch, sort_batch
from consumer.commit import CommitProtocol
from consumer.dead_letters import DeadLetters
from consumer.loop import RunOptions, consume
from consumer.pipeline import Message, Pipeline
from consumer.processor import BatchProcessor
from consumer.retry import Retry
from consumer.sinks import Document, ElasticsearchSink
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
        self.positions = dict.fromkeys(self.log, 0)
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
            start = self.positions[tp]
            chunk = self.log[tp][start : start + min(budget, 7)]
            if chunk:
                out[tp] = chunk
                self.positions[tp] += len(chunk)
                budget -= len(chunk)
        return out

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

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

    def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def end_offsets(self, tps: list[TopicPartition], timeout_ms: int) -> dict[TopicPartition, int]:
        return {tp: len(self.log[tp]) for tp in tps}


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
    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
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


def processor_over(sinks: FakeSinks, stop: StopFlag) -> BatchProcessor:
    """A rules-only processor whose archive, Elasticsearch and dead letters are the fake sinks."""
    settings = load_settings(batch_size=20, index="bpx", stats_index="bps", archive_dir=sinks.archive)
    return BatchProcessor(
        settings,
        Pipeline(model=None),
        NormalArchive(sinks.archive),
        ElasticsearchSink(sinks, on_wait=lambda _: None, should_stop=lambda: bool(stop)),
        DeadLetters(sinks, "bp.dlq"),
        "c1",
    )


def run_loop(tmp_path: Path, sinks: FakeSinks, partitions: int = 3, per_partition: int = 60) -> FakeConsumer:
    stop = StopFlag()
    fake = FakeConsumer(partitions, per_partition, sinks)
    processor = processor_over(sinks, stop)
    consume(fake, processor, RunOptions(stop_when_idle=0.3), stop, Retry(60, initial_s=0.0, max_s=0.0))
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

    def delivered(self, batch: Batch, receipt: int) -> None:
        self.steps.append(f"delivered up to {batch.next_offsets[(TOPIC, 0)]} ({receipt} docs)")

    def failed(self, batch: Batch, error: SinkError) -> None:
        self.steps.append(f"failed: {error}")


def protocol_over(fake: FakeConsumer, journal: Journal) -> CommitProtocol[int]:
    return CommitProtocol(
        fake, journal.deliver, on_delivered=journal.delivered, on_failed=journal.failed, checkpoint=journal.checkpoint
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
    assert journal.steps == ["deliver 0", "checkpoint", "delivered up to 5 (1 docs)"]
    assert fake.committed[TopicPartition(TOPIC, 0)] == 5


def test_protocol_failed_checkpoint_commits_nothing_and_rewinds_both_batches(tmp_path: Path) -> None:
    fake = FakeConsumer(1, 20, FakeSinks(tmp_path / "archive"))
    fake.positions[TopicPartition(TOPIC, 0)] = 12  # two batches polled: 0..5 in flight, 5..12 prepared
    journal = Journal(fail_checkpoint=True)
    protocol = protocol_over(fake, journal)
    protocol.start(decided(tmp_path, range(5)))
    later = decided(tmp_path, range(5, 12))
    assert not protocol.settle(later.first_offsets)
    protocol.close()
    assert journal.steps == ["deliver 0", "checkpoint", "failed: state store unwritable"]
    assert fake.committed[TopicPartition(TOPIC, 0)] == 0 and fake.positions[TopicPartition(TOPIC, 0)] == 0


# -------------------------------------------------------------------------- one message never stops a partition
def poisoned(poison: Record) -> list[Record]:
    """5 valid readings, the poison, 5 more valid readings on one partition (the issue's acceptance shape)."""
    valid = [Record(TOPIC, 0, o, value_for(0, o)[0], b"k") for o in (1, 2, 4, 5, 6, 7, 8, 9, 11, 12)]
    records = [*valid[:5], poison, *valid[5:]]
    return [dataclasses.replace(record, offset=offset) for offset, record in enumerate(records)]


class PoisonSinks(FakeSinks):
    def assert_has(self, partition: int, offset: int) -> None:  # the poisoned log has its own expectations
        return None


def run_poisoned(tmp_path: Path, poison: Record) -> tuple[FakeConsumer, PoisonSinks, list[tuple[bytes, str]]]:
    sinks = PoisonSinks(tmp_path / "archive")
    letters: list[tuple[bytes, str]] = []
    original_send = sinks.send

    def send(topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Any:
        letters.append((value, dict(headers)["reason"].decode()))
        return original_send(topic, value, key, headers)

    sinks.send = send  # type: ignore[method-assign]
    fake = FakeConsumer(1, 0, sinks)
    fake.log[TopicPartition(TOPIC, 0)] = poisoned(poison)
    stop = StopFlag()
    processor = processor_over(sinks, stop)
    consume(fake, processor, RunOptions(stop_when_idle=0.3), stop, Retry(60, initial_s=0.0, max_s=0.0))
    return fake, sinks, letters


def valid_accounted(sinks: FakeSinks) -> int:
    anomalies = {key for key, doc in sinks.stored.items() if "patient_id" in doc}
    return len(anomalies) + len(sinks.archived())


def observation_at(effective: datetime, systolic: float = 118, diastolic: float = 76) -> bytes:
    return orjson.dumps(build_observation(Reading("px", effective, systolic, diastolic, "poison")))


@pytest.mark.parametrize(
    ("poison", "reason"),
    [
        (Record(TOPIC, 0, 0, observation_at(datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5)))), b"k"),
         "bad_time"),
        (Record(TOPIC, 0, 0, observation_at(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))), b"k"),
         "bad_time"),
        (Record(TOPIC, 0, 0, observation_at(T0, 185, 125), b"k", timestamp=253_402_300_800_000), "bad_record"),
    ],
    ids=["year-9999-normal", "year-1-normal", "year-10000-record-timestamp"],
)  # fmt: skip
def test_a_poison_message_is_dead_lettered_and_the_partition_moves_on(
    tmp_path: Path, poison: Record, reason: str
) -> None:
    fake, sinks, letters = run_poisoned(tmp_path, poison)
    assert fake.committed[TopicPartition(TOPIC, 0)] == 11  # committed to the end
    assert letters == [(poison.value, reason)]
    assert valid_accounted(sinks) == 10


def test_a_message_that_makes_the_pipeline_raise_is_dead_lettered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Pipeline.decide_batch

    def explode_on_poison(self: Pipeline, messages: Any) -> Any:
        if any(message.value == b"boom" for message in messages):
            raise RecursionError("maximum recursion depth exceeded")
        return original(self, messages)

    monkeypatch.setattr(Pipeline, "decide_batch", explode_on_poison)
    fake, sinks, letters = run_poisoned(tmp_path, Record(TOPIC, 0, 0, b"boom", b"k"))
    assert fake.committed[TopicPartition(TOPIC, 0)] == 11
    assert letters == [(b"boom", "bad_record")] and valid_accounted(sinks) == 10


# -------------------------------------------------------------------------------- Kafka errors are ridden out
class FlakyConsumer(FakeConsumer):
    """Raises the given Kafka errors from the first polls / commits, then behaves."""

    def __init__(self, sinks: FakeSinks, poll_errors: list[Exception], commit_errors: list[Exception]) -> None:
        super().__init__(2, 30, sinks)
        self.poll_errors = poll_errors
        self.commit_errors = commit_errors

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        if self.poll_errors:
            raise self.poll_errors.pop(0)
        return super().poll(timeout_ms, max_records)

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        super().commit(offsets)


def test_rebalances_and_broker_errors_at_poll_and_commit_are_retried_not_fatal(tmp_path: Path) -> None:
    from kafka.errors import CommitFailedError, KafkaConnectionError, KafkaTimeoutError, RebalanceInProgressError

    sinks = FakeSinks(tmp_path / "archive")
    fake = FlakyConsumer(
        sinks,
        poll_errors=[KafkaConnectionError(), KafkaTimeoutError("metadata")],
        commit_errors=[RebalanceInProgressError(), CommitFailedError("generation"), KafkaTimeoutError("commit")],
    )
    stop = StopFlag()
    waits: list[str] = []
    retry = Retry(60, initial_s=0.0, max_s=0.0)
    failed = retry.failed
    retry.failed = lambda why: (waits.append(why), failed(why))[-1]  # type: ignore[method-assign]
    processor = processor_over(sinks, stop)
    consume(fake, processor, RunOptions(stop_when_idle=0.3), stop, retry)
    assert all(offset == 30 for offset in fake.committed.values())
    assert len(waits) == 5 and not fake.poll_errors and not fake.commit_errors
    assert 60 <= processor.totals.messages <= 60 + 3 * 20  # a batch whose commit was refused is counted again
    samples = processor.metrics.retries.collect()[0].samples
    retries = {s.labels["sink"]: s.value for s in samples if s.name.endswith("_total")}
    assert retries.get("kafka") == 2 and retries.get("commit") == 3


def test_retry_backs_off_and_gives_up_after_its_limit() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    retry = Retry(10.0, initial_s=1.0, max_s=4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        retry.failed("ES down")
    assert round(now[0], 6) == 1 + 2 + 4 + 4  # doubling, capped
    with pytest.raises(SinkError, match="giving up after 11 s"):
        retry.failed("ES down")
    retry.succeeded()
    retry.failed("again")  # a new outage starts a new clock
    assert round(now[0], 6) == 12


def test_a_reading_the_sinks_cannot_place_becomes_a_dead_letter_not_an_exception(tmp_path: Path) -> None:
    # The parser rejects implausible dates itself; this is the net under it (e.g. a date near datetime's limits
    # that the archive's day arithmetic overflows, or a record timestamp beyond year 9999).
    messages = [Message(value_for(0, o)[0], b"k", TOPIC, 0, o) for o in (1, 5, 2)]  # normal, anomaly, normal
    outcomes = Pipeline(model=None).decide_batch(messages)

    def archive_line(outcome: Any, normal: Any) -> Any:
        if outcome.message.offset == 1:
            raise OverflowError("date value out of range")
        return NormalArchive(tmp_path).line_for(outcome, normal)

    def anomaly_document(outcome: Any, anomaly: Any) -> Document:
        raise ValueError("year 10000 is out of range")

    batch = sort_batch(messages, outcomes, archive_line=archive_line, anomaly_document=anomaly_document)
    letters = {message.offset: (rejected.reason, rejected.stage) for message, rejected in batch.dead_letters}
    assert letters == {1: ("bad_time", "archive"), 5: ("bad_record", "index")}
    assert len(batch.normals) == 1 and not batch.documents
    assert (batch.counts.rejected, batch.counts.normal, batch.counts.by_reason["bad_time"]) == (2, 1, 1)


def test_a_sink_failing_for_longer_than_the_retry_timeout_ends_the_loop_with_one_error(tmp_path: Path) -> None:
    sinks = FakeSinks(tmp_path / "archive", fail_bulk_calls=set(range(1, 100_000)))  # Elasticsearch refuses all
    stop = StopFlag()
    fake = FakeConsumer(2, 30, sinks)
    processor = processor_over(sinks, stop)
    with pytest.raises(SinkError, match=r"giving up after .* s of failures .*Elasticsearch refused"):
        consume(fake, processor, RunOptions(stop_when_idle=30), stop, Retry(0.3, initial_s=0.01, max_s=0.05))
    assert all(offset == 0 for offset in fake.committed.values())


def test_stop_when_idle_waits_while_kafka_cannot_say_where_the_end_is(tmp_path: Path) -> None:
    from kafka.errors import KafkaTimeoutError

    class Unreachable(FakeConsumer):
        calls = 0

        def end_offsets(self, tps: list[TopicPartition], timeout_ms: int) -> dict[TopicPartition, int]:
            self.calls += 1
            if self.calls <= 3:  # the broker is restarting: an outage is not idleness
                raise KafkaTimeoutError("end offsets")
            return super().end_offsets(tps, timeout_ms)

    sinks = FakeSinks(tmp_path / "archive")
    fake = Unreachable(1, 10, sinks)
    stop = StopFlag()
    processor = processor_over(sinks, stop)
    consume(fake, processor, RunOptions(stop_when_idle=0.0), stop, Retry(60, initial_s=0.0, max_s=0.0))
    assert fake.calls == 4 and fake.committed[TopicPartition(TOPIC, 0)] == 10


def test_stop_when_idle_does_not_count_the_time_before_the_first_assignment(tmp_path: Path) -> None:
    class SlowJoin(FakeConsumer):
        polls = 0

        def assignment(self) -> set[TopicPartition]:
            return set(self.log) if self.polls > 20 else set()  # a group join that takes a while

        def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
            self.polls += 1
            return super().poll(timeout_ms, max_records) if self.assignment() else {}

    sinks = FakeSinks(tmp_path / "archive")
    fake = SlowJoin(1, 10, sinks)
    stop = StopFlag()
    processor = processor_over(sinks, stop)
    consume(fake, processor, RunOptions(stop_when_idle=0.0), stop, Retry(60, initial_s=0.0, max_s=0.0))
    assert fake.committed[TopicPartition(TOPIC, 0)] == 10


# ------------------------------------------------------------------------------------- a member left unassigned
def test_a_member_without_partitions_rejoins_after_the_wait_then_waits_twice_as_long() -> None:
    from consumer.loop import Unassigned

    calls: list[int] = []

    def rejoin() -> bool:
        calls.append(1)
        return True

    watch = Unassigned(after_s=10.0)
    assert not watch.check(False, rejoin)  # not yet 10 s
    watch.since -= 11
    assert watch.check(False, rejoin) and len(calls) == 1
    watch.since -= 11  # the wait is now 20 s
    assert not watch.check(False, rejoin) and len(calls) == 1
    watch.since -= 10
    assert watch.check(False, rejoin) and len(calls) == 2
    watch.since -= 1_000
    assert not watch.check(True, rejoin), "an assigned member never re-joins"
    assert len(calls) == 2


def test_no_rejoin_when_the_topic_has_no_partition_to_assign() -> None:
    from consumer.loop import Unassigned

    watch = Unassigned(after_s=10.0)
    watch.since -= 11
    assert not watch.check(False, lambda: False)
    assert watch.rejoins == 0


def test_rejoiner_resubscribes_only_when_the_topic_has_partitions() -> None:
    from consumer.clients import rejoiner

    class Member:
        def __init__(self, partitions: set[int] | None) -> None:
            self.partitions = partitions
            self.calls: list[tuple[str, Any]] = []

        def partitions_for_topic(self, topic: str) -> set[int] | None:
            return self.partitions

        def unsubscribe(self) -> None:
            self.calls.append(("unsubscribe", None))

        def subscribe(self, topics: list[str], listener: Any = None) -> None:
            self.calls.append(("subscribe", (topics, listener)))

    listener = object()
    empty = Member(None)
    assert not rejoiner(empty, "bp", listener)() and empty.calls == []
    member = Member({0, 1})
    assert rejoiner(member, "bp", listener)()
    assert member.calls == [("unsubscribe", None), ("subscribe", (["bp"], listener))]
