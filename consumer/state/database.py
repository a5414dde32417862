"""The local SQLite file of the per-patient state (WAL; one transaction per persisted batch): entries per
(partition, key), the position each partition's state reflects, and the keys changed since the last changelog
marker. One file per group and input topic: ``<state dir>/<group>/<topic>.sqlite``."""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from bp.errors import StateError
from bp.state import NO_WATERMARK, Entry
from consumer.state.failpoints import failpoint
from consumer.state.values import Position


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



def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def state_path(state_dir: Path, group: str, topic: str) -> Path:
    """``<state dir>/<group>/<topic>.sqlite``."""
    return state_dir / safe_name(group) / f"{safe_name(topic)}.sqlite"
