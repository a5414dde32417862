"""The normal archive's side of the report: readings counted file by file, line by line."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import orjson

from bp.archive import FILE_GLOB
from bp.errors import ConfigError
from consumer.report.model import ArchiveSummary

log = logging.getLogger("bp.report")

PROGRESS_EVERY_S = 5.0


def scan_archive(root: Path) -> ArchiveSummary:
    """Count the normal archive's readings file by file, line by line (the archive may be large)."""
    summary = ArchiveSummary()
    if not root.is_dir():
        summary.exists = False
        return summary
    next_progress = time.monotonic() + PROGRESS_EVERY_S
    for path in sorted(root.glob(FILE_GLOB)):
        if not path.is_file():
            continue
        summary.files += 1
        try:
            with path.open("rb") as handle:
                for line in handle:
                    if not line.endswith(b"\n"):
                        summary.incomplete += 1
                        continue
                    if not line.strip():
                        continue
                    try:
                        record = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        summary.unreadable += 1
                        continue
                    if not isinstance(record, dict):
                        summary.unreadable += 1
                        continue
                    summary.add(record)
                    if summary.lines % 65_536 == 0 and time.monotonic() >= next_progress:
                        log.info("archive: %d readings in %d files so far", summary.lines, summary.files)
                        next_progress = time.monotonic() + PROGRESS_EVERY_S
        except OSError as exc:
            raise ConfigError(f"cannot read the archive file {path}: {exc.strerror}") from None
    if summary.unreadable:
        log.warning("archive: %d lines are not JSON objects and were not counted", summary.unreadable)
    return summary
