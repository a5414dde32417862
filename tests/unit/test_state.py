"""The consumer's state store: per-batch change sets, durable positions, cache eviction, changelog restore.

A fake Kafka log (lists of records per partition) stands in for the changelog topic; the database is a real
SQLite file in tmp_path. The reference for "the right state" is always an unbounded in-memory history fed the
same readings in the same order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bp.errors import StateError
from bp.features import PatientHistory
from bp.reading import Reading
from bp.state import Entry, MemoryState
from consumer.state.changelog import POSITION_KEY, Changelog, decode_change, encode_change, replay
from consumer.state.database import Database
from consumer.state.restore import restore_partition
from consumer.state.store import StateStore
from consumer.state.values import Position

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
TOPIC = "bp-in"
LOG_TOPIC = "grp.state"


# --------------------------------------------------------------------------------------------- fake Kafka
@dataclass
class Meta:
    offset: int


class Done:
    def __init__(self, offset: int) -> None:
        self.offset = offset

    def get(self, timeout: float | None = None) -> Meta:
        return Meta(self.offset)


class Crash(Exception):
    """The process "dies" here (fault injection)."""


class FakeLog:
    """A topic's partitions as lists of (offset, key, value); a producer and a reading consumer over them."""

    def __init__(self) -> None:
        self.partitions: dict[int, list[tuple[int, bytes, bytes | None]]] = {}
        self.crash_after: int | None = None  # raise Crash after this many more sends

    # producer side
    def send(self, topic: str, key: bytes, value: bytes | None, partition: int) -> Done:
        if self.crash_after is not None:
            if self.crash_after == 0:
                raise Crash
            self.crash_after -= 1
        records = self.partitions.setdefault(partition, [])
        offset = records[-1][0] + 1 if records else 0
        records.append((offset, key, value))
        return Done(offset)

    def flush(self, timeout: float | None = None) -> None:
        return None

    def compact(self) -> None:
        """Keep only the last record of each key (offsets unchanged), as log compaction does."""
        for partition, records in self.partitions.items():
            last = {key: offset for offset, key, _ in records}
            self.partitions[partition] = [r for r in records if last[r[1]] == r[0]]

    # consumer side (the calls read_changelog makes)
    def reader(self) -> FakeReader:
        return FakeReader(self)


class FakeReader:
    def __init__(self, log: FakeLog) -> None:
        self.log = log
        self.tp: Any = None
        self.pos = 0

    def assign(self, tps: list[Any]) -> None:
        self.tp = tps[0]

    def seek(self, tp: Any, offset: int) -> None:
        self.pos = offset

    def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        records = self.log.partitions.get(tps[0].partition, [])
        return {tps[0]: records[-1][0] + 1 if records else 0}

    def poll(self, timeout_ms: int = 0, max_records: int = 500) -> dict[Any, list[Any]]:
        records = [r for r in self.log.partitions.get(self.tp.partition, []) if r[0] >= self.pos][:max_records]
        if not records:
            return {}
        self.pos = records[-1][0] + 1
        return {self.tp: [Record(o, k, v) for o, k, v in records]}

    def position(self, tp: Any) -> int:
        return self.pos

    def highwater(self, tp: Any) -> int:
        return self.end_offsets([tp])[tp]

    def close(self) -> None:
        return None


@dataclass
class Record:
    offset: int
    key: bytes
    value: bytes | None


# ----------------------------------------------------------------------------------------------- helpers
def readings(seed: int, count: int, patients: int) -> list[Reading]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        systolic = rng.uniform(95, 190)
        out.append(Reading(f"p{rng.randrange(patients)}", T0 + timedelta(minutes=i), systolic, systolic * 0.6, f"o{i}"))
    return out


def store_at(path: Path, cache_size: int = 100_000) -> StateStore:
    return StateStore(Database(path, TOPIC), cache_size=cache_size)


def run_batches(
    store: StateStore, items: list[Reading], start: int, size: int, changelog: Changelog | None = None
) -> list[tuple[float, ...]]:
    """Decide ``items`` (offsets start, start+1, ... of partition 0) in batches, persisting each."""
    history = PatientHistory(store.view(0))
    rows = []
    for at in range(0, len(items), size):
        changes = store.begin()
        rows.extend(history.observe(r) for r in items[at : at + size])
        store.persist(changes, {0: start + min(at + size, len(items))}, changelog)
    return rows


def reference(items: list[Reading]) -> list[tuple[float, ...]]:
    history = PatientHistory(MemoryState())
    return [history.observe(r) for r in items]


def restored(log: FakeLog, path: Path) -> tuple[StateStore, Position | None]:
    store = store_at(path)
    position, _ = restore_partition(store, log.reader(), LOG_TOPIC, 0, 30, lambda done, total: None)
    return store, position


# ----------------------------------------------------------------------------------------------- codec
def test_change_record_round_trip() -> None:
    new, before = Entry(b"\x01abc", 10.5), Entry(b"\x01ab", 3.0)
    assert decode_change(encode_change(77, new, before)) == (77, new, before)
    assert decode_change(encode_change(5, new, None)) == (5, new, None)
    with pytest.raises(StateError):
        decode_change(b"\x09" + encode_change(5, new, None)[1:])


# ----------------------------------------------------------------------------------- change sets and cache
def test_persisting_batch_n_does_not_write_batch_n_plus_1(tmp_path: Path) -> None:
    """Pipelined delivery: batch N+1 is decided before N is persisted; N's transaction holds only N's changes,
    and dropping N+1 (a failed delivery) falls back to the durable state."""
    store = store_at(tmp_path / "s.sqlite")
    view = store.view(0)
    n = store.begin()
    view.get("a")
    view.put("a", Entry(b"n", 1.0))
    n_plus_1 = store.begin()
    view.get("a")
    view.put("a", Entry(b"n+1", 2.0))
    view.put("b", Entry(b"n+1", 2.0))
    assert view.get("a") == Entry(b"n+1", 2.0)
    store.persist(n, {0: 10})
    fresh = Database(tmp_path / "s.sqlite", TOPIC)
    assert fresh.get(0, "a") == Entry(b"n", 1.0)
    assert fresh.get(0, "b") is None
    assert fresh.positions()[0].next_offset == 10
    store.discard(n_plus_1)
    assert view.get("a") == Entry(b"n", 1.0) and view.get("b") is None


def test_failed_batch_drops_its_changes_and_later_ones(tmp_path: Path) -> None:
    store = store_at(tmp_path / "s.sqlite")
    view = store.view(0)
    first = store.begin()
    view.put("a", Entry(b"1", 1.0))
    store.begin()
    view.put("a", Entry(b"2", 2.0))
    store.discard(first)
    assert view.get("a") is None
    with pytest.raises(StateError):
        view.put("a", Entry(b"3", 3.0))  # no batch open


def test_batches_persist_in_order(tmp_path: Path) -> None:
    store = store_at(tmp_path / "s.sqlite")
    store.begin()
    second = store.begin()
    with pytest.raises(StateError, match="order"):
        store.persist(second, {0: 1})


def test_small_cache_and_restarts_decide_like_an_unbounded_history(tmp_path: Path) -> None:
    """A cache of 7 entries for 300 patients and a reopened database every 1,000 readings: the features of
    every reading equal those of an unlimited in-memory history."""
    items = readings(1, 4000, patients=300)
    path = tmp_path / "s.sqlite"
    rows: list[tuple[float, ...]] = []
    for part in range(4):
        store = store_at(path, cache_size=7)
        assert store.positions.get(0, Position(0)).next_offset == part * 1000
        rows += run_batches(store, items[part * 1000 : (part + 1) * 1000], part * 1000, size=93)
        assert store.disk_reads > 0
        store.database.close()
    np.testing.assert_array_equal(np.array(rows), np.array(reference(items)))


def test_store_refuses_a_database_of_another_topic(tmp_path: Path) -> None:
    store = store_at(tmp_path / "s.sqlite")
    changes = store.begin()
    store.persist(changes, {0: 1})
    with pytest.raises(StateError, match="belongs to topic"):
        Database(tmp_path / "s.sqlite", "other-topic").positions()


def test_unusable_state_dir_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="cannot be opened"):
        Database(blocker / "s.sqlite", TOPIC)


# ---------------------------------------------------------------------------------------------- changelog
def test_restore_from_the_changelog_equals_the_local_state(tmp_path: Path) -> None:
    log = FakeLog()
    items = readings(2, 2000, patients=150)
    original = store_at(tmp_path / "a.sqlite")
    rows = run_batches(original, items[:1500], 0, size=111, changelog=Changelog(log, LOG_TOPIC, TOPIC))
    log.compact()
    copy, position = restored(log, tmp_path / "b.sqlite")
    assert position is not None and position.next_offset == 1500
    assert position.watermark == items[1499].effective.timestamp()
    for key in {r.patient_id for r in items}:
        assert copy.database.get(0, key) == original.database.get(0, key), key
    # ... and it goes on deciding exactly as an uninterrupted history would.
    rows += run_batches(copy, items[1500:], 1500, size=111)
    np.testing.assert_array_equal(np.array(rows), np.array(reference(items)))


@pytest.mark.parametrize("crash_after", [0, 1, 17, 60])
def test_crash_while_writing_the_changelog_restores_the_last_complete_batch(tmp_path: Path, crash_after: int) -> None:
    """The process dies after ``crash_after`` records of a batch's changelog (before its marker). With the log
    compacted (older values of the half-written keys gone), restoring gives the state of the last marker, and
    replaying from its position decides like an uninterrupted run."""
    log = FakeLog()
    changelog = Changelog(log, LOG_TOPIC, TOPIC)
    items = readings(3, 1200, patients=80)
    store = store_at(tmp_path / "a.sqlite")
    rows = run_batches(store, items[:600], 0, size=100, changelog=changelog)
    history = PatientHistory(store.view(0))
    doomed = store.begin()
    for r in items[600:750]:
        history.observe(r)
    log.crash_after = crash_after
    with pytest.raises(StateError):
        store.persist(doomed, {0: 750}, changelog)
    log.crash_after = None
    log.compact()
    copy, position = restored(log, tmp_path / "b.sqlite")
    assert position is not None and position.next_offset == 600
    rows += run_batches(copy, items[600:], 600, size=70, changelog=changelog)
    np.testing.assert_array_equal(np.array(rows), np.array(reference(items)))
    # A second restore, after the re-run wrote past the half-written batch, is exact too.
    log.compact()
    again, position = restored(log, tmp_path / "c.sqlite")
    assert position is not None and position.next_offset == 1200
    for key in {r.patient_id for r in items}:
        assert again.database.get(0, key) == copy.database.get(0, key), key


def test_stale_local_state_is_caught_up_from_its_marker(tmp_path: Path) -> None:
    """Consumer A persisted up to 500 locally; B then owned the partition and went on to 900 (changelog only).
    When A gets the partition back, it reads the changelog from its own marker on, not from the start."""
    log = FakeLog()
    changelog = Changelog(log, LOG_TOPIC, TOPIC)
    items = readings(4, 900, patients=60)
    a = store_at(tmp_path / "a.sqlite")
    run_batches(a, items[:500], 0, size=100, changelog=changelog)
    a.database.close()
    b, _ = restored(log, tmp_path / "b.sqlite")
    run_batches(b, items[500:], 500, size=100, changelog=changelog)
    a = store_at(tmp_path / "a.sqlite")
    position, read = restore_partition(a, log.reader(), LOG_TOPIC, 0, 30, lambda done, total: None)
    assert position is not None and position.next_offset == 900
    assert read < sum(1 for _ in log.partitions[0]) // 2  # only what B wrote
    for key in {r.patient_id for r in items}:
        assert a.database.get(0, key) == b.database.get(0, key)


def test_local_state_ahead_of_the_changelog_is_replaced(tmp_path: Path) -> None:
    """A recreated (empty) changelog topic: the local state cannot be trusted against it and is dropped."""
    store = store_at(tmp_path / "a.sqlite")
    run_batches(store, readings(5, 300, 30), 0, size=100, changelog=Changelog(FakeLog(), LOG_TOPIC, TOPIC))
    assert store.database.count(0) > 0
    position, _ = restore_partition(store, FakeLog().reader(), LOG_TOPIC, 0, 30, lambda done, total: None)
    assert position is None
    assert store.database.count(0) == 0 and 0 not in store.database.positions()


def test_replay_without_any_marker_rolls_everything_back() -> None:
    records = [(0, b"a", encode_change(10, Entry(b"x", 1.0), None)), (1, b"b", None)]
    position, changes = replay(records, None)
    assert position is None
    assert changes == {"a": None, "b": None}
    marker = (2, POSITION_KEY, b'{"format":1,"topic":"t","next_offset":10,"watermark":5.0}')
    position, changes = replay([*records, marker], None)
    assert position == Position(10, 5.0, 2)
    assert changes == {"a": Entry(b"x", 1.0), "b": None}


def test_expired_patients_are_purged_without_changing_decisions(tmp_path: Path, monkeypatch: Any) -> None:
    """Retention 1 day; readings span 5 days with patients going quiet: purges delete rows (and send tombstones)
    and every decision stays equal to the unbounded in-memory history with the same retention."""
    import consumer.state.store as store_module

    monkeypatch.setattr(store_module, "PURGE_EVERY_S", 0.0)
    rng = random.Random(6)
    items = [
        Reading(f"p{rng.randrange(40) + (i // 400) * 40}", T0 + timedelta(minutes=3 * i), 120.0, 80.0, f"o{i}")
        for i in range(2400)
    ]
    log = FakeLog()
    store = StateStore(Database(tmp_path / "a.sqlite", TOPIC), retention_days=1.0)
    history = PatientHistory(store.view(0), retention_days=1.0)
    rows = []
    for at in range(0, len(items), 100):
        changes = store.begin()
        rows.extend(history.observe(r) for r in items[at : at + 100])
        store.persist(changes, {0: at + 100}, Changelog(log, LOG_TOPIC, TOPIC))
    expected = PatientHistory(MemoryState(), retention_days=1.0)
    np.testing.assert_array_equal(np.array(rows), np.array([expected.observe(r) for r in items]))
    assert store.database.count(0) < len({r.patient_id for r in items})
    assert any(value is None for _, _, value in log.partitions[0])


# ------------------------------------------------------------------------------- changelog every few batches
class Checked:
    """Decides readings of partition 0 through a store and checks every feature row against the reference."""

    def __init__(self, items: list[Reading]) -> None:
        self.items = items
        self.expected = reference(items)
        self.decided = 0

    def run(self, store: StateStore, start: int, end: int, size: int, changelog: Changelog, flush_every: int) -> None:
        history = PatientHistory(store.view(0))
        for number, at in enumerate(range(start, end, size), 1):
            stop = min(at + size, end)
            changes = store.begin()
            for offset in range(at, stop):
                assert history.observe(self.items[offset]) == self.expected[offset], offset
                self.decided += 1
            store.persist(changes, {0: stop}, changelog, flush=number % flush_every == 0)


def same_state(a: StateStore, b: StateStore, items: list[Reading]) -> None:
    for key in {r.patient_id for r in items}:
        assert a.database.get(0, key) == b.database.get(0, key), key


@pytest.mark.parametrize("crash_after", [0, 5, 40])
def test_interval_changelog_crash_mid_flush_then_restart_and_move(tmp_path: Path, crash_after: int) -> None:
    """The changelog is written every 3rd batch. A dies in the middle of a flush; it restarts on its own local
    state (ahead of the changelog), goes on, and is then replaced by B, which restores from the compacted
    changelog; later A gets the partition back and catches up from B's markers. Every decision on the way
    equals the uninterrupted reference, and every restored state equals its writer's."""
    log = FakeLog()
    changelog = Changelog(log, LOG_TOPIC, TOPIC)
    items = readings(7, 3000, patients=120)
    check = Checked(items)
    a = store_at(tmp_path / "a.sqlite")
    check.run(a, 0, 700, 50, changelog, flush_every=3)  # markers at 150, 300, ... 600; local at 700
    history = PatientHistory(a.view(0))
    doomed = a.begin()
    for offset in range(700, 750):
        history.observe(items[offset])
    log.crash_after = crash_after
    with pytest.raises(StateError):
        a.persist(doomed, {0: 750}, changelog, flush=True)
    log.crash_after = None
    a.database.close()
    # A restarts: nobody wrote a marker since its own, so its local state (at 700) stands.
    a = store_at(tmp_path / "a.sqlite")
    position, _ = restore_partition(a, log.reader(), LOG_TOPIC, 0, 30, lambda done, total: None)
    assert position is not None and position.next_offset == 700
    check.run(a, 700, 1400, 50, changelog, flush_every=3)
    # A is gone for good after 1400 (its last marker is older); B restores from the compacted changelog.
    log.compact()
    b, position = restored(log, tmp_path / "b.sqlite")
    assert position is not None and 700 < position.next_offset <= 1400
    check.run(b, position.next_offset, 2200, 60, changelog, flush_every=2)
    b.flush_changelog(changelog)
    # A gets the partition back: its unlogged changes are rolled back, B's markers applied.
    position, _ = restore_partition(a, log.reader(), LOG_TOPIC, 0, 30, lambda done, total: None)
    assert position is not None and position.next_offset == 2200
    same_state(a, b, items)
    check.run(a, 2200, 3000, 80, changelog, flush_every=4)
    assert check.decided > 3000  # some readings were decided twice (replays), always identically


def test_unlogged_changes_survive_a_restart_and_reach_the_changelog(tmp_path: Path) -> None:
    """Changes persisted locally between two markers are remembered on disk: after a restart the next flush
    still sends them, so a consumer restoring from the changelog gets the full state."""
    log = FakeLog()
    changelog = Changelog(log, LOG_TOPIC, TOPIC)
    items = readings(8, 1000, patients=200)
    check = Checked(items)
    a = store_at(tmp_path / "a.sqlite")
    check.run(a, 0, 500, 100, changelog, flush_every=1000)  # never flushed
    assert not log.partitions
    a.database.close()
    a = store_at(tmp_path / "a.sqlite")
    check.run(a, 500, 600, 100, changelog, flush_every=1)
    log.compact()
    b, position = restored(log, tmp_path / "b.sqlite")
    assert position is not None and position.next_offset == 600
    same_state(a, b, items)


def test_owner_back_behind_its_own_local_state_rolls_its_unlogged_changes_back(tmp_path: Path) -> None:
    """A is at 1000 locally but its last marker says 800; B restores (800), gets only to 850 and writes a marker,
    then A gets the partition back: A must return to the state at 850 (roll back what it did after 800, apply
    B's records), not keep its own 1000, or it would apply 850-1000 twice."""
    log = FakeLog()
    changelog = Changelog(log, LOG_TOPIC, TOPIC)
    items = readings(9, 1500, patients=50)
    check = Checked(items)
    a = store_at(tmp_path / "a.sqlite")
    check.run(a, 0, 800, 100, changelog, flush_every=1)
    check.run(a, 800, 1000, 100, changelog, flush_every=1000)
    b, position = restored(log, tmp_path / "b.sqlite")
    assert position is not None and position.next_offset == 800
    check.run(b, 800, 850, 50, changelog, flush_every=1)
    position, _ = restore_partition(a, log.reader(), LOG_TOPIC, 0, 30, lambda done, total: None)
    assert position is not None and position.next_offset == 850
    same_state(a, b, items)
    check.run(a, 850, 1500, 100, changelog, flush_every=2)


def test_only_owned_partitions_reach_the_changelog(tmp_path: Path) -> None:
    """Unlogged changes of a partition this process no longer owns stay local: writing them (or a marker) to the
    changelog could overwrite what the partition's new owner wrote."""
    log = FakeLog()
    changelog = Changelog(log, LOG_TOPIC, TOPIC)
    store = store_at(tmp_path / "a.sqlite")
    for partition in (0, 1):
        changes = store.begin()
        store.view(partition).put("p", Entry(b"v", 1.0))
        store.persist(changes, {partition: 5}, changelog, flush=False)
    store.owned = {0}
    store.flush_changelog(changelog)
    assert set(log.partitions) == {0}
    assert store.database.unlogged(1)  # kept for when partition 1 comes back


def test_an_idle_store_sends_its_changelog_once_due_and_nothing_is_pending(tmp_path: Path) -> None:
    """A consumer that goes idle right after a batch must not leave the changelog behind until the next batch:
    when the interval has passed and no batch is pending, ``flush_if_due`` sends the partitions whose position
    moved, and the next owner restores from there."""
    log = FakeLog()
    changelog = Changelog(log, LOG_TOPIC, TOPIC)
    store = store_at(tmp_path / "a.sqlite")
    store.changelog_interval_s = 60.0
    for partition in (0, 1):
        changes = store.begin()
        store.view(partition).put("p", Entry(b"v", 1.0))
        store.persist(changes, {partition: 5}, changelog, flush=False)
    store._next_flush = float("inf")
    assert not store.flush_if_due(changelog)  # not due yet
    store._next_flush = 0.0
    in_flight = store.begin()
    assert not store.flush_if_due(changelog)  # a batch is pending: its persist flushes
    assert not log.partitions
    store.discard(in_flight)
    assert store.flush_if_due(changelog)
    assert set(log.partitions) == {0, 1}
    assert store._next_flush > 0.0
    store._next_flush = 0.0
    assert not store.flush_if_due(changelog)  # nothing moved since
    _, position = restored(log, tmp_path / "b.sqlite")
    assert position is not None and position.next_offset == 5
