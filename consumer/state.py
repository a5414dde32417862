"""The consumer's per-patient state: a keyed store on local disk with a cache in front, a changelog topic, and the
input position the state reflects, all moving together.

Layers (read top to bottom, the first that knows a key answers):

1. the *change sets* of batches decided but not yet persisted (at most two with pipelined delivery: the batch
   being delivered and the one being decided); each belongs to one batch, so persisting batch N never writes
   batch N+1's changes, and a failed batch (rewind) drops its change set and every later one;
2. an in-memory LRU cache of persisted entries (``BP_STATE_CACHE_PATIENTS``): evicting only costs a disk read;
3. the local SQLite database (WAL): table ``state`` (partition, key) → (value, last event time) and table
   ``position`` partition → (next input offset, event-time watermark, changelog offset of its marker).

Persisting a batch (after every sink acknowledged it, before its Kafka offsets are committed):
changelog records sent and flushed → one SQLite transaction with the state changes *and* the positions.

Changelog ``<group>.state`` (compacted; one partition per input partition): per changed key one record
(key = the state key, i.e. the patient id) whose value holds the batch's next input offset, the new entry and the
entry as it was before the batch, then one *position marker* per partition (key ``\\x00position``). On restore the
last marker is the position; a record written after it by a batch that never finished (crash mid-flush) is rolled
back to its "before" entry, so a compacted changelog restores exactly the state at the marker. Expired entries
(event-time retention, see :mod:`bp.state`) are deleted with tombstones; deleting them never changes a decision.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import sqlite3
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from bp.errors import StateError
from bp.state import DAY_S, NO_WATERMARK, Entry

log = logging.getLogger("bp.consumer.state")

FAILPOINT_ENV = "BPSTREAM_TEST_FAILPOINT"
_failpoint_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Fault injection for the crash tests: with ``BPSTREAM_TEST_FAILPOINT=name:n`` in the environment, the
    process SIGKILLs itself the n-th time it reaches ``name``. Without the variable this does nothing."""
    wanted = os.environ.get(FAILPOINT_ENV)
    if not wanted or not wanted.startswith(name + ":"):
        return
    _failpoint_hits[name] = _failpoint_hits.get(name, 0) + 1
    if _failpoint_hits[name] == int(wanted.rsplit(":", 1)[1]):
        log.warning("failpoint %s reached: killing this process", name)
        os.kill(os.getpid(), signal.SIGKILL)


POSITION_KEY = b"\x00position"
CHANGELOG_FORMAT = 1
PURGE_EVERY_S = 60.0
PURGE_LIMIT = 10_000
RESTORE_PROGRESS_S = 5.0

_UNKNOWN = object()  # a key the cache knows nothing about
_CHANGE = struct.Struct("<BqdI")  # format, next input offset of the batch, new last_time, len(new value)
_PREV = struct.Struct("<d")  # previous last_time, followed by the previous value (absent: no previous entry)


def changelog_topic(group: str) -> str:
    return f"{group}.state"


# ------------------------------------------------------------------------------------------------- values
@dataclass(frozen=True, slots=True)
class Position:
    """Where a partition's state stands: the next input offset it reflects and its event-time watermark.

    ``changelog_offset``: offset of the changelog marker written for it (-1 when there is none).
    """

    next_offset: int
    watermark: float = NO_WATERMARK
    changelog_offset: int = -1


@dataclass
class ChangeSet:
    """The state changes of one batch, per partition: new entries (None = deleted) and the entries before."""

    entries: dict[int, dict[str, Entry | None]] = field(default_factory=dict)
    before: dict[int, dict[str, Entry | None]] = field(default_factory=dict)
    watermarks: dict[int, float] = field(default_factory=dict)

    def changed(self) -> int:
        return sum(len(entries) for entries in self.entries.values())


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


# ----------------------------------------------------------------------------------------------- database
class Database:
    """The local SQLite store (WAL; one transaction per persisted batch). One file per group and input topic."""

    def __init__(self, path: Path, topic: str) -> None:
        self.path = path
        self.topic = topic
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a power loss may lose the last transactions, never corrupt; the changelog then restores them.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS state (partition INTEGER NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,"
                " last_time REAL NOT NULL, PRIMARY KEY (partition, key)) WITHOUT ROWID"
            )
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS position (partition INTEGER PRIMARY KEY, topic TEXT NOT NULL,"
                " next_offset INTEGER NOT NULL, watermark REAL, changelog_offset INTEGER NOT NULL)"
            )
            # Keys changed since the partition's last changelog marker, with their entry at that marker.
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS unlogged (partition INTEGER NOT NULL, key TEXT NOT NULL, before BLOB,"
                " before_time REAL, PRIMARY KEY (partition, key)) WITHOUT ROWID"
            )
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"state store {path} cannot be opened: {exc}") from None

    def close(self) -> None:
        self.db.close()

    def positions(self) -> dict[int, Position]:
        found: dict[int, Position] = {}
        for partition, topic, next_offset, watermark, changelog_offset in self.db.execute(
            "SELECT partition, topic, next_offset, watermark, changelog_offset FROM position"
        ):
            if topic != self.topic:
                raise StateError(f"state store {self.path} belongs to topic {topic!r}, not {self.topic!r}")
            wm = NO_WATERMARK if watermark is None else float(watermark)
            found[int(partition)] = Position(int(next_offset), wm, int(changelog_offset))
        return found

    def get(self, partition: int, key: str) -> Entry | None:
        row = self.db.execute(
            "SELECT value, last_time FROM state WHERE partition = ? AND key = ?", (partition, key)
        ).fetchone()
        return None if row is None else Entry(bytes(row[0]), float(row[1]))

    def count(self, partition: int | None = None) -> int:
        if partition is None:
            return int(self.db.execute("SELECT count(*) FROM state").fetchone()[0])
        return int(self.db.execute("SELECT count(*) FROM state WHERE partition = ?", (partition,)).fetchone()[0])

    def expired(self, partition: int, before: float, limit: int) -> list[str]:
        rows = self.db.execute(
            "SELECT key FROM state WHERE partition = ? AND last_time < ? LIMIT ?", (partition, before, limit)
        )
        return [str(row[0]) for row in rows]

    def unlogged(self, partition: int) -> dict[str, tuple[Entry | None, Entry | None]]:
        """Keys changed since the partition's last changelog marker: key → (entry now, entry at the marker)."""
        rows = self.db.execute(
            "SELECT u.key, u.before, u.before_time, s.value, s.last_time FROM unlogged u LEFT JOIN state s"
            " ON s.partition = u.partition AND s.key = u.key WHERE u.partition = ?",
            (partition,),
        )
        return {
            str(key): (
                None if value is None else Entry(bytes(value), float(last_time)),
                None if before is None else Entry(bytes(before), float(before_time)),
            )
            for key, before, before_time, value, last_time in rows
        }

    def unlogged_partitions(self) -> set[int]:
        return {int(row[0]) for row in self.db.execute("SELECT DISTINCT partition FROM unlogged")}

    def write(
        self,
        changes: dict[int, dict[str, Entry | None]],
        positions: dict[int, Position],
        wipe: Iterable[int] = (),
        unlogged: dict[int, dict[str, Entry | None]] | None = None,
        logged: Iterable[int] = (),
    ) -> None:
        """One transaction: wipe partitions, apply the changes, remember ``unlogged`` keys (their entry at the last
        marker; the first one recorded is kept), forget the unlogged keys of ``logged`` partitions, set positions."""
        upserts = []
        deletes = []
        for partition, entries in changes.items():
            for key, entry in entries.items():
                if entry is None:
                    deletes.append((partition, key))
                else:
                    upserts.append((partition, key, entry.value, entry.last_time))
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for partition in wipe:
                    db.execute("DELETE FROM state WHERE partition = ?", (partition,))
                    db.execute("DELETE FROM position WHERE partition = ?", (partition,))
                    db.execute("DELETE FROM unlogged WHERE partition = ?", (partition,))
                for partition in logged:
                    db.execute("DELETE FROM unlogged WHERE partition = ?", (partition,))
                if unlogged:
                    db.executemany(
                        "INSERT OR IGNORE INTO unlogged (partition, key, before, before_time) VALUES (?, ?, ?, ?)",
                        [
                            (partition, key, None if e is None else e.value, None if e is None else e.last_time)
                            for partition, befores in unlogged.items()
                            for key, e in befores.items()
                        ],
                    )
                if upserts:
                    db.executemany(
                        "INSERT INTO state (partition, key, value, last_time) VALUES (?, ?, ?, ?) ON CONFLICT"
                        " (partition, key) DO UPDATE SET value = excluded.value, last_time = excluded.last_time",
                        upserts,
                    )
                if deletes:
                    db.executemany("DELETE FROM state WHERE partition = ? AND key = ?", deletes)
                db.executemany(
                    "INSERT OR REPLACE INTO position (partition, topic, next_offset, watermark, changelog_offset)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [
                        (
                            partition,
                            self.topic,
                            pos.next_offset,
                            pos.watermark if math.isfinite(pos.watermark) else None,
                            pos.changelog_offset,
                        )
                        for partition, pos in positions.items()
                    ],
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            failpoint("state-transaction")  # inside the transaction: everything written, nothing committed
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"state store {self.path} write failed: {exc}") from exc


# ----------------------------------------------------------------------------------------------- the store
class PartitionView:
    """One partition's state as :class:`bp.state.KeyedState`: pending change sets → cache → database."""

    __slots__ = ("_last", "partition", "store")

    def __init__(self, store: StateStore, partition: int) -> None:
        self.store = store
        self.partition = partition
        self._last: tuple[str, Entry | None] | None = None  # the last get (saves a lookup in the put after it)

    @property
    def watermark(self) -> float:
        return self.store.watermark(self.partition)

    def advance(self, event_time: float) -> float:
        current = self.store.watermark(self.partition)
        if event_time <= current:
            return current
        self.store.current().watermarks[self.partition] = event_time
        return event_time

    def get(self, key: str) -> Entry | None:
        entry = self.store.lookup(self.partition, key)
        self._last = (key, entry)
        return entry

    def put(self, key: str, entry: Entry) -> None:
        changes = self.store.current()
        entries = changes.entries.get(self.partition)
        if entries is None:
            entries = changes.entries[self.partition] = {}
            changes.before[self.partition] = {}
        if key not in entries:
            last = self._last
            before = last[1] if last is not None and last[0] == key else self.store.lookup(self.partition, key)
            changes.before[self.partition][key] = before
        entries[key] = entry
        self._last = None


class StateStore:
    """Keyed per-partition state with per-batch change sets, an LRU cache of persisted entries, and a database."""

    def __init__(
        self,
        database: Database,
        cache_size: int = 100_000,
        retention_days: float = 30.0,
        changelog_interval_s: float = 0.0,
    ) -> None:
        self.database = database
        self.cache_size = cache_size
        self.retention_s = retention_days * DAY_S
        self.positions: dict[int, Position] = database.positions()
        self._cache: OrderedDict[tuple[int, str], Entry | None] = OrderedDict()  # None: known to be absent
        self._pending: list[ChangeSet] = []
        self._next_purge = time.monotonic() + PURGE_EVERY_S
        self.changelog_interval_s = changelog_interval_s
        self._next_flush = time.monotonic() + changelog_interval_s
        self._unflushed: set[int] = set()  # partitions whose position moved since their last marker
        self._unlogged_keys: dict[int, set[str]] = {}  # keys known to be in the unlogged table (a write saver)
        # Partitions this process owns (set by the loop's keeper; None: all, e.g. tests of the store alone).
        self.owned: set[int] | None = None
        self.cache_hits = 0
        self.disk_reads = 0

    @property
    def pending(self) -> list[ChangeSet]:
        """Change sets of batches decided but not persisted, oldest first."""
        return self._pending

    # -- reading and writing (the loop's thread) --
    def view(self, partition: int) -> PartitionView:
        return PartitionView(self, partition)

    def begin(self) -> ChangeSet:
        """Start the change set of the next batch: every write until the next ``begin`` goes into it."""
        changes = ChangeSet()
        self._pending.append(changes)
        return changes

    def current(self) -> ChangeSet:
        if not self._pending:
            raise StateError("state written outside a batch (call begin() first)")
        return self._pending[-1]

    def watermark(self, partition: int) -> float:
        for changes in reversed(self._pending):
            watermark = changes.watermarks.get(partition)
            if watermark is not None:
                return watermark
        position = self.positions.get(partition)
        return NO_WATERMARK if position is None else position.watermark

    def lookup(self, partition: int, key: str) -> Entry | None:
        for changes in reversed(self._pending):
            entries = changes.entries.get(partition)
            if entries is not None and key in entries:
                return entries[key]
        cache_key = (partition, key)
        cached = self._cache.get(cache_key, _UNKNOWN)
        if cached is not _UNKNOWN:
            self._cache.move_to_end(cache_key)
            self.cache_hits += 1
            return cached  # type: ignore[return-value]
        self.disk_reads += 1
        entry = self.database.get(partition, key)
        self._remember(cache_key, entry)  # absent keys too (e.g. patients without alert state)
        return entry

    def _remember(self, cache_key: tuple[int, str], entry: Entry | None) -> None:
        cache = self._cache
        cache[cache_key] = entry
        if len(cache) > self.cache_size:
            cache.popitem(last=False)

    # -- batch boundaries --
    def discard(self, changes: ChangeSet) -> None:
        """Drop a failed batch's changes and those of every batch decided after it (they will be replayed)."""
        if changes in self._pending:
            del self._pending[self._pending.index(changes) :]

    def discard_all(self) -> None:
        self._pending.clear()

    def persist(
        self,
        changes: ChangeSet,
        next_offsets: dict[int, int],
        changelog: Changelog | None = None,
        flush: bool | None = None,
    ) -> None:
        """Make a batch's changes and the positions they reflect durable in one local transaction; when the
        changelog is due (``flush``; default: every ``changelog_interval_s``), first send every change since
        the last marker plus a new marker per partition. ``changes`` must be the oldest pending change set."""
        if not self._pending or self._pending[0] is not changes:
            raise StateError("batches must be persisted in the order they were decided")
        self._add_purges(changes, next_offsets)
        positions = {
            partition: Position(offset, changes.watermarks.get(partition, self.watermark_durable(partition)))
            for partition, offset in next_offsets.items()
        }
        if flush is None:
            flush = changelog is not None and time.monotonic() >= self._next_flush
        if changelog is not None and flush:
            positions = self._send_changelog(changelog, changes, positions)
            self.database.write(changes.entries, positions, logged=positions)
            self._unflushed.clear()
            for partition in positions:
                self._unlogged_keys.pop(partition, None)
            self._next_flush = time.monotonic() + self.changelog_interval_s
        else:
            positions = {p: replace(pos, changelog_offset=self._changelog_offset(p)) for p, pos in positions.items()}
            # Only keys not yet recorded as unlogged since the last marker (the first "before" is the one kept).
            fresh: dict[int, dict[str, Entry | None]] = {}
            for partition, befores in changes.before.items():
                known = self._unlogged_keys.setdefault(partition, set())
                fresh[partition] = {key: e for key, e in befores.items() if key not in known}
            self.database.write(changes.entries, positions, unlogged=fresh)
            for partition, befores in fresh.items():
                self._unlogged_keys[partition].update(befores)
            self._unflushed.update(positions)
        self._pending.pop(0)
        self.positions.update(positions)
        for partition, entries in changes.entries.items():
            for key, entry in entries.items():
                self._remember((partition, key), entry)

    def flush_changelog(self, changelog: Changelog, partitions: Iterable[int] | None = None) -> None:
        """Send the changes not yet in the changelog (all partitions, or these) with a marker at the durable
        position; e.g. before giving partitions up, so their next owner has less to re-process."""
        wanted = set(self.positions) if partitions is None else set(partitions) & set(self.positions)
        if self.owned is not None:
            wanted &= self.owned
        if not wanted:
            return
        positions = {p: self.positions[p] for p in wanted}
        positions = self._send_changelog(changelog, ChangeSet(), positions)
        self.database.write({}, positions, logged=positions)
        for partition in positions:
            self._unlogged_keys.pop(partition, None)
        self.positions.update(positions)
        self._unflushed.difference_update(wanted)

    def _changelog_offset(self, partition: int) -> int:
        position = self.positions.get(partition)
        return -1 if position is None else position.changelog_offset

    def _send_changelog(
        self, changelog: Changelog, changes: ChangeSet, positions: dict[int, Position]
    ) -> dict[int, Position]:
        """Send the unlogged changes (overlaid with this batch's) and markers; positions with marker offsets."""
        records: dict[int, dict[str, tuple[Entry | None, Entry | None]]] = {}
        candidates = self.database.unlogged_partitions() | self._unflushed
        if self.owned is not None:  # never write the changelog of a partition another consumer may own now
            candidates &= self.owned
        for partition in candidates | set(changes.entries) | set(positions):
            if partition not in positions:
                if partition not in self.positions:
                    continue
                positions[partition] = self.positions[partition]
            current = self.database.unlogged(partition)
            before = changes.before.get(partition, {})
            for key, entry in changes.entries.get(partition, {}).items():
                current[key] = (entry, current[key][1] if key in current else before.get(key))
            records[partition] = current
        markers = changelog.send(records, positions)
        return {p: replace(pos, changelog_offset=markers[p]) for p, pos in positions.items()}

    def watermark_durable(self, partition: int) -> float:
        position = self.positions.get(partition)
        return NO_WATERMARK if position is None else position.watermark

    def _add_purges(self, changes: ChangeSet, next_offsets: dict[int, int]) -> None:
        """Now and then, delete entries expired at the durable watermark (read as absent anyway)."""
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_EVERY_S
        for partition in next_offsets:
            watermark = self.watermark_durable(partition)
            if not math.isfinite(watermark):
                continue
            entries = changes.entries.setdefault(partition, {})
            before = changes.before.setdefault(partition, {})
            expired = [k for k in self.database.expired(partition, watermark - self.retention_s, PURGE_LIMIT)]
            for key in expired:
                if key not in entries:
                    entries[key] = None
                    before[key] = None
            if expired:
                log.info(
                    "partition %d: forgetting %d patients not seen for the retention period", partition, len(expired)
                )

    # -- ownership --
    def release(self, partitions: Iterable[int]) -> None:
        """Forget cached entries of partitions this process no longer owns (another may change them)."""
        gone = set(partitions)
        if not gone:
            return
        for cache_key in [k for k in self._cache if k[0] in gone]:
            del self._cache[cache_key]
        for partition in gone:
            self.positions.pop(partition, None)
            self._unlogged_keys.pop(partition, None)
        if self.owned is not None:
            self.owned -= gone

    def reload_positions(self) -> None:
        self.positions = self.database.positions()

    def apply_restore(
        self, partition: int, position: Position | None, changes: dict[str, Entry | None], wipe: bool
    ) -> None:
        """Write a restored partition to the database in one transaction."""
        positions = {partition: position} if position is not None else {}
        self.database.write({partition: changes}, positions, wipe=[partition] if wipe else [], logged=[partition])
        self._unlogged_keys.pop(partition, None)
        for cache_key in [k for k in self._cache if k[0] == partition]:
            del self._cache[cache_key]
        if wipe:
            self.positions.pop(partition, None)
        if position is not None:
            self.positions[partition] = position


# ---------------------------------------------------------------------------------------------- changelog
class Changelog:
    """The compacted changelog topic: written per batch, read back to restore a partition."""

    def __init__(self, producer: Any, topic: str, input_topic: str, timeout_s: float = 30.0) -> None:
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
        markers: dict[int, Any] = {}
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


def ensure_changelog(admin: Any, topic: str, partitions: int) -> bool:
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


def read_changelog(
    consumer: Any,
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
    consumer: Any,
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


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def state_path(state_dir: Path, group: str, topic: str) -> Path:
    """``<state dir>/<group>/<topic>.sqlite``."""
    return state_dir / safe_name(group) / f"{safe_name(topic)}.sqlite"


def open_store(
    state_dir: Path, group: str, topic: str, cache_size: int, retention_days: float, changelog_interval_s: float
) -> StateStore:
    return StateStore(
        Database(state_path(state_dir, group, topic), topic), cache_size, retention_days, changelog_interval_s
    )
