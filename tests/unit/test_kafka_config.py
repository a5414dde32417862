"""Settings → kafka-python keyword arguments: one place for every client, only options the clients know."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from bp.errors import ConfigError
from bp.kafka_config import (
    admin_kwargs,
    consumer_kwargs,
    dead_letter_producer_kwargs,
    producer_kwargs,
    security_kwargs,
)
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


def test_sasl_ssl_with_scram_reaches_every_client(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load_settings(
        kafka_security_protocol="sasl_ssl",
        kafka_sasl_mechanism="scram-sha-512",
        kafka_sasl_username="bp",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=ca,
    )
    expected = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "bp",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": str(ca),
    }
    for client, kwargs in [
        (KafkaProducer, producer_kwargs(settings, "p", linger_ms=1)),
        (KafkaProducer, dead_letter_producer_kwargs(settings)),
        (KafkaConsumer, consumer_kwargs(settings)),
        (KafkaAdminClient, admin_kwargs(settings, "a")),
    ]:
        assert {key: kwargs.get(key) for key in expected} == expected
        assert set(kwargs) <= set(client.DEFAULT_CONFIG)


def test_plaintext_by_default_and_mutual_tls_files(tmp_path: Path) -> None:
    assert security_kwargs(load_settings()) == {"security_protocol": "PLAINTEXT"}
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_text("pem")
    settings = load_settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=files["ca"],
        kafka_ssl_certfile=files["cert"],
        kafka_ssl_keyfile=files["key"],
    )
    assert security_kwargs(settings) == {
        "security_protocol": "SSL",
        "ssl_cafile": str(files["ca"]),
        "ssl_certfile": str(files["cert"]),
        "ssl_keyfile": str(files["key"]),
    }


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"kafka_security_protocol": "TLS"}, "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"}, "BP_KAFKA_SASL_MECHANISM"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"}, "SCRAM-SHA-512"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN"}, "BP_KAFKA_SASL_PASSWORD"),
        ({"kafka_sasl_username": "u", "kafka_sasl_password": "p"}, "BP_KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"}, "not found"),
    ],
)
def test_inconsistent_security_settings_are_one_readable_line(overrides: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    assert needle in str(caught.value) and "\n" not in str(caught.value)
