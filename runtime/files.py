"""Writing a file atomically: readers (and a crash) see the old content or the new, never a part of it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Create ``path`` through ``write(temporary)`` on a file beside it, fsync it, then ``os.replace`` it in.

    Parent directories are created. On any failure the temporary file is removed and the error propagates
    (``OSError`` for file-system problems); ``path`` keeps its old content.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
