"""Kibana saved objects in the shape of a Kibana 8.9 export: data views, Lens charts, saved searches, dashboards.

Generic builders with no bp-stream names in them; ``build_objects.py`` assembles bp-stream's dashboard from them.
Every object is stamped with the migration versions such exports carry (index-pattern 8.0.0, lens and dashboard
8.9.0, saved search 7.9.3 as in Kibana's own 8.x sample data, core 8.8.0), so Kibana runs only newer migrations.
"""

from __future__ import annotations

import json
from typing import Any

CORE_MIGRATION_VERSION = "8.8.0"
TYPE_MIGRATION_VERSION = {"index-pattern": "8.0.0", "lens": "8.9.0", "search": "7.9.3", "dashboard": "8.9.0"}
PANEL_VERSION = "8.9.0"  # embeddable version of the dashboard panels, same shape as the dashboard stamp

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


def metric(id_: str, title: str, view: str, layer: str, label: str, query: str) -> Json:
    return lens(
        id_,
        title,
        view,
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
