"""The report's charts: matplotlib (Agg) figures as standalone SVG documents, text drawn as paths (no fonts).

Each chart is its own SVG document, embedded in the page as an ``<img>`` with a ``data:`` URL, so its ids never
meet another chart's and nothing needs renaming.
"""

from __future__ import annotations

import base64
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bp.clinical import HYPERTENSION, HYPERTENSIVE_CRISIS, HYPOTENSION, MODEL_RISK, Category
from consumer.report.model import Histogram, StatsSummary, TimeSeries

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

# Short runs: a time axis spans at least this many buckets, so a single bucket is a bar, not a hairline.
MIN_AXIS_BUCKETS = 12


@dataclass(frozen=True, slots=True)
class Chart:
    """One rendered chart: an SVG document as a ``data:`` URL, and whether it shows any data."""

    src: str
    has_data: bool


def _figure(width: float = 7.2, height: float = 3.3) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _chart(figure: Any, has_data: bool = True) -> Chart:
    """The figure as a standalone SVG document in a ``data:`` URL (text as paths; deterministic ids)."""
    import matplotlib

    buffer = io.BytesIO()
    with warnings.catch_warnings(), matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "bp-report"}):
        warnings.simplefilter("ignore", UserWarning)  # tick-locator advice on odd ranges: not for the user
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    return Chart("data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), has_data)


def _no_data(figure: Any, axes: Any, text: str = "no data") -> Chart:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="#777777")
    axes.set_xticks([])
    axes.set_yticks([])
    return _chart(figure, has_data=False)


def _time_axis(axes: Any, series: TimeSeries) -> None:
    """UTC date ticks over the whole bucket range, at least ``MIN_AXIS_BUCKETS`` wide (short runs stay readable)."""
    import matplotlib.dates as mdates

    first, end = series.starts[0], series.starts[-1] + series.interval_ms
    missing = MIN_AXIS_BUCKETS * series.interval_ms - (end - first)
    if missing > 0:  # centre the data on a wider axis
        first, end = first - missing // 2, end + missing - missing // 2
    axes.set_xlim(datetime.fromtimestamp(first / 1000, UTC), datetime.fromtimestamp(end / 1000, UTC))
    locator = mdates.AutoDateLocator(tz=UTC, maxticks=8)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))  # type: ignore[no-untyped-call]
    axes.set_xlabel("UTC")


def plot_stacked_time(series: TimeSeries | None, ylabel: str) -> Chart:
    figure = _figure()
    axes = figure.add_subplot()
    if series is None or not series.starts:
        return _no_data(figure, axes)
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
    return _chart(figure)


def plot_rate(stats: StatsSummary) -> Chart:
    from matplotlib.ticker import PercentFormatter

    figure = _figure()
    axes = figure.add_subplot()
    series = stats.rate
    if series is None or not series.starts:
        return _no_data(figure, axes)
    half = series.interval_ms / 2
    points = [
        (datetime.fromtimestamp((start + half) / 1000, UTC), rate)  # at the middle of the bucket
        for start, rate in zip(series.starts, series.series["rate"], strict=True)
        if not math.isnan(rate)  # empty buckets (NaN) are skipped: the line joins the buckets that have windows
    ]
    rates = [rate for _, rate in points]
    if len(points) == 1:  # a single window (a short run): a bar with its value, a lone dot is easy to miss
        (middle, rate), width = points[0], series.interval_ms / 86_400_000
        axes.bar([middle], [rate], width=width, color="#d62728", label="per bucket")
        axes.annotate(f"{rate:.1%}", (middle, rate), textcoords="offset points", xytext=(0, 3), ha="center")
    elif points:
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
    return _chart(figure)


def plot_histogram(values: Histogram, xlabel: str, colour: str) -> Chart:
    figure = _figure()
    axes = figure.add_subplot()
    if not values.counts:
        return _no_data(figure, axes)
    axes.bar(values.lows, values.counts, width=values.width, align="edge", color=colour, edgecolor="white")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("anomalies")
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.set_title(f"bins of {values.width:g} mmHg", fontsize="small", loc="right", color="#555555")
    return _chart(figure)


def plot_top_patients(patients: Sequence[tuple[str, int]]) -> Chart:
    figure = _figure(width=5.0)
    axes = figure.add_subplot()
    if not patients:
        return _no_data(figure, axes)
    names = [name for name, _ in reversed(patients)]
    counts = [count for _, count in reversed(patients)]
    axes.barh(range(len(names)), counts, color=COLOURS[HYPERTENSIVE_CRISIS])
    axes.set_yticks(range(len(names)), names, fontsize="small")
    axes.set_xlabel("critical readings")
    axes.xaxis.get_major_locator().set_params(integer=True)
    return _chart(figure)
