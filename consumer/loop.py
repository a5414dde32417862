"""The consumer loop: poll → decide and sort → archive → deliver (Elasticsearch, dead letters) → commit.

:func:`consume` drives a :class:`~consumer.processor.BatchProcessor` (which turns polled messages into a decided,
sorted, archived :class:`~consumer.batch.Batch` and delivers it to Elasticsearch and the dead-letter topic) and
a :class:`~consumer.commit.CommitProtocol` (which decides when a batch's offsets may be committed); it also
re-joins the group when this member is left without partitions (:class:`Unassigned`) and steps past records the
Kafka client cannot decode.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bp.errors import SinkError
from bp.reading import Rejected
from consumer.batch import DeadLetter, Partition, Totals
from consumer.clients import lag, read_to_end, to_message
from consumer.commit import CommitProtocol
from consumer.metrics import Metrics
from consumer.pipeline import Message
from consumer.ports import GroupConsumer
from consumer.processor import BatchProcessor, Delivered
from consumer.retry import Retry
from runtime.cli import StopFlag

log = logging.getLogger("bp.consumer")

PROGRESS_EVERY_S = 5.0
IDLE_SLEEP_S = 0.2  # the stand-in answers fetches at once: sleep on empty polls instead of spinning a core
POLL_TIMEOUT_MS = 100


@dataclass(slots=True)
class Unassigned:
    """Re-joins the group when this member has had no partition for ``after_s`` seconds.

    kafka-python 3.0.12 sometimes leaves a member that got an empty first assignment out of every later
    rebalance (measured on Apache Kafka 3.9.1: the other member gets all partitions, this one idles for good).
    ``rejoin`` re-subscribes when the topic has partitions (see consumer.clients.rejoiner). Where an empty
    assignment is right (more members than partitions) this costs one rebalance per wait; the wait doubles after
    each re-join, up to ``MAX_WAIT_S``.
    """

    after_s: float
    since: float = field(default_factory=time.monotonic)
    rejoins: int = 0
    waited: bool = False  # a whole wait has passed without partitions (only then may an idle stop count)

    MAX_WAIT_S = 600.0

    def check(self, assigned: bool, rejoin: Callable[[], bool]) -> bool:
        """True when it re-joined now."""
        now = time.monotonic()
        if assigned:
            self.since = now
            return False
        wait = min(self.after_s * 2**self.rejoins, self.MAX_WAIT_S)
        if now - self.since < wait:
            return False
        self.since = now
        self.waited = True
        if not rejoin():
            return False
        self.rejoins += 1
        log.warning("no partition assigned for %.0f s although the topic has some: re-joining the group", wait)
        return True


def _cannot_rejoin() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How long the loop runs: until stopped, after ``max_messages``, or after ``stop_when_idle`` seconds idle."""

    max_messages: int | None = None
    stop_when_idle: float | None = None


def consume(
    consumer: GroupConsumer,
    processor: BatchProcessor,
    options: RunOptions,
    stop: StopFlag,
    retry: Retry | None = None,
    rejoin: Callable[[], bool] | None = None,
) -> None:
    """The loop: poll → prepare (decide, archive) → settle the batch in flight (commit) → deliver this one.

    ``consumer`` is a KafkaConsumer (or a fake with the same methods); everything else is already built. Every
    failure of the infrastructure waits ``retry``'s backoff before the next attempt and ends the loop with
    SinkError once it has lasted ``retry_timeout_s`` (see consumer/retry.py for what each stage does).
    ``rejoin`` (optional) re-joins the group when the member stays without partitions (see :class:`Unassigned`).
    """
    from kafka.errors import CorruptRecordError, KafkaError

    totals = processor.totals
    metrics = processor.metrics
    if retry is None:
        retry = Retry(processor.settings.retry_timeout_s, should_stop=lambda: bool(stop))

    protocol: CommitProtocol[Delivered] = CommitProtocol(
        consumer,
        processor.deliver,
        on_delivered=processor.complete,
        on_failed=processor.rollback,
        on_commit_refused=processor.commit_refused,
        checkpoint=processor.checkpoint,
        stage_seconds=totals.stage_seconds,
    )

    def settle(*later: Mapping[Partition, int]) -> bool:
        """Settle the batch in flight; after a failure back off (bounded) before the loop goes on."""
        had_batch = protocol.in_flight is not None
        if protocol.settle(*later):
            if had_batch:
                retry.succeeded()
            return True
        retry.failed(protocol.last_error)
        return False

    unassigned = Unassigned(after_s=max(10.0, 2 * processor.settings.session_timeout_ms / 1000))
    idle_since = time.monotonic()
    joined = False  # idle time counts once the consumer has had partitions (or the join had time to finish)
    join_deadline = time.monotonic() + processor.settings.session_timeout_ms / 1000
    next_progress = time.monotonic() + PROGRESS_EVERY_S
    try:
        while not stop:
            in_flight = protocol.in_flight
            taken = totals.messages + (in_flight.messages if in_flight is not None else 0)
            if options.max_messages and taken >= options.max_messages:
                break
            limit = processor.settings.batch_size
            if options.max_messages:
                limit = min(limit, options.max_messages - taken)
            polling = time.perf_counter()
            unreadable: list[DeadLetter] = []
            try:
                polled = consumer.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=limit)
            except CorruptRecordError as exc:  # e.g. a header key that is not UTF-8: skip it, dead-letter it
                polled = {}
                letter = skip_unreadable(consumer, exc)
                if letter is None:
                    metrics.retries.labels("kafka").inc()
                    retry.failed(f"Kafka client cannot decode a record: {exc}")
                    continue
                unreadable.append(letter)
            except KafkaError as exc:  # broker restarting, rebalance, coordinator moving...
                metrics.retries.labels("kafka").inc()
                retry.failed(f"Kafka poll failed: {type(exc).__name__}: {exc}")
                continue
            totals.stage_seconds["poll"] += time.perf_counter() - polling
            records = [record for batch in polled.values() for record in batch]
            if not records and not unreadable:
                if not settle():
                    continue
                processor.idle()
                assigned = bool(consumer.assignment())
                if unassigned.check(assigned, rejoin or _cannot_rejoin):
                    metrics.retries.labels("kafka").inc()
                # Without partitions, idleness counts only after the join had time and one re-join was tried.
                joined = joined or assigned or (time.monotonic() > join_deadline and unassigned.waited)
                if not joined:  # still joining the group (slow on a loaded broker): not idle yet
                    idle_since = time.monotonic()
                elif options.stop_when_idle is not None and time.monotonic() - idle_since >= options.stop_when_idle:
                    if read_to_end(consumer):
                        log.info("idle for %.1f s at the end of every partition: stopping", options.stop_when_idle)
                        break
                    idle_since = time.monotonic()  # Kafka unreachable or more to read: not idle
                if not stop:
                    time.sleep(IDLE_SLEEP_S)
            else:
                idle_since = time.monotonic()
                messages = [to_message(record) for record in records]
                try:
                    batch = processor.prepare(messages, unreadable=unreadable)
                except SinkError as exc:  # the archive failed: settle the batch in flight, then retry this one
                    log.error("batch not committed, will be retried: %s", exc)
                    metrics.retries.labels("batch").inc()
                    first = {(tp.topic, tp.partition): batch[0].offset for tp, batch in polled.items() if batch}
                    for message, _ in unreadable:
                        first[(message.topic, message.partition)] = message.offset
                    if settle(first):  # (if the batch in flight failed too, settle rewound both and backed off)
                        protocol.rewind(first)
                        retry.failed(str(exc))
                    continue
                if not settle(batch.first_offsets):  # the one in flight failed: both replay from its offsets
                    continue
                protocol.start(batch)
            if time.monotonic() >= next_progress:
                next_progress = time.monotonic() + PROGRESS_EVERY_S
                progress(totals, consumer, metrics)
        if not protocol.settle():
            log.warning("the last batch was not committed; it will be read again next time")
        # Flush the last statistics window.
        try:
            processor.deliver(processor.prepare([], final=True))
        except SinkError as exc:
            log.warning("last statistics window not written: %s", exc)
    finally:
        if protocol.in_flight is not None:  # leaving on an exception: make a retrying worker give up
            stop.stopped = True
        protocol.close()


def skip_unreadable(consumer: GroupConsumer, error: Exception) -> DeadLetter | None:
    """Step past a record the Kafka client cannot decode and return what is known of it as a dead letter.

    kafka-python raises CorruptRecordError from ``poll`` for such a record (e.g. a header key that is not
    UTF-8) without naming it; it is the record at the current position of the partition being read. Its bytes
    cannot be recovered with this client: the dead letter carries the source topic, partition and offset.
    Records after it in the same producer batch fail the same way and are skipped one by one. None when the
    partition cannot be told (then the loop retries with backoff and gives up after the retry timeout).
    """
    part = getattr(getattr(consumer, "_fetcher", None), "_next_partition_records", None)
    tp = getattr(part, "topic_partition", None)
    if tp is None:
        assigned = consumer.assignment()
        if len(assigned) != 1:
            return None
        (tp,) = assigned
    offset = consumer.position(tp)
    consumer.seek(tp, offset + 1)
    log.warning("partition %d offset %d cannot be decoded (%s): dead-lettered and skipped", tp.partition, offset, error)
    message = Message(value=None, key=None, topic=tp.topic, partition=tp.partition, offset=offset)
    detail = f"the Kafka client cannot decode this record ({error}); skipped by offset, value not recoverable"
    return message, Rejected(reason="bad_record", detail=detail[:500], stage="poll")


def progress(totals: Totals, consumer: GroupConsumer, metrics: Metrics) -> None:
    current = lag(consumer)
    if current is not None:
        metrics.record_lag(current)
    log.info("%s, lag %s", totals.line(), "?" if current is None else sum(current.values()))
