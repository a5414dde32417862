"""The loop's side of the per-patient state (:mod:`consumer.state`): one change set per batch, persisted between
"every sink acknowledged" and "offsets committed", and restored before a newly assigned partition is decided.

- ``begin`` before a batch is decided; ``persist`` (the commit protocol's checkpoint) after its sinks confirmed it:
  changelog (when due) → one local transaction (state + positions) → the caller commits the Kafka offsets;
  ``discard`` when the batch failed (it and every batch decided after it are replayed from the durable state).
- Partitions revoked (the listener, inside ``poll``): undecided work is dropped (a batch in flight then fails its
  checkpoint and is replayed by whoever owns the partition); the next owner restores from the last changelog
  marker. At exit the changelog is brought up to date while the consumer is still a member.
- Partitions assigned: after ``poll`` returns (on the loop's thread, heartbeats keep going), each new partition's
  state is brought up to its changelog (progress line, ``bp_state_restore_*`` metrics) and the consumer is sought
  to the position that state reflects: no record is applied twice to the state and none is skipped. Records the
  same ``poll`` fetched from the committed offsets of those partitions are dropped (they are fetched again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from bp.errors import SinkError, StateError
from consumer.metrics import Metrics
from consumer.ports import (
    ChangelogProducer,
    ChangelogReader,
    ConsumedRecord,
    HasOffset,
    KafkaPartition,
    KeeperConsumer,
    Seeker,
    TopicAdmin,
)
from consumer.state.changelog import Changelog, changelog_topic, ensure_changelog
from consumer.state.failpoints import failpoint
from consumer.state.restore import restore_partition
from consumer.state.store import PartitionView, StateStore
from consumer.state.values import ChangeSet

log = logging.getLogger("bp.consumer.state")

R = TypeVar("R", bound=HasOffset)


class StateKeeper:
    """Per-batch state for the loop; see the module docstring."""

    def __init__(
        self, store: StateStore, group: str, topic: str, restore_timeout_s: float, from_beginning: bool = True
    ) -> None:
        self.store = store
        self.store.owned = set()
        self.from_beginning = from_beginning
        self.topic = topic
        self.changelog_topic = changelog_topic(group)
        self.restore_timeout_s = restore_timeout_s
        self.changelog: Changelog | None = None
        self._reader_factory: Callable[[], ChangelogReader] | None = None
        self._reader: ChangelogReader | None = None
        self._admin_factory: Callable[[], TopicAdmin] | None = None
        self._changelog_ready = False
        self._closed = False
        self._lock = threading.Lock()
        self._assigned: set[KafkaPartition] = set()  # assigned by the listener, not yet restored (guarded by _lock)
        self.metrics: Metrics | None = None
        self.restored_records = 0
        self.seconds = 0.0

    def connect(
        self,
        producer: ChangelogProducer,
        reader: Callable[[], ChangelogReader],
        admin: Callable[[], TopicAdmin],
        metrics: Metrics | None = None,
    ) -> None:
        """The Kafka side: the producer for the changelog, a factory of a group-less consumer to read it back,
        a factory of an admin client to create it."""
        self.changelog = Changelog(producer, self.changelog_topic, self.topic)
        self._reader_factory = reader
        self._admin_factory = admin
        self.metrics = metrics

    # ---------------------------------------------------------------------------------------- batches
    def view(self, partition: int) -> PartitionView:
        return self.store.view(partition)

    def begin(self) -> ChangeSet:
        return self.store.begin()

    def discard(self, changes: ChangeSet | None) -> None:
        if changes is not None:
            self.store.discard(changes)

    def discard_later(self) -> None:
        """Drop the changes of every batch not yet persisted (they are decided again)."""
        self.store.discard_all()

    def persist(self, changes: ChangeSet | None, next_offsets: Mapping[tuple[str, int], int]) -> None:
        """Make the batch's state durable with the positions it reflects; SinkError if that is not possible
        (the batch is then rewound and replayed like after any sink failure)."""
        if changes is None:
            return
        if changes not in self.store.pending:
            raise SinkError("partitions were reassigned while this batch was delivered; it will be replayed")
        offsets = {partition: offset for (topic, partition), offset in next_offsets.items() if topic == self.topic}
        started = time.perf_counter()
        try:
            self.store.persist(changes, offsets, self.changelog)
            failpoint("state-persisted")  # state and position durable, Kafka offsets not committed yet
        except StateError as exc:
            raise SinkError(f"state not persisted: {exc}") from exc
        finally:
            self.seconds += time.perf_counter() - started

    def idle(self) -> None:
        """Nothing to read: bring the changelog up to date when it is due (best effort; the next batch or the
        exit tries again), so a partition moved later is restored from a recent marker."""
        if self.changelog is None or not self._changelog_ready or self._closed:
            return
        started = time.perf_counter()
        try:
            self.store.flush_if_due(self.changelog)
        except StateError as exc:
            log.warning("changelog not flushed while idle (tried again later): %s", exc)
        finally:
            self.seconds += time.perf_counter() - started

    # ------------------------------------------------------------------------------------ rebalancing
    def on_revoked(self, revoked: Collection[KafkaPartition]) -> None:
        """The listener's call (inside poll, before the group moves the partitions)."""
        partitions = sorted(tp.partition for tp in revoked if tp.topic == self.topic)
        with self._lock:
            self._assigned.difference_update(revoked)
        if self._closed:
            return
        # No I/O here: the listener runs on the client's network thread. The next owner restores from the last
        # changelog marker and re-processes what came after it (deciding it the same way).
        self.store.discard_all()
        self.store.release(partitions)

    def on_assigned(self, assigned: Collection[KafkaPartition]) -> None:
        """The listener's call: remember the partitions; they are restored after poll returns."""
        with self._lock:
            self._assigned.update(tp for tp in assigned if tp.topic == self.topic)

    def after_poll(
        self, consumer: Seeker, polled: Mapping[KafkaPartition, Sequence[R]]
    ) -> Mapping[KafkaPartition, Sequence[R]]:
        """Restore newly assigned partitions and seek them; drop what this poll fetched for them."""
        with self._lock:
            todo, self._assigned = self._assigned, set()
        if not todo:
            return polled
        sought: set[KafkaPartition] = set()
        positions: dict[KafkaPartition, int] = {}
        for tp in sorted(todo, key=lambda tp: tp.partition):
            position = self._restore(tp.partition)
            if self.store.owned is not None:
                self.store.owned.add(tp.partition)
            if position is not None:
                consumer.seek(tp, position)
                sought.add(tp)
                positions[tp] = position
            elif self.from_beginning:
                # No state anywhere is the state before the first record: whatever the group committed, the
                # history must be built from the start (after an upgrade from a consumer without a state store,
                # this re-processes the retained input once; the sinks are idempotent).
                log.info("partition %d: no state yet: reading it from the beginning", tp.partition)
                consumer.seek_to_beginning(tp)
                sought.add(tp)
            elif polled.get(tp):
                log.info("partition %d: no state yet; history starts at offset %d", tp.partition, polled[tp][0].offset)
        if positions:
            self._commit(consumer, positions)
        return {tp: records for tp, records in polled.items() if tp not in sought}

    @staticmethod
    def _commit(consumer: Seeker, positions: dict[KafkaPartition, int]) -> None:
        """Commit the state's positions: after a crash between persisting and committing, the group's offsets
        would otherwise stay one batch behind (and report lag) until the partition gets new records."""
        from kafka.structs import OffsetAndMetadata

        try:
            consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in positions.items()})
        except Exception as exc:  # informative only: the state's position is what the consumer resumes from
            log.info("restored positions not committed (%s); the next commit covers them", exc)

    def _restore(self, partition: int) -> int | None:
        self._ensure_changelog()
        started = time.monotonic()

        def progress(done: int, total: int) -> None:
            if done < total:
                log.info("partition %d: restoring state from %s: %d of ~%d records", partition,
                         self.changelog_topic, done, total)  # fmt: skip

        try:
            position, read = restore_partition(
                self.store, self.reader(), self.changelog_topic, partition, self.restore_timeout_s, progress
            )
        except StateError:
            raise
        except Exception as exc:  # Kafka errors while reading the changelog
            raise StateError(f"partition {partition}: state not restored from {self.changelog_topic}: {exc}") from exc
        elapsed = time.monotonic() - started
        self.restored_records += read
        if self.metrics is not None:
            self.metrics.state_restored.inc(read)
            self.metrics.state_restore_seconds.labels(str(partition)).set(elapsed)
        if position is None:
            return None
        log.info(
            "partition %d: state at offset %d (%d changelog records read in %.2f s, %d patients stored)",
            partition, position.next_offset, read, elapsed, self.store.database.count(partition),
        )  # fmt: skip
        return position.next_offset

    def reader(self) -> ChangelogReader:
        if self._reader is None:
            if self._reader_factory is None:
                raise StateError("state keeper not connected to Kafka")
            self._reader = self._reader_factory()
        return self._reader

    def _ensure_changelog(self) -> None:
        if self._changelog_ready or self._admin_factory is None:
            return
        admin = self._admin_factory()
        try:
            described = admin.describe_topics([self.topic])
            partitions = len(described[0].get("partitions", [])) if described else 0
            ensure_changelog(admin, self.changelog_topic, max(partitions, 1))
        finally:
            admin.close()
        self._changelog_ready = True

    def close(self) -> None:
        """Send what the changelog lacks (best effort) and close the store."""
        if self._closed:
            return
        self._closed = True
        self.store.discard_all()
        if self.changelog is not None and self._changelog_ready:
            try:
                self.store.flush_changelog(self.changelog)
            except StateError as exc:
                log.warning("changelog not flushed at exit (restored from its last marker instead): %s", exc)
        if self._reader is not None:
            self._reader.close()
        self.store.database.close()


class StatefulConsumer:
    """A KafkaConsumer whose ``poll`` restores and seeks newly assigned partitions before returning records."""

    def __init__(self, consumer: KeeperConsumer, keeper: StateKeeper) -> None:
        self._consumer = consumer
        self._keeper = keeper

    def poll(
        self, *, timeout_ms: int, max_records: int | None = None
    ) -> Mapping[KafkaPartition, Sequence[ConsumedRecord]]:
        polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        return self._keeper.after_poll(self._consumer, polled)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)
