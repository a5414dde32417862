"""Restoring one partition's local state from the changelog when the partition is assigned: current local state
costs one end-offset lookup, stale state is caught up from its marker, missing state is read from the beginning."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from bp.errors import StateError
from consumer.ports import ChangelogReader
from consumer.state.changelog import replay
from consumer.state.store import StateStore
from consumer.state.values import Position

log = logging.getLogger("bp.consumer.state")

RESTORE_PROGRESS_S = 5.0


def read_changelog(
    consumer: ChangelogReader,
    topic: str,
    partition: int,
    start: int,
    deadline: float,
    progress: Callable[[int, int], None],
    high_water: list[int] | None = None,
) -> Iterator[tuple[int, bytes, bytes | None]]:
    """Every record of one changelog partition from ``start`` to its end, in order; bounded by ``deadline``.
    ``high_water[0]`` is set to the end of the partition as the broker served it."""
    from kafka import TopicPartition

    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek(tp, start)
    end = consumer.end_offsets([tp]).get(tp, 0)
    position = start
    read = 0
    next_report = time.monotonic() + RESTORE_PROGRESS_S
    blind = 0  # polls that told nothing about the high-water mark
    while True:
        if time.monotonic() > deadline:
            raise StateError(
                f"restoring partition {partition} from {topic} did not finish in time "
                f"(at offset {position} of {end}); raise BP_STATE_RESTORE_TIMEOUT_S"
            )
        batch = consumer.poll(timeout_ms=200, max_records=10_000)
        for record in batch.get(tp, []):
            position = record.offset + 1
            read += 1
            yield record.offset, record.key or b"", record.value
        position = max(position, consumer.position(tp))
        # Some brokers (Tansu) report a smaller end offset than they serve: the fetch's high-water mark rules.
        high = consumer.highwater(tp)
        if high_water is not None:
            high_water[0] = max(high_water[0], end if high is None else high)
        if high is not None and position >= max(end, high):
            break
        if high is None and position >= end and not batch:
            blind += 1
            if blind >= 25:
                break
        if time.monotonic() >= next_report:
            next_report = time.monotonic() + RESTORE_PROGRESS_S
            progress(read, max(end - start, read))
    progress(read, read)


def restore_partition(
    store: StateStore,
    consumer: ChangelogReader,
    topic: str,
    partition: int,
    timeout_s: float,
    progress: Callable[[int, int], None],
) -> tuple[Position | None, int]:
    """Bring one partition's local state up to its changelog; returns (the position it reflects, records read).

    Local state that is current costs one end-offset lookup; stale local state is caught up from its marker
    on; missing local state is restored from the beginning; local state ahead of the changelog (the topic was
    recreated) is dropped and restored from the changelog.
    """
    from kafka import TopicPartition

    local = store.database.positions().get(partition)
    tp = TopicPartition(topic, partition)
    end = consumer.end_offsets([tp]).get(tp, 0)
    if local is not None and end == local.changelog_offset + 1:
        return local, 0  # our own marker is the last record: the local state is current
    if local is None and end == 0:
        return None, 0  # no state anywhere
    wipe = False
    start = local.changelog_offset + 1 if local is not None else 0
    counted = [0]
    high = [0]

    def counting(start: int) -> Iterator[tuple[int, bytes, bytes | None]]:
        deadline = time.monotonic() + timeout_s
        for record in read_changelog(consumer, topic, partition, start, deadline, progress, high):
            counted[0] += 1
            yield record

    position, changes = replay(counting(start), local)
    if local is not None and high[0] <= local.changelog_offset:
        log.warning(
            "partition %d: local state is ahead of changelog %s (marker at %d, end %d): restoring from the changelog",
            partition, topic, local.changelog_offset, high[0],
        )  # fmt: skip
        local, wipe = None, True
        position, changes = replay(counting(0), None)
    if local is not None and position is local:
        return local, counted[0]  # nobody wrote a marker since ours: the local state is the newest there is
    if local is not None:
        # Keys changed here after our last marker are rolled back to it (the new marker's writer started there),
        # then the changelog's records are applied on top.
        changes = {key: before for key, (_, before) in store.database.unlogged(partition).items()} | changes
    store.apply_restore(partition, position, changes, wipe=wipe or (local is not None and position is None))
    return position, counted[0]
