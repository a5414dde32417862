"""The normal archive's layout, defined once: ``<root>/<YYYY-MM-DD>/<topic>.p<partition>.jsonl``.

One JSON Lines file per reading day (UTC) and source partition. The consumer's archive sink writes there; the
report, the benchmark and the demo find the files with :data:`FILE_GLOB`. Paths only (no I/O), so this belongs in
the pure package.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Final

LAYOUT: Final = "<day>/<topic>.p<partition>.jsonl"  # for messages to people
FILE_GLOB: Final = "*/*.jsonl"  # every archive file, relative to the root


def file_name(topic: str, partition: int) -> str:
    """A partition's file name within a day directory (a topic name cannot make it leave the directory)."""
    return f"{topic.replace('/', '_') or 'stdin'}.p{partition}.jsonl"


def file_path(root: Path, effective: datetime, topic: str, partition: int) -> Path:
    """The file that holds a reading taken at ``effective`` (any time zone; the day is the UTC day)."""
    return root / effective.astimezone(UTC).date().isoformat() / file_name(topic, partition)


def topic_glob(topic: str) -> str:
    """The files of one topic, every day and partition, relative to the root."""
    return f"*/{file_name(topic, 0).removesuffix('.p0.jsonl')}.p*.jsonl"
