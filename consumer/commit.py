"""The commit protocol: deliver a batch, settle it (commit or rewind), one batch in flight at a time."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Generic, TypeVar

from bp.errors import SinkError
from consumer.batch import Batch, Partition
from consumer.ports import GroupConsumer

log = logging.getLogger("bp.consumer")

R = TypeVar("R")

PAUSE_AFTER_S = 1.0  # a delivery slower than this pauses the partitions and keeps polling (group membership)
WAIT_STEP_S = 0.2


class CommitProtocol(Generic[R]):
    """Commits a batch's offsets only once every sink acknowledged it; otherwise rewinds so it is read again.

    The life of a batch (the loop has already decided it and appended its normals to the archive):
    ``start(batch)`` runs ``deliver(batch)`` (Elasticsearch, dead letters) on a worker thread while the loop
    prepares the next batch → ``settle()`` waits for that delivery, then

    - sinks acknowledged → ``checkpoint(batch)`` (a hook for state that must be persisted with the offsets it
      reflects; it may raise SinkError like a sink) → ``on_delivered`` (the batch is counted) → commit
      ``batch.next_offsets``;
    - a SinkError → ``on_failed`` → rewind: the batch counts as not delivered, it will be read again.

    ``settle`` returns False after any failure (``last_error`` says which) so the loop backs off.

    Invariants (the in-memory fake of tests/unit/test_consume_loop.py checks the first three at every commit):

    1. An offset is committed only after every sink acknowledged every message below it.
    2. At most one batch is in flight and batches settle in poll order, so commits never go backwards.
    3. A failed batch is rewound to its first offset per partition, together with any batch polled after it
       (``settle(*later)``; the earliest offset per partition wins), so nothing is skipped. Replays are safe
       because every sink is idempotent.
    4. While a delivery takes long (an outage) the partitions are paused and the consumer keeps polling, so the
       group does not evict it; records of a partition assigned meanwhile are sought back, never dropped.
    5. A commit Kafka refuses (a rebalance took the partitions, the broker restarts, a timeout) leaves the
       delivered batch uncommitted: the partitions still assigned resume right after it (its sinks and state
       have it) and the batches polled after it are read again; a new owner resumes from the position of the
       persisted state (or the committed offsets), so a batch may be delivered twice, never lost.
    """

    def __init__(
        self,
        consumer: GroupConsumer,
        deliver: Callable[[Batch], R],
        *,
        on_delivered: Callable[[Batch, R], None],
        on_failed: Callable[[Batch, SinkError], None],
        checkpoint: Callable[[Batch], None] | None = None,
        on_commit_refused: Callable[[SinkError], None] | None = None,
        stage_seconds: MutableMapping[str, float] | None = None,
    ) -> None:
        self.consumer = consumer
        self._deliver = deliver
        self._on_delivered = on_delivered
        self._on_failed = on_failed
        self._checkpoint = checkpoint
        self._on_commit_refused = on_commit_refused
        self._stage_seconds: MutableMapping[str, float] = stage_seconds if stage_seconds is not None else {}
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bp-sinks")
        self._in_flight: tuple[Batch, Future[R]] | None = None
        self.last_error = ""

    @property
    def in_flight(self) -> Batch | None:
        """The batch being delivered, if any."""
        return self._in_flight[0] if self._in_flight is not None else None

    def start(self, batch: Batch) -> None:
        """Deliver ``batch`` on the worker thread; the batch in flight must have been settled."""
        if self._in_flight is not None:
            raise RuntimeError("settle the batch in flight before starting another")
        self._in_flight = (batch, self._worker.submit(self._deliver, batch))

    def settle(self, *later: Mapping[Partition, int]) -> bool:
        """Wait for the batch in flight; commit it if every sink acknowledged it, else rewind it. True if committed
        (or nothing was in flight).

        ``later``: first offsets of batches polled after the one in flight; on a failure they are rewound with it.
        """
        if self._in_flight is None:
            return True
        batch, future = self._in_flight
        self._in_flight = None
        try:
            receipt = self._wait(future)
            if self._checkpoint is not None:
                self._checkpoint(batch)
        except SinkError as exc:
            self.last_error = str(exc)
            self._on_failed(batch, exc)
            self.rewind(batch.first_offsets, *later)
            return False
        self._on_delivered(batch, receipt)
        try:
            self._commit(batch.next_offsets)
        except SinkError as exc:  # invariant 5
            self.last_error = str(exc)
            log.warning("%s", exc)
            if self._on_commit_refused is not None:
                self._on_commit_refused(exc)
            # Every sink has the batch and its state is persisted up to next_offsets: resume after it (a batch
            # decided again on top of its own persisted state would count its readings twice in the history).
            self.rewind(batch.next_offsets, *later)
            return False
        return True

    def rewind(self, *batches: Mapping[Partition, int]) -> None:
        """Seek every partition still assigned back to the first offset these batches hold (earliest wins)."""
        from kafka.structs import TopicPartition

        first: dict[Partition, int] = {}
        for offsets in batches:
            for key, offset in offsets.items():
                first[key] = min(offset, first.get(key, offset))
        assigned = self.consumer.assignment()
        for (topic, partition), offset in first.items():
            tp = TopicPartition(topic, partition)
            if tp in assigned:
                self.consumer.seek(tp, offset)

    def close(self) -> None:
        """Wait for the worker (a delivery still retrying must have been told to stop) and drop the rest."""
        self._in_flight = None
        self._worker.shutdown(wait=True, cancel_futures=True)

    def _wait(self, future: Future[R]) -> R:
        """The delivery's result; past PAUSE_AFTER_S keep polling with the partitions paused (invariant 4)."""
        waiting_since = time.monotonic()
        paused = False
        try:
            while True:
                try:
                    return future.result(timeout=WAIT_STEP_S)
                except FutureTimeout:
                    if time.monotonic() - waiting_since > PAUSE_AFTER_S:
                        self.consumer.pause(*self.consumer.assignment())
                        paused = True
                        self._keep_membership()
        finally:
            if paused:
                self.consumer.resume(*self.consumer.assignment())

    def _keep_membership(self) -> None:
        """Poll with every partition paused (heartbeats, rebalances); records of a partition assigned meanwhile
        are sought back, not dropped. A Kafka error here is left for the loop's own poll to meet."""
        from kafka.errors import KafkaError

        try:
            polled = self.consumer.poll(timeout_ms=0)
        except KafkaError as exc:
            log.debug("poll while waiting for the sinks failed: %s", exc)
            return
        for tp, unexpected in polled.items():
            if unexpected:
                self.consumer.seek(tp, unexpected[0].offset)

    def _commit(self, next_offsets: Mapping[Partition, int]) -> None:
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata, TopicPartition

        if not next_offsets:
            return
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in next_offsets.items()
        }
        committing = time.perf_counter()
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:  # invariant 5: CommitFailedError, RebalanceInProgressError, timeouts...
            raise SinkError(f"offsets not committed ({type(exc).__name__}: {exc}); the batch will be replayed") from exc
        finally:
            self._stage_seconds["commit"] = self._stage_seconds.get("commit", 0.0) + time.perf_counter() - committing
