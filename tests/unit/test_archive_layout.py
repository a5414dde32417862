"""bp.archive: the archive layout the sink writes and the report, bench and demo read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from bp import archive


def test_a_file_per_utc_day_and_partition() -> None:
    root = Path("data/normal")
    late_evening_east = datetime(2026, 3, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))  # 2026-02-28 23:30 UTC
    assert archive.file_path(root, late_evening_east, "blood-pressure", 3) == Path(
        "data/normal/2026-02-28/blood-pressure.p3.jsonl"
    )
    assert archive.file_path(root, datetime(2026, 3, 1, tzinfo=UTC), "a/b", 0).parent.parent == root


def test_globs_find_what_file_path_places() -> None:
    root = Path("r")
    placed = [
        archive.file_path(root, datetime(2026, 3, day, tzinfo=UTC), topic, partition)
        for day in (1, 2)
        for topic in ("blood-pressure", "other")
        for partition in (0, 11)
    ]
    assert all(path.relative_to(root).match(archive.FILE_GLOB) for path in placed)
    mine = [path for path in placed if path.relative_to(root).match(archive.topic_glob("blood-pressure"))]
    assert len(mine) == 4 and all("blood-pressure" in path.name for path in mine)
    assert not Path("2026-03-01/notes.txt").match(archive.FILE_GLOB)
