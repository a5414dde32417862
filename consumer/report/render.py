"""The report as one HTML page: a Jinja2 template (autoescaped) filled from a ``Report``.

``templates/report.html.j2`` holds the page; this module only prepares what it shows (charts, panels, cards) and
the formatting filters. The page is self-contained: styles inline, charts as ``data:`` URLs, no scripts except
the JSON data block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from bp.alerts import AlertKind
from bp.clinical import HYPERTENSION, HYPOTENSION
from bp.dashboard import ACTIONABLE_TITLE, ANOMALIES_TITLE, DASHBOARD_TITLE, MULTI_TYPE_NOTE, PANELS, PEAKS_NOTE
from consumer.report.charts import (
    COLOURS,
    Chart,
    plot_histogram,
    plot_rate,
    plot_stacked_time,
    plot_top_patients,
)
from consumer.report.model import LATEST_ALERTS, TOP_PATIENTS, Report, parse_time

TEMPLATE = "report.html.j2"


@dataclass(frozen=True, slots=True)
class Card:
    metric: str
    label: str
    value: int | float | None
    text: str


@dataclass(frozen=True, slots=True)
class Counts:
    metric: str
    heading: str
    counts: Mapping[str, int]
    total: int


@dataclass(frozen=True, slots=True)
class Panel:
    id: str
    chart: Chart
    caption: str = ""

    @property
    def title(self) -> str:
        return PANELS[self.id]


# ----------------------------------------------------------------------------------------------- filters
def count_text(value: int) -> str:
    return f"{value:,}"


def rate_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def time_text(value: datetime | str | None) -> str:
    parsed = value if isinstance(value, datetime) else parse_time(value)
    if parsed is None:
        return "—" if value is None else str(value)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def epoch_ms_text(value: int) -> str:
    return time_text(datetime.fromtimestamp(value / 1000, UTC))


def number_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def raw_value(value: int | float | None) -> str:
    """A card's machine-readable value (``data-value``)."""
    return "" if value is None else (f"{value:.6f}" if isinstance(value, float) else str(value))


def share_text(count: int, total: int) -> str:
    return f"{count / total:.1%}" if total else ""


def risk_text(value: Any) -> str:
    return "—" if value is None else f"{float(value):.3f}"


def list_text(value: Sequence[Any] | str | None) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value)
    return "" if value is None else str(value)


def _json(data: Any, **_: Any) -> str:
    """``tojson``: orjson, keys sorted, NaN (no data) as null; Jinja escapes ``<``, ``>``, ``&``, ``'`` after."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str).decode()


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("consumer.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=lambda value: "" if value is None else value,
    )
    env.filters.update(
        count=count_text,
        rate=rate_text,
        time=time_text,
        epoch_ms_time=epoch_ms_text,
        number=number_text,
        raw=raw_value,
        share=share_text,
        risk=risk_text,
        list=list_text,
    )
    env.policies["json.dumps_function"] = _json
    env.policies["json.dumps_kwargs"] = {}
    return env


# ------------------------------------------------------------------------------------------------- page
def cards(report: Report) -> list[Card]:
    return [
        Card("readings", "Readings", report.readings, count_text(report.readings)),
        Card("normal", "Normal", report.normal, count_text(report.normal)),
        Card("anomalies", ANOMALIES_TITLE, report.anomalies.total, count_text(report.anomalies.total)),
        Card("anomaly_rate", "Anomaly rate", report.anomaly_rate, rate_text(report.anomaly_rate)),
        Card("actionable", ACTIONABLE_TITLE, report.actionable, count_text(report.actionable)),
        Card("rejected", "Rejected messages", report.rejected, count_text(report.rejected)),
    ]


def breakdown(report: Report) -> list[Counts]:
    anomalies, archive = report.anomalies, report.archive
    return [
        Counts("anomalies_by_type", "Anomalies by type", anomalies.by_type, anomalies.total),
        Counts("anomalies_by_priority", "Anomalies by priority", anomalies.by_priority, anomalies.total),
        Counts("anomalies_by_category", "Anomalies by category", anomalies.by_category, anomalies.total),
        Counts("normal_by_category", "Normal readings by category", dict(sorted(archive.by_category.items())),
               archive.lines),
    ]  # fmt: skip


def panels(report: Report) -> list[Panel]:
    anomalies, stats = report.anomalies, report.stats
    return [
        Panel(
            "anomalies_over_time",
            plot_stacked_time(anomalies.over_time, "anomalies"),
            f"By the reading's time (effective). {MULTI_TYPE_NOTE}",
        ),
        Panel(
            "anomaly_rate",
            plot_rate(stats),
            f"From the consumers' statistics windows ({report.sources.stats_index}): sum(anomalies) / sum(normal + "
            "anomalies) per bucket of window end (processing time, not reading time); dashed: over all windows.",
        ),
        Panel("systolic", plot_histogram(anomalies.systolic, "systolic (mmHg)", COLOURS[HYPERTENSION])),
        Panel("diastolic", plot_histogram(anomalies.diastolic, "diastolic (mmHg)", COLOURS[HYPOTENSION])),
        Panel(
            "critical_peaks",
            plot_stacked_time(anomalies.peaks, "critical readings"),
            f"{PEAKS_NOTE} By category; {count_text(anomalies.peaks_total)} in all.",
        ),
        Panel(
            "top_patients",
            plot_top_patients(anomalies.top_patients),
            f"Top {TOP_PATIENTS} patients by readings with priority critical or category hypertensive_crisis.",
        ),
    ]


def render_html(report: Report, template: str = TEMPLATE, **extra: Any) -> str:
    """The whole report as one HTML document (no external resources). ``extra`` goes to the template as is."""
    context: dict[str, Any] = {
        "report": report,
        "title": DASHBOARD_TITLE,
        "panel_titles": PANELS,
        "cards": cards(report),
        "breakdown": breakdown(report),
        "panels": panels(report),
        "latest_alerts": LATEST_ALERTS,
        "alert_kinds": [kind.value for kind in AlertKind],
        "data": report.to_json(),
        **extra,
    }
    return environment().get_template(template).render(context)
