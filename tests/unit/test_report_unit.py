"""The report's pure parts: bucket choice, gap filling, the archive scan, atomic writing and the HTML itself."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections import Counter
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import markupsafe
import pytest

from bp.dashboard import PANELS
from bp.errors import ConfigError
from consumer.report import model
from consumer.report.archive import scan_archive
from consumer.report.cli import alert_lines, write_report
from consumer.report.model import (
    AlertSummary,
    AnomalySummary,
    ArchiveSummary,
    Histogram,
    Report,
    Sources,
    StatsSummary,
    choose_interval,
    histogram,
    open_first,
    public_url,
    time_series,
)
from consumer.report.render import render_html

MINUTE, HOUR = 60_000, 3_600_000


# ------------------------------------------------------------------------------------------ bucket sizes
@pytest.mark.parametrize(
    ("span_ms", "expected"),
    [
        (0, "1s"),
        (59_000, "1s"),  # 60 one-second buckets
        (60_000, "5s"),  # 61 would be too many
        (59 * MINUTE, "1m"),
        (60 * MINUTE, "5m"),
        (6 * HOUR, "10m"),  # 5m → 73 buckets, 10m → 37
        (30 * 24 * HOUR, "1d"),
    ],
)
def test_choose_interval_examples(span_ms: int, expected: str) -> None:
    assert choose_interval(span_ms)[0] == expected


@pytest.mark.parametrize("span_ms", [0, 1, 999, 61_000, 7 * HOUR + 3, 400 * 24 * HOUR, 10**13])
def test_choose_interval_is_the_smallest_that_fits(span_ms: int) -> None:
    _, size = choose_interval(span_ms)
    sizes = [s for _, s in model.TIME_INTERVALS]
    if size != sizes[-1]:
        assert span_ms // size + 1 <= model.MAX_TIME_BUCKETS
    smaller = [s for s in sizes if s < size]
    if smaller:
        assert span_ms // smaller[-1] + 1 > model.MAX_TIME_BUCKETS


def test_time_series_fills_gaps_and_orders_labels() -> None:
    buckets = [(0, {"b": 2}), (3 * MINUTE, {"a": 1, "c": 4})]
    series = time_series(buckets, "1m", MINUTE, labels=("a", "b"))
    assert series.starts == (0, MINUTE, 2 * MINUTE, 3 * MINUTE)
    assert list(series.series) == ["a", "b", "c"]
    assert series.series["a"] == (0, 0, 0, 1)
    assert series.series["b"] == (2, 0, 0, 0)
    assert series.series["c"] == (0, 0, 0, 4)
    empty = time_series([], "1m", MINUTE, labels=("a",))
    assert empty.starts == () and empty.series == {"a": ()}


def test_histogram_fills_gaps_despite_float_keys() -> None:
    result = histogram([(0.30000000000000004, 2), (0.9, 1)], 0.1)
    assert len(result.lows) == 7
    assert result.counts == (2, 0, 0, 0, 0, 0, 1)
    assert sum(histogram([(140.0, 3), (150.0, 4)], 5.0).counts) == 7
    assert histogram([], 5.0).counts == ()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://localhost:9200", "http://localhost:9200"),
        ("https://elastic:s3cret@es.example:9243/base", "https://es.example:9243/base"),
        ("https://key@[::1]:9200", "https://[::1]:9200"),
    ],
)
def test_public_url_drops_credentials(url: str, expected: str) -> None:
    assert public_url(url) == expected


# ---------------------------------------------------------------------------------------------- archive
def _line(category: str, effective: str) -> bytes:
    return json.dumps({"category": category, "effective": effective, "systolic": 120.0}).encode() + b"\n"


def test_scan_archive_counts_complete_lines_only(tmp_path: Path) -> None:
    day = tmp_path / "2026-03-01"
    day.mkdir()
    (day / "bp.p0.jsonl").write_bytes(
        _line("normal", "2026-03-01T10:00:00+00:00")
        + b"\n"  # blank: ignored
        + b"{not json\n"
        + b"[1, 2]\n"
        + _line("elevated", "2026-03-01T12:00:00+02:00")  # 10:00 UTC
        + b'{"category": "normal", "effe'  # torn last line: being written
    )
    (day / "bp.p1.jsonl").write_bytes(_line("normal", "2026-03-01T09:30:00Z"))
    (tmp_path / "notes.txt").write_text("not part of the archive\n")
    summary = scan_archive(tmp_path)
    assert (summary.files, summary.lines, summary.unreadable, summary.incomplete) == (2, 3, 2, 1)
    assert summary.by_category == Counter({"normal": 2, "elevated": 1})
    assert summary.first == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    assert summary.last == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def test_scan_archive_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    summary = scan_archive(tmp_path / "absent")
    assert not summary.exists and summary.lines == 0


# ----------------------------------------------------------------------------------------------- output
def test_write_report_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        write_report(tmp_path, "x")


# ------------------------------------------------------------------------------------------------- HTML
HOSTILE = '</script><script>alert("x")</script>&<b>'


def _report() -> Report:
    start = 1_772_352_000_000
    anomalies = AnomalySummary(
        exists=True,
        total=5,
        by_type={"hypertension": 4, "hypotension": 1},
        by_priority={"critical": 2, "high": 1, "medium": 2},
        by_category={"hypertensive_crisis": 2, "hypertension_stage_2": 3},
        first=datetime(2026, 3, 1, 8, tzinfo=UTC),
        last=datetime(2026, 3, 1, 10, tzinfo=UTC),
        over_time=time_series(
            [(start, {"hypertension": 3}), (start + 2 * HOUR, {"hypertension": 1, "hypotension": 1})], "1h", HOUR
        ),
        systolic=Histogram(10.0, (140.0, 150.0, 160.0), (2, 0, 3)),
        diastolic=Histogram(5.0, (90.0,), (5,)),
        peaks_total=2,
        peaks=time_series([(start, {"hypertensive_crisis": 2})], "1h", HOUR),
        top_patients=((HOSTILE, 2),),
        latest_critical=(
            {
                "observation_id": "o-1",
                "patient_id": HOSTILE,
                "effective": "2026-03-01T10:00:00+00:00",
                "systolic": 190.0,
                "diastolic": 125.0,
                "category": "hypertensive_crisis",
                "priority": "critical",
                "ml_risk": 0.93,
                "anomaly_types": ["hypertension", "hypertensive_crisis"],
            },
        ),
    )
    stats = StatsSummary(exists=False)
    archive = ArchiveSummary(lines=95, files=1, by_category=Counter({"normal": 95}))
    sources = Sources("http://localhost:9200", "bp-anomalies", "bp-stats", "data/normal")
    return Report(datetime(2026, 3, 2, tzinfo=UTC), sources, anomalies, stats, archive, ("a note",))


def test_render_html_embeds_the_numbers_and_escapes_data() -> None:
    page = render_html(_report())
    assert page.count("<script") == 1  # the hostile patient id did not open a script
    data_block = re.search(r'<script type="application/json" id="bp-report-data">(.*?)</script>', page, re.S)
    assert data_block is not None
    data = json.loads(data_block.group(1))
    assert data["summary"]["readings"] == 100 and data["summary"]["normal"] == 95
    assert data["summary"]["anomaly_rate"] == pytest.approx(0.05)
    assert data["summary"]["actionable"] == 3
    assert data["panels"]["top_patients"]["patients"][0]["patient_id"] == HOSTILE
    assert data["panels"]["anomaly_rate"]["series"] == {}
    assert HOSTILE not in page
    assert HOSTILE in _visible_text(page)  # escaped by the template, shown as text
    for title in PANELS.values():
        assert f"<h2>{markupsafe.escape(title)}</h2>" in page
    assert 'data-metric="readings" data-value="100"' in page


def test_render_html_ids_are_unique_and_every_chart_is_a_standalone_svg() -> None:
    page = render_html(_report())
    ids = re.findall(r'\bid="([^"]+)"', page)
    duplicates = [name for name, n in Counter(ids).items() if n > 1]
    assert not duplicates
    sources = re.findall(r'\b(?:src|href)="([^"]*)"', page)
    assert len(sources) == 6 and all(src.startswith("data:image/svg+xml;base64,") for src in sources)
    for src in sources:  # each chart is its own document: its references resolve inside it, ids untouched
        svg = base64.b64decode(src.split(",", 1)[1]).decode()
        svg_ids = set(re.findall(r'\bid="([^"]+)"', svg))
        references = set(re.findall(r'(?:href="#|url\(#)([^")]+)', svg))
        assert references and references <= svg_ids


def test_a_chart_without_data_says_so() -> None:
    empty = dataclasses.replace(_report(), anomalies=AnomalySummary(exists=False))
    page = render_html(empty)
    assert page.count('data-has-data="false"') == 6
    assert render_html(_report()).count('data-has-data="false"') == 1  # the rate: no statistics index


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.in_script = tag == "script"

    def handle_data(self, data: str) -> None:
        if not self.in_script:
            self.parts.append(data)


def _visible_text(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return "".join(parser.parts)


def test_the_report_leads_with_the_open_alerts_most_severe_and_oldest_first() -> None:
    def alert(pid: str, severity: str, opened: str) -> dict[str, object]:
        return {"alert_id": f"{pid}:hypertensive:o1", "patient_id": pid, "kind": "hypertensive", "status": "open",
                "severity": severity, "opened_at": opened, "last_event_at": opened, "hits": 3,
                "worst_systolic": 171.0, "worst_diastolic": 99.0, "reason": f"2 readings of {pid} flagged"}  # fmt: skip

    raw = [alert("pt-late", "high", "2026-03-01T10:00:00+00:00"), alert("pt-<b>", "high", "2026-03-01T08:00:00+00:00"),
           alert("pt-crit", "critical", "2026-03-01T11:00:00+00:00")]  # fmt: skip
    alerts = AlertSummary(total=5, open=open_first(raw), by_status={"open": 3, "resolved": 2},
                          by_kind={"hypertensive": 5})  # fmt: skip
    page = render_html(dataclasses.replace(_report(), alerts=alerts))
    assert page.index(PANELS["open_alerts"]) < page.index("<h2>Summary</h2>")  # alerts come first
    rows = re.findall(r'data-alert-id="([^"]+)"', page)
    assert rows == ["pt-crit:hypertensive:o1", "pt-&lt;b&gt;:hypertensive:o1", "pt-late:hypertensive:o1"]
    assert "<b>" not in page.split("<script")[0]  # escaped
    assert "2 readings of pt-crit flagged" in _visible_text(page)  # why, for every open alert
    empty = render_html(_report())  # no alerts index yet
    assert "No alerts index yet" in empty


def test_the_cli_explains_each_open_alert_in_one_line() -> None:
    raw = [{"patient_id": f"pt-{i}", "kind": "hypotensive", "severity": "high", "status": "open",
            "opened_at": "2026-03-01T08:00:00Z", "worst_systolic": 78.0, "worst_diastolic": 48.0, "hits": 2,
            "reason": "2 of the last 3 readings flagged (model risk >= 0.5): 80/50, 78/48 mmHg"}
           for i in range(12)]  # fmt: skip
    report = dataclasses.replace(_report(), alerts=AlertSummary(total=12, open=tuple(raw)))
    lines = alert_lines(report, limit=10)
    assert len(lines) == 11
    assert lines[0] == (
        "alert pt-0: high hypotensive alert, open, since 2026-03-01 08:00 UTC (2 readings, lowest 78/48 mmHg): "
        "2 of the last 3 readings flagged (model risk >= 0.5): 80/50, 78/48 mmHg"
    )
    assert lines[-1] == "... and 2 more open alerts in the report"
    assert alert_lines(_report()) == []
