"""The report's values: summaries of the anomaly index, the statistics index and the archive, and the pure
functions that shape query answers into gap-free series (bucket sizes, histograms, times)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bp.clinical import Category
from bp.dashboard import PANELS
from bp.reading import Priority

LATEST_ALERTS = 20
TOP_PATIENTS = 10
MAX_TIME_BUCKETS = 60
MAX_VALUE_BINS = 40
SCHEMA_VERSION = 1

PRIORITIES = tuple(priority.value for priority in Priority)  # critical, high, medium
CATEGORIES = tuple(category.value for category in Category)

# Bucket sizes for time panels: (Elasticsearch fixed_interval, milliseconds), smallest first.
_SECOND, _MINUTE, _HOUR, _DAY = 1_000, 60_000, 3_600_000, 86_400_000
TIME_INTERVALS: tuple[tuple[str, int], ...] = (
    ("1s", _SECOND),
    ("5s", 5 * _SECOND),
    ("10s", 10 * _SECOND),
    ("30s", 30 * _SECOND),
    ("1m", _MINUTE),
    ("5m", 5 * _MINUTE),
    ("10m", 10 * _MINUTE),
    ("30m", 30 * _MINUTE),
    ("1h", _HOUR),
    ("3h", 3 * _HOUR),
    ("6h", 6 * _HOUR),
    ("12h", 12 * _HOUR),
    ("1d", _DAY),
    ("7d", 7 * _DAY),
    ("30d", 30 * _DAY),
    ("90d", 90 * _DAY),
    ("365d", 365 * _DAY),
)
VALUE_WIDTHS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


@dataclass(frozen=True, slots=True)
class TimeSeries:
    """Counts per time bucket (epoch-ms starts, gaps filled with zeros), one series per label."""

    interval: str
    interval_ms: int
    starts: tuple[int, ...]
    series: Mapping[str, tuple[float, ...]]

    def total(self, label: str) -> float:
        return sum(self.series.get(label, ()))

    def to_json(self) -> dict[str, Any]:
        return {
            "interval": self.interval,
            "start": [iso_ms(start) for start in self.starts],
            "series": {label: list(values) for label, values in self.series.items()},
        }


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts per value bin ``[low, low + width)``; empty bins between the first and the last are filled."""

    width: float
    lows: tuple[float, ...]
    counts: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"width": self.width, "low": list(self.lows), "count": list(self.counts)}


EMPTY_HISTOGRAM = Histogram(1.0, (), ())


@dataclass
class ArchiveSummary:
    """What a pass over the normal archive found (accumulated line by line, never held in memory)."""

    exists: bool = True
    files: int = 0
    lines: int = 0
    unreadable: int = 0
    incomplete: int = 0  # a last line without its newline: being written right now
    by_category: Counter[str] = field(default_factory=Counter)
    first: datetime | None = None
    last: datetime | None = None

    def add(self, record: Mapping[str, Any]) -> None:
        self.lines += 1
        self.by_category[str(record.get("category"))] += 1
        effective = parse_time(record.get("effective"))
        if effective is not None:
            if self.first is None or effective < self.first:
                self.first = effective
            if self.last is None or effective > self.last:
                self.last = effective

    def to_json(self) -> dict[str, Any]:
        return {
            "exists": self.exists,
            "files": self.files,
            "lines": self.lines,
            "unreadable_lines": self.unreadable,
            "incomplete_lines": self.incomplete,
            "first": iso(self.first),
            "last": iso(self.last),
        }


@dataclass(frozen=True, slots=True)
class AnomalySummary:
    """Everything the report shows from the anomaly index."""

    exists: bool
    total: int = 0
    by_type: Mapping[str, int] = field(default_factory=dict)
    by_priority: Mapping[str, int] = field(default_factory=dict)
    by_category: Mapping[str, int] = field(default_factory=dict)
    first: datetime | None = None
    last: datetime | None = None
    over_time: TimeSeries | None = None
    systolic: Histogram = EMPTY_HISTOGRAM
    diastolic: Histogram = EMPTY_HISTOGRAM
    peaks_total: int = 0
    peaks: TimeSeries | None = None
    top_patients: tuple[tuple[str, int], ...] = ()
    latest_critical: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class StatsSummary:
    """Sums over the consumers' statistics windows, and the anomaly rate per time bucket."""

    exists: bool
    windows: int = 0
    total: int = 0
    normal: int = 0
    anomalies: int = 0
    rejected: int = 0
    first: datetime | None = None
    last: datetime | None = None
    rate: TimeSeries | None = None  # series "anomalies", "decided" (normal + anomalies) and "rate" (None = no data)

    def to_json(self) -> dict[str, Any]:
        return {
            "exists": self.exists,
            "windows": self.windows,
            "total": self.total,
            "normal": self.normal,
            "anomalies": self.anomalies,
            "rejected": self.rejected,
            "first_window_end": iso(self.first),
            "last_window_end": iso(self.last),
        }


SEVERITY_ORDER = {"critical": 0, "high": 1}


@dataclass(frozen=True, slots=True)
class AlertSummary:
    """The alerts index (``bp.alerts`` episodes): the open alerts, most severe and longest open first."""

    exists: bool = True
    total: int = 0
    open: tuple[Mapping[str, Any], ...] = ()
    by_status: Mapping[str, int] = field(default_factory=dict)
    by_kind: Mapping[str, int] = field(default_factory=dict)
    over_time: TimeSeries | None = None  # opened alerts per bucket of opened_at, by kind

    def rows_over_time(self) -> list[tuple[int, dict[str, float]]]:
        """(bucket start in epoch ms, count per kind) of the buckets in which alerts opened."""
        series = self.over_time
        if series is None:
            return []
        rows = [(start, {k: v[i] for k, v in series.series.items()}) for i, start in enumerate(series.starts)]
        return [(start, counts) for start, counts in rows if any(counts.values())]

    def to_json(self) -> dict[str, Any]:
        return {
            "over_time": self.over_time.to_json() if self.over_time else None,
            "exists": self.exists,
            "total": self.total,
            "by_status": dict(self.by_status),
            "by_kind": dict(self.by_kind),
            "open": list(self.open),
        }


def open_first(alerts: Iterable[Mapping[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    """Critical before high, then the longest open first."""
    return tuple(sorted(alerts, key=lambda a: (SEVERITY_ORDER.get(str(a.get("severity")), 9), str(a.get("opened_at")))))


@dataclass(frozen=True, slots=True)
class Sources:
    es_url: str
    index: str
    stats_index: str
    archive_dir: str


@dataclass(frozen=True, slots=True)
class Report:
    generated_at: datetime
    sources: Sources
    anomalies: AnomalySummary
    stats: StatsSummary
    archive: ArchiveSummary
    notes: tuple[str, ...] = ()
    alerts: AlertSummary = field(default_factory=lambda: AlertSummary(exists=False))

    @property
    def normal(self) -> int:
        return self.archive.lines

    @property
    def readings(self) -> int:
        return self.archive.lines + self.anomalies.total

    @property
    def anomaly_rate(self) -> float | None:
        return self.anomalies.total / self.readings if self.readings else None

    @property
    def actionable(self) -> int:
        return sum(self.anomalies.by_priority.get(p.value, 0) for p in (Priority.CRITICAL, Priority.HIGH))

    @property
    def rejected(self) -> int:
        return self.stats.rejected

    def summary(self) -> dict[str, Any]:
        return {
            "readings": self.readings,
            "normal": self.normal,
            "anomalies": self.anomalies.total,
            "anomaly_rate": None if self.anomaly_rate is None else round(self.anomaly_rate, 6),
            "actionable": self.actionable,
            "rejected": self.rejected,
            "anomalies_by_type": dict(self.anomalies.by_type),
            "anomalies_by_priority": dict(self.anomalies.by_priority),
            "anomalies_by_category": dict(self.anomalies.by_category),
            "normal_by_category": dict(sorted(self.archive.by_category.items())),
        }

    def to_json(self) -> dict[str, Any]:
        anomalies = self.anomalies
        empty: dict[str, Any] = {"interval": None, "start": [], "series": {}}
        return {
            "schema": SCHEMA_VERSION,
            "generated_at": iso(self.generated_at),
            "sources": {
                "es_url": self.sources.es_url,
                "index": self.sources.index,
                "stats_index": self.sources.stats_index,
                "archive_dir": self.sources.archive_dir,
            },
            "summary": self.summary(),
            "anomalies_first": iso(anomalies.first),
            "anomalies_last": iso(anomalies.last),
            "alerts": self.alerts.to_json(),
            "consumer_stats": self.stats.to_json(),
            "archive": self.archive.to_json(),
            "panels": {
                "anomalies_over_time": {
                    "title": PANELS["anomalies_over_time"],
                    **(anomalies.over_time.to_json() if anomalies.over_time else empty),
                },
                "anomaly_rate": {
                    "title": PANELS["anomaly_rate"],
                    **(self.stats.rate.to_json() if self.stats.rate else empty),
                },
                "systolic": {"title": PANELS["systolic"], **anomalies.systolic.to_json()},
                "diastolic": {"title": PANELS["diastolic"], **anomalies.diastolic.to_json()},
                "critical_peaks": {
                    "title": PANELS["critical_peaks"],
                    "total": anomalies.peaks_total,
                    **(anomalies.peaks.to_json() if anomalies.peaks else empty),
                },
                "top_patients": {
                    "title": PANELS["top_patients"],
                    "patients": [{"patient_id": p, "count": n} for p, n in anomalies.top_patients],
                },
                "latest_critical": {"title": PANELS["latest_critical"], "alerts": list(anomalies.latest_critical)},
            },
            "notes": list(self.notes),
        }


def choose_interval(span_ms: int, max_buckets: int = MAX_TIME_BUCKETS) -> tuple[str, int]:
    """The smallest bucket size that splits ``span_ms`` into at most ``max_buckets`` buckets."""
    for name, size in TIME_INTERVALS:
        if span_ms // size + 1 <= max_buckets:
            return name, size
    return TIME_INTERVALS[-1]


def choose_width(low: float | None, high: float | None, max_bins: int = MAX_VALUE_BINS) -> float:
    """A round bin width (mmHg) that splits ``[low, high]`` into at most ``max_bins`` bins."""
    if low is None or high is None:
        return VALUE_WIDTHS[2]
    for width in VALUE_WIDTHS:
        if (high - low) / width + 1 <= max_bins:
            return width
    return VALUE_WIDTHS[-1]


def time_series(
    buckets: Iterable[tuple[int, Mapping[str, float]]], interval: str, interval_ms: int, labels: Sequence[str] = ()
) -> TimeSeries:
    """Bucket counts → a gap-free series per label (``labels`` first, in order, then any others found)."""
    by_start: dict[int, Mapping[str, float]] = {int(start): counts for start, counts in buckets}
    names = list(labels)
    for counts in by_start.values():
        names.extend(label for label in counts if label not in names)
    if not by_start:
        return TimeSeries(interval, interval_ms, (), {label: () for label in names})
    first, last = min(by_start), max(by_start)
    starts = tuple(range(first, last + 1, interval_ms))
    series = {label: tuple(by_start.get(start, {}).get(label, 0) for start in starts) for label in names}
    return TimeSeries(interval, interval_ms, starts, series)


def histogram(buckets: Iterable[tuple[float, int]], width: float) -> Histogram:
    """Value-bin counts → a gap-free histogram (bins are identified by ``round(low / width)``)."""
    counts: Counter[int] = Counter()
    for low, count in buckets:
        counts[round(low / width)] += int(count)
    if not counts:
        return Histogram(width, (), ())
    steps = range(min(counts), max(counts) + 1)
    return Histogram(width, tuple(step * width for step in steps), tuple(counts.get(step, 0) for step in steps))


def public_url(url: str) -> str:
    """The URL without user name or password (the report may be shared)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def iso_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat()


def span_ms(first: datetime | None, last: datetime | None) -> int:
    if first is None or last is None:
        return 0
    return max(0, int((last - first).total_seconds() * 1000))
