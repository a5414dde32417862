"""Issue 10's acceptance: one message never stops a partition, and a Kafka restart is ridden out.

Each case feeds a one-partition topic 5 valid readings, one hostile message, 5 more valid readings. The consumer
must exit 0 by itself (--stop-when-idle), commit to the end of the partition, index or archive all 10 valid
readings per the oracle, and dead-letter the hostile message with the expected reason. The hostile message is
sent by its own producer (as a hostile sender would), so it is alone in its record batch.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from bp.fhir import build_observation
from bp.reading import Reading
from bp.settings import Settings
from tests.integration.conftest import Endpoints, read_topic, run_cli, wait_for
from tests.integration.faults_support import Offsets, kafka_ready, kill, start_consumer, stopped_at_exit
from tests.integration.test_consumer_kafka import archived_ids, consumer_args, indexed_ids

pytestmark = [pytest.mark.integration, pytest.mark.faults]

START = datetime(2026, 4, 1, 8, tzinfo=UTC)
MIB = 1024 * 1024
OVER_LIMIT = Settings.model_fields["max_message_bytes"].default + MIB  # the parser's default limit, plus 1 MiB


class NotUtf8(str):
    """A header key that kafka-python's producer writes as bytes that are not UTF-8 (as a foreign client may)."""

    __slots__ = ()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"\xff\xfe-key"


@dataclass
class Hostile:
    value: bytes
    reason: str
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp_ms: int | None = None


def observation(n: int, systolic: float, diastolic: float, effective: datetime | None = None) -> bytes:
    reading = Reading(f"pt-{n % 3}", effective or START + timedelta(minutes=n), systolic, diastolic, f"obs-{n}")
    return orjson.dumps(build_observation(reading))


def valid(first: int) -> tuple[list[bytes], set[str], set[str]]:
    """5 readings (anomalies by the oracle: systolic > 140 or diastolic > 90) → (values, anomaly ids, normal ids)."""
    values, anomalies, normals = [], set(), set()
    for n in range(first, first + 5):
        systolic, diastolic = (160, 100) if n % 2 else (118, 76)
        values.append(observation(n, systolic, diastolic))
        (anomalies if n % 2 else normals).add(f"obs-{n}")
    return values, anomalies, normals


CASES = {
    "normal-dated-year-9999": Hostile(
        observation(99, 118, 76, datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5)))), "bad_time"
    ),
    "normal-dated-year-1": Hostile(
        observation(98, 118, 76, datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))), "bad_time"
    ),
    "anomaly-with-record-timestamp-year-10000": Hostile(
        observation(97, 185, 125), "bad_record", timestamp_ms=253_402_300_800_000
    ),
    "header-key-not-utf8": Hostile(observation(96, 118, 76), "bad_record", headers=[(NotUtf8("x"), b"v")]),
    "blob-over-the-size-limit": Hostile(
        b'{"resourceType": "Observation", "note": "' + b"x" * OVER_LIMIT + b'"}', "too_large"
    ),
}


def send_one_by_one(bootstrap: str, topic: str, values: list[bytes], hostile: Hostile | None = None) -> None:
    """Valid readings from one producer; the hostile message (if any) from its own lz4 producer, in order."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    try:
        for value in values:
            producer.send(topic, key=b"pt", value=value).get(timeout=30)
    finally:
        producer.close()
    if hostile is not None:
        sender = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            compression_type="lz4",
            max_request_size=OVER_LIMIT + MIB,
            linger_ms=0,
        )
        try:
            sender.send(
                topic, key=b"x", value=hostile.value, headers=hostile.headers, timestamp_ms=hostile.timestamp_ms
            ).get(timeout=30)
        finally:
            sender.close()


def create_topic(bootstrap: str, topic: str) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()


def assert_all_accounted(
    endpoints: Endpoints, es: Any, names: dict[str, str], archive: Path, anomalies: set[str], normals: set[str]
) -> list[Any]:
    offsets = Offsets(endpoints.bootstrap, names["group"], names["topic"])
    try:  # the admin's first answer can be empty on a loaded broker (coordinator loading): ask until a deadline
        wait_for(lambda: offsets.committed() == {0: 11}, 30, "the group committed to the end of the partition")
    finally:
        offsets.close()
    assert set(indexed_ids(es, names["index"])) == anomalies
    archived = Counter(archived_ids(archive))
    assert set(archived) == normals and max(archived.values()) == 1
    return read_topic(endpoints.bootstrap, names["dlq"], 1, timeout=30)


@pytest.mark.parametrize("case", list(CASES))
def test_one_hostile_message_among_ten_valid_ones(
    endpoints: Endpoints, names: dict[str, str], es: Any, tmp_path: Path, case: str
) -> None:
    hostile = CASES[case]
    before, anomalies, normals = valid(0)
    after, more_anomalies, more_normals = valid(5)
    create_topic(endpoints.bootstrap, names["topic"])
    send_one_by_one(endpoints.bootstrap, names["topic"], before, hostile)
    send_one_by_one(endpoints.bootstrap, names["topic"], after)

    archive = tmp_path / "archive"
    result = run_cli("consumer.consumer", consumer_args(names, archive), endpoints.env(), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    (letter,) = assert_all_accounted(endpoints, es, names, archive, anomalies | more_anomalies, normals | more_normals)
    headers = dict(letter.headers)
    assert headers["reason"] == hostile.reason.encode()
    assert (headers["source-topic"], headers["source-partition"], headers["source-offset"]) == (
        names["topic"].encode(), b"0", b"5",
    )  # fmt: skip
    if case == "blob-over-the-size-limit":  # too large for the dead-letter topic: kept, cut, and said so
        assert len(letter.value) < MIB and hostile.value.startswith(letter.value)
        assert b"cut to" in headers["truncated"]
    elif case != "header-key-not-utf8":  # that one's bytes cannot be read with kafka-python
        assert letter.value == hostile.value


def test_kafka_restart_mid_stream_is_ridden_out(
    endpoints: Endpoints, names: dict[str, str], es: Any, tmp_path: Path
) -> None:
    """5 valid + a poison message, Kafka stopped for 10 s and started on the same data, 5 more valid: the consumer
    never exits on its own account during the outage, then finishes and exits 0 with everything accounted for."""
    if not endpoints.kafka_restartable:
        pytest.skip("needs a Kafka started by the tests to stop and start it (BP_* endpoints are set)")
    before, anomalies, normals = valid(0)
    after, more_anomalies, more_normals = valid(5)
    create_topic(endpoints.bootstrap, names["topic"])
    send_one_by_one(endpoints.bootstrap, names["topic"], before, CASES["normal-dated-year-9999"])
    archive, log = tmp_path / "archive", tmp_path / "consumer.log"
    args = consumer_args(names, archive)
    # Idle includes the outage: longer than it. A real broker also takes seconds to stop and start (3-10 s each
    # on 2 loaded cores), the stand-in's Kafka service none.
    args[args.index("--stop-when-idle") + 1] = "45" if endpoints.broker is not None else "25"
    offsets = Offsets(endpoints.bootstrap, names["group"], names["topic"])
    with stopped_at_exit([]) as processes:
        consumer = start_consumer(args, endpoints.env(), log)
        processes.append(consumer)
        try:
            wait_for(lambda: offsets.committed().get(0) == 6, 60, "the first 6 messages committed")
        finally:
            offsets.close()
        endpoints.stop_kafka()
        try:
            outage_ends = time.monotonic() + 10  # the fault itself lasts 10 s; nothing waits on it
            while time.monotonic() < outage_ends:
                assert consumer.poll() is None, f"consumer exited during the outage: {log.read_text()[-2000:]}"
                time.sleep(0.5)
        finally:
            endpoints.start_kafka()
        assert kafka_ready(endpoints.bootstrap, timeout=60), "Kafka did not come back"
        send_one_by_one(endpoints.bootstrap, names["topic"], after)
        try:
            code = consumer.wait(timeout=120)
        except subprocess.TimeoutExpired:
            code = kill(consumer)
            pytest.fail(f"consumer did not finish after the restart: {log.read_text()[-3000:]}")
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert "Traceback" not in output
    (letter,) = assert_all_accounted(endpoints, es, names, archive, anomalies | more_anomalies, normals | more_normals)
    assert dict(letter.headers)["reason"] == b"bad_time"
