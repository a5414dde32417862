"""Exactly-once outcomes with the model ON (the default): crashes, a partition move and a full archive disk.

One topic (30,000 readings of 300 patients, ~10 % rule anomalies plus the model's, 100 malformed messages, 4
partitions) is consumed once without interruption: that run's routing (archive or index) and priority of every
observation id is the reference. Each test consumes the same topic again under a fault, with its own group,
index, archive and state directory, and must end with every reading in exactly one sink and routed and
prioritised exactly as in the reference, per observation id. The model is a small one fitted on simulated data
(tests/small_model.py): its risk depends on each patient's history, so a lost or double-counted history shows.

Faults: SIGKILL at seven moments (in the middle of a changelog write, inside the state transaction, after the
state transaction but before the offset commit, between archive and commit, twice at random after a restart
on a new machine, i.e. an empty state directory restored from the changelog); a partition move (two static
members, one killed and removed from the group, the survivor restores its partitions from the changelog); the
archive's disk filled during a run, then freed.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from consumer.pipeline import Message, Pipeline
from consumer.scoring import load_model
from consumer.state.changelog import POSITION_KEY
from tests.integration.conftest import Endpoints, read_topic, run_cli, wait_for
from tests.integration.faults_support import (
    Offsets,
    archive_ahead_of,
    balanced_mix,
    interleave,
    kill,
    last_assignment,
    malformed,
    send,
    start_consumer,
    stopped_at_exit,
)
from tests.integration.test_consumer_kafka import archived_ids
from tests.small_model import fit_small_model

pytestmark = [pytest.mark.integration, pytest.mark.faults]

READINGS = 30_000
PATIENTS = 300
PARTITIONS = 4
FAILPOINT = "BPSTREAM_TEST_FAILPOINT"


@dataclass(frozen=True)
class Stream:
    names: dict[str, str]
    model: Path
    values: list[bytes | None]  # every message's value, in send order
    valid: frozenset[str]  # observation ids of the valid readings
    rejects: frozenset[bytes]
    reference: dict[str, str]  # observation id -> "normal" or the anomaly's priority
    total: int
    ends: dict[int, int]


def consumer_args(stream: Stream, workdir: Path, tag: str, *extra: str) -> list[str]:
    names = stream.names
    return [
        "--topic", names["topic"], "--dlq-topic", f"{names['dlq']}-{tag}", "--group", f"{names['group']}-{tag}",
        "--index", f"{names['index']}-{tag}", "--stats-index", names["stats_index"],
        "--archive-dir", str(workdir / "archive"), "--state-dir", str(workdir / "state"),
        "--model", str(stream.model), "--batch-size", "500", *extra,
    ]  # fmt: skip


def indexed_priorities(es: Any, index: str) -> dict[str, str]:
    """observation id -> priority of every anomaly document (all of them, paged with search_after)."""
    es.indices.refresh(index=index)
    found: dict[str, str] = {}
    after: list[Any] | None = None
    for _ in range(1000):
        page = es.search(
            index=index,
            size=2000,
            sort=[{"observation_id": "asc"}],
            source=["priority"],
            **({"search_after": after} if after else {}),
        )["hits"]["hits"]
        if not page:
            return found
        for hit in page:
            assert hit["_id"] not in found, f"{hit['_id']} indexed twice"
            found[hit["_id"]] = hit["_source"]["priority"]
        after = page[-1]["sort"]
    raise AssertionError("too many pages")


def routes(es: Any, index: str, archive: Path) -> dict[str, str]:
    """observation id -> "normal" (archived) or priority (indexed); fails on a reading in both or twice."""
    indexed = indexed_priorities(es, index)
    archived = Counter(archived_ids(archive))
    twice = [oid for oid, n in archived.items() if n > 1]
    assert not twice, f"{len(twice)} readings archived twice, e.g. {twice[:3]}"
    both = set(indexed) & set(archived)
    assert not both, f"{len(both)} readings in both sinks, e.g. {sorted(both)[:3]}"
    return {**indexed, **dict.fromkeys(archived, "normal")}


def assert_same_outcomes(stream: Stream, es: Any, index: str, archive: Path, bootstrap: str, dlq: str) -> None:
    got = routes(es, index, archive)
    missing = stream.valid - set(got)
    assert not missing, f"{len(missing)} readings in neither sink, e.g. {sorted(missing)[:3]}"
    assert set(got) == stream.valid
    differ = {oid: (stream.reference[oid], got[oid]) for oid in got if got[oid] != stream.reference[oid]}
    assert not differ, (
        f"{len(differ)} readings routed/prioritised unlike the uninterrupted run: {list(differ.items())[:5]}"
    )
    assert dead_letters(bootstrap, dlq) == stream.rejects


def changelog_markers(bootstrap: str, topic: str) -> set[int]:
    """Partitions of a state changelog topic that hold a position marker."""
    records = read_topic(bootstrap, topic, 1, timeout=10)
    return {record.partition for record in records if record.key == POSITION_KEY}


def dead_letters(bootstrap: str, topic: str) -> frozenset[bytes]:
    """The distinct values in a dead-letter topic (a crash may send one twice)."""
    from kafka import KafkaConsumer, TopicPartition

    probe = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = probe.partitions_for_topic(topic) or set()
        ends = probe.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        probe.close()
    return frozenset(record.value or b"" for record in read_topic(bootstrap, topic, sum(ends.values())))


@pytest.fixture(scope="module")
def stream(endpoints: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> Stream:
    """The shared input topic and the reference outcome of an uninterrupted run over it."""
    import uuid

    tag = uuid.uuid4().hex[:8]
    names = {
        "topic": f"bp-state-{tag}",
        "dlq": f"bp-state-{tag}.dlq",
        "group": f"bp-state-{tag}",
        "index": f"bp-state-anomalies-{tag}",
        "stats_index": f"bp-state-stats-{tag}",
    }
    rng = random.Random(1212)
    readings, anomalies, normals = balanced_mix(seed=61, readings=READINGS, patients=PATIENTS)
    bad = malformed(seed=62, count=100, huge_each=1)
    messages = interleave(rng, readings, [(f"bad-{i % 8}".encode(), value) for i, (_, _, value) in enumerate(bad)])
    ends = send(endpoints.bootstrap, names["topic"], messages, partitions=PARTITIONS)
    base = tmp_path_factory.mktemp("state-faults")
    model = fit_small_model(base)
    stream = Stream(
        names, model, [value for _, value in messages], frozenset(anomalies) | frozenset(normals),
        frozenset(value or b"" for _, _, value in bad), {}, len(messages), ends,
    )  # fmt: skip
    workdir = base / "reference"
    result = run_cli(
        "consumer.consumer",
        consumer_args(stream, workdir, "ref", "--stop-when-idle", "3"),
        endpoints.env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from elasticsearch import Elasticsearch

    es = Elasticsearch(endpoints.es_url, request_timeout=30)
    try:
        reference = routes(es, f"{names['index']}-ref", workdir / "archive")
    finally:
        es.close()
    # The reference run is the oracle here: which messages are valid is the parser's business (tested elsewhere).
    assert len(set(reference) & stream.valid) >= 0.99 * len(stream.valid)
    dead = dead_letters(endpoints.bootstrap, f"{names['dlq']}-ref")
    priorities = Counter(reference.values())
    assert priorities["normal"] < len(reference) and len(priorities) >= 3, priorities
    return Stream(**{**stream.__dict__, "reference": reference, "valid": frozenset(reference), "rejects": dead})


def test_the_reference_depends_on_patient_history(stream: Stream) -> None:
    """The comparison can fail: deciding the same readings with the history lost at a few restarts (what the
    consumer did before it had a state store) routes or prioritises some readings differently."""
    model = load_model(stream.model)
    whole = Pipeline(model).decide_batch([Message(v, partition=0, offset=i) for i, v in enumerate(stream.values)])
    restarted = []
    for start in range(0, stream.total, 7_000):  # the history is lost every 7,000 messages
        chunk = stream.values[start : start + 7_000]
        restarted += Pipeline(model).decide_batch(
            [Message(v, partition=0, offset=start + i) for i, v in enumerate(chunk)]
        )
    changed = sum(
        1 for a, b in zip(whole, restarted, strict=True) if type(a.decision) is not type(b.decision)
        or getattr(a.decision, "priority", None) != getattr(b.decision, "priority", None)
    )  # fmt: skip
    assert changed > 0


# ------------------------------------------------------------------------------------------------ crash storm
def test_crash_storm_with_the_model_on_gives_the_uninterrupted_outcome(
    endpoints: Endpoints, stream: Stream, es: Any, tmp_path: Path
) -> None:
    """SIGKILL seven times (three at fault-injection points inside the state's persistence, one between archive
    and commit, one with the state directory lost, two at random); then the outcome equals the reference."""
    rng = random.Random(404)
    names = stream.names
    group, index, dlq = f"{names['group']}-storm", f"{names['index']}-storm", f"{names['dlq']}-storm"
    log = tmp_path / "consumer.log"
    env = endpoints.env(BP_STATE_CHANGELOG_INTERVAL_S="1")
    offsets = Offsets(endpoints.bootstrap, group, names["topic"])
    machine = tmp_path / "machine-1"
    killed = []
    try:
        with stopped_at_exit([]) as processes:

            def start(workdir: Path, **extra_env: str) -> subprocess.Popen[bytes]:
                args = consumer_args(stream, workdir, "storm", "--instance-id", "storm-1")
                process = start_consumer(args, {**env, **extra_env}, log)
                processes.append(process)
                return process

            # 1-3: the process kills itself at a fault-injection point of the state's persistence.
            for point, hit in (("changelog-midway", 2), ("state-transaction", 3), ("state-persisted", 3)):
                process = start(machine, **{FAILPOINT: f"{point}:{hit}"})
                wait_for(lambda p=process: p.poll() is not None, 120, f"failpoint {point} (log {log})")  # type: ignore[misc]
                assert process.returncode == -signal.SIGKILL, (point, process.returncode, log.read_text()[-2000:])
                killed.append((point, offsets.total()))
            # 4: a batch archived but not committed.
            process = start(machine)
            target = killed[-1][1] + 2_000
            wait_for(lambda: offsets.total() >= target, 120, f"progress past {target} (log {log})", 0.05)
            wait_for(
                lambda: archive_ahead_of(machine / "archive", names["topic"], offsets.committed()),
                30, "a batch archived but not committed", 0.01,
            )  # fmt: skip
            assert kill(process, signal.SIGKILL) == -signal.SIGKILL
            killed.append(("archived-not-committed", offsets.total()))
            # 5-7: the machine is lost (empty state directory, same archive); random moments.
            fresh = tmp_path / "machine-2"
            fresh.mkdir()
            (machine / "archive").rename(fresh / "archive")
            for _ in range(3):
                process = start(fresh)
                target = min(killed[-1][1] + 1_500, stream.total - 2_000)
                wait_for(
                    lambda t=target: offsets.total() >= t,  # type: ignore[misc]
                    120,
                    f"progress past {target} (log {log})",
                    0.05,
                )
                time.sleep(rng.uniform(0.0, 0.4))  # fault injection at a random moment, not synchronisation
                assert kill(process, signal.SIGKILL) == -signal.SIGKILL
                killed.append(("random", offsets.total()))
            final = start(fresh)
            wait_for(lambda: offsets.committed() == stream.ends, 180, f"everything committed (log {log})")
            assert kill(final, signal.SIGTERM, timeout=30) == 0, log.read_text()[-3000:]
    finally:
        offsets.close()
    assert len(killed) == 7, killed
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert "restoring state" in text or "changelog records read" in text
    assert_same_outcomes(stream, es, index, tmp_path / "machine-2" / "archive", endpoints.bootstrap, dlq)


# --------------------------------------------------------------------------------------------- partition move
def test_partition_move_restores_state_from_the_changelog(
    endpoints: Endpoints, stream: Stream, es: Any, tmp_path: Path
) -> None:
    """Two static members on two "machines" split the partitions; one is SIGKILLed and removed from the group;
    the survivor restores the dead one's partitions from the changelog and the outcome equals the reference."""
    from kafka import KafkaAdminClient
    from kafka.admin import MemberToRemove

    names = stream.names
    group, index, dlq = f"{names['group']}-move", f"{names['index']}-move", f"{names['dlq']}-move"
    env = endpoints.env(BP_STATE_CHANGELOG_INTERVAL_S="2")
    logs = {member: tmp_path / f"{member}.log" for member in ("doomed", "survivor")}
    archive = tmp_path / "archive"
    offsets = Offsets(endpoints.bootstrap, group, names["topic"])
    everything = set(range(PARTITIONS))
    try:
        with stopped_at_exit([]) as processes:
            members = {}
            for member, log in logs.items():
                workdir = tmp_path / member
                (workdir).mkdir()
                args = consumer_args(stream, workdir, "move", "--instance-id", member, "--archive-dir", str(archive))
                members[member] = start_consumer(args, env, log)
                processes.append(members[member])

            def split() -> bool:
                a, b = last_assignment(logs["doomed"]), last_assignment(logs["survivor"])
                return bool(a) and bool(b) and not (a & b) and (a | b) == everything  # type: ignore[operator]

            wait_for(split, 60, f"both members assigned (logs in {tmp_path})")
            wait_for(lambda: offsets.total() >= stream.total // 4, 120, "a quarter committed")
            doomed = last_assignment(logs["doomed"])
            assert doomed
            wait_for(
                lambda: doomed <= changelog_markers(endpoints.bootstrap, f"{group}.state"),  # type: ignore[operator]
                60, "the doomed member's first changelog markers",
            )  # fmt: skip
            assert kill(members["doomed"], signal.SIGKILL) == -signal.SIGKILL
            admin = KafkaAdminClient(bootstrap_servers=endpoints.bootstrap)
            try:
                admin.remove_group_members(group, [MemberToRemove(group_instance_id="doomed")])
            finally:
                admin.close()
            wait_for(lambda: last_assignment(logs["survivor"]) == everything, 60, f"the survivor to take {doomed}")
            wait_for(lambda: offsets.committed() == stream.ends, 180, f"everything committed (log {logs['survivor']})")
            assert kill(members["survivor"], signal.SIGTERM, timeout=30) == 0
    finally:
        offsets.close()
    text = logs["survivor"].read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    for partition in doomed or ():
        assert f"partition {partition}: state at offset" in text, text[-3000:]
    assert_same_outcomes(stream, es, index, archive, endpoints.bootstrap, dlq)


# ------------------------------------------------------------------------------------------------- disk full
@contextlib.contextmanager
def small_disk(path: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` MiB mounted at ``path`` (root only); skips the test where mounting is refused."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_archive_disk_full_then_freed_gives_the_uninterrupted_outcome(
    endpoints: Endpoints, stream: Stream, es: Any, tmp_path: Path
) -> None:
    """The archive's file system fills up mid-run (the state lives elsewhere): the consumer retries without
    committing; once space is freed it goes on, and the outcome equals the reference."""
    names = stream.names
    group, index, dlq = f"{names['group']}-full", f"{names['index']}-full", f"{names['dlq']}-full"
    log = tmp_path / "consumer.log"
    offsets = Offsets(endpoints.bootstrap, group, names["topic"])
    with small_disk(tmp_path / "disk", 64) as disk:
        archive = disk / "archive"
        filler = disk / "filler"
        try:
            with stopped_at_exit([]) as processes:
                args = consumer_args(stream, tmp_path, "full", "--archive-dir", str(archive))
                process = start_consumer(args, endpoints.env(), log)
                processes.append(process)
                wait_for(lambda: offsets.total() >= stream.total // 3, 120, f"a third committed (log {log})")
                # Unbuffered, and the suppression outside the file: closing a buffered file on a full disk raises too.
                with contextlib.suppress(OSError), filler.open("wb", buffering=0) as handle:
                    for _ in range(100_000):  # bounded: 64 MiB at most
                        handle.write(b"\0" * 65_536)
                # (the batch in flight when the disk filled was archived before: it may still commit)
                wait_for(lambda: log.read_bytes().count(b"archive write failed") >= 2, 60, "the full disk noticed")
                during = offsets.committed()
                assert sum(during.values()) < stream.total, "nothing was left to do when the disk filled"
                wait_for(lambda: log.read_bytes().count(b"archive write failed") >= 5, 60, "a few more retries")
                assert offsets.committed() == during, "offsets committed while the archive could not be written"
                filler.unlink()
                wait_for(lambda: offsets.committed() == stream.ends, 180, f"everything committed (log {log})")
                assert kill(process, signal.SIGTERM, timeout=30) == 0
            text = log.read_text(errors="replace")
            assert "Traceback" not in text, text[-3000:]
            assert_same_outcomes(stream, es, index, archive, endpoints.bootstrap, dlq)
        finally:
            offsets.close()
