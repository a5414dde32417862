"""The normal archive: every normal reading appended as a JSON line under ``data/normal/`` in the layout of
:mod:`bp.archive`, fsynced before the loop commits, and never written twice on a replay.

Like every sink it either writes a whole batch durably or raises :class:`bp.errors.SinkError` (the loop then
does not commit). The other sinks: Elasticsearch (:mod:`consumer.sinks`), the dead-letter topic
(:mod:`consumer.dead_letters`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bp import archive
from bp.errors import SinkError
from bp.reading import Normal, Reading
from consumer.pipeline import Outcome

log = logging.getLogger("bp.consumer.sinks")


def archive_line(outcome: Outcome, normal: Normal) -> dict[str, Any]:
    reading = normal.reading
    message = outcome.message
    return {
        "patient_id": reading.patient_id,
        "effective": reading.effective.isoformat(),
        "effective_precision": reading.effective_precision,
        "systolic": reading.systolic,
        "diastolic": reading.diastolic,
        "category": normal.category,
        "risk": None if normal.risk is None else round(normal.risk, 6),
        "observation_id": reading.observation_id,
        "source_topic": message.topic,
        "source_partition": message.partition,
        "source_offset": message.offset,
        "source_entry": outcome.entry,
    }


@dataclass(frozen=True, slots=True)
class ArchiveLine:
    """One normal reading placed in the archive: its file, its (offset, entry) position and its JSON line."""

    path: Path
    position: tuple[int, int]
    data: bytes


class NormalArchive:
    """Appends normal readings as JSON Lines in the layout of :mod:`bp.archive` (``<day>/<topic>.p<n>.jsonl``).

    Files are split by the reading's day (UTC) and source partition. Within one file, lines are appended in
    (offset, entry) order and every batch is flushed and fsynced before the loop commits, so the last line of a
    file tells how far it got: on a replay, lines at or below it are skipped (never written twice). A torn last
    line (crash mid-write) is cut off when the file is first touched. Forget the cached positions when partition
    ownership changes (another consumer may have appended meanwhile).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._last: dict[Path, tuple[int, int]] = {}
        self._paths: dict[tuple[str, int, int], Path] = {}
        self.skipped = 0

    def path_for(self, reading: Reading, topic: str, partition: int) -> Path:
        day_number = int(reading.effective.timestamp() // 86_400)  # UTC day, cheaper than astimezone per reading
        key = (topic, partition, day_number)
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = archive.file_path(self.root, reading.effective, topic, partition)
        return path

    def forget(self) -> None:
        """Drop cached file positions (call on partition revocation/assignment)."""
        self._last.clear()

    def line_for(self, outcome: Outcome, normal: Normal) -> ArchiveLine:
        """Where and what to append for one normal reading (raises on a reading the archive cannot place)."""
        message = outcome.message
        path = self.path_for(normal.reading, message.topic, message.partition)
        return ArchiveLine(path, (message.offset, outcome.entry), orjson.dumps(archive_line(outcome, normal)) + b"\n")

    def write(self, lines: Sequence[ArchiveLine]) -> int:
        """Append the batch's normals; returns how many lines were written (replayed ones are skipped)."""
        try:
            new = self._new_lines(lines)
            for path, chunk in new.items():
                created = not path.exists()
                with path.open("ab") as handle:
                    handle.write(b"".join(chunk))
                    handle.flush()
                    os.fsync(handle.fileno())
                if created:
                    _fsync_dir(path.parent)
        except (OSError, ValueError) as exc:
            self.forget()  # positions may be wrong now: re-read them from disk on retry
            raise SinkError(f"archive write failed: {exc}") from exc
        return sum(len(chunk) for chunk in new.values())

    def _new_lines(self, lines: Sequence[ArchiveLine]) -> dict[Path, list[bytes]]:
        """The lines to append, per file, leaving out what a file already holds (a replay)."""
        new: dict[Path, list[bytes]] = {}
        for line in lines:
            if line.position <= self._position(line.path):
                self.skipped += 1
                continue
            self._last[line.path] = line.position
            new.setdefault(line.path, []).append(line.data)
        return new

    def _position(self, path: Path) -> tuple[int, int]:
        cached = self._last.get(path)
        if cached is None:
            cached = _last_position(path)
            self._last[path] = cached
        return cached


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_position(path: Path) -> tuple[int, int]:
    """(offset, entry) of the last complete line of an archive file, cutting off a torn last line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        return (-1, -1)
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return (-1, -1)
        tail_size = min(size, 65_536)
        handle.seek(size - tail_size)
        tail = handle.read(tail_size)
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            new_size = size - tail_size + cut + 1 if cut >= 0 else 0
            log.warning("archive %s: cutting a torn last line (%d bytes)", path, size - new_size)
            handle.truncate(new_size)
            handle.flush()
            os.fsync(handle.fileno())
            tail = tail[: cut + 1] if cut >= 0 else b""
        lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
        if not lines or not lines[-1]:
            return (-1, -1)
        last = orjson.loads(lines[-1])
        return (int(last["source_offset"]), int(last.get("source_entry", 0)))

