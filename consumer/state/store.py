"""The keyed per-partition store the pipeline reads and writes: pending change sets → LRU cache → database, and
the checkpoint that makes a batch's changes durable with the position they reflect (sending the changelog when it
is due). Event-time retention purges entries nobody has written for ``BP_STATE_RETENTION_DAYS``."""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from bp.errors import StateError
from bp.state import DAY_S, NO_WATERMARK, Entry
from consumer.state.changelog import Changelog
from consumer.state.database import Database, state_path
from consumer.state.values import ChangeSet, Position

log = logging.getLogger("bp.consumer.state")

PURGE_EVERY_S = 60.0
PURGE_LIMIT = 10_000

_UNKNOWN = object()  # a key the cache knows nothing about


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
        pending = self.store._pending
        if pending:  # the batch being decided already moved this partition's watermark (all but its first reading)
            marks = pending[-1].watermarks
            current = marks.get(self.partition)
            if current is not None:
                if event_time > current:
                    marks[self.partition] = event_time
                    return event_time
                return current
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

    def flush_if_due(self, changelog: Changelog) -> bool:
        """While idle: when the changelog is due and no batch is pending, send what it lacks of the partitions
        whose position moved since their last marker (a consumer that went idle right after a batch would
        otherwise leave its changelog behind until the next batch). True when something was sent."""
        if self._pending or not self._unflushed or time.monotonic() < self._next_flush:
            return False
        self.flush_changelog(changelog, set(self._unflushed))
        self._next_flush = time.monotonic() + self.changelog_interval_s
        return True

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



def open_store(
    state_dir: Path, group: str, topic: str, cache_size: int, retention_days: float, changelog_interval_s: float
) -> StateStore:
    return StateStore(
        Database(state_path(state_dir, group, topic), topic), cache_size, retention_days, changelog_interval_s
    )
