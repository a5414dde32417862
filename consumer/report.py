"""``python -m consumer.report``: the Kibana dashboard as one self-contained HTML file, for users without Kibana.

Reads the anomaly index (``bp-anomalies``), the consumers' statistics index (``bp-stats``) and the normal archive
(JSON Lines under ``data/normal/``) and writes one HTML file with the dashboard's panels as inline SVG (matplotlib,
Agg, text drawn as paths), a summary and every number also as JSON (``<script type="application/json"
id="bp-report-data">``). The file references nothing outside itself: no scripts, style sheets, fonts or images to
fetch, so it opens offline.

Numbers, and where they come from:

- anomalies: documents in the anomaly index (one per anomalous reading; ``_id`` is stable, so no duplicates);
- normal: lines in the archive (one per normal reading; the consumer never writes a line twice);
- readings = normal + anomalies; anomaly rate = anomalies / readings; actionable = critical + high priority;
- rejected: the sum of ``rejected`` over the statistics documents (rejected messages go to the dead-letter topic
  only, so the statistics are the one place that counts them).

Only aggregations the stand-in supports are used (terms, filter, date_histogram with fixed_interval, histogram,
stats, sum); the time range comes from size-1 searches sorted on the date, the bucket size is chosen from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import io
import logging
import math
import os
import re
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from bp.cli import configure_logging, error_exit
from bp.clinical import HYPERTENSION, HYPERTENSIVE_CRISIS, HYPOTENSION, MODEL_RISK, Category
from bp.errors import BpError, ConfigError, EndpointError
from bp.reading import Priority
from bp.settings import Settings, load_settings

log = logging.getLogger("bp.report")

DEFAULT_OUTPUT = Path("reports/bp-report.html")
LATEST_ALERTS = 20
TOP_PATIENTS = 10
MAX_TIME_BUCKETS = 60
MAX_VALUE_BINS = 40
PROGRESS_EVERY_S = 5.0
SCHEMA_VERSION = 1

ANOMALY_TYPES = (HYPOTENSION, HYPERTENSION, HYPERTENSIVE_CRISIS, MODEL_RISK)
PRIORITIES = tuple(priority.value for priority in Priority)  # critical, high, medium
CATEGORIES = tuple(category.value for category in Category)

# The dashboard's panels (docker/kibana/build_objects.py): same titles, same definitions.
PANELS: dict[str, str] = {
    "anomalies_over_time": "Anomalies over time by type",
    "anomaly_rate": "Anomaly rate over time",
    "systolic": "Systolic pressure among anomalies (mmHg)",
    "diastolic": "Diastolic pressure among anomalies (mmHg)",
    "critical_peaks": "Critical peaks over time",
    "top_patients": "Patients with the most critical readings",
    "latest_critical": "Latest critical alerts",
}
CRITICAL_QUERY: dict[str, Any] = {"term": {"priority": Priority.CRITICAL.value}}
# Kibana: priority : "critical" or category : "hypertensive_crisis"
PEAKS_QUERY: dict[str, Any] = {
    "bool": {
        "should": [{"term": {"priority": Priority.CRITICAL.value}}, {"term": {"category": Category.CRISIS.value}}],
        "minimum_should_match": 1,
    }
}
ALERT_FIELDS = (
    "effective",
    "patient_id",
    "systolic",
    "diastolic",
    "category",
    "priority",
    "ml_risk",
    "anomaly_types",
    "rules_fired",
    "observation_id",
)

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

COLOURS = {
    HYPOTENSION: "#1f77b4",
    HYPERTENSION: "#ff7f0e",
    HYPERTENSIVE_CRISIS: "#d62728",
    MODEL_RISK: "#9467bd",
    Category.NORMAL.value: "#2ca02c",
    Category.ELEVATED.value: "#bcbd22",
    Category.STAGE_1.value: "#ff7f0e",
    Category.STAGE_2.value: "#e15759",
    Category.CRISIS.value: "#8c1515",
}


# ---------------------------------------------------------------------------------------------------- values
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
            "start": [_iso_ms(start) for start in self.starts],
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
        effective = _parse_time(record.get("effective"))
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
            "first": _iso(self.first),
            "last": _iso(self.last),
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
            "first_window_end": _iso(self.first),
            "last_window_end": _iso(self.last),
        }


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
            "generated_at": _iso(self.generated_at),
            "sources": {
                "es_url": self.sources.es_url,
                "index": self.sources.index,
                "stats_index": self.sources.stats_index,
                "archive_dir": self.sources.archive_dir,
            },
            "summary": self.summary(),
            "anomalies_first": _iso(anomalies.first),
            "anomalies_last": _iso(anomalies.last),
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


# ------------------------------------------------------------------------------------------- pure helpers
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


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _iso_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat()


def _span_ms(first: datetime | None, last: datetime | None) -> int:
    if first is None or last is None:
        return 0
    return max(0, int((last - first).total_seconds() * 1000))


# ------------------------------------------------------------------------------------------------- archive
def scan_archive(root: Path) -> ArchiveSummary:
    """Count the normal archive's readings file by file, line by line (the archive may be large)."""
    summary = ArchiveSummary()
    if not root.is_dir():
        summary.exists = False
        return summary
    next_progress = time.monotonic() + PROGRESS_EVERY_S
    for path in sorted(root.glob("*/*.jsonl")):
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


# --------------------------------------------------------------------------------------------- elasticsearch
def _call(what: str, function: Any, **kwargs: Any) -> Any:
    """One Elasticsearch request; failures become one readable EndpointError."""
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    try:
        return function(**kwargs)
    except ApiError as exc:
        raise EndpointError(f"Elasticsearch refused the {what} query: {exc.message} ({exc.meta.status})") from None
    except TransportError as exc:
        raise EndpointError(f"Elasticsearch failed during the {what} query: {type(exc).__name__}: {exc}") from None


def _exists(es: Any, index: str) -> bool:
    """Whether the index exists; if it does, refresh it so that every acknowledged document is counted."""
    from elasticsearch import ApiError

    if not _call(f"exists {index}", es.indices.exists, index=index):
        return False
    try:  # the consumer may have written a moment ago (the stand-in answers the first search with stale data)
        es.indices.refresh(index=index)
    except ApiError as exc:  # e.g. a read-only user without the "maintenance" privilege: report what is visible
        log.warning("could not refresh %s (%s): documents of the last second may be missing", index, exc.meta.status)
    return True


def _edge_time(
    es: Any, index: str, field_name: str, order: str, query: dict[str, Any] | None = None
) -> datetime | None:
    """The first or last value of a date field (min/max aggregations on dates are not available everywhere)."""
    result = _call(
        f"{order} {field_name}",
        es.search,
        index=index,
        size=1,
        query=query or {"exists": {"field": field_name}},
        sort=[{field_name: {"order": order}}],
        source=[field_name],
    )
    hits = result["hits"]["hits"]
    return _parse_time(hits[0]["_source"].get(field_name)) if hits else None


def _terms(aggregation: Mapping[str, Any]) -> dict[str, int]:
    return {str(bucket["key"]): int(bucket["doc_count"]) for bucket in aggregation.get("buckets", [])}


def _with_known(counts: Mapping[str, int], known: Sequence[str]) -> dict[str, int]:
    """Known keys first (zeros included) in their order, then any others by count."""
    ordered = {key: counts.get(key, 0) for key in known}
    ordered.update(sorted(((k, v) for k, v in counts.items() if k not in ordered), key=lambda kv: (-kv[1], kv[0])))
    return ordered


def _total(result: Mapping[str, Any]) -> int:
    total = result["hits"]["total"]
    return int(total["value"] if isinstance(total, Mapping) else total)


def query_anomalies(es: Any, index: str) -> AnomalySummary:
    """Counts, distributions, time series and the latest critical alerts of the anomaly index."""
    if not _exists(es, index):
        return AnomalySummary(exists=False)
    overview = _call(
        "overview",
        es.search,
        index=index,
        size=0,
        track_total_hits=True,
        aggs={
            "by_type": {"terms": {"field": "anomaly_types", "size": 50}},
            "by_priority": {"terms": {"field": "priority", "size": 50}},
            "by_category": {"terms": {"field": "category", "size": 50}},
            "systolic": {"stats": {"field": "systolic"}},
            "diastolic": {"stats": {"field": "diastolic"}},
            "peaks": {"filter": PEAKS_QUERY},
        },
    )
    total = _total(overview)
    aggs = overview["aggregations"]
    first = _edge_time(es, index, "effective", "asc")
    last = _edge_time(es, index, "effective", "desc")
    interval, interval_ms = choose_interval(_span_ms(first, last))
    widths = {name: choose_width(aggs[name].get("min"), aggs[name].get("max")) for name in ("systolic", "diastolic")}
    by_type_over_time = {"terms": {"field": "anomaly_types", "size": 50}}
    detail = _call(
        "panels",
        es.search,
        index=index,
        size=0,
        aggs={
            "over_time": {
                "date_histogram": {"field": "effective", "fixed_interval": interval},
                "aggs": {"types": by_type_over_time},
            },
            "systolic": {"histogram": {"field": "systolic", "interval": widths["systolic"]}},
            "diastolic": {"histogram": {"field": "diastolic", "interval": widths["diastolic"]}},
            "peaks": {
                "filter": PEAKS_QUERY,
                "aggs": {
                    "over_time": {
                        "date_histogram": {"field": "effective", "fixed_interval": interval},
                        "aggs": {"categories": {"terms": {"field": "category", "size": 50}}},
                    },
                    "patients": {"terms": {"field": "patient_id", "size": TOP_PATIENTS}},
                },
            },
        },
    )["aggregations"]
    latest = _call(
        "latest critical alerts",
        es.search,
        index=index,
        size=LATEST_ALERTS,
        query=CRITICAL_QUERY,
        sort=[{"effective": {"order": "desc"}}, {"observation_id": {"order": "asc"}}],
        source=list(ALERT_FIELDS),
    )
    over_time = time_series(
        ((b["key"], _terms(b["types"])) for b in detail["over_time"]["buckets"]), interval, interval_ms, ANOMALY_TYPES
    )
    peaks = time_series(
        ((b["key"], _terms(b["categories"])) for b in detail["peaks"]["over_time"]["buckets"]),
        interval,
        interval_ms,
        (Category.CRISIS.value, Category.STAGE_2.value),
    )
    return AnomalySummary(
        exists=True,
        total=total,
        by_type=_with_known(_terms(aggs["by_type"]), ANOMALY_TYPES),
        by_priority=_with_known(_terms(aggs["by_priority"]), PRIORITIES),
        by_category=_with_known(_terms(aggs["by_category"]), CATEGORIES),
        first=first,
        last=last,
        over_time=over_time,
        systolic=histogram(((b["key"], b["doc_count"]) for b in detail["systolic"]["buckets"]), widths["systolic"]),
        diastolic=histogram(((b["key"], b["doc_count"]) for b in detail["diastolic"]["buckets"]), widths["diastolic"]),
        peaks_total=int(aggs["peaks"]["doc_count"]),
        peaks=peaks,
        top_patients=tuple(
            (str(b["key"]), int(b["doc_count"])) for b in detail["peaks"]["patients"].get("buckets", [])
        ),
        latest_critical=tuple(hit["_source"] for hit in latest["hits"]["hits"]),
    )


def _sum(aggregations: Mapping[str, Any], name: str) -> int:
    return round(aggregations[name].get("value") or 0)


def query_stats(es: Any, index: str) -> StatsSummary:
    """Totals over the statistics windows and the anomaly rate per bucket of ``window_end``."""
    if not _exists(es, index):
        return StatsSummary(exists=False)
    sums = {name: {"sum": {"field": name}} for name in ("total", "normal", "anomalies", "rejected")}
    overview = _call("statistics", es.search, index=index, size=0, track_total_hits=True, aggs=sums)
    aggs = overview["aggregations"]
    first = _edge_time(es, index, "window_end", "asc")
    last = _edge_time(es, index, "window_end", "desc")
    interval, interval_ms = choose_interval(_span_ms(first, last))
    buckets = _call(
        "anomaly rate",
        es.search,
        index=index,
        size=0,
        aggs={
            "rate": {
                "date_histogram": {"field": "window_end", "fixed_interval": interval},
                "aggs": {"anomalies": {"sum": {"field": "anomalies"}}, "normal": {"sum": {"field": "normal"}}},
            }
        },
    )["aggregations"]["rate"]["buckets"]
    counts = time_series(
        (
            (b["key"], {"anomalies": _sum(b, "anomalies"), "decided": _sum(b, "anomalies") + _sum(b, "normal")})
            for b in buckets
        ),
        interval,
        interval_ms,
        ("anomalies", "decided"),
    )
    rate = tuple(
        (a / d if d else float("nan"))
        for a, d in zip(counts.series["anomalies"], counts.series["decided"], strict=True)
    )
    return StatsSummary(
        exists=True,
        windows=_total(overview),
        total=_sum(aggs, "total"),
        normal=_sum(aggs, "normal"),
        anomalies=_sum(aggs, "anomalies"),
        rejected=_sum(aggs, "rejected"),
        first=first,
        last=last,
        rate=TimeSeries(interval, interval_ms, counts.starts, {**counts.series, "rate": rate}),
    )


def consistency_notes(report: Report) -> list[str]:
    """Plain-language notes where the sources disagree or are missing."""
    notes: list[str] = []
    sources, stats, archive = report.sources, report.stats, report.archive
    if not report.anomalies.exists:
        notes.append(f"The anomaly index {sources.index} does not exist: no anomalies are shown.")
    if not stats.exists:
        notes.append(
            f"The statistics index {sources.stats_index} does not exist: no anomaly rate over time, rejected = 0."
        )
    if not archive.exists:
        notes.append(f"The archive directory {sources.archive_dir} does not exist: normal = 0.")
    if archive.unreadable:
        notes.append(f"{archive.unreadable} archive lines are not valid JSON and were not counted.")
    if archive.incomplete:
        notes.append(f"{archive.incomplete} archive lines were still being written and were not counted.")
    if stats.windows and (stats.normal != report.normal or stats.anomalies != report.anomalies.total):
        notes.append(
            f"The consumers' statistics windows count {stats.normal} normal readings and {stats.anomalies} "
            f"anomalies; the archive holds {report.normal} and the index {report.anomalies.total}. They differ "
            "when the archive or the index hold readings of other runs, when a consumer is still running "
            "(its current window is not written yet), or when a batch was replayed after a crash (the "
            "archive and the index never duplicate a reading; a replayed window is counted again)."
        )
    return notes


# ------------------------------------------------------------------------------------------------ plotting
def _figure(width: float = 7.2, height: float = 3.3) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure


def _svg(figure: Any, prefix: str, title: str) -> str:
    """The figure as an inline ``<svg>`` element: text as paths (no fonts), ids unique within the page."""
    import matplotlib

    buffer = io.StringIO()
    with warnings.catch_warnings(), matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": prefix}):
        warnings.simplefilter("ignore", UserWarning)  # tick-locator advice on odd ranges: not for the user
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    ids = set(re.findall(r'\bid="([^"]+)"', text))

    def rename(match: re.Match[str]) -> str:
        name = match.group(2)
        return match.group(1) + f"{prefix}-{name}" if name in ids else match.group(0)

    text = re.sub(r'(\bid="|href="#|url\(#)([^")]+)', rename, text)
    text = re.sub(r'\s(width|height)="[^"]*pt"', "", text, count=2)
    return text.replace("<svg ", f'<svg role="img" aria-label="{html.escape(title)}" ', 1)


def _no_data(axes: Any, text: str = "no data") -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="#777777")
    axes.set_xticks([])
    axes.set_yticks([])


def _time_axis(axes: Any, series: TimeSeries) -> None:
    """UTC date ticks over the whole bucket range (also when there is a single bucket)."""
    import matplotlib.dates as mdates

    end = series.starts[-1] + series.interval_ms
    axes.set_xlim(datetime.fromtimestamp(series.starts[0] / 1000, UTC), datetime.fromtimestamp(end / 1000, UTC))

    locator = mdates.AutoDateLocator(tz=UTC, maxticks=8)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))  # type: ignore[no-untyped-call]
    axes.set_xlabel("UTC")


def plot_stacked_time(series: TimeSeries | None, ylabel: str, prefix: str, title: str) -> str:
    figure = _figure()
    axes = figure.add_subplot()
    if series is None or not series.starts:
        _no_data(axes)
        return _svg(figure, prefix, title)
    starts = [datetime.fromtimestamp(start / 1000, UTC) for start in series.starts]
    width = series.interval_ms / 86_400_000
    bottom = [0.0] * len(starts)
    for label, values in series.series.items():
        if not any(values):
            continue
        axes.bar(starts, values, width=width, bottom=bottom, align="edge", label=label, color=COLOURS.get(label))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axes.set_ylabel(ylabel)
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.legend(fontsize="small", loc="upper left", frameon=False)
    _time_axis(axes, series)
    axes.set_title(f"per {series.interval}", fontsize="small", loc="right", color="#555555")
    return _svg(figure, prefix, title)


def plot_rate(stats: StatsSummary, prefix: str, title: str) -> str:
    from matplotlib.ticker import PercentFormatter

    figure = _figure()
    axes = figure.add_subplot()
    series = stats.rate
    if series is None or not series.starts:
        _no_data(axes)
        return _svg(figure, prefix, title)
    half = series.interval_ms / 2
    points = [
        (datetime.fromtimestamp((start + half) / 1000, UTC), rate)  # at the middle of the bucket
        for start, rate in zip(series.starts, series.series["rate"], strict=True)
        if not math.isnan(rate)  # empty buckets (NaN) are skipped: the line joins the buckets that have windows
    ]
    rates = [rate for _, rate in points]
    if points:
        axes.plot(*zip(*points, strict=True), marker="o", markersize=3, color="#d62728", label="per bucket")
    decided = stats.normal + stats.anomalies
    if decided:
        overall = stats.anomalies / decided
        rates.append(overall)
        axes.axhline(overall, linestyle="--", color="#555555", linewidth=1, label=f"all windows {overall:.1%}")
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_ylim(0, min(1.05, max(rates, default=0.0) * 1.3) or 0.05)
    axes.set_ylabel("anomalies / readings")
    axes.legend(fontsize="small", loc="lower right", frameon=True, framealpha=0.8)
    _time_axis(axes, series)
    axes.set_title(f"per {series.interval} of window end", fontsize="small", loc="right", color="#555555")
    return _svg(figure, prefix, title)


def plot_histogram(values: Histogram, xlabel: str, colour: str, prefix: str, title: str) -> str:
    figure = _figure()
    axes = figure.add_subplot()
    if not values.counts:
        _no_data(axes)
        return _svg(figure, prefix, title)
    axes.bar(values.lows, values.counts, width=values.width, align="edge", color=colour, edgecolor="white")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("anomalies")
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.set_title(f"bins of {values.width:g} mmHg", fontsize="small", loc="right", color="#555555")
    return _svg(figure, prefix, title)


def plot_top_patients(patients: Sequence[tuple[str, int]], prefix: str, title: str) -> str:
    figure = _figure(width=5.0)
    axes = figure.add_subplot()
    if not patients:
        _no_data(axes)
        return _svg(figure, prefix, title)
    names = [name for name, _ in reversed(patients)]
    counts = [count for _, count in reversed(patients)]
    axes.barh(range(len(names)), counts, color=COLOURS[HYPERTENSIVE_CRISIS])
    axes.set_yticks(range(len(names)), names, fontsize="small")
    axes.set_xlabel("critical readings")
    axes.xaxis.get_major_locator().set_params(integer=True)
    return _svg(figure, prefix, title)


# -------------------------------------------------------------------------------------------------- HTML
CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5rem auto; max-width: 1280px;
       padding: 0 1rem; color: #1a1a1a; background: #fafafa; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.1rem; margin: 0 0 .5rem; }
.meta { color: #555; font-size: .85rem; margin-bottom: 1rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: .75rem; margin: 1rem 0; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .75rem 1rem; }
.card .label { font-size: .8rem; color: #555; }
.card .value { font-size: 1.6rem; font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 1rem; }
.panel { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .75rem 1rem; margin-bottom: 1rem;
         overflow-x: auto; }
.panel svg { width: 100%; height: auto; display: block; }
.caption { font-size: .8rem; color: #555; margin: .3rem 0 0; }
table { border-collapse: collapse; font-size: .85rem; width: 100%; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #eee; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.notes { background: #fff8e1; border: 1px solid #f0d98c; border-radius: 6px; padding: .5rem 1rem; }
.breakdown { display: grid; grid-template-columns: repeat(auto-fit, minmax(240px, 1fr)); gap: 1rem; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _count_text(value: int) -> str:
    return f"{value:,}"


def _rate_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def _time_text(value: datetime | str | None) -> str:
    parsed = value if isinstance(value, datetime) else _parse_time(value)
    if parsed is None:
        return "—" if value is None else str(value)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _card(metric: str, label: str, value: int | float | None, text: str) -> str:
    raw = "" if value is None else (f"{value:.6f}" if isinstance(value, float) else str(value))
    return (
        f'<div class="card" data-metric="{_e(metric)}" data-value="{_e(raw)}">'
        f'<div class="label">{_e(label)}</div><div class="value">{_e(text)}</div></div>'
    )


def _counts_table(metric: str, heading: str, counts: Mapping[str, int], total: int | None = None) -> str:
    rows = []
    for key, count in counts.items():
        share = f"{count / total:.1%}" if total else ""
        rows.append(
            f'<tr data-metric="{_e(metric)}" data-key="{_e(key)}" data-value="{count}">'
            f'<td>{_e(key)}</td><td class="num">{_count_text(count)}</td><td class="num">{share}</td></tr>'
        )
    body = "".join(rows) or '<tr><td colspan="3">none</td></tr>'
    return (
        f'<div><h3>{_e(heading)}</h3><table><thead><tr><th></th><th class="num">count</th>'
        f'<th class="num">share</th></tr></thead><tbody>{body}</tbody></table></div>'
    )


def _panel(panel_id: str, body: str, caption: str = "") -> str:
    caption_html = f'<p class="caption">{_e(caption)}</p>' if caption else ""
    return (
        f'<section class="panel" id="panel-{_e(panel_id)}" data-panel="{_e(panel_id)}">'
        f"<h2>{_e(PANELS[panel_id])}</h2>{body}{caption_html}</section>"
    )


def _alerts_table(alerts: Sequence[Mapping[str, Any]]) -> str:
    headings = ("time", "patient", "systolic", "diastolic", "category", "priority", "ML risk", "anomaly types")
    numeric = ("systolic", "diastolic", "ML risk")
    head = "".join(f'<th class="{"num" if h in numeric else ""}">{_e(h)}</th>' for h in headings)
    rows = []
    for alert in alerts:
        risk = alert.get("ml_risk")
        types = alert.get("anomaly_types") or []
        cells = (
            f"<td>{_e(_time_text(alert.get('effective')))}</td>",
            f"<td>{_e(alert.get('patient_id'))}</td>",
            f'<td class="num">{_e(_number(alert.get("systolic")))}</td>',
            f'<td class="num">{_e(_number(alert.get("diastolic")))}</td>',
            f"<td>{_e(alert.get('category'))}</td>",
            f"<td>{_e(alert.get('priority'))}</td>",
            f'<td class="num">{"—" if risk is None else _e(f"{float(risk):.3f}")}</td>',
            f"<td>{_e(', '.join(str(t) for t in types) if isinstance(types, list) else types)}</td>",
        )
        rows.append(f'<tr data-observation-id="{_e(alert.get("observation_id"))}">{"".join(cells)}</tr>')
    body = "".join(rows) or f'<tr><td colspan="{len(headings)}">no critical alerts</td></tr>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _json_script(data: Mapping[str, Any]) -> str:
    """JSON safe inside ``<script>`` (``<``, ``>``, ``&`` escaped as ``\\u003c``...); NaN (no data) becomes null."""
    text = orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str).decode()
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="bp-report-data">{text}</script>'


def render_html(report: Report) -> str:
    """The whole report as one HTML document (no external resources)."""
    anomalies, stats, archive, sources = report.anomalies, report.stats, report.archive, report.sources
    cards = "".join(
        (
            _card("readings", "Readings", report.readings, _count_text(report.readings)),
            _card("normal", "Normal", report.normal, _count_text(report.normal)),
            _card("anomalies", "Anomalies", anomalies.total, _count_text(anomalies.total)),
            _card("anomaly_rate", "Anomaly rate", report.anomaly_rate, _rate_text(report.anomaly_rate)),
            _card(
                "actionable", "Actionable alerts (critical + high)", report.actionable, _count_text(report.actionable)
            ),
            _card("rejected", "Rejected messages", report.rejected, _count_text(report.rejected)),
        )
    )
    breakdown = "".join(
        (
            _counts_table("anomalies_by_type", "Anomalies by type", anomalies.by_type, anomalies.total),
            _counts_table("anomalies_by_priority", "Anomalies by priority", anomalies.by_priority, anomalies.total),
            _counts_table("anomalies_by_category", "Anomalies by category", anomalies.by_category, anomalies.total),
            _counts_table(
                "normal_by_category",
                "Normal readings by category",
                dict(sorted(archive.by_category.items())),
                archive.lines,
            ),
        )
    )
    panels_top = "".join(
        (
            _panel(
                "anomalies_over_time",
                plot_stacked_time(anomalies.over_time, "anomalies", "f1", PANELS["anomalies_over_time"]),
                "By the reading's time (effective). A reading with several anomaly types counts once per type.",
            ),
            _panel(
                "anomaly_rate",
                plot_rate(stats, "f2", PANELS["anomaly_rate"]),
                f"From the consumers' statistics windows ({sources.stats_index}): sum(anomalies) / sum(normal + "
                "anomalies) per bucket of window end (processing time, not reading time); dashed: over all "
                "windows.",
            ),
            _panel(
                "systolic",
                plot_histogram(anomalies.systolic, "systolic (mmHg)", COLOURS[HYPERTENSION], "f3", PANELS["systolic"]),
            ),
            _panel(
                "diastolic",
                plot_histogram(
                    anomalies.diastolic, "diastolic (mmHg)", COLOURS[HYPOTENSION], "f4", PANELS["diastolic"]
                ),
            ),
            _panel(
                "critical_peaks",
                plot_stacked_time(anomalies.peaks, "critical readings", "f5", PANELS["critical_peaks"]),
                f"Readings with priority critical or category hypertensive_crisis, by category "
                f"({_count_text(anomalies.peaks_total)} in all).",
            ),
            _panel(
                "top_patients",
                plot_top_patients(anomalies.top_patients, "f6", PANELS["top_patients"]),
                f"Top {TOP_PATIENTS} patients by readings with priority critical or category hypertensive_crisis.",
            ),
        )
    )
    latest = _panel(
        "latest_critical",
        _alerts_table(anomalies.latest_critical),
        f"The {LATEST_ALERTS} most recent readings with priority critical, newest first.",
    )
    notes = "".join(f"<li>{_e(note)}</li>" for note in report.notes)
    notes_html = f'<div class="notes"><strong>Notes</strong><ul>{notes}</ul></div>' if notes else ""
    coverage = (
        f"Anomalies from {_time_text(anomalies.first)} to {_time_text(anomalies.last)}; "
        f"normal readings from {_time_text(archive.first)} to {_time_text(archive.last)} "
        f"({_count_text(archive.files)} archive files); {_count_text(stats.windows)} statistics windows."
    )
    meta = (
        f"Generated {_time_text(report.generated_at)} from Elasticsearch {_e(sources.es_url)} "
        f"(anomalies: <code>{_e(sources.index)}</code>, statistics: <code>{_e(sources.stats_index)}</code>) and the "
        f"archive <code>{_e(sources.archive_dir)}</code>.<br>{_e(coverage)}"
    )
    data = _json_script(report.to_json())
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Blood pressure surveillance — bp-stream report</title>"
        f"<style>{CSS}</style></head><body>"
        "<h1>Blood pressure surveillance</h1>"
        f'<p class="meta">{meta}</p>'
        f'<section id="summary"><h2>Summary</h2><div class="cards">{cards}</div>{notes_html}'
        f'<div class="breakdown">{breakdown}</div></section>'
        f'<div class="grid">{panels_top}</div>{latest}'
        f"{data}</body></html>\n"
    )


# ------------------------------------------------------------------------------------------------- output
def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise ConfigError(f"--output {path} is a directory; give a file name")
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise BpError(f"cannot write the report to {path}: {exc.strerror or exc}") from None


def build_report(settings: Settings) -> Report:
    from consumer.consumer import make_es

    es = make_es(settings)
    try:
        log.info("querying %s and %s at %s", settings.index, settings.stats_index, public_url(settings.es_url))
        anomalies = query_anomalies(es, settings.index)
        stats = query_stats(es, settings.stats_index)
    finally:
        es.close()
    log.info("reading the archive %s", settings.archive_dir)
    archive = scan_archive(settings.archive_dir)
    report = Report(
        generated_at=datetime.now(UTC),
        sources=Sources(public_url(settings.es_url), settings.index, settings.stats_index, str(settings.archive_dir)),
        anomalies=anomalies,
        stats=stats,
        archive=archive,
    )
    notes = consistency_notes(report)
    for note in notes:
        log.warning("%s", note)
    return dataclasses.replace(report, notes=tuple(notes))


def headline(report: Report) -> str:
    return (
        f"readings {report.readings}, normal {report.normal}, anomalies {report.anomalies.total} "
        f"(rate {_rate_text(report.anomaly_rate)}), actionable {report.actionable}, rejected {report.rejected}"
    )


# ---------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m consumer.report",
        description="Write one self-contained HTML report (the Kibana dashboard's panels and summary numbers) "
        "from the anomaly index, the statistics index and the normal archive. Opens without network.",
        epilog="Credentials and TLS come from the environment like the consumer's: BP_ES_USERNAME, "
        "BP_ES_PASSWORD, BP_ES_API_KEY, BP_ES_CA_CERT.",
    )
    add = parser.add_argument
    add("--output", type=Path, default=DEFAULT_OUTPUT, help=f"HTML file to write (default {DEFAULT_OUTPUT})")
    add("--es-url", help="Elasticsearch URL (env BP_ES_URL; default http://localhost:9200)")
    add("--index", help="anomaly index (env BP_INDEX; default bp-anomalies)")
    add("--stats-index", help="statistics index (env BP_STATS_INDEX; default bp-stats)")
    add("--archive-dir", type=Path, help="normal-reading archive directory (env BP_ARCHIVE_DIR; default data/normal)")
    add("--quiet", action="store_true", help="warnings and errors only")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("report", args.quiet)
    try:
        settings = load_settings(
            es_url=args.es_url, index=args.index, stats_index=args.stats_index, archive_dir=args.archive_dir
        )
        if args.output.is_dir():  # checked again when writing; fail before the queries if it is wrong already
            raise ConfigError(f"--output {args.output} is a directory; give a file name")
        report = build_report(settings)
        write_atomic(args.output, render_html(report))
    except BpError as exc:
        return error_exit("report", exc)
    except KeyboardInterrupt:
        print("report: interrupted; no report written", file=sys.stderr)
        return 130
    print(f"report: wrote {args.output}")
    print(f"report: {headline(report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
