"""Prometheus metrics of the consumer (``--metrics-port``; off by default).

Each consumer process owns a private registry, so tests and embedded uses never collide with the global one.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from consumer.pipeline import Tally

BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Counters, histograms and gauges the loop updates once per batch."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter("bp_messages_consumed", "Kafka messages consumed and committed", registry=r)
        self.decisions = Counter("bp_decisions", "Decisions by outcome", ["outcome"], registry=r)
        self.anomalies = Counter("bp_anomalies", "Anomalies by type (a reading may have several)", ["type"], registry=r)
        self.priorities = Counter("bp_anomaly_priority", "Anomalies by priority", ["priority"], registry=r)
        self.rejects = Counter("bp_rejected", "Dead-lettered messages by reason", ["reason"], registry=r)
        self.skipped_entries = Counter(
            "bp_skipped_entries", "Bundle entries that are not blood-pressure readings (Patient, ...)", registry=r
        )
        self.retries = Counter(
            "bp_sink_retries",
            "Attempts that failed and were retried (sink: batch, elasticsearch, kafka, commit)",
            ["sink"],
            registry=r,
        )
        self.batch_size = Histogram("bp_batch_size", "Messages per batch", buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batch_seconds = Histogram(
            "bp_batch_seconds", "Time to decide, write and commit a batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.lag = Gauge("bp_consumer_lag", "Messages behind the end of each partition", ["partition"], registry=r)
        self.state_restored = Counter(
            "bp_state_restore_records", "Changelog records read to restore per-patient state", registry=r
        )
        self.state_restore_seconds = Gauge(
            "bp_state_restore_seconds", "Duration of each partition's last state restore", ["partition"], registry=r
        )
        for outcome in ("normal", "anomaly", "rejected"):
            self.decisions.labels(outcome)  # export zeros from the start

    def serve(self, port: int, host: str) -> Any:
        """Expose /metrics over HTTP; returns the server (call .shutdown() to stop)."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server

    def record_batch(self, counts: Tally, seconds: float) -> None:
        """Add one committed batch's counts."""
        self.messages.inc(counts.messages)
        self.batch_size.observe(counts.messages)
        self.batch_seconds.observe(seconds)
        for outcome, n in (("normal", counts.normal), ("anomaly", counts.anomalies), ("rejected", counts.rejected)):
            if n:
                self.decisions.labels(outcome).inc(n)
        for priority, n in counts.by_priority.items():
            self.priorities.labels(priority).inc(n)
        for kind, n in counts.by_type.items():
            self.anomalies.labels(kind).inc(n)
        for reason, n in counts.by_reason.items():
            self.rejects.labels(reason).inc(n)
        if counts.skipped_entries:
            self.skipped_entries.inc(counts.skipped_entries)

    def record_lag(self, lags: dict[int, int]) -> None:
        for partition, value in lags.items():
            self.lag.labels(str(partition)).set(value)
