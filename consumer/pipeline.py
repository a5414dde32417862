"""The pure pipeline: message bytes → parse → rules → model risk → decision. No I/O, never raises on bad input.

One batch is decided at a time so the model scores every reading of the batch with a single ``predict_proba``
call. A message is one FHIR Observation or a Bundle of them, so it yields one or more outcomes; a message that
cannot be parsed yields exactly one ``Rejected`` outcome (the whole message goes to the dead letters).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from bp.alerts import AlertEvent, AlertPolicy, Context, PatientAlerts, context_columns, context_of, rules_policy
from bp.clinical import MODEL_RISK, assess, prioritize
from bp.features import FEATURE_NAMES, PatientHistory, minutes_since_previous
from bp.fhir import DEFAULT_LIMITS, ParseLimits, parse_message
from bp.reading import Anomaly, Decision, Normal, Reading, Rejected
from bp.state import DEFAULT_RETENTION_DAYS, KeyedState, MemoryState


@dataclass(frozen=True, slots=True)
class Message:
    """A Kafka record as the pipeline sees it (or a line of a --check file: topic "", partition -1)."""

    value: bytes | None
    key: bytes | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    timestamp_ms: int | None = None
    headers: Sequence[tuple[str, bytes | None]] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """One decision about one reading (``entry`` is its index inside a Bundle, else 0) of a message.

    ``skipped_entries`` (on the first outcome of a Bundle only) counts its entries that are not readings.
    """

    message: Message
    entry: int
    decision: Decision
    skipped_entries: int = 0
    alerts: tuple[AlertEvent, ...] = ()  # alert events this reading caused (bp.alerts), in order


@dataclass
class Tally:
    """The one counter of the consumer: messages, and decisions by outcome, anomaly type, priority and reject reason.

    A batch's increment is counted once (``consumer.batch.sort_batch``); the run summary, the statistics windows
    and the Prometheus metrics all add that same increment.
    """

    messages: int = 0
    normal: int = 0
    anomalies: int = 0
    rejected: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    by_priority: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    skipped_entries: int = 0  # Bundle entries that are not readings (Patient, Encounter, ...)
    alerts: Counter[str] = field(default_factory=Counter)  # alert events by "<status>/<kind>"

    @property
    def readings(self) -> int:
        return self.normal + self.anomalies

    @property
    def total(self) -> int:
        return self.normal + self.anomalies + self.rejected

    def count(self, decision: Decision) -> None:
        """Count one decision."""
        if isinstance(decision, Normal):
            self.normal += 1
        elif isinstance(decision, Anomaly):
            self.anomalies += 1
            self.by_type.update(decision.anomaly_types)
            self.by_priority[decision.priority.value] += 1
        else:
            self.rejected += 1
            self.by_reason[decision.reason] += 1

    def count_alerts(self, events: Sequence[AlertEvent]) -> None:
        if events:  # most readings cause none: skip the Counter update
            self.alerts.update(f"{e.status.value}/{e.kind.value}" for e in events)

    def add(self, outcomes: Iterable[Outcome]) -> None:
        for outcome in outcomes:
            self.count(outcome.decision)
            self.skipped_entries += outcome.skipped_entries
            self.count_alerts(outcome.alerts)

    def merge(self, other: Tally) -> None:
        """Add another tally (e.g. one batch's increment) to this one."""
        self.messages += other.messages
        self.normal += other.normal
        self.anomalies += other.anomalies
        self.rejected += other.rejected
        self.by_type.update(other.by_type)
        self.by_priority.update(other.by_priority)
        self.by_reason.update(other.by_reason)
        self.skipped_entries += other.skipped_entries
        self.alerts.update(other.alerts)

    def copy(self) -> Tally:
        copied = Tally()
        copied.merge(self)
        return copied


class RiskModel(Protocol):
    """What the pipeline needs from a model: vectorised probabilities, a threshold and a version label."""

    @property
    def threshold(self) -> float: ...

    @property
    def version(self) -> str: ...

    def risk(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]: ...


class Pipeline:
    """Decides batches of messages. Per-patient history (the model's features) and alert state (``bp.alerts``,
    with ``alert_policy``; default: the rules-only policy) are kept per input partition in the
    :class:`~bp.state.KeyedState` that ``state`` gives for a partition (default: unbounded memory)."""

    def __init__(
        self,
        model: RiskModel | None,
        state: Callable[[int], KeyedState] | None = None,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        limits: ParseLimits = DEFAULT_LIMITS,
        alert_policy: AlertPolicy | None = None,
    ) -> None:
        self.model = model
        self.limits = limits
        self.alert_policy = alert_policy if alert_policy is not None else rules_policy()
        self._state = state if state is not None else (lambda partition: MemoryState())
        self._retention_days = retention_days
        self._histories: dict[int, PatientHistory] = {}
        self._alerts: dict[int, PatientAlerts] = {}

    def history(self, partition: int) -> PatientHistory:
        """The feature history of one input partition."""
        history = self._histories.get(partition)
        if history is None:
            history = PatientHistory(self._state(partition), self._retention_days)
            self._histories[partition] = history
        return history

    def alerts(self, partition: int) -> PatientAlerts:
        """The alert state of one input partition."""
        alerts = self._alerts.get(partition)
        if alerts is None:
            alerts = PatientAlerts(self.alert_policy, self._state(partition), self._retention_days)
            self._alerts[partition] = alerts
        return alerts

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the histories of partitions this process no longer owns (they are rebuilt from the store)."""
        for partition in partitions:
            self._histories.pop(partition, None)
            self._alerts.pop(partition, None)

    @property
    def model_version(self) -> str:
        return self.model.version if self.model is not None else "rules-only"

    def decide_batch(self, messages: Sequence[Message], now_ms: int | None = None) -> list[Outcome]:
        """Decide every message of a batch, in order.

        A reading may lie at most the tolerance after its record's arrival: the Kafka timestamp, or ``now_ms``
        (default: the clock) when the record has none (missing, -1 or 0) or claims a time later than now.
        """
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        parsed: list[tuple[Message, int, Reading]] = []
        outcomes: list[Outcome | None] = []
        slots: list[tuple[int, int]] = []  # (slot in outcomes, skipped entries) of each parsed reading
        for message in messages:
            if message.value is None:
                outcomes.append(Outcome(message, 0, _EMPTY))
                continue
            stamp = message.timestamp_ms
            received = now_ms if stamp is None or stamp <= 0 or stamp > now_ms else stamp
            result = parse_message(message.value, received_ms=received, limits=self.limits)
            if isinstance(result, Rejected):
                outcomes.append(Outcome(message, 0, result))
                continue
            skipped = result.skipped
            for entry, item in result.entries:
                if isinstance(item, Reading):
                    slots.append((len(outcomes), skipped))
                    outcomes.append(None)
                    parsed.append((message, entry, item))
                else:
                    outcomes.append(Outcome(message, entry, item, skipped))
                skipped = 0
        risks, gaps, contexts = self._risks(parsed)
        threshold = self.model.threshold if self.model is not None else None
        alerts = self._alerts
        for (slot, skipped), (message, entry, reading), risk, gap, context in zip(
            slots, parsed, risks, gaps, contexts, strict=True
        ):
            events = (alerts.get(message.partition) or self.alerts(message.partition)).observe(
                reading, risk, gap, context
            )
            outcomes[slot] = Outcome(message, entry, _classify(reading, risk, threshold), skipped, events)
        return [outcome for outcome in outcomes if outcome is not None]

    def _risks(
        self, parsed: list[tuple[Message, int, Reading]]
    ) -> tuple[Sequence[float | None], Sequence[float | None], Sequence[Context | None]]:
        """Each reading's risk, minutes since the patient's previous reading and what the patient's history says
        about it (for the alerts; None without the model)."""
        if self.model is None or not parsed:
            return [None] * len(parsed), [None] * len(parsed), [None] * len(parsed)
        histories = self._histories
        rows = []
        for message, _, reading in parsed:
            history = histories.get(message.partition) or self.history(message.partition)
            rows.append(history.observe(reading))
        matrix = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))
        risks: list[float] = self.model.risk(matrix).tolist()
        contexts = [context_of(values) for values in context_columns(matrix).tolist()]
        return risks, [minutes_since_previous(row) for row in rows], contexts


def _classify(reading: Reading, risk: float | None, threshold: float | None) -> Decision:
    assessment = assess(reading.systolic, reading.diastolic)
    priority = prioritize(assessment, risk, threshold)
    if priority is None:
        return Normal(reading, assessment.category.value, risk)
    types = assessment.anomaly_types
    if risk is not None and threshold is not None and risk >= threshold:
        types = (*types, MODEL_RISK)
    return Anomaly(reading, assessment.category.value, types, assessment.rules_fired, priority, risk)


_EMPTY = Rejected(reason="not_json", detail="empty message (no value, e.g. a tombstone)")


def decide(raw: bytes, pipeline: Pipeline) -> list[Decision]:
    """Decide one message on its own: its decisions, one per reading, or one rejection (loops use decide_batch)."""
    return [outcome.decision for outcome in pipeline.decide_batch([Message(raw)])]
