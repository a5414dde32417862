"""Generate the Kibana saved objects of bp-stream (data views, Lens charts, saved search, dashboard).

Run from the repository root; the output is committed and imported by docker/setup.sh:

    python docker/kibana/build_objects.py            # writes docker/kibana/bp-stream.ndjson
    python docker/kibana/build_objects.py --check    # exit 1 if the committed file is stale

Kibana cannot be started in CI, so the objects are right by construction: every object is written in the shape
of a Kibana 8.9 export and stamped with the migration versions such exports carry (index-pattern 8.0.0, lens and
dashboard 8.9.0, saved search 7.9.3 as in Kibana's own 8.x sample data, core 8.8.0). Kibana (pinned 8.15.3 in
docker-compose.yml) then runs only the migrations newer than those stamps. Stamps that are missing make Kibana
re-run every migration from 7.x on an 8.x shape; stamps that are too high are rejected on import.
tests/unit/test_docker_static.py checks the output against the index templates in docker/elasticsearch/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root on the path, for bp.dashboard
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bp.dashboard import (
    ACTIONABLE_TITLE,
    ANOMALIES_TITLE,
    DASHBOARD_TITLE,
    MULTI_TYPE_NOTE,
    PANELS,
    PEAKS_NOTE,
)

OUTPUT = Path(__file__).with_name("bp-stream.ndjson")

CORE_MIGRATION_VERSION = "8.8.0"
TYPE_MIGRATION_VERSION = {"index-pattern": "8.0.0", "lens": "8.9.0", "search": "7.9.3", "dashboard": "8.9.0"}
PANEL_VERSION = "8.9.0"  # embeddable version of the dashboard panels, same shape as the dashboard stamp

ANOMALIES_VIEW = "bp-stream-anomalies"
STATS_VIEW = "bp-stream-stats"
DASHBOARD_ID = "bp-stream-surveillance"

# KQL filters. "critical" and "high" are the actionable priorities; a hypertensive crisis is always a peak.
CRITICAL_PEAKS = 'priority : "critical" or category : "hypertensive_crisis"'
CRITICAL = 'priority : "critical"'
ACTIONABLE = 'priority : ("critical" or "high")'

Json = dict[str, Any]


def _obj(type_: str, id_: str, attributes: Json, references: list[Json]) -> Json:
    return {
        "id": id_,
        "type": type_,
        "attributes": attributes,
        "references": references,
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": TYPE_MIGRATION_VERSION[type_],
        "managed": False,
    }


def data_view(id_: str, index_pattern: str, time_field: str, name: str) -> Json:
    """An index-pattern object. `fields` stays empty: Kibana reads the mapping when the view is used."""
    return _obj(
        "index-pattern",
        id_,
        {
            "title": index_pattern,
            "name": name,
            "timeFieldName": time_field,
            "allowNoIndex": True,  # the indices appear only when the consumer writes its first document
            "fields": "[]",
            "fieldAttrs": "{}",
            "fieldFormatMap": "{}",
            "runtimeFieldMap": "{}",
            "sourceFilters": "[]",
            "typeMeta": "{}",
        },
        [],
    )


# ---- Lens columns (shapes of Kibana 8.x exports) ----


def date_histogram(field: str) -> Json:
    return {
        "label": field,
        "dataType": "date",
        "operationType": "date_histogram",
        "sourceField": field,
        "isBucketed": True,
        "scale": "interval",
        "params": {"interval": "auto", "includeEmptyRows": True, "dropPartials": False},
    }


def count(label: str) -> Json:
    return {
        "label": label,
        "customLabel": True,
        "dataType": "number",
        "operationType": "count",
        "sourceField": "___records___",
        "isBucketed": False,
        "scale": "ratio",
        "params": {"emptyAsNull": True},
    }


def terms(field: str, label: str, size: int, order_by: str) -> Json:
    return {
        "label": label,
        "customLabel": True,
        "dataType": "string",
        "operationType": "terms",
        "sourceField": field,
        "isBucketed": True,
        "scale": "ordinal",
        "params": {
            "size": size,
            "orderBy": {"type": "column", "columnId": order_by},
            "orderDirection": "desc",
            "otherBucket": False,
            "missingBucket": False,
            "parentFormat": {"id": "terms"},
        },
    }


def histogram(field: str, label: str) -> Json:
    """Numeric histogram: Lens 'range' operation in histogram mode, automatic bar count."""
    return {
        "label": label,
        "customLabel": True,
        "dataType": "number",
        "operationType": "range",
        "sourceField": field,
        "isBucketed": True,
        "scale": "interval",
        "params": {
            "includeEmptyRows": False,
            "type": "histogram",
            "ranges": [{"from": 0, "to": 1000, "label": ""}],
            "maxBars": "auto",
        },
    }


def ratio_formula(col: str, label: str, numerator: str, denominator: str) -> dict[str, Json]:
    """Formula column sum(numerator) / sum(denominator), with the hidden part columns Lens stores beside it."""
    formula = f"sum({numerator}) / sum({denominator})"
    part = f"Part of {label}"
    x0, x1, x2 = f"{col}X0", f"{col}X1", f"{col}X2"

    def part_sum(field: str) -> Json:
        return {
            "label": part,
            "customLabel": True,
            "dataType": "number",
            "operationType": "sum",
            "sourceField": field,
            "isBucketed": False,
            "scale": "ratio",
            "params": {"emptyAsNull": False},
        }

    return {
        col: {
            "label": label,
            "customLabel": True,
            "dataType": "number",
            "operationType": "formula",
            "isBucketed": False,
            "scale": "ratio",
            "params": {
                "formula": formula,
                "isFormulaBroken": False,
                "format": {"id": "percent", "params": {"decimals": 1}},
            },
            "references": [x2],
        },
        x0: part_sum(numerator),
        x1: part_sum(denominator),
        x2: {
            "label": part,
            "customLabel": True,
            "dataType": "number",
            "operationType": "math",
            "isBucketed": False,
            "scale": "ratio",
            "params": {
                "tinymathAst": {
                    "type": "function",
                    "name": "divide",
                    "args": [x0, x1],
                    "location": {"min": 0, "max": len(formula)},
                    "text": formula,
                }
            },
            "references": [x0, x1],
        },
    }


# ---- Lens objects ----


def _axis_settings() -> Json:
    on = {"x": True, "yLeft": True, "yRight": True}
    return {
        "axisTitlesVisibilitySettings": on,
        "tickLabelsVisibilitySettings": on,
        "gridlinesVisibilitySettings": on,
    }


def lens(
    id_: str,
    title: str,
    view: str,
    layer: str,
    columns: dict[str, Json],
    visualization_type: str,
    visualization: Json,
    query: str = "",
    description: str = "",
) -> Json:
    """A by-reference Lens object with one form-based layer on data view `view`.

    Bucket columns come first in columnOrder, as in Kibana's exports.
    """
    order = [c for c, col in columns.items() if col["isBucketed"]]
    order += [c for c, col in columns.items() if not col["isBucketed"]]
    state = {
        "datasourceStates": {
            "formBased": {"layers": {layer: {"columns": columns, "columnOrder": order, "incompleteColumns": {}}}},
            "textBased": {"layers": {}},
        },
        "visualization": visualization,
        "query": {"query": query, "language": "kuery"},
        "filters": [],
        "internalReferences": [],
        "adHocDataViews": {},
    }
    return _obj(
        "lens",
        id_,
        {"title": title, "description": description, "visualizationType": visualization_type, "state": state},
        # One reference per layer, named exactly indexpattern-datasource-layer-<layerId>; without it Kibana
        # silently drops the layer.
        [{"type": "index-pattern", "id": view, "name": f"indexpattern-datasource-layer-{layer}"}],
    )


def xy(layer: str, series: str, x: str, accessors: list[str], split: str | None = None, **extra: Any) -> Json:
    """lnsXY visualization state with a single data layer."""
    layer_state: Json = {
        "layerId": layer,
        "layerType": "data",
        "seriesType": series,
        "xAccessor": x,
        "accessors": accessors,
    }
    if split is not None:
        layer_state["splitAccessor"] = split
    layer_state.update(extra)
    return {
        "legend": {"isVisible": True, "position": "right"},
        "valueLabels": "hide",
        "fittingFunction": "None",
        "preferredSeriesType": series,
        **_axis_settings(),
        "layers": [layer_state],
    }


def metric(id_: str, title: str, layer: str, label: str, query: str) -> Json:
    return lens(
        id_,
        title,
        ANOMALIES_VIEW,
        layer,
        {"count": count(label)},
        "lnsMetric",
        {"layerId": layer, "layerType": "data", "metricAccessor": "count"},
        query=query,
    )


def saved_search(id_: str, title: str, view: str, columns: list[str], sort_field: str, query: str) -> Json:
    """A Discover saved search (documents, newest first), shaped like Kibana's 8.x eCommerce sample."""
    source = {
        "highlightAll": True,
        "version": True,
        "query": {"query": query, "language": "kuery"},
        "filter": [],
        "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index",
    }
    return _obj(
        "search",
        id_,
        {
            "title": title,
            "description": "",
            "columns": columns,
            "sort": [[sort_field, "desc"]],
            "hits": 0,
            "version": 1,
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(source, separators=(",", ":"))},
        },
        [{"type": "index-pattern", "id": view, "name": "kibanaSavedObjectMeta.searchSourceJSON.index"}],
    )


def dashboard(id_: str, title: str, description: str, panels: list[tuple[Json, int, int, int, int]]) -> Json:
    """Dashboard of by-reference panels: (object, x, y, w, h) on Kibana's 48-column grid."""
    panels_json = []
    references = []
    for n, (target, x, y, w, h) in enumerate(panels, start=1):
        index = f"p{n}"
        panels_json.append(
            {
                "version": PANEL_VERSION,
                "type": target["type"],
                "gridData": {"x": x, "y": y, "w": w, "h": h, "i": index},
                "panelIndex": index,
                "embeddableConfig": {"enhancements": {}},
                "panelRefName": f"panel_{index}",
            }
        )
        references.append({"name": f"{index}:panel_{index}", "type": target["type"], "id": target["id"]})
    compact = (",", ":")
    return _obj(
        "dashboard",
        id_,
        {
            "title": title,
            "description": description,
            "panelsJSON": json.dumps(panels_json, separators=compact),
            "optionsJSON": json.dumps(
                {
                    "useMargins": True,
                    "syncColors": False,
                    "syncCursor": True,
                    "syncTooltips": False,
                    "hidePanelTitles": False,
                },
                separators=compact,
            ),
            "timeRestore": True,
            "timeFrom": "now-1h",
            "timeTo": "now",
            "refreshInterval": {"pause": False, "value": 10000},  # live view: refresh every 10 s
            "version": 1,
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": json.dumps(
                    {"query": {"query": "", "language": "kuery"}, "filter": []}, separators=compact
                )
            },
        },
        references,
    )


def build() -> list[Json]:
    """All saved objects, in import order (data views first)."""
    anomalies = data_view(ANOMALIES_VIEW, "bp-anomalies*", "effective", "bp-stream anomalies")
    stats = data_view(STATS_VIEW, "bp-stats*", "window_end", "bp-stream consumer stats")

    total = metric("bp-anomaly-count", ANOMALIES_TITLE, "metric", "Anomalies", "")
    actionable = metric(
        "bp-actionable-count", ACTIONABLE_TITLE, "metric", "Actionable alerts", ACTIONABLE
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
        "bp-stream: anomalous blood-pressure readings indexed by the consumer (bp-anomalies*) and the "
        "consumers' window statistics (bp-stats*).",
        [
            (total, 0, 0, 24, 6),
            (actionable, 24, 0, 24, 6),
            (by_type, 0, 6, 24, 14),
            (rate, 24, 6, 24, 14),
            (systolic, 0, 20, 24, 12),
            (diastolic, 24, 20, 24, 12),
            (peaks, 0, 32, 32, 14),
            (top_patients, 32, 32, 16, 14),
            (latest, 0, 46, 48, 16),
        ],
    )
    return [anomalies, stats, total, actionable, by_type, rate, systolic, diastolic, peaks, top_patients, latest, board]


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
