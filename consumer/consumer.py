"""``python -m consumer.consumer``: the Kafka loop (poll → decide → archive → index → dead letters → commit).

Offsets are committed synchronously only after every sink confirmed the batch: the normal archive is appended
and fsynced, Elasticsearch acknowledged every anomaly (retrying 429/5xx and outages), and the dead-letter
producer got an ack for every rejected message. Sinks are idempotent, so a replay after a crash duplicates
nothing. ``--check FILE|-`` decides Observations from a file or stdin without Kafka or Elasticsearch.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from bp.cli import StopFlag, configure_logging, error_exit, non_negative_float, positive_int, tune_gc
from bp.errors import BpError, ConfigError, EndpointError, SinkError
from bp.reading import Anomaly, Normal, Rejected
from bp.settings import Settings, load_settings
from consumer.metrics import Metrics
from consumer.pipeline import Message, Outcome, Pipeline, Tally
from consumer.scoring import load_model
from consumer.sinks import (
    DeadLetters,
    ElasticsearchSink,
    NormalArchive,
    Window,
    anomaly_document,
    document_id,
    ensure_template,
)

log = logging.getLogger("bp.consumer")

PROGRESS_EVERY_S = 5.0
IDLE_SLEEP_S = 0.2  # the stand-in answers fetches at once: sleep on empty polls instead of spinning a core


# ------------------------------------------------------------------------------------------------- summary
@dataclass
class Totals:
    """Counters of the whole run (the summary and the progress lines)."""

    started: float = field(default_factory=time.monotonic)
    messages: int = 0
    tally: Tally = field(default_factory=Tally)
    # where the time goes: poll, decide, archive, index, dead_letters, commit
    stage_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, outcomes: list[Outcome], messages: int) -> None:
        self.messages += messages
        self.tally.add(outcomes)

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.messages / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        tally = self.tally
        types = ", ".join(f"{name} {count}" for name, count in sorted(tally.by_type.items())) or "none"
        return (
            f"consumed {self.messages} ({self.rate():.0f} msg/s): normal {tally.normal}, "
            f"anomalies {tally.anomalies} ({types}), rejected {tally.rejected}"
        )

    def summary(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        tally = self.tally
        return {
            "messages": self.messages,
            "readings": tally.readings,
            "normal": tally.normal,
            "anomalies": tally.anomalies,
            "rejected": tally.rejected,
            "anomalies_by_type": dict(sorted(tally.by_type.items())),
            "anomalies_by_priority": dict(sorted(tally.by_priority.items())),
            "rejected_by_reason": dict(sorted(tally.by_reason.items())),
            "seconds": round(elapsed, 2),
            "stage_seconds": {name: round(value, 3) for name, value in sorted(self.stage_seconds.items())},
            "messages_per_second": round(self.messages / elapsed, 1) if elapsed > 0 else None,
        }


# ---------------------------------------------------------------------------------------------- processor
@dataclass
class Prepared:
    """A batch decided and archived, waiting for Elasticsearch and the dead letters before its commit."""

    messages: list[Message]
    outcomes: list[Outcome]
    docs: list[tuple[str, str, dict[str, Any]]]
    anomalies: list[Outcome]
    letters: list[tuple[Message, Rejected]]
    window_before: Window
    started: float
    first_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    index_rejected: int = 0


class BatchProcessor:
    """Writes decided batches to every sink; any failure raises SinkError and the batch is not committed.

    ``prepare`` (decide, archive, build documents) runs on the loop's thread; ``deliver`` (Elasticsearch bulk,
    then dead letters) may run on a worker thread while the loop prepares the next batch; ``complete`` records
    a delivered batch, ``rollback`` forgets a failed one.
    """

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        archive: NormalArchive,
        es: ElasticsearchSink,
        dead_letters: DeadLetters,
        consumer_name: str,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.archive = archive
        self.es = es
        self.dead_letters = dead_letters
        self.consumer_name = consumer_name
        self.window = Window(datetime.now(UTC))
        self.window_due = time.monotonic() + settings.stats_interval_s
        self.totals = Totals()
        self.index_rejected = 0

    def prepare(self, messages: list[Message], final: bool = False) -> Prepared:
        stages = self.totals.stage_seconds
        started = time.perf_counter()
        outcomes = self.pipeline.decide_batch(messages)
        decided = time.perf_counter()
        stages["decide"] += decided - started
        self.archive.write(outcomes)  # appended and fsynced before anything can be committed
        stages["archive"] += time.perf_counter() - decided
        now = datetime.now(UTC)
        ingested_at = now.isoformat()
        docs: list[tuple[str, str, dict[str, Any]]] = []
        anomalies: list[Outcome] = []
        letters: list[tuple[Message, Rejected]] = []
        for outcome in outcomes:
            decision = outcome.decision
            if isinstance(decision, Anomaly):
                source = anomaly_document(outcome, decision, self.pipeline.model_version, ingested_at)
                docs.append((self.settings.index, document_id(decision.reading), source))
                anomalies.append(outcome)
            elif isinstance(decision, Rejected):
                letters.append((outcome.message, decision))
        window_before = self.window
        self.window = self.window.merged(outcomes)
        if final or time.monotonic() >= self.window_due:
            stats_id = f"{self.consumer_name}-{ingested_at}"
            docs.append((self.settings.stats_index, stats_id, self.window.document(self.consumer_name, now)))
            self.window = Window(now)
            self.window_due = time.monotonic() + self.settings.stats_interval_s
        prepared = Prepared(messages, outcomes, docs, anomalies, letters, window_before, started)
        for message in messages:
            key = (message.topic, message.partition)
            prepared.first_offsets.setdefault(key, message.offset)
            prepared.next_offsets[key] = message.offset + 1
        return prepared

    def deliver(self, prepared: Prepared) -> Prepared:
        """Index the anomalies (and stats), then send every dead letter; thread-safe for one batch at a time."""
        stages = self.totals.stage_seconds
        indexing = time.perf_counter()
        # Parse rejects travel to the dead-letter topic while Elasticsearch indexes the anomalies.
        pending = self.dead_letters.start(_unique_messages(prepared.letters))
        result = self.es.index(prepared.docs)
        indexed = time.perf_counter()
        stages["index"] += indexed - indexing
        index_letters = []
        for position, reason in result.rejected:
            if position >= len(prepared.anomalies):
                log.error("stats document rejected by Elasticsearch: %s", reason)
                continue
            bad = prepared.anomalies[position]
            index_letters.append((bad.message, Rejected(reason="index_rejected", detail=reason, stage="index")))
            prepared.index_rejected += 1
        pending += self.dead_letters.start(_unique_messages(index_letters))
        self.dead_letters.confirm(pending)
        stages["dead_letters"] += time.perf_counter() - indexed
        return prepared

    def complete(self, prepared: Prepared) -> None:
        self.index_rejected += prepared.index_rejected
        self.totals.add(prepared.outcomes, len(prepared.messages))

    def rollback(self, prepared: Prepared) -> None:
        """A failed batch (and any prepared after it) will be replayed: its statistics must not count yet."""
        self.window = prepared.window_before
        self.window_due = time.monotonic()


def _unique_messages(letters: list[tuple[Message, Rejected]]) -> list[tuple[Message, Rejected]]:
    """One dead letter per source message (a Bundle with two rejected entries is sent once)."""
    seen: set[tuple[str, int, int]] = set()
    unique = []
    for message, rejected in letters:
        key = (message.topic, message.partition, message.offset)
        if key not in seen:
            seen.add(key)
            unique.append((message, rejected))
    return unique


# ------------------------------------------------------------------------------------------------ clients
def make_es(settings: Settings) -> Any:
    from elasticsearch import Elasticsearch
    from elasticsearch.serializer import OrjsonSerializer

    options: dict[str, Any] = {
        "request_timeout": 30,
        "max_retries": 0,  # the sink retries with backoff itself, without committing meanwhile
        "retry_on_timeout": False,
        "serializer": OrjsonSerializer(),
    }
    if settings.es_api_key:
        options["api_key"] = settings.es_api_key
    elif settings.es_username:
        options["basic_auth"] = (settings.es_username, settings.es_password or "")
    if settings.es_ca_cert:
        if not settings.es_ca_cert.is_file():
            raise ConfigError(f"CA certificate {settings.es_ca_cert} not found (--es-ca-cert / BP_ES_CA_CERT)")
        options["ca_certs"] = str(settings.es_ca_cert)
    try:
        client = Elasticsearch(settings.es_url, **options)
    except ValueError as exc:
        raise ConfigError(f"invalid Elasticsearch URL {settings.es_url!r}: {exc}") from None
    deadline = time.monotonic() + settings.connect_timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client.options(request_timeout=2).info()
            return client
        except Exception as exc:  # connection refused, TLS, auth...
            last = exc
            status = getattr(getattr(exc, "meta", None), "status", None)
            if status in (401, 403):
                break
            time.sleep(0.5)
    raise EndpointError(
        f"cannot reach Elasticsearch at {settings.es_url} within {settings.connect_timeout_s:.0f} s "
        f"({type(last).__name__}: {str(last)[:200]}); start it or set --es-url"
    )


def make_kafka(settings: Settings, rebalance: Any) -> tuple[Any, Any]:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError

    timeout_ms = int(settings.connect_timeout_s * 1000)
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=settings.group,
            group_instance_id=settings.consumer_instance_id,
            client_id=f"bp-consumer-{settings.consumer_instance_id or 'dynamic'}",
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(500, settings.session_timeout_ms // 5),
            max_poll_interval_ms=settings.max_poll_interval_ms,
            max_poll_records=settings.batch_size,
            bootstrap_timeout_ms=timeout_ms,
        )
        consumer.subscribe([settings.topic], listener=rebalance)
        producer = KafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id="bp-consumer-dlq",
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            compression_type=settings.compression,
            bootstrap_timeout_ms=timeout_ms,
            max_block_ms=timeout_ms,
        )
    except (KafkaError, OSError) as exc:
        raise EndpointError(
            f"cannot reach Kafka at {settings.kafka_bootstrap} within {settings.connect_timeout_s:.0f} s "
            f"({type(exc).__name__}); start it or set --bootstrap-servers"
        ) from None
    return consumer, producer


def rebalance_listener(archive: NormalArchive) -> Any:
    """A listener that forgets cached archive positions whenever partition ownership changes."""
    from kafka import ConsumerRebalanceListener

    class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            archive.forget()
            if revoked:
                log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

        def on_partitions_assigned(self, assigned: Any) -> None:
            archive.forget()
            log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))

    return Rebalance()


def lag(consumer: Any) -> dict[int, int] | None:
    """Messages behind the high watermark, per assigned partition (None when not known yet)."""
    lags: dict[int, int] = {}
    try:
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                return None
            lags[tp.partition] = max(0, high - consumer.position(tp))
    except Exception:  # lag is informative only
        return None
    return lags


def to_message(record: Any) -> Message:
    return Message(
        value=record.value,
        key=record.key,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        headers=record.headers or (),  # converted only for dead letters
    )


# --------------------------------------------------------------------------------------------------- loop
def run(settings: Settings, args: argparse.Namespace, stop: StopFlag) -> Totals:
    from kafka.errors import KafkaError

    model = None if settings.rules_only else load_model(settings.model_path)
    pipeline = Pipeline(model, retention_days=settings.state_retention_days)
    es_client = make_es(settings)
    ensure_template(es_client, "bp-anomalies", settings.index)
    ensure_template(es_client, "bp-stats", settings.stats_index)
    archive = NormalArchive(settings.archive_dir)
    consumer, producer = make_kafka(settings, rebalance_listener(archive))
    name = settings.consumer_instance_id or f"consumer-{id(consumer) & 0xFFFF:04x}"
    metrics = Metrics()
    metrics_server = None
    if settings.metrics_port is not None:
        try:
            metrics_server = metrics.serve(settings.metrics_port, settings.metrics_host)
        except OSError as exc:
            consumer.close(autocommit=False)
            producer.close(timeout=5)
            raise ConfigError(
                f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc}"
            ) from None
        log.info("Prometheus metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)

    def backoff(delay: float) -> None:
        """The sink's wait between retries (on the worker thread; the loop keeps the group membership)."""
        metrics.retries.labels("elasticsearch").inc()
        end = time.monotonic() + delay
        while time.monotonic() < end and not stop:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))

    es_sink = ElasticsearchSink(es_client, should_stop=lambda: bool(stop), on_wait=backoff)
    processor = BatchProcessor(settings, pipeline, archive, es_sink, DeadLetters(producer, settings.dlq_topic), name)
    log.info(
        "consuming %s as group %s (%s) → archive %s, index %s, DLQ %s; model %s",
        settings.topic,
        settings.group,
        name,
        settings.archive_dir,
        settings.index,
        settings.dlq_topic,
        pipeline.model_version,
    )
    tune_gc()
    try:
        consume(consumer, processor, metrics, settings, args, stop)
    except KafkaError as exc:
        raise EndpointError(f"Kafka failed: {type(exc).__name__}: {exc}") from None
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=10)
        es_client.close()
        if metrics_server is not None:
            metrics_server.shutdown()
    totals_extra = {"index_rejected": processor.index_rejected, "archive_skipped_replays": archive.skipped}
    log.info("done: %s; %s", processor.totals.line(), totals_extra)
    return processor.totals


def consume(
    consumer: Any,
    processor: BatchProcessor,
    metrics: Metrics,
    settings: Settings,
    args: argparse.Namespace,
    stop: StopFlag,
) -> None:
    """The loop: poll → prepare (decide, archive) → settle the batch in flight (commit) → deliver on the worker.

    ``consumer`` is a KafkaConsumer (or a fake with the same methods); everything else is already built.
    """
    from kafka.errors import CommitFailedError
    from kafka.structs import OffsetAndMetadata, TopicPartition

    totals = processor.totals
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bp-sinks")
    in_flight: tuple[Prepared, Future[Prepared]] | None = None

    def rewind(*batches: dict[tuple[str, int], int]) -> None:
        """Seek every partition back to the first uncommitted message of these batches (earliest wins)."""
        first: dict[tuple[str, int], int] = {}
        for batch in batches:
            for key, offset in batch.items():
                first[key] = min(offset, first.get(key, offset))
        assigned = consumer.assignment()
        for (topic, partition), offset in first.items():
            tp = TopicPartition(topic, partition)
            if tp in assigned:
                consumer.seek(tp, offset)

    def settle(*discard_on_failure: dict[tuple[str, int], int]) -> bool:
        """Wait for the batch in flight; commit it if every sink confirmed it, else rewind (and no commit).

        ``discard_on_failure``: first offsets of batches polled after the one in flight; on a failure they are
        rewound together with it (the earliest offset per partition wins), so nothing is skipped.

        While Elasticsearch is failing the wait can be long: the partitions are paused and the consumer keeps
        polling (returns nothing), so it stays in its group instead of being evicted for not polling.
        """
        nonlocal in_flight
        if in_flight is None:
            return True
        prepared, future = in_flight
        in_flight = None
        waiting_since = time.monotonic()
        paused = False
        while True:
            try:
                future.result(timeout=0.2)
                failure: SinkError | None = None
                break
            except FutureTimeout:
                if time.monotonic() - waiting_since > 1.0:
                    consumer.pause(*consumer.assignment())
                    paused = True
                    for tp, unexpected in consumer.poll(timeout_ms=0).items():
                        if unexpected:  # a partition assigned during the wait: fetch it again later
                            consumer.seek(tp, unexpected[0].offset)
            except SinkError as exc:
                failure = exc
                break
        if paused:
            consumer.resume(*consumer.assignment())
        if failure is not None:
            metrics.retries.labels("batch").inc()
            log.error("batch not committed, will be retried: %s", failure)
            processor.rollback(prepared)
            rewind(prepared.first_offsets, *discard_on_failure)
            return False
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in prepared.next_offsets.items()
        }
        committing = time.perf_counter()
        try:
            if offsets:
                consumer.commit(offsets)
        except CommitFailedError as exc:  # a rebalance took the partitions: the new owner replays (idempotent)
            log.warning("commit failed after a rebalance (%s); the batch will be replayed", exc)
        totals.stage_seconds["commit"] += time.perf_counter() - committing
        processor.complete(prepared)
        metrics.record_batch(prepared.outcomes, len(prepared.messages), time.perf_counter() - prepared.started)
        if prepared.index_rejected:
            metrics.rejects.labels("index_rejected").inc(prepared.index_rejected)
        return True

    idle_since = time.monotonic()
    next_progress = time.monotonic() + PROGRESS_EVERY_S
    try:
        while not stop:
            taken = totals.messages + (len(in_flight[0].messages) if in_flight is not None else 0)
            if args.max_messages and taken >= args.max_messages:
                break
            limit = settings.batch_size
            if args.max_messages:
                limit = min(limit, args.max_messages - taken)
            polling = time.perf_counter()
            polled = consumer.poll(timeout_ms=100, max_records=limit)
            totals.stage_seconds["poll"] += time.perf_counter() - polling
            records = [record for batch in polled.values() for record in batch]
            if not records:
                settle()
                if args.stop_when_idle is not None and time.monotonic() - idle_since >= args.stop_when_idle:
                    log.info("idle for %.1f s: stopping", args.stop_when_idle)
                    break
                if not stop:
                    time.sleep(IDLE_SLEEP_S)
                if time.monotonic() >= next_progress:
                    next_progress = time.monotonic() + PROGRESS_EVERY_S
                    _progress(totals, consumer, metrics)
                continue
            idle_since = time.monotonic()
            messages = [to_message(record) for record in records]
            try:
                prepared = processor.prepare(messages)
            except SinkError as exc:  # the archive failed: settle the batch in flight, then retry this one
                log.error("batch not committed, will be retried: %s", exc)
                metrics.retries.labels("batch").inc()
                first = {(tp.topic, tp.partition): batch[0].offset for tp, batch in polled.items() if batch}
                if settle(first):  # (if the batch in flight failed too, settle rewound both)
                    rewind(first)
                time.sleep(1.0)
                continue
            if not settle(prepared.first_offsets):  # the previous batch failed: both are replayed from its offsets
                continue
            in_flight = (prepared, worker.submit(processor.deliver, prepared))
            if time.monotonic() >= next_progress:
                next_progress = time.monotonic() + PROGRESS_EVERY_S
                _progress(totals, consumer, metrics)
        settle()
        # Flush the last statistics window.
        try:
            processor.deliver(processor.prepare([], final=True))
        except SinkError as exc:
            log.warning("last statistics window not written: %s", exc)
    finally:
        if in_flight is not None:  # leaving on an exception: make a retrying worker give up, commit nothing more
            stop.stopped = True
        worker.shutdown(wait=True, cancel_futures=True)


def _progress(totals: Totals, consumer: Any, metrics: Metrics) -> None:
    current = lag(consumer)
    if current is not None:
        metrics.record_lag(current)
    log.info("%s, lag %s", totals.line(), "?" if current is None else sum(current.values()))


# -------------------------------------------------------------------------------------------------- check
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
    """Decide Observations from a file or stdin; one JSON decision per line on ``out``. No Kafka, no ES."""
    model = None if settings.rules_only else load_model(settings.model_path)
    pipeline = Pipeline(model, retention_days=settings.state_retention_days)
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
        totals.add(outcomes, len(batch))
        for outcome in outcomes:
            out.write(orjson.dumps(decision_json(outcome)) + b"\n")
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


# ---------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m consumer.consumer",
        description="Validate FHIR blood-pressure Observations from Kafka, classify them (rules + model), "
        "archive normals, index anomalies into Elasticsearch, dead-letter bad input.",
    )
    add = parser.add_argument
    add("--bootstrap-servers", help="Kafka bootstrap servers (env BP_KAFKA_BOOTSTRAP; default localhost:9092)")
    add("--topic", help="input topic (env BP_TOPIC; default blood-pressure)")
    add("--dlq-topic", help="dead-letter topic (env BP_DLQ_TOPIC; default blood-pressure.dlq)")
    add("--group", help="consumer group (env BP_GROUP; default bp-analyzer)")
    add("--instance-id", help="static group membership id (env BP_CONSUMER_INSTANCE_ID)")
    add("--es-url", help="Elasticsearch URL (env BP_ES_URL; default http://localhost:9200)")
    add("--es-username", help="Elasticsearch user (env BP_ES_USERNAME)")
    add("--es-password", help="Elasticsearch password (env BP_ES_PASSWORD; prefer the env var)")
    add("--es-api-key", help="Elasticsearch API key (env BP_ES_API_KEY)")
    add("--es-ca-cert", type=Path, help="CA certificate for Elasticsearch TLS (env BP_ES_CA_CERT)")
    add("--index", help="anomaly index (env BP_INDEX; default bp-anomalies)")
    add("--stats-index", help="statistics index (env BP_STATS_INDEX; default bp-stats)")
    add("--archive-dir", type=Path, help="normal-reading archive directory (env BP_ARCHIVE_DIR; default data/normal)")
    add("--model", type=Path, help="model artifact (env BP_MODEL_PATH; default ml/artifacts/bp_logreg.joblib)")
    add("--rules-only", action="store_true", default=None, help="no model: threshold rules only (env BP_RULES_ONLY)")
    add("--batch-size", type=int, help="max messages per batch (env BP_BATCH_SIZE; default 1000)")
    add("--session-timeout-ms", type=int, help="group session timeout (env BP_SESSION_TIMEOUT_MS; default 10000)")
    add("--max-poll-interval-ms", type=int, help="max poll interval (env BP_MAX_POLL_INTERVAL_MS; default 300000)")
    add("--offset-reset", choices=["earliest", "latest"], help="start of a new group (env BP_AUTO_OFFSET_RESET)")
    add("--stop-when-idle", type=non_negative_float, metavar="SECONDS", help="exit after this long without messages")
    add("--max-messages", type=positive_int, metavar="N", help="exit after N messages")
    add("--check", metavar="FILE|-", help="decide Observations from a file or stdin (no Kafka, no ES) and exit")
    add("--metrics-port", type=int, help="serve Prometheus metrics on this port (env BP_METRICS_PORT; default off)")
    add("--summary-json", type=Path, metavar="FILE", help="also write the final summary as JSON to FILE")
    add("--quiet", action="store_true", help="warnings and errors only")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("consumer", args.quiet)
    stop = StopFlag.install()
    try:
        settings = load_settings(
            kafka_bootstrap=args.bootstrap_servers,
            topic=args.topic,
            dlq_topic=args.dlq_topic,
            group=args.group,
            consumer_instance_id=args.instance_id,
            es_url=args.es_url,
            es_username=args.es_username,
            es_password=args.es_password,
            es_api_key=args.es_api_key,
            es_ca_cert=args.es_ca_cert,
            index=args.index,
            stats_index=args.stats_index,
            archive_dir=args.archive_dir,
            model_path=args.model,
            rules_only=args.rules_only,
            batch_size=args.batch_size,
            session_timeout_ms=args.session_timeout_ms,
            max_poll_interval_ms=args.max_poll_interval_ms,
            auto_offset_reset=args.offset_reset,
            metrics_port=args.metrics_port,
        )
        if args.check is not None:
            totals = run_check(settings, args.check, sys.stdout.buffer)
        else:
            totals = run(settings, args, stop)
    except BpError as exc:
        return error_exit("consumer", exc)
    except KeyboardInterrupt:
        print("consumer: interrupted; uncommitted messages will be processed again next time", file=sys.stderr)
        return 130
    summary = totals.summary()
    if args.summary_json is not None:
        args.summary_json.write_text(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    print("consumer: " + orjson.dumps(summary).decode(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
