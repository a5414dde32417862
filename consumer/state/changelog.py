"""The changelog topic ``<group>.state``: its record format (a change with the entry it replaced; a position
marker per partition), writing a batch's changes to it, creating it, and folding its records back into a position
and the entries at that position (:func:`replay`)."""

from __future__ import annotations

import logging
import math
import os
import struct
from collections.abc import Iterable

import orjson

from bp.errors import StateError
from bp.state import NO_WATERMARK, Entry
from consumer.ports import ChangelogProducer, Delivery, TopicAdmin
from consumer.state.failpoints import FAILPOINT_ENV, failpoint
from consumer.state.values import Position

log = logging.getLogger("bp.consumer.state")

POSITION_KEY = b"\x00position"
CHANGELOG_FORMAT = 1

_CHANGE = struct.Struct("<BqdI")  # format, next input offset of the batch, new last_time, len(new value)
_PREV = struct.Struct("<d")  # previous last_time, followed by the previous value (absent: no previous entry)


def changelog_topic(group: str) -> str:
    return f"{group}.state"


def encode_change(next_offset: int, new: Entry, before: Entry | None) -> bytes:
    head = _CHANGE.pack(CHANGELOG_FORMAT, next_offset, new.last_time, len(new.value)) + new.value
    if before is None:
        return head
    return head + _PREV.pack(before.last_time) + before.value


def decode_change(raw: bytes) -> tuple[int, Entry, Entry | None]:
    """(next input offset of the batch that wrote it, new entry, entry before that batch)."""
    if len(raw) < _CHANGE.size or raw[0] != CHANGELOG_FORMAT:
        raise StateError(f"changelog record of an unknown format ({raw[:1]!r}, {len(raw)} bytes)")
    _, next_offset, last_time, size = _CHANGE.unpack_from(raw)
    end = _CHANGE.size + size
    new = Entry(raw[_CHANGE.size : end], last_time)
    if len(raw) == end:
        return next_offset, new, None
    (before_time,) = _PREV.unpack_from(raw, end)
    return next_offset, new, Entry(raw[end + _PREV.size :], before_time)


def encode_position(topic: str, position: Position) -> bytes:
    watermark = position.watermark if math.isfinite(position.watermark) else None
    return orjson.dumps(
        {"format": CHANGELOG_FORMAT, "topic": topic, "next_offset": position.next_offset, "watermark": watermark}
    )


def decode_position(raw: bytes, changelog_offset: int) -> tuple[str, Position]:
    try:
        data = orjson.loads(raw)
        watermark = NO_WATERMARK if data["watermark"] is None else float(data["watermark"])
        return str(data["topic"]), Position(int(data["next_offset"]), watermark, changelog_offset)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StateError(f"changelog position marker at offset {changelog_offset} unreadable: {exc}") from None


def replay(
    records: Iterable[tuple[int, bytes, bytes | None]], base: Position | None
) -> tuple[Position | None, dict[str, Entry | None]]:
    """Fold changelog records (offset, key, value) read in order into (position, key → entry or None = delete).

    ``base``: the position of the local state the records continue (None: no local state). The last marker
    read wins over ``base``. A change written by a batch beyond the final position (it never got its marker)
    is rolled back to the entry it replaced.
    """
    latest: dict[bytes, bytes | None] = {}
    final = base
    for offset, key, value in records:
        if key == POSITION_KEY:
            if value is not None:
                final = decode_position(value, offset)[1]
        else:
            latest[key] = value
    changes: dict[str, Entry | None] = {}
    for key, value in latest.items():
        name = key.decode()
        if value is None:
            changes[name] = None
            continue
        written_by, new, before = decode_change(value)
        changes[name] = new if final is not None and written_by <= final.next_offset else before
    return final, changes



class Changelog:
    """The compacted changelog topic: written per batch, read back to restore a partition."""

    def __init__(self, producer: ChangelogProducer, topic: str, input_topic: str, timeout_s: float = 30.0) -> None:
        self.producer = producer
        self.topic = topic
        self.input_topic = input_topic
        self.timeout_s = timeout_s

    def send(
        self, records: dict[int, dict[str, tuple[Entry | None, Entry | None]]], positions: dict[int, Position]
    ) -> dict[int, int]:
        """Send every change (partition → key → (entry now or None, entry at the last marker)), then one marker
        per partition in ``positions``; flush; return each marker's offset."""
        send = self.producer.send
        topic = self.topic
        futures = []
        markers: dict[int, Delivery] = {}
        half = sum(len(entries) for entries in records.values()) // 2
        try:
            for partition, entries in records.items():
                next_offset = positions[partition].next_offset
                for key, (entry, before) in entries.items():
                    value = None if entry is None else encode_change(next_offset, entry, before)
                    futures.append(send(topic, key=key.encode(), value=value, partition=partition))
                    if len(futures) == half and os.environ.get(FAILPOINT_ENV):
                        self.producer.flush(timeout=self.timeout_s)
                        failpoint("changelog-midway")  # half of the changes in the log, no marker
            for partition, position in positions.items():
                markers[partition] = send(
                    topic, key=POSITION_KEY, value=encode_position(self.input_topic, position), partition=partition
                )
            self.producer.flush(timeout=self.timeout_s)
            for future in futures:
                future.get(timeout=self.timeout_s)
            return {partition: future.get(timeout=self.timeout_s).offset for partition, future in markers.items()}
        except StateError:
            raise
        except Exception as exc:  # any delivery failure: the batch is not persisted, not committed
            raise StateError(f"changelog {topic} not written: {type(exc).__name__}: {exc}") from exc


def ensure_changelog(admin: TopicAdmin, topic: str, partitions: int) -> bool:
    """Create the compacted changelog topic unless it exists; True if created. StateError if it is too small."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    try:
        admin.create_topics(
            [
                NewTopic(
                    topic,
                    partitions,
                    1,
                    topic_configs={"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
                )
            ]
        )
        log.info("created changelog topic %s (%d partitions, compacted)", topic, partitions)
        return True
    except TopicAlreadyExistsError:
        pass
    described = admin.describe_topics([topic])
    have = len(described[0].get("partitions", [])) if described else 0
    if have and have < partitions:
        raise StateError(f"changelog topic {topic} has {have} partitions, the input has {partitions}")
    return False

