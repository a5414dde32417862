"""Prometheus metrics scraped during a run match what was sent."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.standin import free_port
from tests.integration.conftest import ROOT, Endpoints, wait_for
from tests.integration.test_consumer_kafka import consumer_args, known_mix, produce

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_count_what_was_sent(endpoints: Endpoints, names: dict[str, str], es: Any, tmp_path: Path) -> None:
    messages, anomalies, normals, rejects = known_mix(seed=21, readings=800)
    produce(endpoints.bootstrap, names["topic"], messages)
    port = free_port()
    args = consumer_args(names, tmp_path / "archive", "--metrics-port", str(port), "--instance-id", "m1")
    args[args.index("--stop-when-idle") + 1] = "120"
    process = subprocess.Popen(
        [sys.executable, "-m", "consumer.consumer", *args], cwd=ROOT, env=endpoints.env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        consumed = ("bp_messages_consumed_total", ())
        wait_for(lambda: scrape(port).get(consumed) == len(messages), 90, "all messages counted in /metrics")
        samples = scrape(port)
        decision = {
            outcome: samples[("bp_decisions_total", (("outcome", outcome),))]
            for outcome in ("normal", "anomaly", "rejected")
        }
        assert decision == {"normal": sum(normals.values()), "anomaly": len(anomalies), "rejected": len(rejects)}
        rejected_by_reason = sum(v for (name, _), v in samples.items() if name == "bp_rejected_total")
        assert rejected_by_reason == len(rejects)
        priorities = sum(v for (name, _), v in samples.items() if name == "bp_anomaly_priority_total")
        assert priorities == len(anomalies)
        assert samples[("bp_batch_size_sum", ())] == len(messages)
        assert samples[("bp_batch_seconds_count", ())] >= 1
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err[-2000:]
