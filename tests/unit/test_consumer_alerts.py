"""Alerts in the consumer: the pipeline attaches alert events to outcomes, the batch turns them into bp-alerts
documents with stable ids, a replay writes the same documents, and alert state lives in the partition's state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from bp.alerts import AlertPolicy, AlertStatus, Trigger
from bp.fhir import build_observation
from bp.reading import Anomaly, Normal, Reading
from bp.state import MemoryState
from consumer.batch import sort_batch
from consumer.pipeline import Message, Outcome, Pipeline
from consumer.sinks import Document, alert_document

T0 = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
VALUES = [(118, 76)] * 4 + [(196, 124), (205, 126), (210, 128)] + [(120, 78)] * 8


def messages(patient: str = "pt-1", partition: int = 0) -> list[Message]:
    out = []
    for i, (s, d) in enumerate(VALUES):
        reading = Reading(patient, T0 + i * timedelta(minutes=15), float(s), float(d), f"{patient}-{i}")
        out.append(Message(orjson.dumps(build_observation(reading)), partition=partition, offset=i, topic="t"))
    return out


def documents(outcomes: list[Outcome], batch_messages: list[Message]) -> list[Document]:
    def anomaly_doc(outcome: Outcome, anomaly: Anomaly) -> Document:
        return Document("bp-anomalies", anomaly.reading.observation_id or "", {}, outcome.message)

    def normal_line(outcome: Outcome, normal: Normal) -> Any:
        return normal.reading.observation_id

    batch = sort_batch(
        batch_messages,
        outcomes,
        archive_line=normal_line,
        anomaly_document=anomaly_doc,
        alert_document=lambda outcome, event: Document(
            "bp-alerts", event.alert_id, alert_document(event, "v", "now"), outcome.message
        ),
    )
    assert batch.counts.alerts == {"opened/hypertensive": 1, "resolved/hypertensive": 1}
    return [d for d in batch.documents if d.index == "bp-alerts"]


def test_alert_events_become_documents_with_the_alert_id_and_the_latest_state() -> None:
    batch_messages = messages()
    outcomes = Pipeline(None).decide_batch(batch_messages)  # rules-only policy: two consecutive rule anomalies
    events = [e for o in outcomes for e in o.alerts]
    assert [e.status for e in events] == [AlertStatus.OPENED, AlertStatus.RESOLVED]
    opened_by = next(o for o in outcomes if o.alerts and o.alerts[0].status is AlertStatus.OPENED)
    assert opened_by.message.offset == 5  # the second crisis reading confirms the first
    docs = documents(outcomes, batch_messages)
    assert [d.id for d in docs] == ["pt-1:hypertensive:pt-1-5"] * 2  # one document per alert, overwritten
    assert [d.source["status"] for d in docs] == ["open", "resolved"]
    assert docs[-1].source["severity"] == "critical"
    assert docs[-1].source["opened_observation_id"] == "pt-1-5"
    assert docs[-1].source["worst_systolic"] == 210.0
    assert docs[-1].source["reason"] == "2 crisis range (> 180/120 mmHg) readings: 196/124, 205/126 mmHg"
    assert all(d.origin is not None for d in docs)  # a refused alert document is dead-lettered with its message


def test_a_replay_from_the_same_state_writes_the_same_documents() -> None:
    first = Pipeline(None).decide_batch(messages())
    again = Pipeline(None).decide_batch(messages())
    assert [e for o in first for e in o.alerts] == [e for o in again for e in o.alerts]


def test_alert_state_lives_in_the_partitions_keyed_state_and_survives_a_new_pipeline() -> None:
    stores: dict[int, MemoryState] = {}

    def state(partition: int) -> MemoryState:
        return stores.setdefault(partition, MemoryState())

    policy = AlertPolicy(threshold=1.0, confirm_k=2, confirm_n=2, trigger=Trigger.RULES)
    batch = messages()
    head, tail = batch[:6], batch[6:]
    opened = Pipeline(None, state=state, alert_policy=policy).decide_batch(head)
    assert [e.status for o in opened for e in o.alerts] == [AlertStatus.OPENED]
    assert stores[0].get("alerts/pt-1") is not None
    restarted = Pipeline(None, state=state, alert_policy=policy)  # e.g. after a crash, state from the store
    rest = restarted.decide_batch(tail)
    assert [e.status for o in rest for e in o.alerts] == [AlertStatus.RESOLVED]  # not opened twice


class ConstantRisk:
    """A model that scores every reading 0.6 (the pipeline's RiskModel protocol)."""

    threshold = 0.5
    version = "constant"

    def risk(self, features: Any) -> Any:
        return features[:, 0] * 0.0 + 0.6


def test_the_pipeline_tells_the_alert_logic_the_cadence_from_the_feature_history() -> None:
    """0.6 is a hit at the threshold (0.5) but not at the dense-cadence threshold (0.7): readings 15 min apart open
    nothing, morning and evening readings do."""
    policy = AlertPolicy(threshold=0.5, confirm_k=2, confirm_n=3, dense_threshold=0.7)

    def stream(gap: timedelta) -> list[Message]:
        out = []
        for i in range(6):
            reading = Reading("pt-1", T0 + i * gap, 150.0, 95.0, f"pt-1-{i}")
            out.append(Message(orjson.dumps(build_observation(reading)), partition=0, offset=i, topic="t"))
        return out

    dense = Pipeline(ConstantRisk(), alert_policy=policy).decide_batch(stream(timedelta(minutes=15)))
    assert [e for o in dense for e in o.alerts] == []
    sparse = Pipeline(ConstantRisk(), alert_policy=policy).decide_batch(stream(timedelta(hours=12)))
    assert [(o.message.offset, e.status) for o in sparse for e in o.alerts] == [(1, AlertStatus.OPENED)]
