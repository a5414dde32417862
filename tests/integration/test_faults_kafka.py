"""Faults and limits that only real Apache Kafka shows (the session's broker, infra/kafka.py): a broker restart and
a broker crash mid-stream, compaction of a compacted (changelog-style) topic, and the message-size limit against
compressed batches. Skipped when the session's Kafka is the noida-db stand-in, whose behaviour differs exactly
there (measured in ../shared/reference/standin.md: restarts drop group membership, storage is one JSON file,
no size limits).

As in test_faults.py, the consumer runs with --rules-only and the expected outcome comes from the independent
oracle of test_consumer_kafka.py; "nothing lost, nothing duplicated" is checked in every sink.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from infra.kafka import KafkaBroker
from infra.standin import free_port
from tests.integration.conftest import Endpoints, read_topic, run_cli, wait_for
from tests.integration.faults_support import (
    SMALL_LIMIT,
    Offsets,
    balanced_mix,
    interleave,
    kill,
    malformed,
    send,
    start_consumer,
    stopped_at_exit,
)
from tests.integration.test_consumer_kafka import streaming_args
from tests.integration.test_faults import assert_sinks, tail

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture(scope="module")
def own_broker(endpoints: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A real broker of this module's own, which the tests restart and crash (the session's broker stays up)."""
    if endpoints.broker is None:
        pytest.skip("needs real Apache Kafka (`make kafka`; the session runs on the stand-in or env endpoints)")
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-restarts"), free_port(), free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def real_kafka(endpoints: Endpoints) -> str:
    if endpoints.broker is None:
        pytest.skip("needs real Apache Kafka (`make kafka`; the session runs on the stand-in or env endpoints)")
    return endpoints.bootstrap


# ---------------------------------------------------------------------------------------- broker restarts
@pytest.mark.parametrize("how", ["restart", "crash"])
def test_broker_restart_mid_stream_loses_and_duplicates_nothing(
    how: str, own_broker: KafkaBroker, endpoints: Endpoints, names: dict[str, str], es: Any, tmp_path: Path
) -> None:
    """The broker goes away while the consumer streams — a controlled restart (SIGTERM, start on the same data
    directory) or a crash (SIGKILL, then start: log recovery) — and more readings arrive after it is back. The
    consumer keeps running through it (no exit, no traceback), and in the end every offset is committed, every
    anomaly indexed once, every normal archived once, every reject dead-lettered (possibly twice: a batch whose
    commit failed while the broker was away is replayed)."""
    bootstrap = own_broker.bootstrap
    rng = random.Random(61 if how == "restart" else 62)
    readings, anomalies, normals = balanced_mix(seed=63, readings=6_000)
    bad = malformed(seed=64, count=60, huge_each=1)
    rejects = Counter(value or b"" for _, _, value in bad)
    messages = interleave(rng, readings, [(f"bad-{i % 8}".encode(), value) for i, (_, _, value) in enumerate(bad)])
    first, second = messages[:3_000], messages[3_000:]
    ends = send(bootstrap, names["topic"], first, partitions=4)

    archive, log = tmp_path / "archive", tmp_path / "consumer.log"
    env = endpoints.env(BP_KAFKA_BOOTSTRAP=bootstrap, **SMALL_LIMIT)
    offsets = Offsets(bootstrap, names["group"], names["topic"])
    try:
        with stopped_at_exit([]) as processes:
            process = start_consumer(streaming_args(names, archive, "--instance-id", f"restart-{how}"), env, log)
            processes.append(process)
            wait_for(lambda: offsets.total() >= 600, 90, f"some progress committed (log {log})")
            if how == "restart":
                own_broker.restart()
            else:
                own_broker.kill()
                own_broker.start()
            assert process.poll() is None or process.returncode == 0, f"consumer died with the broker: {tail(log)}"
            ends.update(send(bootstrap, names["topic"], second))
            assert sum(ends.values()) == len(messages)
            wait_for(lambda: offsets.committed() == ends, 120, f"everything committed after the {how} (log {log})")
            assert process.poll() is None, f"consumer exited: {tail(log)}"
            assert kill(process, signal.SIGTERM, timeout=30) == 0, tail(log)
    finally:
        offsets.close()
    assert "Traceback" not in log.read_text(errors="replace"), tail(log)
    assert_sinks(es, bootstrap, names, archive, anomalies, normals, rejects, dlq_duplicates_allowed=True)


# ------------------------------------------------------------------------------------------------ compaction
def restore(bootstrap: str, topic: str) -> tuple[dict[bytes, bytes], int]:
    """What a changelog restore sees: every record up to the end offsets, the last value per key winning and a
    tombstone deleting its key. Returns (state, records read)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        state: dict[bytes, bytes] = {}
        read = 0
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                for record in records:
                    read += 1
                    if record.value is None:
                        state.pop(record.key, None)
                    else:
                        state[record.key] = record.value
        assert all(consumer.position(tp) >= ends[tp] for tp in tps), "restore did not reach the end offsets"
        return state, read
    finally:
        consumer.close()


def test_compacted_topic_restores_the_same_state_before_and_after_compaction(
    real_kafka: str, names: dict[str, str]
) -> None:
    """A compacted topic (cleanup.policy=compact, as a state store's changelog) gets 6,000 updates over 60 keys and
    tombstones for 6 of them. Reading it back (last value per key wins, a tombstone deletes) gives the written
    state every time, while the log cleaner removes superseded records and after it has removed most of them
    (a restore reads under a quarter of what was written). The stand-in compacts too, Tansu never does
    (standin.md); this is the broker the project ships with."""
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    topic = names["topic"] + "-changelog"
    admin = KafkaAdminClient(bootstrap_servers=real_kafka)
    try:
        config = {
            "cleanup.policy": "compact",
            "segment.ms": "100",  # roll segments quickly: the cleaner never touches the active segment
            "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": "100",  # tombstones themselves go soon after
            "min.compaction.lag.ms": "0",
        }
        admin.create_topics([NewTopic(topic, 2, 1, topic_configs=config)])
    finally:
        admin.close()
    rng = random.Random(71)
    expected: dict[bytes, bytes] = {}
    producer = KafkaProducer(bootstrap_servers=real_kafka, acks="all", linger_ms=5)
    try:
        for n in range(6_000):
            key = f"patient-{rng.randrange(60):02d}".encode()
            value = orjson.dumps({"version": n, "history": [rng.randrange(80, 200) for _ in range(8)]})
            producer.send(topic, key=key, value=value)
            expected[key] = value
        for key in sorted(expected)[:6]:
            producer.send(topic, key=key, value=None)
            del expected[key]
        producer.flush(timeout=60)

        # The cleaner works while the updates arrive. New records roll the segments (segment.ms) so that it can
        # also clean the last ones: send a marker every half second and restore each time, until a restore reads
        # a small part of what was written. Every restore, mid-compaction or after, must give the same state.
        marker = b"__roll__"
        written = 6_006
        restores: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            producer.send(topic, key=marker, value=b"%d" % time.monotonic_ns()).get(timeout=10)
            written += 1
            state, read = restore(real_kafka, topic)
            state.pop(marker)
            assert state == expected, f"restore {len(restores) + 1} differs from the written state"
            restores.append(read)
            if read < written // 4:
                break
            time.sleep(0.5)  # pacing of the marker records, not synchronisation (the loop polls the outcome)
    finally:
        producer.close()
    assert restores and restores[-1] < written // 4, f"no compaction within 60 s: {restores} of {written} records"


# ------------------------------------------------------------------------------------------- message size
@pytest.mark.parametrize("compression", ["lz4", "none"])
def test_producer_batches_above_the_topic_size_limit(
    compression: str, real_kafka: str, endpoints: Endpoints, names: dict[str, str]
) -> None:
    """The broker checks ``max.message.bytes`` against each record batch as sent, after compression. The
    producer batches up to 128 KiB of Observations; on a topic limited to 32 KiB, lz4 batches fit as they are,
    uncompressed ones are refused (MESSAGE_TOO_LARGE) and kafka-python splits and resends them (its flush() fails
    meanwhile; the producer flushes again). Either way every reading arrives exactly once and the producer reports
    them all acknowledged, without a traceback."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    count = 2_000
    admin = KafkaAdminClient(bootstrap_servers=real_kafka)
    try:
        admin.create_topics([NewTopic(names["topic"], 1, 1, topic_configs={"max.message.bytes": "32768"})])
    finally:
        admin.close()
    env = endpoints.env(BP_COMPRESSION=compression)
    result = run_cli(
        "producer.producer",
        ["--topic", names["topic"], "--count", str(count), "--rate", "0", "--patients", "40", "--seed", "9"],
        env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"sent {count}, acked {count}, failed 0" in result.stderr
    assert "Traceback" not in result.stderr
    records = read_topic(real_kafka, names["topic"], count)
    ids = Counter(orjson.loads(record.value)["id"] for record in records)
    assert len(records) == count and len(ids) == count, (len(records), len(ids))
