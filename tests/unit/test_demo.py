"""The demo summary: every alert explained in one line, taken from the report's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.demo import ROOT, explained_alerts, print_summary

REPORT_OUTPUT = """report: wrote reports/bp-report.html
report: open alerts 2, readings 2000, normal 1700, anomalies 300 (rate 15.0 %), actionable 60, rejected 3
report: alert pt-1: critical hypertensive alert, open, since 2026-03-01 08:15 UTC (3 readings, highest 196/124 mmHg): \
crisis range (> 180/120 mmHg) reading 196/124 mmHg with model risk 0.97 (>= 0.9)
report: alert pt-2: high hypotensive alert, open, since 2026-03-01 09:00 UTC (2 readings, lowest 84/50 mmHg): \
2 of the last 3 readings flagged (model risk >= 0.5): 86/52, 84/50 mmHg
report: ... and 1 more open alerts in the report
"""


def test_the_summary_explains_each_alert_the_report_lists(capsys: pytest.CaptureFixture[str]) -> None:
    explanations = explained_alerts(REPORT_OUTPUT)
    assert [line.split(":")[0] for line in explanations] == ["pt-1", "pt-2", "... and 1 more open alerts in the report"]
    summary = {
        "messages": 2003, "readings": 2000, "normal": 1700, "anomalies": 300, "rejected": 3,
        "anomalies_by_priority": {"critical": 20, "high": 40, "medium": 240}, "anomalies_by_type": {},
        "rejected_by_reason": {}, "alerts": {"opened/hypertensive": 1, "opened/hypotensive": 1},
    }  # fmt: skip
    print_summary(summary, 1.0, ROOT / "data" / "normal", {}, None, 20.8, explanations)
    out = capsys.readouterr().out
    assert "alerts opened                 2" in out
    assert "  - pt-2: high hypotensive alert, open, since 2026-03-01 09:00 UTC" in out
    assert "with model risk 0.97" in out
    assert out.index("alerts opened") < out.index("  - pt-1") < out.index("normal (archived)")


def test_no_alerts_no_explanations() -> None:
    assert explained_alerts("report: wrote x.html\nreport: open alerts 0, readings 10\n") == []
    assert isinstance(ROOT, Path)
