"""Per-patient state as the domain sees it: key → (bytes, last event time), one store per input partition.

Decisions depend on per-patient state (the feature history; alert episodes later), so a reading's decision must
be a deterministic function of its partition's history. The domain therefore reads and writes state only through
:class:`KeyedState`: a value-agnostic map from a key (the patient id, optionally ``"<part>/<patient>"`` for other
per-patient parts) to an :class:`Entry` of compact bytes. The consumer backs it with a durable store (SQLite +
a changelog topic, ``consumer/state/``); training and ``--check`` use :class:`MemoryState`.

Retention (the only forgetting; never driven by memory)
    Each partition has an event-time *watermark*: the latest ``effective`` time of any reading seen on it so far,
    in offset order (the reading being decided included). A patient's entry is *expired*, i.e. read as absent,
    when its last event time is more than the retention (default :data:`DEFAULT_RETENTION_DAYS` days) behind the
    watermark. This depends only on the partition's history, not on when the consumer ran, crashed or evicted a
    cache entry. The watermark never goes back, so an expired entry stays expired and a store may delete it at
    any time (:func:`expired`) without changing any decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

DAY_S = 86_400.0
DEFAULT_RETENTION_DAYS = 30.0
NO_WATERMARK = float("-inf")


@dataclass(frozen=True, slots=True)
class Entry:
    """One key's state: opaque compact bytes and the event time (epoch seconds) of the key's latest reading."""

    value: bytes
    last_time: float


class KeyedState(Protocol):
    """One partition's keyed state. ``get`` and ``put`` see the writes of batches not yet persisted."""

    @property
    def watermark(self) -> float: ...

    def advance(self, event_time: float) -> float:
        """Move the watermark to ``event_time`` if later; returns the watermark."""
        ...

    def get(self, key: str) -> Entry | None: ...

    def put(self, key: str, entry: Entry) -> None: ...


def expired(entry: Entry, watermark: float, retention_s: float) -> bool:
    """True when ``entry`` is older than the retention at this watermark (it reads as absent from then on)."""
    return entry.last_time < watermark - retention_s


class MemoryState:
    """Unbounded in-memory :class:`KeyedState` (training, ``--check``, tests): nothing is ever evicted."""

    __slots__ = ("_entries", "_watermark")

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._watermark = NO_WATERMARK

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def watermark(self) -> float:
        return self._watermark

    def advance(self, event_time: float) -> float:
        self._watermark = max(self._watermark, event_time)
        return self._watermark

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def put(self, key: str, entry: Entry) -> None:
        self._entries[key] = entry


class Retained:
    """A :class:`KeyedState` seen through the retention rule: what the domain code reads and writes."""

    __slots__ = ("retention_s", "state")

    def __init__(self, state: KeyedState, retention_days: float = DEFAULT_RETENTION_DAYS) -> None:
        if not retention_days > 0:
            raise ValueError(f"retention_days must be > 0, got {retention_days}")
        self.state = state
        self.retention_s = retention_days * DAY_S

    def load(self, key: str, event_time: float) -> Entry | None:
        """The live entry of ``key`` for a reading at ``event_time`` (advances the watermark first)."""
        watermark = self.state.advance(event_time)
        entry = self.state.get(key)
        if entry is None or entry.last_time < watermark - self.retention_s:
            return None
        return entry

    def save(self, key: str, value: bytes, event_time: float, previous: Entry | None) -> None:
        """Store ``value`` for ``key``; its last event time is the latest of this reading and ``previous``."""
        last = event_time if previous is None or event_time > previous.last_time else previous.last_time
        self.state.put(key, Entry(value, last))
