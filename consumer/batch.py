"""A polled batch, decided and then sorted once by where each outcome goes.

:func:`sort_batch` walks the outcomes a single time and returns a :class:`Batch`: archive lines for the normal
readings, Elasticsearch documents for the anomalies (each carrying the message it came from), dead letters for
the rejects (one per source message), the batch's counts, and the offsets it spans per partition. Every later
stage (archive, index, dead letters, statistics, metrics, commit) reads its own field; none re-sorts.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bp.alerts import AlertEvent
from bp.reading import Anomaly, Decision, Normal, Rejected
from consumer.archive import ArchiveLine
from consumer.pipeline import Message, Outcome, Tally
from consumer.sinks import Document
from consumer.state.values import ChangeSet

Partition = tuple[str, int]  # (topic, partition)
DeadLetter = tuple[Message, Rejected]


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch ready for the sinks; ``next_offsets`` is what to commit once every sink confirmed it."""

    messages: int
    normals: tuple[ArchiveLine, ...]
    documents: tuple[Document, ...]
    dead_letters: tuple[DeadLetter, ...]
    counts: Tally
    first_offsets: Mapping[Partition, int]
    next_offsets: Mapping[Partition, int]
    state: ChangeSet | None = None  # the per-patient state changes deciding it made (persisted before the commit)


def sort_batch(
    messages: Sequence[Message],
    outcomes: Sequence[Outcome],
    *,
    archive_line: Callable[[Outcome, Normal], ArchiveLine],
    anomaly_document: Callable[[Outcome, Anomaly], Document],
    alert_document: Callable[[Outcome, AlertEvent], Document] | None = None,
    unreadable: Sequence[DeadLetter] = (),
) -> Batch:
    """Sort a decided batch by destination in one pass over its outcomes.

    A reading the archive cannot place or a document that cannot be built (e.g. a date beyond year 9999, a record
    timestamp out of range) makes its message a dead letter instead of stopping the batch. ``unreadable``: records
    the Kafka client could not decode, already dead letters; they count as messages of this batch.
    """
    counts = Tally(messages=len(messages) + len(unreadable))
    normals: list[ArchiveLine] = []
    documents: list[Document] = []
    letters: list[DeadLetter] = list(unreadable)
    for _, rejected in unreadable:
        counts.count(rejected)
    for outcome in outcomes:
        decision: Decision = outcome.decision
        try:
            if isinstance(decision, Normal):
                normals.append(archive_line(outcome, decision))
            elif isinstance(decision, Anomaly):
                documents.append(anomaly_document(outcome, decision))
            if alert_document is not None and outcome.alerts:
                documents.extend(alert_document(outcome, event) for event in outcome.alerts)
        except Exception as exc:  # contained to this message: it becomes a dead letter
            decision = _contained(decision, exc)
        if isinstance(decision, Rejected):
            letters.append((outcome.message, decision))
        counts.count(decision)
        counts.skipped_entries += outcome.skipped_entries
        counts.count_alerts(outcome.alerts)
    first: dict[Partition, int] = {}
    following: dict[Partition, int] = {}
    for message in [*messages, *(letter for letter, _ in unreadable)]:
        key = (message.topic, message.partition)
        first[key] = min(message.offset, first.get(key, message.offset))
        following[key] = max(message.offset + 1, following.get(key, 0))
    return Batch(counts.messages, tuple(normals), tuple(documents), one_per_message(letters), counts, first, following)


def _contained(decision: Decision, exc: Exception) -> Rejected:
    """The dead-letter reason for a reading that was decided but cannot be archived or indexed."""
    detail = f"{type(exc).__name__}: {exc}"[:500]
    if isinstance(decision, Normal):  # the archive places a reading by its date: only the date can fail
        return Rejected(reason="bad_time", detail=f"reading time cannot be archived ({detail})", stage="archive")
    return Rejected(reason="bad_record", detail=f"anomaly document cannot be built ({detail})", stage="index")


def one_per_message(letters: Sequence[DeadLetter]) -> tuple[DeadLetter, ...]:
    """One dead letter per source message (a Bundle with two rejected entries is sent once)."""
    unique: dict[tuple[str, int, int], DeadLetter] = {}
    for message, rejected in letters:
        unique.setdefault((message.topic, message.partition, message.offset), (message, rejected))
    return tuple(unique.values())


@dataclass
class Totals:
    """The whole run: the counts of every committed batch, and where the time went (summary, progress lines)."""

    started: float = field(default_factory=time.monotonic)
    counts: Tally = field(default_factory=Tally)
    index_rejected: int = 0
    # poll, decide, archive, index, dead_letters, commit
    stage_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def messages(self) -> int:
        return self.counts.messages

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.messages / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        counts = self.counts
        types = ", ".join(f"{name} {count}" for name, count in sorted(counts.by_type.items())) or "none"
        return (
            f"consumed {self.messages} ({self.rate():.0f} msg/s): normal {counts.normal}, "
            f"anomalies {counts.anomalies} ({types}), rejected {counts.rejected}"
        )

    def summary(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        counts = self.counts
        return {
            "messages": self.messages,
            "readings": counts.readings,
            "normal": counts.normal,
            "anomalies": counts.anomalies,
            "rejected": counts.rejected,
            "anomalies_by_type": dict(sorted(counts.by_type.items())),
            "anomalies_by_priority": dict(sorted(counts.by_priority.items())),
            "rejected_by_reason": dict(sorted(counts.by_reason.items())),
            "skipped_entries": counts.skipped_entries,
            "alerts": dict(sorted(counts.alerts.items())),
            "seconds": round(elapsed, 2),
            "stage_seconds": {name: round(value, 3) for name, value in sorted(self.stage_seconds.items())},
            "messages_per_second": round(self.messages / elapsed, 1) if elapsed > 0 else None,
        }
