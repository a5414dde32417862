"""The Elasticsearch side of the report: the dashboard's queries on the anomaly and statistics indices.

Only aggregations the stand-in supports are used (terms, filter, date_histogram with fixed_interval, histogram,
stats, sum); the time range comes from size-1 searches sorted on the date, the bucket size is chosen from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from bp.alerts import AlertKind
from bp.clinical import ANOMALY_TYPES, Category
from bp.errors import EndpointError
from bp.reading import Priority
from consumer.report.model import (
    CATEGORIES,
    LATEST_ALERTS,
    PRIORITIES,
    TOP_PATIENTS,
    AlertSummary,
    AnomalySummary,
    StatsSummary,
    TimeSeries,
    choose_interval,
    choose_width,
    histogram,
    open_first,
    parse_time,
    span_ms,
    time_series,
)

OPEN_ALERTS = 100  # at most this many open alerts listed
ALERT_KINDS = tuple(kind.value for kind in AlertKind)

log = logging.getLogger("bp.report")


class Indices(Protocol):
    def exists(self, *, index: str) -> Any: ...
    def refresh(self, *, index: str) -> Any: ...


class SearchClient(Protocol):
    """What the report needs of an Elasticsearch client (``elasticsearch.Elasticsearch`` has it; so can a fake)."""

    @property
    def indices(self) -> Indices: ...
    @property
    def search(self) -> Callable[..., Any]: ...


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


def _call(what: str, function: Callable[..., Any], **kwargs: Any) -> Any:
    """One Elasticsearch request; failures become one readable EndpointError."""
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    try:
        return function(**kwargs)
    except ApiError as exc:
        raise EndpointError(f"Elasticsearch refused the {what} query: {exc.message} ({exc.meta.status})") from None
    except TransportError as exc:
        raise EndpointError(f"Elasticsearch failed during the {what} query: {type(exc).__name__}: {exc}") from None


def _exists(es: SearchClient, index: str) -> bool:
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
    es: SearchClient, index: str, field_name: str, order: str, query: dict[str, Any] | None = None
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
    return parse_time(hits[0]["_source"].get(field_name)) if hits else None


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


def query_alerts(es: SearchClient, index: str) -> AlertSummary:
    """The alerts index: counts by status and kind, and the open alerts (most severe, longest open first)."""
    if not _exists(es, index):
        return AlertSummary(exists=False)
    result = _call(
        "alerts",
        es.search,
        index=index,
        size=OPEN_ALERTS,
        track_total_hits=True,
        query={"term": {"status": "open"}},
        sort=[{"opened_at": {"order": "asc"}}],
        aggs={},
    )
    overview = _call(
        "alert counts",
        es.search,
        index=index,
        size=0,
        track_total_hits=True,
        aggs={
            "by_status": {"terms": {"field": "status", "size": 10}},
            "by_kind": {"terms": {"field": "kind", "size": 10}},
        },
    )
    aggs = overview["aggregations"]
    interval, interval_ms = choose_interval(
        span_ms(_edge_time(es, index, "opened_at", "asc"), _edge_time(es, index, "opened_at", "desc"))
    )
    buckets = _call(
        "alerts over time",
        es.search,
        index=index,
        size=0,
        aggs={
            "over_time": {
                "date_histogram": {"field": "opened_at", "fixed_interval": interval},
                "aggs": {"kinds": {"terms": {"field": "kind", "size": 10}}},
            }
        },
    )["aggregations"]["over_time"]["buckets"]
    return AlertSummary(
        exists=True,
        over_time=time_series(((b["key"], _terms(b["kinds"])) for b in buckets), interval, interval_ms, ALERT_KINDS),
        total=_total(overview),
        open=open_first(hit["_source"] for hit in result["hits"]["hits"]),
        by_status=_terms(aggs["by_status"]),
        by_kind=_terms(aggs["by_kind"]),
    )


def query_anomalies(es: SearchClient, index: str) -> AnomalySummary:
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
    interval, interval_ms = choose_interval(span_ms(first, last))
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


def query_stats(es: SearchClient, index: str) -> StatsSummary:
    """Totals over the statistics windows and the anomaly rate per bucket of ``window_end``."""
    if not _exists(es, index):
        return StatsSummary(exists=False)
    sums = {name: {"sum": {"field": name}} for name in ("total", "normal", "anomalies", "rejected")}
    overview = _call("statistics", es.search, index=index, size=0, track_total_hits=True, aggs=sums)
    aggs = overview["aggregations"]
    first = _edge_time(es, index, "window_end", "asc")
    last = _edge_time(es, index, "window_end", "desc")
    interval, interval_ms = choose_interval(span_ms(first, last))
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
