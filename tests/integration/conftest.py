"""Integration fixtures: one Kafka and one Elasticsearch for the whole session (or the endpoints env names).

With BP_KAFKA_BOOTSTRAP and BP_ES_URL set, the tests run against those servers and nothing is started.
Otherwise Kafka is a real Apache Kafka broker (infra/kafka.py) when Java and the jars of `make kafka` are there,
else the noida-db stand-in (tests/integration/backend.py decides; the pytest header says which), and
Elasticsearch is the noida-db stand-in. Each starts on free loopback ports with a throwaway data directory and is
stopped by PID at the end of the session, also when tests fail. Every test uses its own topic/index/group names.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bp.errors import KafkaBrokerError, WaitTimeout
from infra.kafka import KafkaBroker
from infra.standin import StandIn, free_port
from runtime.waits import wait_until
from tests.integration.backend import choose

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Endpoints:
    bootstrap: str
    es_url: str
    standin: StandIn | None  # the noida-db process serving Elasticsearch (and Kafka unless ``broker`` is set)
    broker: KafkaBroker | None = None  # the real Apache Kafka broker, when the tests run on one

    @property
    def kafka_is_standin(self) -> bool:
        return self.standin is not None and self.standin.kafka_port is not None

    @property
    def kafka_restartable(self) -> bool:
        """True when the tests started Kafka here and so can stop and start it."""
        return self.broker is not None or self.kafka_is_standin

    def stop_kafka(self) -> None:
        """Take Kafka down, keeping its data: the real broker by SIGTERM, or the stand-in's Kafka service."""
        if self.broker is not None:
            self.broker.stop()
        elif self.standin is not None and self.kafka_is_standin:
            self.standin.stop_service("kafka")
        else:
            raise RuntimeError("Kafka comes from BP_KAFKA_BOOTSTRAP: the tests cannot stop it")

    def start_kafka(self) -> None:
        """Bring Kafka back on the same address and data (waits until the real broker answers)."""
        if self.broker is not None:
            self.broker.start()
        elif self.standin is not None and self.kafka_is_standin:
            self.standin.start_service("kafka")
        else:
            raise RuntimeError("Kafka comes from BP_KAFKA_BOOTSTRAP: the tests cannot start it")

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BP_")}
        env.update(BP_KAFKA_BOOTSTRAP=self.bootstrap, BP_ES_URL=self.es_url, PYTHONUNBUFFERED="1")
        env.update(extra)
        return env


@pytest.fixture(scope="session")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    backend = choose()
    if backend.kafka == "env":
        yield Endpoints(os.environ["BP_KAFKA_BOOTSTRAP"], os.environ["BP_ES_URL"], None)
        return
    if not backend.real_kafka:
        standin = StandIn(tmp_path_factory.mktemp("standin"), free_port(), free_port())
        standin.start()
        try:
            yield Endpoints(standin.bootstrap, standin.es_url, standin)
        finally:
            standin.stop()
        return
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), free_port(), free_port())
    standin = StandIn(tmp_path_factory.mktemp("standin"), None, free_port())
    try:
        try:
            broker.start()
        except KafkaBrokerError as exc:
            pytest.exit(f"real Kafka could not start: {exc}", returncode=3)
        standin.start()
        yield Endpoints(broker.bootstrap, standin.es_url, standin, broker)
    finally:
        standin.stop()
        broker.stop()


@pytest.fixture
def names() -> dict[str, str]:
    """Unique topic, DLQ, group and index names for one test."""
    tag = uuid.uuid4().hex[:8]
    return {
        "topic": f"bp-test-{tag}",
        "dlq": f"bp-test-{tag}.dlq",
        "group": f"bp-test-{tag}",
        "index": f"bp-test-anomalies-{tag}",
        "stats_index": f"bp-test-stats-{tag}",
    }


@pytest.fixture
def es(endpoints: Endpoints) -> Iterator[Any]:
    from elasticsearch import Elasticsearch

    client = Elasticsearch(endpoints.es_url, request_timeout=30)
    yield client
    client.close()


def run_cli(
    module: str, args: list[str], env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run one of our CLIs as a real process, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``predicate`` until it holds (``runtime.waits``); fail with ``what`` after ``timeout`` seconds."""
    try:
        wait_until(predicate, timeout, what, interval)
    except WaitTimeout:
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list[Any]:
    """Every record of ``topic`` (all partitions, from the beginning) once ``expected`` are there."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000)
    try:
        deadline = time.monotonic() + timeout
        partitions: set[int] | None = None
        while time.monotonic() < deadline and not partitions:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.2)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200, max_records=5000)
            for part in batch.values():
                records.extend(part)
            if not batch:
                if len(records) >= expected:
                    break
                time.sleep(0.1)
        return records
    finally:
        consumer.close()
