"""``python -m consumer.report`` against a real Elasticsearch protocol server (the stand-in or env endpoints).

The test seeds a unique anomaly index (created from the shipped template), a unique statistics index and a small
archive directory, runs the report as a process, and checks its numbers against independent oracles: ``es.count``
with the dashboard's filters, the seeded documents themselves, and the archive's lines counted here. Panel titles
come from the Kibana saved objects, so the report and the dashboard cannot drift apart silently.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import helpers

from consumer.sinks import ensure_template
from infra.standin import free_port
from tests.integration.browser import CHARTS, chromium, find_chromium
from tests.integration.conftest import ROOT, Endpoints, run_cli

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
TYPES = ("hypotension", "hypertension", "hypertensive_crisis", "model_risk")
PRIORITIES = ("critical", "high", "medium")
DASHBOARD = ROOT / "docker" / "kibana" / "bp-stream.ndjson"
RESOURCE_ATTRIBUTES = {"src", "href", "xlink:href", "srcset", "action", "formaction", "poster", "data", "background"}
EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)  # http://, https://, //host, file://...


# ------------------------------------------------------------------------------------------------ seeding
def anomaly_docs(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Anomaly documents as the consumer writes them, with distinct times (so "latest" has no ties)."""
    docs = []
    for n in range(count):
        kind = rng.choice(["hypo", "hyper", "crisis", "model", "hyper+model"])
        if kind == "hypo":
            systolic, diastolic, types, category = rng.uniform(70, 89), rng.uniform(40, 59), ["hypotension"], "normal"
        elif kind == "crisis":
            systolic, diastolic = rng.uniform(181, 230), rng.uniform(100, 130)
            types, category = ["hypertension", "hypertensive_crisis"], "hypertensive_crisis"
        elif kind == "model":
            systolic, diastolic, types, category = (
                rng.uniform(125, 139),
                rng.uniform(80, 89),
                ["model_risk"],
                "elevated",
            )
        else:
            systolic, diastolic = rng.uniform(141, 179), rng.uniform(91, 110)
            types = ["hypertension", "model_risk"] if kind == "hyper+model" else ["hypertension"]
            category = "hypertension_stage_2"
        # Crisis readings are usually critical but not always: the peaks panel must use "critical OR crisis".
        priority = rng.choice(["critical", "critical", "high"] if kind == "crisis" else list(PRIORITIES))
        effective = START + timedelta(minutes=7 * n, seconds=rng.randint(0, 59))
        docs.append(
            {
                "observation_id": f"obs-{n:04d}",
                "patient_id": f"pt-{rng.randint(1, 6):02d}",  # fewer than 10: the top-patients panel lists all
                "effective": effective.isoformat(),
                "ingested_at": (effective + timedelta(seconds=2)).isoformat(),
                "produced_at": (effective + timedelta(seconds=1)).isoformat(),
                "systolic": round(systolic, 1),
                "diastolic": round(diastolic, 1),
                "mean_arterial_pressure": round((systolic + 2 * diastolic) / 3, 2),
                "pulse_pressure": round(systolic - diastolic, 1),
                "anomaly_types": types,
                "category": category,
                "priority": priority,
                "ml_risk": round(rng.random(), 6),
                "rules_fired": types,
                "model_version": "test",
                "source_topic": "blood-pressure",
                "source_partition": n % 3,
                "source_offset": n,
            }
        )
    return docs


def stats_docs(rng: random.Random, count: int) -> list[dict[str, Any]]:
    docs = []
    start = datetime.now(UTC) - timedelta(minutes=count)
    for n in range(count):
        normal, anomalies, rejected = rng.randint(50, 100), rng.randint(0, 20), rng.randint(0, 5)
        begin = start + timedelta(minutes=n)
        docs.append(
            {
                "window_start": begin.isoformat(),
                "window_end": (begin + timedelta(minutes=1)).isoformat(),
                "window_seconds": 60.0,
                "consumer": "test",
                "total": normal + anomalies + rejected,
                "normal": normal,
                "anomalies": anomalies,
                "rejected": rejected,
                "anomaly_rate": anomalies / (normal + anomalies),
            }
        )
    return docs


def write_archive(root: Path, rng: random.Random) -> int:
    """A small archive in the consumer's layout; returns how many lines were written."""
    lines = 0
    for day in ("2026-03-01", "2026-03-02"):
        for partition in (0, 1, 2):
            path = root / day / f"blood-pressure.p{partition}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w") as handle:
                for offset in range(rng.randint(5, 40)):
                    record = {
                        "patient_id": f"pt-{rng.randint(1, 6):02d}",
                        "effective": f"{day}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00+00:00",
                        "systolic": float(rng.randint(95, 139)),
                        "diastolic": float(rng.randint(62, 89)),
                        "category": rng.choice(["normal", "elevated", "hypertension_stage_1"]),
                        "risk": None,
                        "observation_id": f"n-{day}-{partition}-{offset}",
                        "source_topic": "blood-pressure",
                        "source_partition": partition,
                        "source_offset": offset,
                        "source_entry": 0,
                    }
                    handle.write(json.dumps(record) + "\n")
                    lines += 1
    return lines


def bulk(es: Any, index: str, docs: list[dict[str, Any]], id_field: str | None) -> None:
    actions = [
        {"_index": index, "_id": doc[id_field] if id_field else f"w-{n}", "_source": doc} for n, doc in enumerate(docs)
    ]
    # No refresh, like the consumer: the report runs right after the writes and must still see all of them.
    ok, errors = helpers.bulk(es, actions, raise_on_error=False)
    assert ok == len(docs) and not errors, errors


# ------------------------------------------------------------------------------------------------ parsing
class Page(HTMLParser):
    """What the test needs from the report: the embedded data, card values, visible text, tags and attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.data_json: str | None = None
        self.cards: dict[str, str] = {}
        self.rows: dict[tuple[str, str], str] = {}
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self.scripts: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        self.stack.append(tag)
        if tag == "script":
            self.scripts.append(attributes)
        if tag == "div" and attributes.get("class") == "card":
            self.cards[attributes["data-metric"] or ""] = attributes["data-value"] or ""
        if tag == "tr" and attributes.get("data-metric"):
            self.rows[(attributes["data-metric"] or "", attributes["data-key"] or "")] = attributes["data-value"] or ""

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop() == tag:
                break

    def handle_data(self, data: str) -> None:
        current = self.stack[-1] if self.stack else ""
        if current == "script":
            self.data_json = (self.data_json or "") + data
        elif current == "style":
            self.styles.append(data)
        else:
            self.text.append(data)


def parse(path: Path) -> tuple[Page, dict[str, Any]]:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert page.data_json, "no <script id=bp-report-data> block"
    return page, json.loads(page.data_json)


def dashboard_titles() -> list[str]:
    """Titles of every panel of the Kibana dashboard (visualisations and saved searches it references)."""
    objects = [json.loads(line) for line in DASHBOARD.read_text().splitlines() if line.strip()]
    by_id = {obj["id"]: obj for obj in objects}
    board = next(obj for obj in objects if obj["type"] == "dashboard")
    titles = [by_id[ref["id"]]["attributes"]["title"] for ref in board["references"] if ref["id"] in by_id]
    assert len(titles) >= 7, titles
    return titles


def count(es: Any, index: str, query: dict[str, Any] | None = None) -> int:
    return int(es.count(index=index, query=query or {"match_all": {}})["count"])


PEAKS = {
    "bool": {
        "should": [{"term": {"priority": "critical"}}, {"term": {"category": "hypertensive_crisis"}}],
        "minimum_should_match": 1,
    }
}


# -------------------------------------------------------------------------------------------------- tests
def test_report_numbers_match_the_sources(endpoints: Endpoints, names: dict[str, str], es: Any, tmp_path: Path) -> None:
    rng = random.Random(6)
    index, stats_index = names["index"], names["stats_index"]
    ensure_template(es, "bp-anomalies", index)
    ensure_template(es, "bp-stats", stats_index)
    anomalies = anomaly_docs(rng, 160)
    stats = stats_docs(rng, 12)
    bulk(es, index, anomalies, "observation_id")
    bulk(es, stats_index, stats, None)
    archive = tmp_path / "archive"
    archive_lines = write_archive(archive, rng)
    output = tmp_path / "out" / "nested" / "report.html"

    result = run_cli(
        "consumer.report",
        ["--output", str(output), "--index", index, "--archive-dir", str(archive)],
        endpoints.env(BP_STATS_INDEX=stats_index),  # one source via env, the others via flags
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert str(output) in result.stdout
    assert output.is_file()
    assert not [p for p in output.parent.iterdir() if p != output], "temporary files left behind"
    page, data = parse(output)
    summary = data["summary"]

    # Headline numbers = direct counts.
    anomaly_count = count(es, index)
    assert anomaly_count == len(anomalies)
    assert archive_lines == sum(
        path.read_text().count("\n") for path in archive.rglob("*.jsonl")
    )  # the archive really holds that many lines
    expected = {
        "anomalies": anomaly_count,
        "normal": archive_lines,
        "readings": archive_lines + anomaly_count,
        "actionable": count(es, index, {"terms": {"priority": ["critical", "high"]}}),
        "rejected": sum(doc["rejected"] for doc in stats),
    }
    for metric, value in expected.items():
        assert summary[metric] == value, metric
        assert int(page.cards[metric]) == value, metric
    assert summary["anomaly_rate"] == pytest.approx(anomaly_count / (archive_lines + anomaly_count), abs=1e-6)
    assert float(page.cards["anomaly_rate"]) == pytest.approx(summary["anomaly_rate"], abs=1e-6)
    for kind in TYPES:
        by_type = count(es, index, {"term": {"anomaly_types": kind}})
        assert by_type > 0  # the seed covers every type
        assert summary["anomalies_by_type"][kind] == by_type, kind
        assert int(page.rows[("anomalies_by_type", kind)]) == by_type, kind
    for priority in PRIORITIES:
        by_priority = count(es, index, {"term": {"priority": priority}})
        assert summary["anomalies_by_priority"][priority] == by_priority, priority
        assert int(page.rows[("anomalies_by_priority", priority)]) == by_priority, priority
    assert data["consumer_stats"]["windows"] == len(stats)

    # Panels: every bucketed count adds up to the direct counts.
    panels = data["panels"]
    over_time = panels["anomalies_over_time"]
    for kind in TYPES:
        assert sum(over_time["series"][kind]) == summary["anomalies_by_type"][kind], kind
    assert 2 <= len(over_time["start"]) <= 60
    for name in ("systolic", "diastolic"):
        assert sum(panels[name]["count"]) == anomaly_count, name
        values = [doc[name] for doc in anomalies]
        width, lows = panels[name]["width"], panels[name]["low"]
        assert lows[0] <= min(values) and max(values) < lows[-1] + width, name
    peaks_count = count(es, index, PEAKS)
    assert peaks_count > count(es, index, {"term": {"priority": "critical"}})  # the OR matters in this seed
    assert panels["critical_peaks"]["total"] == peaks_count
    assert sum(sum(values) for values in panels["critical_peaks"]["series"].values()) == peaks_count
    peak_patients = Counter(
        doc["patient_id"]
        for doc in anomalies
        if doc["priority"] == "critical" or doc["category"] == "hypertensive_crisis"
    )
    assert {p["patient_id"]: p["count"] for p in panels["top_patients"]["patients"]} == dict(peak_patients)
    rate = panels["anomaly_rate"]["series"]
    assert sum(rate["anomalies"]) == sum(doc["anomalies"] for doc in stats)
    assert sum(rate["decided"]) == sum(doc["anomalies"] + doc["normal"] for doc in stats)

    # The latest critical alerts: the newest critical documents, newest first, in the table and the data.
    critical = sorted((d for d in anomalies if d["priority"] == "critical"), key=lambda d: d["effective"], reverse=True)
    shown = [alert["observation_id"] for alert in panels["latest_critical"]["alerts"]]
    assert shown == [doc["observation_id"] for doc in critical[: len(shown)]]
    assert len(shown) == min(20, len(critical))
    table_ids = [
        attrs["data-observation-id"] for tag, attrs in page.tags if tag == "tr" and "data-observation-id" in attrs
    ]
    assert table_ids == shown

    # Every panel of the Kibana dashboard is there, by title.
    visible = " ".join(" ".join(page.text).split())
    for title in dashboard_titles():
        assert title in visible, title

    # Standalone: nothing to fetch. Charts are data: URLs; no external URL in any resource attribute, no <link>,
    # no external script, no url()/@import in styles; the only script is the JSON data block.
    for tag, attributes in page.tags:
        assert tag not in ("link", "iframe", "object", "embed", "base"), tag
        if tag == "img":  # the charts: each an SVG document inside the page
            assert (attributes.get("src") or "").startswith("data:image/svg+xml;base64,"), attributes
        for name, value in attributes.items():
            if name in RESOURCE_ATTRIBUTES and value is not None:
                assert value.startswith("#") or not EXTERNAL.match(value), (tag, name, value)
            assert not (value or "").lstrip().lower().startswith("javascript:"), (tag, name)
    for style in page.styles:
        assert "@import" not in style
        assert all(ref.startswith("#") for ref in re.findall(r"url\(\s*['\"]?([^)'\"]*)", style)), style
    assert page.scripts == [{"type": "application/json", "id": "bp-report-data"}]
    inline_style_urls = [
        value
        for _, attributes in page.tags
        for name, value in attributes.items()
        if name == "style" and "url(" in (value or "")
    ]
    assert all("url(#" in value for value in inline_style_urls if value), inline_style_urls


    # In a real browser, when one is installed: no console errors, and every chart draws data.
    executable = find_chromium()
    if executable is not None:
        with chromium(executable, tmp_path / "chromium-profile") as browser:
            browser.load(output)
            charts = browser.evaluate(CHARTS)
            assert browser.problems() == []
        assert len(charts) == 6
        assert all(c["decoded"] and c["hasData"] == "true" and c["coloured"] > 200 for c in charts), charts


def test_missing_indices_and_archive_give_an_empty_report(
    endpoints: Endpoints, names: dict[str, str], tmp_path: Path
) -> None:
    output = tmp_path / "empty.html"
    result = run_cli(
        "consumer.report",
        [
            "--output", str(output), "--index", names["index"], "--stats-index", names["stats_index"],
            "--archive-dir", str(tmp_path / "no-archive"),
        ],
        endpoints.env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    page, data = parse(output)
    assert data["summary"]["readings"] == 0 and data["summary"]["anomaly_rate"] is None
    assert page.cards["readings"] == "0"
    notes = " ".join(data["notes"])
    assert names["index"] in notes and names["stats_index"] in notes and "no-archive" in notes


def test_unreachable_elasticsearch_is_one_line_and_exit_2(tmp_path: Path) -> None:
    output = tmp_path / "never.html"
    env = Endpoints("127.0.0.1:1", f"http://127.0.0.1:{free_port()}", None).env(BP_CONNECT_TIMEOUT_S="1")
    result = run_cli("consumer.report", ["--output", str(output)], env, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("report: error: ") and "Elasticsearch" in lines[0]
    assert "Traceback" not in result.stderr
    assert not output.exists()
