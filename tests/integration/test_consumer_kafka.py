"""The consumer end to end against real Kafka/Elasticsearch protocol servers (the stand-in or env endpoints).

A known mix is produced with a plain kafka-python producer: simulated readings (normal and anomalous), a Bundle,
and malformed messages. The expected outcome comes from an oracle written here, independent of the code under
test: with --rules-only a reading is an anomaly iff systolic < 90 or diastolic < 60 or systolic > 140 or
diastolic > 90 (crisis readings are above 140 or 90 too).
"""

from __future__ import annotations

import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from bp.cohort import Cohort
from bp.fhir import build_observation
from tests.integration.conftest import Endpoints, read_topic, run_cli, wait_for

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

MALFORMED = [
    b"not json at all",
    b"\xff\xfe\x00garbage",
    b"[1, 2, 3]",
    b'{"resourceType": "Patient", "id": "p1"}',
    b'{"resourceType": "Observation", "status": "final"}',
    b"[" * 5000,
    b"",
]


def oracle_is_anomaly(observation: dict[str, Any]) -> bool:
    values = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in observation["component"]}
    systolic, diastolic = values["8480-6"], values["8462-4"]
    return systolic < 90 or diastolic < 60 or systolic > 140 or diastolic > 90


def known_mix(seed: int, readings: int) -> tuple[list[tuple[bytes, bytes]], set[str], Counter[str], set[bytes]]:
    """(key, value) messages, expected anomaly ids, expected normal ids (with multiplicity), reject values."""
    messages: list[tuple[bytes, bytes]] = []
    anomalies: set[str] = set()
    normals: Counter[str] = Counter()
    for sim in Cohort(patients=25, seed=seed, start=START, interval=timedelta(minutes=10)).take(readings):
        observation = build_observation(sim.reading)
        messages.append((sim.reading.patient_id.encode(), orjson.dumps(observation)))
        if oracle_is_anomaly(observation):
            anomalies.add(observation["id"])
        else:
            normals[observation["id"]] += 1
    # A Bundle of two normal readings of a new patient: two archive lines from one message.
    entries = []
    for n, (sys_, dia) in enumerate([(118, 76), (121, 78)]):
        obs = build_observation(
            sim.reading.__class__("pt-bundle", START + timedelta(hours=n), sys_, dia, f"bundle-{n}")
        )
        entries.append({"resource": obs})
        normals[obs["id"]] += 1
    messages.append((b"pt-bundle", orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})))
    for bad in MALFORMED:
        messages.append((b"bad", bad))
    return messages, anomalies, normals, set(MALFORMED)


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], partitions: int = 4) -> None:
    """Create ``topic`` with ``partitions``, then send ``messages`` (acks=all) and flush."""
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=60)
    producer.close()


def consumer_args(names: dict[str, str], archive: Path, *extra: str) -> list[str]:
    return [
        "--topic", names["topic"], "--dlq-topic", names["dlq"], "--group", names["group"],
        "--index", names["index"], "--stats-index", names["stats_index"], "--archive-dir", str(archive),
        "--state-dir", str(archive.parent / f"{archive.name}.state"),
        "--rules-only", "--stop-when-idle", "3", "--batch-size", "200", *extra,
    ]  # fmt: skip


def streaming_args(names: dict[str, str], archive: Path, *extra: str) -> list[str]:
    """The consumer's arguments without --stop-when-idle: it runs until a signal stops it."""
    args = consumer_args(names, archive, *extra)
    at = args.index("--stop-when-idle")
    return args[:at] + args[at + 2 :]


def indexed_ids(es: Any, index: str) -> list[str]:
    es.indices.refresh(index=index)
    response = es.search(index=index, query={"match_all": {}}, size=10_000, source=False)
    return [hit["_id"] for hit in response["hits"]["hits"]]


def archived_ids(archive: Path) -> list[str]:
    ids = []
    for path in sorted(archive.rglob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            ids.append(orjson.loads(line)["observation_id"])
    return ids


def test_consumer_routes_everything_exactly_once(
    endpoints: Endpoints, names: dict[str, str], es: Any, tmp_path: Path
) -> None:
    messages, anomalies, normals, rejects = known_mix(seed=11, readings=1200)
    assert anomalies and normals  # the mix really contains both
    produce(endpoints.bootstrap, names["topic"], messages)
    archive = tmp_path / "archive"

    first = run_cli("consumer.consumer", consumer_args(names, archive, "--instance-id", "c1"), endpoints.env())
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Traceback" not in first.stderr

    ids = indexed_ids(es, names["index"])
    assert len(ids) == len(set(ids)) and set(ids) == anomalies
    assert Counter(archived_ids(archive)) == normals
    dead = read_topic(endpoints.bootstrap, names["dlq"], len(rejects))
    assert {record.value or b"" for record in dead} == rejects
    assert len(dead) == len(rejects)
    for record in dead:
        headers = dict(record.headers)
        assert headers["reason"] and headers["stage"] == b"parse"
        assert headers["source-topic"] == names["topic"].encode()
        assert int(headers["source-offset"]) >= 0
    stats = es.search(index=names["stats_index"], size=100)["hits"]["hits"]
    es.indices.refresh(index=names["stats_index"])
    stats = es.search(index=names["stats_index"], size=100)["hits"]["hits"]
    assert sum(hit["_source"]["anomalies"] for hit in stats) == len(anomalies)

    # Same group again: everything is committed, nothing is processed.
    again = run_cli("consumer.consumer", consumer_args(names, archive, "--instance-id", "c1"), endpoints.env())
    assert again.returncode == 0, again.stderr[-3000:]
    assert '"messages":0' in again.stderr

    # A new group replays the whole topic: the sinks are idempotent, nothing is duplicated.
    replay_names = {**names, "group": names["group"] + "-replay"}
    replay = run_cli("consumer.consumer", consumer_args(replay_names, archive), endpoints.env())
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert f'"messages":{len(messages)}' in replay.stderr
    ids = indexed_ids(es, names["index"])
    assert len(ids) == len(set(ids)) and set(ids) == anomalies
    assert Counter(archived_ids(archive)) == normals


def test_two_consumers_split_the_partitions_and_process_everything_once(
    endpoints: Endpoints, names: dict[str, str], es: Any, tmp_path: Path
) -> None:
    """Two static members split 6 partitions and process everything once between them. Half of the readings are
    there before the first starts, the second joins while it works, the other half arrives after the split: on
    real Kafka a member joining a busy group waits for the other's next heartbeat (3 s), long enough for one
    consumer alone to finish everything, so the test waits for the split instead of racing it."""
    from tests.integration.faults_support import Offsets, kill, last_assignment, send, start_consumer, stopped_at_exit

    messages, anomalies, normals, rejects = known_mix(seed=12, readings=3000)
    half = len(messages) // 2
    ends = send(endpoints.bootstrap, names["topic"], list(messages[:half]), partitions=6)
    archive = tmp_path / "archive"
    logs = {instance: tmp_path / f"{instance}.log" for instance in ("a", "b")}
    offsets = Offsets(endpoints.bootstrap, names["group"], names["topic"])
    try:
        with stopped_at_exit([]) as processes:
            for instance, log in logs.items():  # one after the other, as a scaled-out deployment would
                args = streaming_args(
                    names, archive, "--instance-id", instance, "--summary-json", str(tmp_path / f"{instance}.json")
                )
                args += ["--state-dir", str(tmp_path / f"{instance}.state")]  # two machines
                # the changelog with every batch: a moved partition resumes at its last batch, not up to 5 s back
                processes.append(start_consumer(args, endpoints.env(BP_STATE_CHANGELOG_INTERVAL_S="0"), log))
                if instance == "a":
                    wait_for(lambda: last_assignment(logs["a"]) == set(range(6)), 60, f"a assigned ({log})")

            def split() -> bool:
                a, b = last_assignment(logs["a"]), last_assignment(logs["b"])
                return bool(a) and bool(b) and not (a & b) and (a | b) == set(range(6))  # type: ignore[operator]

            wait_for(split, 60, f"both consumers assigned disjoint partitions (logs in {tmp_path})")
            ends.update(send(endpoints.bootstrap, names["topic"], list(messages[half:])))
            wait_for(lambda: offsets.committed() == ends, 120, f"everything committed (logs in {tmp_path})")
            for process, log in zip(processes, logs.values(), strict=True):
                assert kill(process, signal.SIGTERM, timeout=30) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        offsets.close()
    for log in logs.values():
        assert "Traceback" not in log.read_text(errors="replace")
    summaries = [orjson.loads((tmp_path / f"{instance}.json").read_bytes()) for instance in ("a", "b")]
    # At-least-once: batches not yet committed when a rebalance moves their partitions are replayed by the new
    # owner (the consumer holds at most two: one being delivered, one prepared; 200 messages each), so each of
    # the few rebalances of this test replays at most 400; the idempotent sinks below must still hold everything
    # exactly once.
    processed = sum(summary["messages"] for summary in summaries)
    assert len(messages) <= processed <= len(messages) + 3 * 2 * 200
    assert all(summary["messages"] > 0 for summary in summaries), "one consumer processed nothing"
    ids = indexed_ids(es, names["index"])
    assert len(ids) == len(set(ids)) and set(ids) == anomalies
    assert Counter(archived_ids(archive)) == normals
    assert {record.value or b"" for record in read_topic(endpoints.bootstrap, names["dlq"], len(rejects))} == rejects
