"""The values the state modules and the loop pass around: where a partition's state stands (:class:`Position`)
and the state changes of one batch (:class:`ChangeSet`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bp.state import NO_WATERMARK, Entry


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

