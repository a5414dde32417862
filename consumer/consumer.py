"""``python -m consumer.consumer``: wiring and command line of the consumer.

``run`` builds the clients and sinks and hands them to the loop (:mod:`consumer.loop`): poll → decide → archive
→ index → dead letters → commit, offsets committed only after every sink confirmed the batch
(:mod:`consumer.commit`). ``--check FILE|-`` decides Observations without Kafka or Elasticsearch
(:mod:`consumer.check`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import orjson

from bp.alerts import rules_policy
from bp.errors import BpError, ConfigError, EndpointError
from bp.kafka_config import add_security_flags, admin_kwargs, security_overrides, state_reader_kwargs
from bp.settings import Settings, load_settings
from consumer.archive import NormalArchive
from consumer.batch import Totals
from consumer.check import run_check
from consumer.clients import make_es, make_kafka, rebalance_listener, rejoiner
from consumer.dead_letters import DeadLetters
from consumer.loop import RunOptions, consume
from consumer.metrics import Metrics
from consumer.pipeline import Pipeline
from consumer.processor import BatchProcessor
from consumer.retry import Retry
from consumer.scoring import load_model
from consumer.sinks import ElasticsearchSink, ensure_template
from consumer.state.keeper import StatefulConsumer, StateKeeper
from consumer.state.store import open_store
from runtime.cli import StopFlag, configure_logging, error_exit, non_negative_float, positive_int, tune_gc

__all__ = ["main", "make_es", "run"]  # make_es: consumer.report imports it from here

log = logging.getLogger("bp.consumer")


def run(settings: Settings, options: RunOptions, stop: StopFlag) -> Totals:
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.errors import KafkaError

    model = None if settings.rules_only else load_model(settings.model_path)
    es_client = make_es(settings)
    ensure_template(es_client, "bp-anomalies", settings.index)
    ensure_template(es_client, "bp-stats", settings.stats_index)
    ensure_template(es_client, "bp-alerts", settings.alerts_index)
    archive = NormalArchive(settings.archive_dir)
    keeper = make_state(settings)
    pipeline = Pipeline(
        model,
        state=None if keeper is None else keeper.view,
        retention_days=settings.state_retention_days,
        limits=settings.parse_limits,
        alert_policy=rules_policy() if model is None else model.alert_policy,
    )
    try:
        listener = rebalance_listener(archive, keeper)
        consumer, producer = make_kafka(settings, listener)
    except BpError:
        if keeper is not None:
            keeper.close()
        raise
    name = settings.consumer_instance_id or f"consumer-{id(consumer) & 0xFFFF:04x}"
    metrics = Metrics()
    if keeper is not None:
        keeper.connect(
            producer,
            reader=lambda: KafkaConsumer(**state_reader_kwargs(settings)),
            admin=lambda: KafkaAdminClient(**admin_kwargs(settings, "bp-consumer-state")),
            metrics=metrics,
        )
    metrics_server = None
    if settings.metrics_port is not None:
        try:
            metrics_server = metrics.serve(settings.metrics_port, settings.metrics_host)
        except OSError as exc:
            consumer.close(autocommit=False)
            producer.close(timeout=5)
            if keeper is not None:
                keeper.close()
            raise ConfigError(
                f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc}"
            ) from None
        log.info("Prometheus metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)

    retry = Retry(settings.retry_timeout_s, should_stop=lambda: bool(stop))

    def backoff(delay: float) -> None:
        """The sink's wait between retries (on the worker thread; the loop keeps the group membership)."""
        metrics.retries.labels("elasticsearch").inc()
        retry.note_failure()
        end = time.monotonic() + delay
        while time.monotonic() < end and not stop:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))

    es_sink = ElasticsearchSink(es_client, should_stop=lambda: bool(stop) or retry.exhausted, on_wait=backoff)
    dead_letters = DeadLetters(producer, settings.dlq_topic, max_request_size=settings.dlq_max_request_size)
    processor = BatchProcessor(settings, pipeline, archive, es_sink, dead_letters, name, metrics, keeper)
    log.info(
        "consuming %s as group %s (%s) → archive %s, index %s, DLQ %s; model %s; state %s (changelog %s)",
        settings.topic,
        settings.group,
        name,
        settings.archive_dir,
        settings.index,
        settings.dlq_topic,
        pipeline.model_version,
        "memory (not durable)" if keeper is None else keeper.store.database.path,
        "none" if keeper is None else keeper.changelog_topic,
    )
    tune_gc()
    try:
        consume(
            consumer if keeper is None else StatefulConsumer(consumer, keeper),
            processor,
            options,
            stop,
            retry,
            rejoin=rejoiner(consumer, settings.topic, listener),
        )
    except KafkaError as exc:
        raise EndpointError(f"Kafka failed: {type(exc).__name__}: {exc}") from None
    finally:
        if keeper is not None:
            keeper.close()  # still a member: no other consumer can own the partitions whose changelog it flushes
        consumer.close(autocommit=False)
        producer.close(timeout=10)
        es_client.close()
        if metrics_server is not None:
            metrics_server.shutdown()
    totals_extra = {
        "index_rejected": processor.totals.index_rejected,
        "archive_skipped_replays": archive.skipped,
        "dead_letters_truncated": dead_letters.truncated,
    }
    log.info("done: %s; %s", processor.totals.line(), totals_extra)
    return processor.totals


def make_state(settings: Settings) -> StateKeeper | None:
    """The durable per-patient state (None with ``--state-store memory``: the history then lives in memory only)."""
    if settings.state_store == "memory":
        log.warning("per-patient state in memory only: decisions after a restart or a partition move will differ")
        return None
    store = open_store(
        settings.state_dir,
        settings.group,
        settings.topic,
        settings.state_cache_patients,
        settings.state_retention_days,
        settings.state_changelog_interval_s,
    )
    return StateKeeper(
        store,
        settings.group,
        settings.topic,
        settings.state_restore_timeout_s,
        from_beginning=settings.auto_offset_reset == "earliest",
    )


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
    add("--alerts-index", help="alerts index (env BP_ALERTS_INDEX; default bp-alerts)")
    add("--archive-dir", type=Path, help="normal-reading archive directory (env BP_ARCHIVE_DIR; default data/normal)")
    add("--state-dir", type=Path, help="per-patient state store directory (env BP_STATE_DIR; default data/state)")
    add(
        "--state-store",
        choices=["sqlite", "memory"],
        help="per-patient state: sqlite (durable; default) or memory (lost on restart; a benchmark baseline)",
    )
    add("--model", type=Path, help="model artifact (env BP_MODEL_PATH; default ml/artifacts/bp_logreg.joblib)")
    add("--rules-only", action="store_true", default=None, help="no model: threshold rules only (env BP_RULES_ONLY)")
    add("--batch-size", type=int, help="max messages per batch (env BP_BATCH_SIZE; default 1000)")
    add("--session-timeout-ms", type=int, help="group session timeout (env BP_SESSION_TIMEOUT_MS; default 10000)")
    add("--max-poll-interval-ms", type=int, help="max poll interval (env BP_MAX_POLL_INTERVAL_MS; default 300000)")
    add("--offset-reset", choices=["earliest", "latest"], help="start of a new group (env BP_AUTO_OFFSET_RESET)")
    add(
        "--stop-when-idle",
        type=non_negative_float,
        metavar="SECONDS",
        help="exit after this long without messages, at the end of every partition (a Kafka outage is not idle)",
    )
    add("--max-messages", type=positive_int, metavar="N", help="exit after N messages")
    add("--check", metavar="FILE|-", help="decide Observations from a file or stdin (no Kafka, no ES) and exit")
    add("--metrics-port", type=int, help="serve Prometheus metrics on this port (env BP_METRICS_PORT; default off)")
    # parser limits (bp/fhir/limits.py)
    add("--max-message-bytes", type=int, help="reject larger messages (env BP_MAX_MESSAGE_BYTES; default 8 MiB)")
    add("--future-tolerance-hours", type=float, help="reject readings later than arrival + this (default 24)")
    add("--time-floor", metavar="YYYY-MM-DD", help="reject readings before this date (env BP_TIME_FLOOR; 1900-01-01)")
    add("--summary-json", type=Path, metavar="FILE", help="also write the final summary as JSON to FILE")
    add("--quiet", action="store_true", help="warnings and errors only")
    add_security_flags(parser)
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
            alerts_index=args.alerts_index,
            archive_dir=args.archive_dir,
            state_dir=args.state_dir,
            state_store=args.state_store,
            model_path=args.model,
            rules_only=args.rules_only,
            batch_size=args.batch_size,
            session_timeout_ms=args.session_timeout_ms,
            max_poll_interval_ms=args.max_poll_interval_ms,
            auto_offset_reset=args.offset_reset,
            metrics_port=args.metrics_port,
            max_message_bytes=args.max_message_bytes,
            future_tolerance_hours=args.future_tolerance_hours,
            time_floor=args.time_floor,
            **security_overrides(args),
        )
        if args.check is not None:
            totals = run_check(settings, args.check, sys.stdout.buffer)
        else:
            totals = run(settings, RunOptions(args.max_messages, args.stop_when_idle), stop)
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
