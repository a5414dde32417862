"""The Elasticsearch sinks: the documents of ``bp-anomalies``, ``bp-alerts`` and ``bp-stats`` (built from
decisions, with stable ids), their bulk indexing, and the index templates installed at start. The other sinks:
the normal archive (:mod:`consumer.archive`), the dead-letter topic (:mod:`consumer.dead_letters`).

Every sink either writes a whole batch durably or raises :class:`bp.errors.SinkError`; the loop commits Kafka
offsets only after all of them succeeded, so a failure means the batch is retried (never lost), and every sink
is idempotent so a retried or replayed batch never duplicates anything.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bp.alerts import AlertEvent, AlertStatus
from bp.clinical import ANOMALY_TYPES
from bp.errors import ConfigError, EndpointError, SinkError
from bp.reading import Anomaly, Reading
from consumer.pipeline import Message, Outcome, Tally
from consumer.ports import BulkClient, TemplateClient

log = logging.getLogger("bp.consumer.sinks")

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "docker" / "elasticsearch"


# ------------------------------------------------------------------------------------------- elasticsearch
def document_id(reading: Reading) -> str:
    """Stable ``_id``: the Observation's id, or a hash of patient, time and values when it has none."""
    if reading.observation_id:
        return reading.observation_id
    key = f"{reading.patient_id}|{reading.effective.isoformat()}|{reading.systolic}|{reading.diastolic}"
    return "h-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def alert_document(event: AlertEvent, model_version: str, ingested_at: str) -> dict[str, Any]:
    """The ``bp-alerts`` document of an alert after ``event``: indexed with ``_id`` = the alert id, so each event
    of an alert overwrites the one before (the latest state wins, replays write the same documents)."""
    resolved = event.status is AlertStatus.RESOLVED
    return {
        "alert_id": event.alert_id,
        "patient_id": event.patient_id,
        "kind": event.kind.value,
        "severity": event.severity.value,
        "status": "resolved" if resolved else "open",
        "last_event": event.status.value,
        "opened_at": event.opened_at.isoformat(),
        "opened_observation_id": event.opened_observation_id,
        "last_event_at": event.at.isoformat(),
        "resolved_at": event.at.isoformat() if resolved else None,
        "observation_id": event.observation_id,
        "hits": event.hits,
        "worst_systolic": event.worst_systolic,
        "worst_diastolic": event.worst_diastolic,
        "reason": event.reason,
        "model_version": model_version,
        "ingested_at": ingested_at,
    }


def anomaly_document(outcome: Outcome, anomaly: Anomaly, model_version: str, ingested_at: str) -> dict[str, Any]:
    reading = anomaly.reading
    message = outcome.message
    produced = (
        datetime.fromtimestamp(message.timestamp_ms / 1000, UTC).isoformat()
        if message.timestamp_ms is not None and message.timestamp_ms >= 0
        else None
    )
    return {
        "observation_id": reading.observation_id,
        "patient_id": reading.patient_id,
        "effective": reading.effective.isoformat(),
        "effective_precision": reading.effective_precision,
        "ingested_at": ingested_at,
        "produced_at": produced,
        "systolic": reading.systolic,
        "diastolic": reading.diastolic,
        "mean_arterial_pressure": round(reading.mean_arterial, 2),
        "pulse_pressure": reading.pulse_pressure,
        "anomaly_types": list(anomaly.anomaly_types),
        "category": anomaly.category,
        "priority": anomaly.priority.value,
        "ml_risk": None if anomaly.risk is None else round(anomaly.risk, 6),
        "rules_fired": list(anomaly.rules_fired),
        "model_version": model_version,
        "source_topic": message.topic,
        "source_partition": message.partition,
        "source_offset": message.offset,
    }


RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Document:
    """One document to index, with where it came from: the message it was built from (None for statistics)."""

    index: str
    id: str
    source: dict[str, Any]
    origin: Message | None = None


@dataclass
class BulkResult:
    indexed: int = 0
    rejected: list[tuple[Document, str]] = field(default_factory=list)  # (document, reason)


class ElasticsearchSink:
    """Bulk-indexes documents with explicit ids, checks every item, retries what is retryable.

    - connection errors, HTTP 429/5xx for the whole request or per item: wait (exponential backoff, capped) and
      retry only what is left, until it succeeds or ``should_stop()`` says to give up (then SinkError: the
      batch is not committed and will be replayed);
    - per-item 4xx (e.g. a mapping error): that document is returned as rejected, to be dead-lettered.
    """

    def __init__(
        self,
        client: BulkClient,
        *,
        chunk_size: int = 1000,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
        should_stop: Callable[[], bool] = lambda: False,
        on_wait: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.chunk_size = chunk_size
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.should_stop = should_stop
        self.on_wait = on_wait
        self.retries = 0
        self.outage_since: float | None = None

    def index(self, docs: Sequence[Document]) -> BulkResult:
        """Index the documents under their explicit ids; returns counts and the per-item rejections."""
        result = BulkResult()
        for start in range(0, len(docs), self.chunk_size):
            self._index_chunk(list(docs[start : start + self.chunk_size]), result)
        return result

    def _index_chunk(self, pending: list[Document], result: BulkResult) -> None:
        delay = self.backoff_initial_s
        while pending:
            operations: list[dict[str, Any]] = []
            for doc in pending:
                operations.append({"index": {"_index": doc.index, "_id": doc.id}})
                operations.append(doc.source)
            try:
                response = self.client.bulk(operations=operations)
                items = response["items"]
            except Exception as exc:  # transport errors, 429/5xx on the whole request
                if _is_client_error(exc):
                    raise SinkError(f"Elasticsearch refused the bulk request: {exc}") from exc
                delay = self._wait(f"{type(exc).__name__}: {str(exc)[:200]}", delay)
                continue
            retry: list[Document] = []
            for doc, item in zip(pending, items, strict=True):
                outcome = next(iter(item.values()))
                status = int(outcome.get("status", 500))
                if status < 300:
                    result.indexed += 1
                elif status in RETRYABLE_STATUS:
                    retry.append(doc)
                else:
                    error = outcome.get("error") or {}
                    reason = f"{error.get('type', status)}: {str(error.get('reason', ''))[:300]}"
                    result.rejected.append((doc, reason))
            pending = retry
            if pending:
                delay = self._wait(f"{len(pending)} items got 429/5xx", delay)
        if self.outage_since is not None:
            log.warning("Elasticsearch is back after %.1f s", time.monotonic() - self.outage_since)
            self.outage_since = None

    def _wait(self, why: str, delay: float) -> float:
        if self.should_stop():
            raise SinkError(f"stopping while Elasticsearch is failing ({why}); the batch will be replayed")
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            log.warning("Elasticsearch write failed (%s); retrying with backoff, offsets not committed", why)
        elif self.retries % 10 == 0:
            log.warning(
                "Elasticsearch still failing after %.0f s (%s); retrying",
                time.monotonic() - self.outage_since,
                why,
            )
        self.retries += 1
        self.on_wait(delay)
        return min(delay * 2, self.backoff_max_s)


def _is_client_error(exc: Exception) -> bool:
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "meta", None), "status", None)
    return isinstance(status, int) and 400 <= status < 500 and status != 429


def load_template(name: str) -> dict[str, Any]:
    """An index template body shipped in docker/elasticsearch/ (one source for compose setup and consumer)."""
    path = TEMPLATE_DIR / f"{name}.template.json"
    try:
        body: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"index template {path} unreadable: {exc}") from None
    return body


def ensure_template(client: TemplateClient, template: str, index: str) -> bool:
    """Install the index template for ``index`` (named after it) unless one exists; True if installed."""
    try:
        if client.indices.exists_index_template(name=index):
            return False
        body = load_template(template)
        client.indices.put_index_template(
            name=index,
            index_patterns=[index],
            priority=body.get("priority", 200),
            template=body["template"],
            meta=body.get("_meta"),
        )
    except ConfigError:
        raise
    except Exception as exc:  # e.g. 403 for a user without the manage_index_templates privilege
        raise EndpointError(f"cannot install the index template for {index}: {type(exc).__name__}: {exc}") from None
    log.info("installed index template %s", index)
    return True


# ------------------------------------------------------------------------------------------------ stats
@dataclass
class Window:
    """Counters of one statistics window (one bp-stats document)."""

    started: datetime
    tally: Tally = field(default_factory=Tally)

    @property
    def total(self) -> int:
        return self.tally.total

    def merged(self, counts: Tally) -> Window:
        """A new window with a batch's counts added (this one is left as it is, for retries)."""
        window = Window(self.started, self.tally.copy())
        window.tally.merge(counts)
        return window

    def document(self, consumer: str, ended: datetime) -> dict[str, Any]:
        tally = self.tally
        decided = tally.readings
        return {
            "window_start": self.started.isoformat(),
            "window_end": ended.isoformat(),
            "window_seconds": round((ended - self.started).total_seconds(), 3),
            "consumer": consumer,
            "total": tally.total,
            "readings": decided,
            "normal": tally.normal,
            "anomalies": tally.anomalies,
            "rejected": tally.rejected,
            "anomaly_rate": round(tally.anomalies / decided, 6) if decided else 0.0,
            **{f"anomalies_{kind}": tally.by_type[kind] for kind in ANOMALY_TYPES},
            "priority_critical": tally.by_priority["critical"],
            "priority_high": tally.by_priority["high"],
            "priority_medium": tally.by_priority["medium"],
        }
