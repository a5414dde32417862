"""Generate the Kibana saved objects of bp-stream (data views, Lens charts, saved search, dashboard).

Run from the repository root; the output is committed and imported by docker/setup.sh:

    python docker/kibana/build_objects.py            # writes docker/kibana/bp-stream.ndjson
    python docker/kibana/build_objects.py --check    # exit 1 if the committed file is stale

Kibana cannot be started in CI, so the objects are right by construction: ``saved_objects.py`` writes every
object in the shape of a Kibana 8.9 export, stamped with the migration versions such exports carry. Kibana
(pinned 8.15.3 in docker-compose.yml) then runs only the migrations newer than those stamps. Stamps that are
missing make Kibana re-run every migration from 7.x on an 8.x shape; stamps that are too high are rejected on
import. Panel titles come from ``bp/dashboard.py``, shared with the HTML report.
tests/unit/test_docker_static.py checks the output against the index templates in docker/elasticsearch/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _path in (_HERE.parents[1], _HERE):  # the repository (bp.dashboard) and this directory (saved_objects), also
    if str(_path) not in sys.path:  # when run as a script or loaded from its file path
        sys.path.insert(0, str(_path))

from saved_objects import (  # noqa: E402
    Json,
    count,
    dashboard,
    data_view,
    date_histogram,
    histogram,
    lens,
    metric,
    ratio_formula,
    saved_search,
    terms,
    xy,
)

from bp.dashboard import (  # noqa: E402
    ACTIONABLE_TITLE,
    ANOMALIES_TITLE,
    DASHBOARD_TITLE,
    MULTI_TYPE_NOTE,
    PANELS,
    PEAKS_NOTE,
)

OUTPUT = _HERE / "bp-stream.ndjson"

ALERTS_VIEW = "bp-stream-alerts"
ANOMALIES_VIEW = "bp-stream-anomalies"
STATS_VIEW = "bp-stream-stats"
DASHBOARD_ID = "bp-stream-surveillance"

# KQL filters. "critical" and "high" are the actionable priorities; a hypertensive crisis is always a peak.
CRITICAL_PEAKS = 'priority : "critical" or category : "hypertensive_crisis"'
CRITICAL = 'priority : "critical"'
ACTIONABLE = 'priority : ("critical" or "high")'


def build() -> list[Json]:
    """All saved objects, in import order (data views first)."""
    anomalies = data_view(ANOMALIES_VIEW, "bp-anomalies*", "effective", "bp-stream anomalies")
    stats = data_view(STATS_VIEW, "bp-stats*", "window_end", "bp-stream consumer stats")
    alerts = data_view(ALERTS_VIEW, "bp-alerts*", "opened_at", "bp-stream alerts")
    open_alerts = saved_search(
        "bp-open-alerts",
        PANELS["open_alerts"],
        ALERTS_VIEW,
        ["patient_id", "kind", "severity", "hits", "worst_systolic", "worst_diastolic", "last_event_at", "reason"],
        "opened_at",
        'status : "open"',
    )
    alerts_over_time = lens(
        "bp-alerts-over-time",
        PANELS["alerts_over_time"],
        ALERTS_VIEW,
        "alerts",
        {
            "time": date_histogram("opened_at"),
            "kind": terms("kind", "Kind", 2, order_by="count"),
            "count": count("Alerts"),
        },
        "lnsXY",
        xy("alerts", "bar_stacked", "time", ["count"], split="kind"),
        description="Patient-level alerts (bp.alerts): one per patient and kind while the problem lasts.",
    )

    total = metric("bp-anomaly-count", ANOMALIES_TITLE, ANOMALIES_VIEW, "metric", "Anomalies", "")
    actionable = metric(
        "bp-actionable-count", ACTIONABLE_TITLE, ANOMALIES_VIEW, "metric", "Actionable alerts", ACTIONABLE
    )
    by_type = lens(
        "bp-anomalies-by-type",
        PANELS["anomalies_over_time"],
        ANOMALIES_VIEW,
        "by_type",
        {
            "time": date_histogram("effective"),
            "type": terms("anomaly_types", "Anomaly type", 4, order_by="count"),
            "count": count("Anomalies"),
        },
        "lnsXY",
        xy("by_type", "bar_stacked", "time", ["count"], split="type"),
        description=MULTI_TYPE_NOTE,
    )
    rate = lens(
        "bp-anomaly-rate",
        PANELS["anomaly_rate"],
        STATS_VIEW,
        "rate",
        {"time": date_histogram("window_end"), **ratio_formula("rate", "Anomaly rate", "anomalies", "readings")},
        "lnsXY",
        xy("rate", "line", "time", ["rate"]),
        description="sum(anomalies) / sum(readings) per interval, from the consumers' statistics (rejects excluded).",
    )
    systolic = lens(
        "bp-systolic-distribution",
        PANELS["systolic"],
        ANOMALIES_VIEW,
        "systolic",
        {"bins": histogram("systolic", "Systolic (mmHg)"), "count": count("Anomalies")},
        "lnsXY",
        xy("systolic", "bar_stacked", "bins", ["count"], xScaleType="linear", isHistogram=True),
    )
    diastolic = lens(
        "bp-diastolic-distribution",
        PANELS["diastolic"],
        ANOMALIES_VIEW,
        "diastolic",
        {"bins": histogram("diastolic", "Diastolic (mmHg)"), "count": count("Anomalies")},
        "lnsXY",
        xy("diastolic", "bar_stacked", "bins", ["count"], xScaleType="linear", isHistogram=True),
    )
    peaks = lens(
        "bp-critical-peaks",
        PANELS["critical_peaks"],
        ANOMALIES_VIEW,
        "peaks",
        {
            "time": date_histogram("effective"),
            "category": terms("category", "Category", 5, order_by="count"),
            "count": count("Critical readings"),
        },
        "lnsXY",
        xy("peaks", "bar_stacked", "time", ["count"], split="category"),
        query=CRITICAL_PEAKS,
        description=PEAKS_NOTE,
    )
    top_patients = lens(
        "bp-critical-top-patients",
        PANELS["top_patients"],
        ANOMALIES_VIEW,
        "patients",
        {
            "patient": terms("patient_id", "Patient", 10, order_by="count"),
            "count": count("Critical readings"),
        },
        "lnsXY",
        xy("patients", "bar_horizontal", "patient", ["count"]),
        query=CRITICAL_PEAKS,
    )
    latest = saved_search(
        "bp-latest-critical-alerts",
        PANELS["latest_critical"],
        ANOMALIES_VIEW,
        ["patient_id", "systolic", "diastolic", "category", "priority", "ml_risk", "anomaly_types"],
        "effective",
        CRITICAL,
    )
    board = dashboard(
        DASHBOARD_ID,
        DASHBOARD_TITLE,
        "bp-stream: patient-level alerts (bp-alerts*), anomalous blood-pressure readings indexed by the consumer "
        "(bp-anomalies*) and the consumers' window statistics (bp-stats*).",
        [
            (open_alerts, 0, 0, 32, 14),
            (alerts_over_time, 32, 0, 16, 14),
            (total, 0, 14, 24, 6),
            (actionable, 24, 14, 24, 6),
            (by_type, 0, 20, 24, 14),
            (rate, 24, 20, 24, 14),
            (systolic, 0, 34, 24, 12),
            (diastolic, 24, 34, 24, 12),
            (peaks, 0, 46, 32, 14),
            (top_patients, 32, 46, 16, 14),
            (latest, 0, 60, 48, 16),
        ],
    )
    return [
        anomalies, stats, alerts, open_alerts, alerts_over_time, total, actionable, by_type, rate, systolic,
        diastolic, peaks, top_patients, latest, board,
    ]  # fmt: skip


def render(objects: list[Json]) -> str:
    """NDJSON: one compact JSON object per line (Kibana's importer rejects pretty-printed objects)."""
    return "".join(json.dumps(o, separators=(",", ":"), ensure_ascii=False) + "\n" for o in objects)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if --output differs from the generated text")
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python docker/kibana/build_objects.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(text.splitlines())} objects)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
