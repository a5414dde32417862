"""The real-Kafka launcher's pure parts: one version everywhere, Kafka-format cluster ids, loopback-only config."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from infra.kafka import BROKER_CONFIG, KafkaBroker, cluster_id, kafka_version, lib_dir

ROOT = Path(__file__).resolve().parents[2]


def test_tests_and_compose_run_the_same_kafka_version() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
    images = {name: svc["image"] for name, svc in compose["services"].items() if "apache/kafka" in svc.get("image", "")}
    assert set(images) >= {"kafka", "kafka-init"}
    assert set(images.values()) == {f"apache/kafka:{kafka_version()}"}
    assert lib_dir().name == "lib" and lib_dir().parent.name == f"kafka-{kafka_version()}"


def test_cluster_ids_are_kafka_uuids() -> None:
    ids = {cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        assert len(text) == 22 and not text.startswith("-")
        assert len(base64.urlsafe_b64decode(text + "==")) == 16


def test_broker_listens_on_loopback_only_and_overrides_win(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path, 19092, 19093, config={"message.max.bytes": "2048"})
    props = broker.properties()
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["message.max.bytes"] == "2048" != BROKER_CONFIG["message.max.bytes"]
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert Path(props["log.dirs"]).is_relative_to(tmp_path.resolve())
    assert broker.bootstrap == "127.0.0.1:19092"
