"""Keyword arguments for kafka-python's clients, built from the settings in one place (pure: no client here).

Every client of bp-stream (the producer, the consumer, the consumer's dead-letter producer, the admin clients)
takes its connection arguments from :func:`connection_kwargs`, so bootstrap servers, start-up timeouts and
security are set the same way everywhere; each role then adds only its own tuning.
"""

from __future__ import annotations

import argparse
from typing import Any

from bp.settings import Settings

METADATA_MAX_AGE_MS = 10_000
RECONNECT_BACKOFF_MAX_MS = 1000


def connection_kwargs(settings: Settings, client_id: str) -> dict[str, Any]:
    """What every kafka-python client shares: where the brokers are, how long to wait for them at start, and
    how to authenticate (TLS and/or SASL)."""
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": client_id,
        "bootstrap_timeout_ms": _timeout_ms(settings),
        # kafka-python backs reconnects off up to 30 s: after a broker restart an idle client would sit that long
        # before fetching again. 1 s is the Java client's default.
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
    } | security_kwargs(settings)


def security_kwargs(settings: Settings) -> dict[str, Any]:
    """``security_protocol`` plus the SASL and TLS options it needs (nothing more for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        kwargs |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": password.get_secret_value() if password is not None else None,
        }
    if protocol.endswith("SSL"):
        files = {
            "ssl_cafile": settings.kafka_ssl_cafile,
            "ssl_certfile": settings.kafka_ssl_certfile,
            "ssl_keyfile": settings.kafka_ssl_keyfile,
        }
        kwargs |= {name: str(path) for name, path in files.items() if path is not None}
    return kwargs


def producer_kwargs(
    settings: Settings, client_id: str, *, linger_ms: int, batch_size: int | None = None
) -> dict[str, Any]:
    """An idempotent producer that waits for every in-sync replica (``acks=all``), compressing as configured."""
    kwargs = connection_kwargs(settings, client_id) | {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": linger_ms,
        "compression_type": settings.compression,
        "max_block_ms": _timeout_ms(settings),
    }
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    return kwargs


def consumer_kwargs(settings: Settings) -> dict[str, Any]:
    """The consumer group member: manual commits only (the loop commits after its sinks confirmed)."""
    instance = settings.consumer_instance_id
    return connection_kwargs(settings, f"bp-consumer-{instance or 'dynamic'}") | {
        "group_id": settings.group,
        "group_instance_id": instance,
        "enable_auto_commit": False,
        "auto_offset_reset": settings.auto_offset_reset,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": max(500, settings.session_timeout_ms // 5),
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "max_poll_records": settings.batch_size,
        # kafka-python refreshes metadata every 5 min by default; a group leader that assigned partitions from
        # metadata missing the topic (created or recovering meanwhile) would sit with no partitions that long.
        "metadata_max_age_ms": METADATA_MAX_AGE_MS,
        "fetch_max_bytes": settings.fetch_max_bytes,
        "max_partition_fetch_bytes": settings.max_partition_fetch_bytes,
    }


def state_reader_kwargs(settings: Settings) -> dict[str, Any]:
    """The consumer's reader of its state changelog: no group, no commits, assigned partitions only."""
    return connection_kwargs(settings, "bp-consumer-state") | {
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
    }


def dead_letter_producer_kwargs(settings: Settings) -> dict[str, Any]:
    """The consumer's producer for the dead-letter topic (letters are truncated to fit ``max_request_size``)."""
    return producer_kwargs(settings, "bp-consumer-dlq", linger_ms=5) | {
        "max_request_size": settings.dlq_max_request_size
    }


def admin_kwargs(settings: Settings, client_id: str) -> dict[str, Any]:
    return connection_kwargs(settings, client_id) | {"request_timeout_ms": _timeout_ms(settings)}


def _timeout_ms(settings: Settings) -> int:
    return int(settings.connect_timeout_s * 1000)


# ------------------------------------------------------------------------------------------- command line
SECURITY_FLAGS = (
    ("--kafka-security-protocol", "kafka_security_protocol", "PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL"),
    ("--kafka-sasl-mechanism", "kafka_sasl_mechanism", "PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512"),
    ("--kafka-sasl-username", "kafka_sasl_username", "SASL user name"),
    ("--kafka-sasl-password", "kafka_sasl_password", "SASL password (prefer the env var)"),
    ("--kafka-ssl-cafile", "kafka_ssl_cafile", "CA certificate (PEM) that signed the brokers' certificates"),
    ("--kafka-ssl-certfile", "kafka_ssl_certfile", "client certificate (PEM) for mutual TLS"),
    ("--kafka-ssl-keyfile", "kafka_ssl_keyfile", "client private key (PEM) for mutual TLS"),
)


def add_security_flags(parser: argparse.ArgumentParser) -> None:
    """The Kafka security flags, the same for every CLI that talks to Kafka."""
    group = parser.add_argument_group("Kafka security (every Kafka client of this process)")
    for flag, field, meaning in SECURITY_FLAGS:
        group.add_argument(flag, dest=field, metavar="VALUE", help=f"{meaning} (env BP_{field.upper()})")


def security_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The security flags the user gave, as ``load_settings`` overrides."""
    return {field: getattr(args, field) for _, field, _ in SECURITY_FLAGS}
