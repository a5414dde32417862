"""The state keeper's place in the loop: restore + seek on assignment, drop what poll fetched meanwhile, a batch
of revoked partitions fails its checkpoint (it is replayed), state errors become sink errors (retry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kafka.structs import TopicPartition

from bp.errors import SinkError
from bp.state import Entry
from consumer.state.changelog import Changelog
from consumer.state.database import Database
from consumer.state.keeper import StatefulConsumer, StateKeeper
from consumer.state.store import StateStore
from tests.unit.test_state import LOG_TOPIC, TOPIC, FakeLog

GROUP = "grp"  # changelog topic grp.state == LOG_TOPIC


class GroupConsumer:
    """The group consumer as the keeper sees it: poll returns what it is given; seeks are recorded."""

    def __init__(self, keeper: StateKeeper) -> None:
        self.keeper = keeper
        self.sought: dict[int, int | str] = {}
        self.next_poll: dict[Any, list[Any]] = {}
        self.assign_on_poll: list[Any] = []
        self.committed: dict[int, int] = {}

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        if self.assign_on_poll:
            self.keeper.on_assigned(self.assign_on_poll)  # the listener runs inside poll
            self.assign_on_poll = []
        polled, self.next_poll = self.next_poll, {}
        return polled

    def seek(self, tp: Any, offset: int) -> None:
        self.sought[tp.partition] = offset

    def commit(self, offsets: dict[Any, Any]) -> None:
        self.committed = {tp.partition: meta.offset for tp, meta in offsets.items()}

    def seek_to_beginning(self, *tps: Any) -> None:
        for tp in tps:
            self.sought[tp.partition] = "beginning"


class Rec:
    def __init__(self, offset: int) -> None:
        self.offset = offset


def keeper_with(log: FakeLog, path: Path) -> StateKeeper:
    keeper = StateKeeper(StateStore(Database(path, TOPIC)), GROUP, TOPIC, restore_timeout_s=30)
    keeper.connect(log, reader=log.reader, admin=lambda: None)
    keeper._changelog_ready = True  # the fake log needs no topic creation
    return keeper


def write_state(log: FakeLog, tmp_path: Path, partition: int, next_offset: int) -> None:
    store = StateStore(Database(tmp_path / "writer.sqlite", TOPIC))
    changes = store.begin()
    store.view(partition).advance(1.0)
    store.view(partition).put("p1", Entry(b"x", 1.0))
    store.persist(changes, {partition: next_offset}, Changelog(log, LOG_TOPIC, TOPIC))


def test_assigned_partitions_are_restored_and_sought_before_their_records_are_decided(tmp_path: Path) -> None:
    log = FakeLog()
    write_state(log, tmp_path, partition=0, next_offset=40)
    keeper = keeper_with(log, tmp_path / "reader.sqlite")
    group = GroupConsumer(keeper)
    consumer = StatefulConsumer(group, keeper)
    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    group.assign_on_poll = [p0, p1]
    group.next_poll = {p0: [Rec(25), Rec(26)], p1: [Rec(0)]}  # fetched from the committed offsets
    assert consumer.poll(timeout_ms=0) == {}  # both were sought: nothing of this poll is decided
    assert group.sought == {0: 40, 1: "beginning"}  # p1 has no state anywhere: its history starts at 0
    assert group.committed == {0: 40}  # the group's offsets follow the state's position
    assert keeper.store.view(0).get("p1") == Entry(b"x", 1.0)
    assert keeper.restored_records >= 2
    later = [Rec(40)]
    group.next_poll = {p0: later}
    assert consumer.poll(timeout_ms=0) == {p0: later}  # from then on, polls pass through


def test_a_batch_of_revoked_partitions_fails_its_checkpoint(tmp_path: Path) -> None:
    keeper = keeper_with(FakeLog(), tmp_path / "s.sqlite")
    changes = keeper.begin()
    keeper.view(0).put("p", Entry(b"v", 1.0))
    keeper.on_revoked([TopicPartition(TOPIC, 0)])
    with pytest.raises(SinkError, match="reassigned"):
        keeper.persist(changes, {(TOPIC, 0): 10})
    assert keeper.store.database.get(0, "p") is None


def test_a_state_write_failure_is_a_sink_error(tmp_path: Path) -> None:
    log = FakeLog()
    keeper = keeper_with(log, tmp_path / "s.sqlite")
    keeper.store.changelog_interval_s = 0.0
    keeper.store._next_flush = 0.0
    changes = keeper.begin()
    keeper.view(0).put("p", Entry(b"v", 1.0))
    log.crash_after = 0  # the changelog refuses the write
    with pytest.raises(SinkError, match="state not persisted"):
        keeper.persist(changes, {(TOPIC, 0): 10})
    keeper.discard(changes)  # what the loop's rollback does
    assert keeper.store.pending == []
