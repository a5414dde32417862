"""The pure pipeline: one decision per reading, one rejection per bad message, one model call per batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from bp.features import FEATURE_NAMES
from bp.fhir import build_observation
from bp.reading import Anomaly, Normal, Priority, Reading, Rejected
from bp.state import MemoryState
from consumer.pipeline import Message, Pipeline, Tally, decide

T0 = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
SYSTOLIC_COLUMN = FEATURE_NAMES.index("systolic")


def raw(patient: str, systolic: float, diastolic: float, minutes: int = 0, obs_id: str | None = None) -> bytes:
    reading = Reading(patient, T0 + timedelta(minutes=minutes), systolic, diastolic, obs_id or f"{patient}-{minutes}")
    return orjson.dumps(build_observation(reading))


class FakeModel:
    """Risk = 0.9 when systolic is in [120, 135) (a "rise the rules miss"), else 0.1; counts its calls."""

    threshold = 0.5
    version = "fake-1"

    def __init__(self) -> None:
        self.calls = 0
        self.rows = 0

    def risk(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        self.calls += 1
        self.rows += len(features)
        systolic = features[:, SYSTOLIC_COLUMN]
        return np.where((systolic >= 120) & (systolic < 135), 0.9, 0.1)


def test_rules_only_decisions() -> None:
    pipeline = Pipeline(model=None)
    outcomes = pipeline.decide_batch([Message(raw("p1", 112, 72)), Message(raw("p2", 150, 95)), Message(b"{")])
    normal, anomaly, rejected = (outcome.decision for outcome in outcomes)
    assert isinstance(normal, Normal) and normal.category == "normal" and normal.risk is None
    assert isinstance(anomaly, Anomaly)
    assert anomaly.priority is Priority.HIGH and anomaly.anomaly_types == ("hypertension",)
    assert isinstance(rejected, Rejected) and rejected.reason == "not_json"


def test_model_scores_whole_batch_in_one_call_and_sets_priority() -> None:
    model = FakeModel()
    pipeline = Pipeline(model=model)
    batch = [
        Message(raw("a", 112, 72)),  # normal, low risk
        Message(raw("b", 128, 78)),  # no rule, model high -> high, type model_risk
        Message(raw("c", 150, 95)),  # rule, model low -> medium (kept, not hidden)
        Message(raw("d", 190, 100)),  # crisis, model low -> critical
        Message(raw("e", 130, 95)),  # rule and model high -> high
        Message(b"garbage"),
    ]
    decisions = [outcome.decision for outcome in pipeline.decide_batch(batch)]
    assert model.calls == 1 and model.rows == 5
    assert isinstance(decisions[0], Normal) and decisions[0].risk == 0.1
    kinds = [(d.priority, d.anomaly_types) for d in decisions[1:5] if isinstance(d, Anomaly)]
    assert kinds == [
        (Priority.HIGH, ("model_risk",)),
        (Priority.MEDIUM, ("hypertension",)),
        (Priority.CRITICAL, ("hypertension", "hypertensive_crisis")),
        (Priority.HIGH, ("hypertension", "model_risk")),
    ]
    assert isinstance(decisions[5], Rejected)
    assert pipeline.model_version == "fake-1"


def test_bundle_gives_one_outcome_per_entry_in_order() -> None:
    entries = [{"resource": orjson.loads(raw("p", s, d, minutes=i))} for i, (s, d) in enumerate([(110, 70), (95, 55)])]
    bundle = orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})
    outcomes = Pipeline(model=None).decide_batch([Message(bundle, offset=7), Message(raw("q", 118, 75), offset=8)])
    assert [(o.message.offset, o.entry) for o in outcomes] == [(7, 0), (7, 1), (8, 0)]
    assert isinstance(outcomes[0].decision, Normal) and isinstance(outcomes[1].decision, Anomaly)


def test_tombstone_and_empty_batch() -> None:
    pipeline = Pipeline(model=FakeModel())
    assert pipeline.decide_batch([]) == []
    (outcome,) = pipeline.decide_batch([Message(None)])
    assert isinstance(outcome.decision, Rejected)


def test_history_is_kept_per_partition() -> None:
    """A reading's features depend on its partition's history only (the unit the consumer's state follows)."""
    states: dict[int, MemoryState] = {}
    pipeline = Pipeline(model=FakeModel(), state=lambda partition: states.setdefault(partition, MemoryState()))
    pipeline.decide_batch([Message(raw("p", 120, 80), partition=0), Message(raw("p", 121, 80), partition=0)])
    pipeline.decide_batch([Message(raw("p", 120, 80), partition=1)])
    assert sorted(states) == [0, 1]
    assert len(states[0]) == 1 and len(states[1]) == 1
    assert states[0].get("p") != states[1].get("p")


def test_decide_single_message() -> None:
    (decision,) = decide(raw("p", 85, 55), Pipeline(model=None))
    assert isinstance(decision, Anomaly) and decision.anomaly_types == ("hypotension",)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_arbitrary_batches_never_raise(values: list[bytes]) -> None:
    outcomes = Pipeline(model=FakeModel()).decide_batch([Message(v, offset=i) for i, v in enumerate(values)])
    offsets = [o.message.offset for o in outcomes]
    assert offsets == sorted(offsets) and set(offsets) == set(range(len(values)))  # every message decided, in order
    assert all(isinstance(o.decision, Normal | Anomaly | Rejected) for o in outcomes)


def _bundle(*resources: dict[str, object]) -> bytes:
    return orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]})


def test_bundle_entries_that_are_not_readings_are_skipped_and_counted() -> None:
    observation = orjson.loads(raw("p1", 150, 95))
    bad = orjson.loads(raw("p1", 80, 80, minutes=1))
    message = Message(_bundle({"resourceType": "Patient", "id": "p1"}, observation, {"resourceType": "Encounter"}, bad))
    outcomes = Pipeline(model=None).decide_batch([message])
    assert [(o.entry, type(o.decision).__name__, o.skipped_entries) for o in outcomes] == [
        (1, "Anomaly", 2),
        (3, "Rejected", 0),
    ]
    tally = Tally()
    tally.add(outcomes)
    assert (tally.anomalies, tally.rejected, tally.skipped_entries) == (1, 1, 2)


def test_future_window_is_measured_from_the_record_timestamp_or_now() -> None:
    pipeline = Pipeline(model=None)
    t0_ms = int(T0.timestamp() * 1000)
    day_ms = 86_400_000
    value = raw("p1", 112, 72)  # effective T0
    later = raw("p1", 112, 72, minutes=10 * 24 * 60)  # effective T0 + 10 days
    outcomes = pipeline.decide_batch(
        [
            Message(value, timestamp_ms=t0_ms - 2 * day_ms),  # sent two days before the reading: bad_time
            Message(value, timestamp_ms=t0_ms),
            Message(value, timestamp_ms=None),  # no timestamp: now_ms
            Message(value, timestamp_ms=0),  # unset: now_ms
            Message(later, timestamp_ms=253_402_300_800_000),  # year 10000 claimed: now_ms instead
        ],
        now_ms=t0_ms + day_ms,
    )
    reasons = [o.decision.reason if isinstance(o.decision, Rejected) else "ok" for o in outcomes]
    assert reasons == ["bad_time", "ok", "ok", "ok", "bad_time"]


def test_skipped_entries_reach_the_batch_counts_the_summary_and_the_metrics() -> None:
    from consumer.batch import Totals, sort_batch
    from consumer.metrics import Metrics

    observation = orjson.loads(raw("p1", 112, 72))
    bundle = _bundle({"resourceType": "Patient", "id": "p1"}, {"resourceType": "Encounter"}, observation)
    messages = [Message(bundle, offset=0), Message(raw("p2", 118, 76), offset=1)]
    batch = sort_batch(
        messages,
        Pipeline(model=None).decide_batch(messages),
        archive_line=lambda outcome, normal: outcome,  # type: ignore[arg-type,return-value]
        anomaly_document=lambda outcome, anomaly: outcome,  # type: ignore[arg-type,return-value]
    )
    assert (batch.counts.normal, batch.counts.skipped_entries) == (2, 2)
    totals = Totals()
    totals.counts.merge(batch.counts)
    assert totals.summary()["skipped_entries"] == 2
    metrics = Metrics()
    metrics.record_batch(batch.counts, 0.01)
    assert metrics.registry.get_sample_value("bp_skipped_entries_total") == 2.0
