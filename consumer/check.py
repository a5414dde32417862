"""``python -m consumer.consumer --check FILE|-``: decide Observations from a file or stdin, no Kafka, no ES.

One JSON decision per line on stdout, then one JSON line per alert event (opened, escalated, resolved: the
reading that caused it is ``observation_id``) from :mod:`bp.alerts` with the model's alert policy (without a
model: two consecutive rule anomalies), so alerts can be evaluated offline. The run's summary goes to stderr
like the streaming consumer's.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import IO, Any

import orjson

from bp.alerts import AlertEvent, rules_policy
from bp.errors import ConfigError
from bp.reading import Normal, Rejected
from bp.settings import Settings
from consumer.batch import Totals
from consumer.pipeline import Message, Outcome, Pipeline
from consumer.scoring import load_model


def check_lines(source: IO[bytes]) -> Iterator[bytes]:
    """One JSON document per line, or one (possibly pretty-printed) JSON document for the whole input."""
    data = source.read()
    stripped = data.strip()
    if not stripped:
        return
    try:
        orjson.loads(stripped)
        yield stripped  # the whole input is one document
        return
    except orjson.JSONDecodeError:
        pass
    for line in data.splitlines():
        if line.strip():
            yield line


def run_check(settings: Settings, path: str, out: IO[bytes]) -> Totals:
    """Decide Observations from a file or stdin (``-``); one JSON decision per line on ``out``."""
    model = None if settings.rules_only else load_model(settings.model_path)
    policy = rules_policy() if model is None else model.alert_policy
    pipeline = Pipeline(
        model, retention_days=settings.state_retention_days, limits=settings.parse_limits, alert_policy=policy
    )
    events: list[AlertEvent] = []
    totals = Totals()
    if path == "-":
        documents = list(check_lines(sys.stdin.buffer))
    else:
        try:
            with open(path, "rb") as handle:
                documents = list(check_lines(handle))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    messages = [Message(value=doc, topic="check", partition=0, offset=line) for line, doc in enumerate(documents, 1)]
    for start in range(0, len(messages), settings.batch_size):
        batch = messages[start : start + settings.batch_size]
        outcomes = pipeline.decide_batch(batch)
        totals.counts.messages += len(batch)
        totals.counts.add(outcomes)
        for outcome in outcomes:
            out.write(orjson.dumps(decision_json(outcome)) + b"\n")
            events += outcome.alerts
    for event in events:
        out.write(orjson.dumps(event.to_dict()) + b"\n")
    out.flush()
    return totals


def decision_json(outcome: Outcome) -> dict[str, Any]:
    decision = outcome.decision
    base: dict[str, Any] = {"input": outcome.message.offset, "entry": outcome.entry}
    if isinstance(decision, Rejected):
        return {**base, "decision": "rejected", "reason": decision.reason, "detail": decision.detail}
    reading = decision.reading
    base.update(
        patient_id=reading.patient_id,
        effective=reading.effective.isoformat(),
        systolic=reading.systolic,
        diastolic=reading.diastolic,
        observation_id=reading.observation_id,
        category=decision.category,
        risk=None if decision.risk is None else round(decision.risk, 4),
    )
    if isinstance(decision, Normal):
        return {**base, "decision": "normal"}
    return {
        **base,
        "decision": "anomaly",
        "priority": decision.priority.value,
        "anomaly_types": list(decision.anomaly_types),
        "rules_fired": list(decision.rules_fired),
    }
