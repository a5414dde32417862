"""Alerts end to end: the consumer indexes patient-level alerts into their own index, once per alert, and a replay
by a new group writes the same documents (no duplicate, no re-opened alert). Rules-only policy: two consecutive
rule anomalies open an alert (``bp.alerts.rules_policy``), written out here as the oracle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from bp.fhir import build_observation
from bp.reading import Reading
from tests.integration.conftest import Endpoints, run_cli
from tests.integration.test_consumer_kafka import consumer_args, produce

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
# pt-a: a confirmed crisis (opens critical at the second crisis reading), then back in range (resolves);
# pt-b: one lone high reading (never an alert); pt-c: a sustained low (opens, stays open).
SERIES = {
    "pt-a": [(118, 76)] * 3 + [(196, 124), (205, 126)] + [(120, 78)] * 6,
    "pt-b": [(118, 76)] * 3 + [(150, 95)] + [(119, 77)] * 7,
    "pt-c": [(112, 72)] * 5 + [(82, 52)] * 6,
}


def messages() -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(11):
        for pid, values in SERIES.items():
            s, d = values[i]
            reading = Reading(pid, START + i * timedelta(minutes=15), float(s), float(d), f"{pid}-{i}")
            out.append((pid.encode(), orjson.dumps(build_observation(reading))))
    return out


def alert_documents(es: Any, index: str) -> dict[str, dict[str, Any]]:
    es.indices.refresh(index=index)
    response = es.search(index=index, query={"match_all": {}}, size=100)
    return {hit["_id"]: hit["_source"] for hit in response["hits"]["hits"]}


def test_alerts_are_indexed_once_and_replays_write_the_same_documents(
    endpoints: Endpoints, names: dict[str, str], es: Any, tmp_path: Path
) -> None:
    alerts_index = names["index"].replace("anomalies", "alerts")
    produce(endpoints.bootstrap, names["topic"], messages(), partitions=2)
    archive = tmp_path / "archive"
    args = consumer_args(names, archive, "--alerts-index", alerts_index)
    first = run_cli("consumer.consumer", args, endpoints.env())
    assert first.returncode == 0, first.stderr[-3000:]
    summary = orjson.loads(first.stderr.rsplit("consumer: ", 1)[1])
    assert summary["alerts"] == {"opened/hypertensive": 1, "resolved/hypertensive": 1, "opened/hypotensive": 1}
    docs = alert_documents(es, alerts_index)
    assert set(docs) == {"pt-a:hypertensive:pt-a-4", "pt-c:hypotensive:pt-c-6"}
    crisis, low = docs["pt-a:hypertensive:pt-a-4"], docs["pt-c:hypotensive:pt-c-6"]
    assert (crisis["status"], crisis["severity"], crisis["worst_systolic"]) == ("resolved", "critical", 205.0)
    assert (low["status"], low["severity"], low["worst_diastolic"]) == ("open", "high", 52.0)

    replay_names = {**names, "group": names["group"] + "-replay"}
    replay_args = consumer_args(replay_names, tmp_path / "archive2", "--alerts-index", alerts_index)
    replay = run_cli("consumer.consumer", replay_args, endpoints.env())
    assert replay.returncode == 0, replay.stderr[-3000:]
    again = alert_documents(es, alerts_index)
    assert {k: {f: v for f, v in d.items() if f != "ingested_at"} for k, d in again.items()} == {
        k: {f: v for f, v in d.items() if f != "ingested_at"} for k, d in docs.items()
    }
