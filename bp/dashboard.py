"""Names the Kibana dashboard (docker/kibana/build_objects.py) and the HTML report (consumer.report) share.

Plain constants, so both can import them: the report shows the dashboard's panels under the same titles, and a
title changed here changes in both places.
"""

from __future__ import annotations

from typing import Final

DASHBOARD_TITLE: Final = "Blood pressure surveillance"

# Metric cards.
ANOMALIES_TITLE: Final = "Anomalies"
ACTIONABLE_TITLE: Final = "Actionable alerts (critical + high)"

# Chart and table panels, by the id the report uses for them.
PANELS: Final[dict[str, str]] = {
    "open_alerts": "Open alerts (patients needing attention)",
    "alerts_over_time": "Alerts opened over time by kind",
    "anomalies_over_time": "Anomalies over time by type",
    "anomaly_rate": "Anomaly rate over time",
    "systolic": "Systolic pressure among anomalies (mmHg)",
    "diastolic": "Diastolic pressure among anomalies (mmHg)",
    "critical_peaks": "Critical peaks over time",
    "top_patients": "Patients with the most critical readings",
    "latest_critical": "Latest critical alerts",
}

# Explanations shown under the panels that need one.
MULTI_TYPE_NOTE: Final = "A reading with several anomaly types counts once per type."
PEAKS_NOTE: Final = "Readings with priority critical or category hypertensive_crisis."
