"""Settings → kafka-python keyword arguments: one place for every client, only options the clients know."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from bp.kafka_config import admin_kwargs, consumer_kwargs, dead_letter_producer_kwargs, producer_kwargs
from bp.settings import load_settings


def all_clients() -> list[tuple[type[Any], dict[str, Any]]]:
    settings = load_settings(kafka_bootstrap="k1:9092,k2:9093", group="g", consumer_instance_id="c7")
    return [
        (KafkaProducer, producer_kwargs(settings, "bp-producer", linger_ms=10, batch_size=131072)),
        (KafkaProducer, dead_letter_producer_kwargs(settings)),
        (KafkaConsumer, consumer_kwargs(settings)),
        (KafkaAdminClient, admin_kwargs(settings, "bp-admin")),
    ]


@pytest.mark.parametrize(("client", "kwargs"), all_clients())
def test_every_option_is_one_the_client_knows(client: type[Any], kwargs: dict[str, Any]) -> None:
    assert set(kwargs) <= set(client.DEFAULT_CONFIG), set(kwargs) - set(client.DEFAULT_CONFIG)


def test_every_client_connects_the_same_way() -> None:
    shared = [{k: kwargs[k] for k in ("bootstrap_servers", "bootstrap_timeout_ms")} for _, kwargs in all_clients()]
    assert shared == [{"bootstrap_servers": ["k1:9092", "k2:9093"], "bootstrap_timeout_ms": 10_000}] * 4


def test_consumer_commits_only_by_hand_and_producers_are_idempotent() -> None:
    (_, producer), (_, dlq), (_, consumer), _ = all_clients()
    assert consumer["enable_auto_commit"] is False and consumer["group_id"] == "g"
    assert consumer["group_instance_id"] == "c7" and consumer["client_id"] == "bp-consumer-c7"
    for kwargs in (producer, dlq):
        assert kwargs["acks"] == "all" and kwargs["enable_idempotence"] is True
    assert producer["batch_size"] == 131072 and "batch_size" not in dlq
