"""Prepare and deliver one batch: :class:`BatchProcessor` decides polled messages, sorts them once into a
:class:`~consumer.batch.Batch` and appends its normals to the archive (on the loop's thread), then indexes the
anomalies and statistics into Elasticsearch and sends the dead letters (on the commit protocol's worker thread).
The loop (:mod:`consumer.loop`) drives it; :class:`~consumer.commit.CommitProtocol` decides when to commit.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bp.errors import BpError, SinkError
from bp.reading import Anomaly, Rejected
from bp.settings import Settings
from consumer.archive import NormalArchive
from consumer.batch import Batch, DeadLetter, Totals, one_per_message, sort_batch
from consumer.dead_letters import DeadLetters
from consumer.metrics import Metrics
from consumer.pipeline import Message, Outcome, Pipeline
from consumer.sinks import (
    Document,
    ElasticsearchSink,
    Window,
    alert_document,
    anomaly_document,
    document_id,
)
from consumer.state.keeper import StateKeeper
from consumer.state.values import ChangeSet

log = logging.getLogger("bp.consumer")


@dataclass(frozen=True, slots=True)
class Delivered:
    """What a delivery learned: how many anomalies Elasticsearch refused (they went to the dead letters)."""

    index_rejected: int = 0


class BatchProcessor:
    """Prepares batches (decide, sort, archive, statistics) and delivers them (Elasticsearch, dead letters).

    ``prepare`` runs on the loop's thread and raises SinkError if the archive fails; ``deliver`` may run on a
    worker thread while the loop prepares the next batch and raises SinkError if a sink fails; ``complete``
    counts a committed batch, ``rollback`` forgets a failed one (and any prepared after it).
    """

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        archive: NormalArchive,
        es: ElasticsearchSink,
        dead_letters: DeadLetters,
        consumer_name: str,
        metrics: Metrics | None = None,
        state: StateKeeper | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.archive = archive
        self.es = es
        self.dead_letters = dead_letters
        self.consumer_name = consumer_name
        self.metrics = metrics if metrics is not None else Metrics()
        self.state = state
        self.totals = Totals()
        self.window = Window(datetime.now(UTC))
        self.window_due = time.monotonic() + settings.stats_interval_s
        # per batch not yet settled: the statistics window before it (restored on a rollback) and its start time
        self._pending: dict[int, tuple[Window, float]] = {}

    def prepare(self, messages: list[Message], final: bool = False, unreadable: Sequence[DeadLetter] = ()) -> Batch:
        """Decide, sort and archive a batch (appended and fsynced before anything can be committed).

        ``unreadable``: records the Kafka client could not decode, already dead letters, carried in this batch.
        """
        stages = self.totals.stage_seconds
        started = time.perf_counter()
        changes = self.state.begin() if self.state is not None and messages else None
        try:
            outcomes, changes = self._decide(messages, changes)
            now = datetime.now(UTC)
            ingested_at = now.isoformat()
            batch = sort_batch(
                messages,
                outcomes,
                archive_line=self.archive.line_for,
                anomaly_document=lambda outcome, anomaly: self._document(outcome, anomaly, ingested_at),
                alert_document=lambda outcome, event: Document(
                    self.settings.alerts_index,
                    event.alert_id,
                    alert_document(event, self.pipeline.model_version, ingested_at),
                    outcome.message,
                ),
                unreadable=unreadable,
            )
            decided = time.perf_counter()
            stages["decide"] += decided - started
            self.archive.write(batch.normals)
            stages["archive"] += time.perf_counter() - decided
        except BaseException:
            if self.state is not None:
                self.state.discard(changes)  # decided again from the durable state when retried
            raise
        if changes is not None:
            batch = dataclasses.replace(batch, state=changes)
        self._pending[id(batch)] = (self.window, started)
        self.window = self.window.merged(batch.counts)
        if final or time.monotonic() >= self.window_due:
            stats = Document(
                self.settings.stats_index,
                f"{self.consumer_name}-{ingested_at}",
                self.window.document(self.consumer_name, now),
            )
            self.window = Window(now)
            self.window_due = time.monotonic() + self.settings.stats_interval_s
            pending = self._pending.pop(id(batch))
            batch = dataclasses.replace(batch, documents=(*batch.documents, stats))
            self._pending[id(batch)] = pending
        return batch

    def _decide(self, messages: list[Message], changes: ChangeSet | None) -> tuple[list[Outcome], ChangeSet | None]:
        """Decisions for the batch; a message that makes the pipeline raise becomes a dead letter on its own.

        The pipeline never raises on bad input by design; this is the net under that promise. Errors of the
        infrastructure (BpError, e.g. the state store) are not the message's fault and stop the batch instead.
        """
        try:
            return self.pipeline.decide_batch(messages), changes
        except BpError:
            raise
        except Exception as exc:
            log.error("deciding a batch raised %s: %s; deciding its messages one by one", type(exc).__name__, exc)
        if self.state is not None and changes is not None:  # the messages before the culprit are decided again
            self.state.discard(changes)
            changes = self.state.begin()
        outcomes: list[Outcome] = []
        for message in messages:
            try:
                outcomes.extend(self.pipeline.decide_batch([message]))
            except BpError:
                raise
            except Exception as exc:
                detail = f"cannot be decided ({type(exc).__name__}: {exc})"[:500]
                outcomes.append(Outcome(message, 0, Rejected(reason="bad_record", detail=detail, stage="decide")))
        return outcomes, changes

    def commit_refused(self, error: SinkError) -> None:
        """Kafka refused a delivered batch's commit: the batches decided after it are read again."""
        self.metrics.retries.labels("commit").inc()
        if self.state is not None:
            self.state.discard_later()

    def idle(self) -> None:
        """The loop found nothing to read and nothing in flight: let the state bring its changelog up to date."""
        if self.state is not None:
            self.state.idle()

    def checkpoint(self, batch: Batch) -> None:
        """Every sink acknowledged ``batch``: persist the state it reflects, before its offsets are committed."""
        if self.state is not None:
            persisting = time.perf_counter()
            self.state.persist(batch.state, batch.next_offsets)
            self.totals.stage_seconds["state"] += time.perf_counter() - persisting

    def _document(self, outcome: Outcome, anomaly: Anomaly, ingested_at: str) -> Document:
        source = anomaly_document(outcome, anomaly, self.pipeline.model_version, ingested_at)
        return Document(self.settings.index, document_id(anomaly.reading), source, outcome.message)

    def deliver(self, batch: Batch) -> Delivered:
        """Index the anomalies (and statistics), then send every dead letter; one batch at a time."""
        stages = self.totals.stage_seconds
        indexing = time.perf_counter()
        # Parse rejects travel to the dead-letter topic while Elasticsearch indexes the anomalies.
        pending = self.dead_letters.start(batch.dead_letters)
        result = self.es.index(batch.documents)
        indexed = time.perf_counter()
        stages["index"] += indexed - indexing
        refused: list[DeadLetter] = []
        for doc, reason in result.rejected:
            if doc.origin is None:
                log.error("statistics document %s rejected by Elasticsearch: %s", doc.id, reason)
            else:
                refused.append((doc.origin, Rejected(reason="index_rejected", detail=reason, stage="index")))
        pending += self.dead_letters.start(one_per_message(refused))
        self.dead_letters.confirm(pending)
        stages["dead_letters"] += time.perf_counter() - indexed
        return Delivered(index_rejected=len(refused))

    def complete(self, batch: Batch, delivered: Delivered) -> None:
        """Count a delivered batch (if Kafka then refuses its commit it is replayed and counted again)."""
        _, started = self._pending.pop(id(batch), (self.window, time.perf_counter()))
        self.totals.counts.merge(batch.counts)
        self.totals.index_rejected += delivered.index_rejected
        self.metrics.record_batch(batch.counts, time.perf_counter() - started)
        if delivered.index_rejected:
            self.metrics.rejects.labels("index_rejected").inc(delivered.index_rejected)

    def rollback(self, batch: Batch, error: SinkError) -> None:
        """A failed batch (and any prepared after it) will be replayed: its statistics must not count yet."""
        log.error("batch not committed, will be retried: %s", error)
        self.metrics.retries.labels("batch").inc()
        if self.state is not None:
            self.state.discard(batch.state)
        window_before, _ = self._pending.get(id(batch), (self.window, 0.0))
        self.window = window_before
        self.window_due = time.monotonic()
        self._pending.clear()

