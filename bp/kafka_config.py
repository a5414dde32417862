"""Keyword arguments for kafka-python's clients, built from the settings in one place (pure: no client here).

Every client of bp-stream (the producer, the consumer, the consumer's dead-letter producer, the admin clients)
takes its connection arguments from :func:`connection_kwargs`, so bootstrap servers, start-up timeouts and
security are set the same way everywhere; each role then adds only its own tuning.
"""

from __future__ import annotations

from typing import Any

from bp.settings import Settings


def connection_kwargs(settings: Settings, client_id: str) -> dict[str, Any]:
    """What every kafka-python client shares: where the brokers are, how long to wait for them at start."""
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": client_id,
        "bootstrap_timeout_ms": _timeout_ms(settings),
    }


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
    }


def dead_letter_producer_kwargs(settings: Settings) -> dict[str, Any]:
    """The consumer's producer for the dead-letter topic."""
    return producer_kwargs(settings, "bp-consumer-dlq", linger_ms=5)


def admin_kwargs(settings: Settings, client_id: str) -> dict[str, Any]:
    return connection_kwargs(settings, client_id) | {"request_timeout_ms": _timeout_ms(settings)}


def _timeout_ms(settings: Settings) -> int:
    return int(settings.connect_timeout_s * 1000)
