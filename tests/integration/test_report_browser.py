"""The report page in a real browser (headless Chromium from Debian's ``chromium`` package).

The page must load without console errors, warnings or exceptions, and every chart must decode and draw data:
each chart is rendered onto a canvas in the page and its coloured pixels counted (an empty chart is grey text on
white). Two reports: a run with hours of data, and a short run (one statistics window, all readings within a
few seconds) whose charts must still be readable. Skipped, with the reason, where no Chromium is installed
(``apt-get install -y chromium`` as root).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumer.report.model import (
    AnomalySummary,
    ArchiveSummary,
    Histogram,
    Report,
    Sources,
    StatsSummary,
    TimeSeries,
    time_series,
)
from consumer.report.render import render_html
from tests.integration.browser import CHARTS, Browser, chromium, find_chromium

pytestmark = pytest.mark.integration

CHROMIUM = find_chromium()
@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (Debian: apt-get install -y chromium)")
    with chromium(CHROMIUM, tmp_path_factory.mktemp("chromium-profile")) as running:
        yield running


def _report(start: datetime, step: timedelta, windows: int, interval: str, interval_ms: int) -> Report:
    """A report as the queries would build it: anomalies every ``step`` from ``start``, ``windows`` stats windows."""
    start_ms = int(start.timestamp() * 1000)
    buckets = [(start_ms + n * interval_ms, {"hypertension": 2 + n % 3, "model_risk": n % 2}) for n in range(4)]
    over_time = time_series(buckets, interval, interval_ms, ("hypotension", "hypertension"))
    peaks = time_series([(start_ms, {"hypertensive_crisis": 2})], interval, interval_ms)
    rate_starts = tuple(start_ms + n * interval_ms for n in range(windows))
    anomalies_per = tuple(float(3 + n % 2) for n in range(windows))
    decided = tuple(60.0 for _ in range(windows))
    rates = tuple(a / d for a, d in zip(anomalies_per, decided, strict=True))
    rate = TimeSeries(
        interval, interval_ms, rate_starts, {"anomalies": anomalies_per, "decided": decided, "rate": rates}
    )
    total = int(sum(sum(values) for values in over_time.series.values()))
    anomalies = AnomalySummary(
        exists=True,
        total=total,
        by_type={"hypertension": total - 2, "model_risk": 2},
        by_priority={"critical": 2, "high": 3, "medium": total - 5},
        by_category={"hypertensive_crisis": 2, "hypertension_stage_2": total - 2},
        first=start,
        last=start + 3 * step,
        over_time=over_time,
        systolic=Histogram(5.0, (140.0, 145.0, 150.0), (3, 1, 4)),
        diastolic=Histogram(5.0, (90.0, 95.0), (5, 3)),
        peaks_total=2,
        peaks=peaks,
        top_patients=(("pt-01", 2), ("pt-02", 1)),
        latest_critical=({"observation_id": "o-1", "patient_id": "pt-01", "effective": start.isoformat(),
                          "systolic": 190.0, "diastolic": 121.0, "category": "hypertensive_crisis",
                          "priority": "critical", "ml_risk": 0.9, "anomaly_types": ["hypertensive_crisis"]},),
    )  # fmt: skip
    stats = StatsSummary(
        exists=True,
        windows=windows,
        total=int(sum(decided)),
        normal=int(sum(decided) - sum(anomalies_per)),
        anomalies=int(sum(anomalies_per)),
        first=start,
        last=start + windows * step,
        rate=rate,
    )
    archive = ArchiveSummary(lines=200, files=2, by_category=Counter({"normal": 150, "elevated": 50}))
    sources = Sources("http://localhost:9200", "bp-anomalies", "bp-stats", "data/normal")
    return Report(datetime.now(UTC), sources, anomalies, stats, archive)


REPORTS = {
    "hours": _report(datetime(2026, 3, 1, 8, tzinfo=UTC), timedelta(hours=1), 12, "1h", 3_600_000),
    "short run, one window": _report(datetime(2026, 3, 1, 8, tzinfo=UTC), timedelta(seconds=1), 1, "1s", 1_000),
}


@pytest.mark.parametrize("name", list(REPORTS))
def test_report_loads_cleanly_and_every_chart_draws_data(browser: Browser, tmp_path: Path, name: str) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(REPORTS[name]), encoding="utf-8")
    browser.load(page)
    charts: list[dict[str, Any]] = browser.evaluate(CHARTS)
    assert browser.problems() == []
    assert [chart["panel"] for chart in charts] == [
        "anomalies_over_time", "anomaly_rate", "systolic", "diastolic", "critical_peaks", "top_patients",
    ]  # fmt: skip
    for chart in charts:
        assert chart["decoded"] and chart["width"] > 100 and chart["height"] > 100, chart
        assert chart["shown"] > 100, chart  # laid out at a visible size
        assert chart["hasData"] == "true", chart
        assert chart["coloured"] > 200, chart  # bars or lines drawn, not only "no data"


def test_an_empty_chart_has_no_coloured_pixels(browser: Browser, tmp_path: Path) -> None:
    """The pixel check can fail: a report without anomalies or statistics draws grey "no data" charts."""
    empty = Report(
        datetime.now(UTC),
        Sources("http://localhost:9200", "a", "s", "d"),
        AnomalySummary(exists=False),
        StatsSummary(exists=False),
        ArchiveSummary(exists=False),
    )
    page = tmp_path / "empty.html"
    page.write_text(render_html(empty), encoding="utf-8")
    browser.load(page)
    charts = browser.evaluate(CHARTS)
    assert browser.problems() == []
    assert len(charts) == 6
    assert all(chart["decoded"] and chart["coloured"] == 0 and chart["hasData"] == "false" for chart in charts)
