"""``python -m bench.run`` (``make bench``): throughput, latency and memory of bp-stream against raw kafka-python.

Runs against a throwaway noida-db stand-in on free loopback ports (started and stopped here, also on failure or
Ctrl-C), or against the servers named by BP_KAFKA_BOOTSTRAP and BP_ES_URL. Writes bench/results/latest.json and a
timestamped copy, and prints a table of every figure with its goal.

- consumer: N pre-produced readings (10 % anomalies, 1 % malformed) on a 6-partition topic; the consumer CLI is
  timed from its spawn until the group's committed offsets equal the end offsets; in the same run, a bare
  kafka-python consumer (+ orjson.loads) reads the same topic (the ceiling). Ratio goal ≥ 0.5. Both report CPU
  seconds, shown as CPU µs per reading; and the consumer's time to its first commit.
- producer: the producer CLI (--rate 0) vs a bare kafka-python producer with the same settings sending the same
  bytes, in the same run (ratio goal ≥ 0.8); and the --dry-run generation + serialisation rate (goal ≥ 20,000/s).
- latency: producer at a fixed rate with the consumer running: produce time (Kafka record timestamp) → indexed
  (ES ingested_at) for anomalies, → seen in the archive for normals, → committed for every record. Goal p99 < 1 s.
- memory: consumer RSS at start, after 100k and after the largest size, with 100k distinct patients.
Every run uses its own topics, group, index and archive directory, removed afterwards.

One module per measurement (``consume``, ``produce``, ``latency``, ``memory``); ``context`` holds the run's clients
and chores, ``presets`` the sizes, ``report`` the pure figures and table, ``facts`` the machine and classifier.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from bench import report
from bench.consume import bench_consumer
from bench.context import Bench
from bench.facts import choose_classifier, machine_facts
from bench.latency import bench_latency
from bench.memory import bench_memory
from bench.presets import Preset, parse_preset
from bench.processes import Children
from bench.produce import bench_producer
from bp.errors import BenchError, BpError

log = logging.getLogger("bench")


def config_of(preset: Preset) -> dict[str, Any]:
    """The preset as JSON values (paths as strings, sections as a list)."""
    return {
        name: str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
        for name, value in dataclasses.asdict(preset).items()
    }


@contextlib.contextmanager
def endpoints(work: Path, kafka: str = "standin") -> Iterator[tuple[str, str, Any, Any]]:
    """(bootstrap, ES URL, stand-in, real broker): from env, or started here (a real broker when kafka=real)."""
    bootstrap, es_url = os.environ.get("BP_KAFKA_BOOTSTRAP"), os.environ.get("BP_ES_URL")
    if bootstrap or es_url:
        if not (bootstrap and es_url):
            raise BenchError("set both BP_KAFKA_BOOTSTRAP and BP_ES_URL to use real endpoints (or neither)")
        yield bootstrap, es_url, None, None
        return
    from infra.kafka import KafkaBroker, kafka_version
    from infra.standin import StandIn, free_port

    broker = KafkaBroker(work / "kafka", free_port(), free_port()) if kafka == "real" else None
    standin = StandIn(work / "standin", None if broker else free_port(), free_port())
    try:
        if broker is not None:
            broker.start()
            log.info("Apache Kafka %s up on %s (pid %s)", kafka_version(), broker.bootstrap, broker.pid)
        standin.start()
        log.info("stand-in up (%sES %s)", "" if broker else f"Kafka {standin.bootstrap}, ", standin.es_url)
        yield (broker.bootstrap if broker else standin.bootstrap), standin.es_url, standin, broker
    finally:
        standin.stop()
        if broker is not None:
            broker.stop()
        log.info("servers stopped")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    preset = parse_preset(argv, __doc__ or "")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.now(UTC)
    t_start = time.monotonic()
    run_id = started.strftime("%H%M%S") + "-" + uuid.uuid4().hex[:4]
    work = Path(tempfile.mkdtemp(prefix="bp-bench-"))
    classifier = choose_classifier(preset, work)
    log.info("classifier: %s%s", classifier["mode"], f" ({classifier.get('reason')})" if "reason" in classifier else "")
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    load: dict[str, list[float]] = {"start": [round(x, 2) for x in os.getloadavg()]}
    children = None
    try:
        with endpoints(work, preset.kafka) as (bootstrap, es_url, standin, broker):
            from elasticsearch import Elasticsearch
            from kafka import KafkaAdminClient, KafkaConsumer

            env = {k: v for k, v in os.environ.items() if not k.startswith("BP_")}
            env.update(BP_KAFKA_BOOTSTRAP=bootstrap, BP_ES_URL=es_url, PYTHONUNBUFFERED="1")
            (work / "logs").mkdir()
            children = Children(work / "logs", env)
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-admin")
            probe = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
            es = Elasticsearch(es_url, request_timeout=60)
            bench = Bench(bootstrap, es_url, standin, run_id, work, children, admin, es, probe, classifier, broker)
            machine = machine_facts(bench)
            try:
                sections = (
                    ("consumer", bench_consumer),
                    ("producer", bench_producer),
                    ("latency", bench_latency),
                    ("memory", bench_memory),
                )
                for section, func in sections:
                    if section not in preset.sections:
                        continue
                    key = {"consumer": "consumer_throughput", "producer": "producer_throughput"}.get(section, section)
                    log.info("== %s", section)
                    load[f"{section}_start"] = [round(x, 2) for x in os.getloadavg()]
                    try:
                        results[key] = func(bench, preset)
                    except BpError as exc:  # BenchError, WaitTimeout, an endpoint that went away
                        log.error("%s failed: %s", section, exc)
                        errors[section] = str(exc)
                    finally:
                        children.stop_all()
            finally:
                children.stop_all()
                admin.close()
                probe.close()
                es.close()
    except KeyboardInterrupt:
        log.error("interrupted: children and stand-in stopped, no results written")
        return 130
    finally:
        if children is not None:
            children.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    load["end"] = [round(x, 2) for x in os.getloadavg()]
    machine["load_average_1_5_15_min"] = load  # other work on a shared machine skews every figure
    checks = report.build_checks(results)
    doc = {
        "schema": report.RESULT_SCHEMA,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_s": round(time.monotonic() - t_start, 1),
        "config": config_of(preset),
        "machine": machine,
        "classifier": {k: v for k, v in classifier.items() if k != "consumer_flags"},
        "results": results,
        "errors": errors,
        "checks": checks,
    }
    problems = report.result_problems(doc)
    if problems:
        log.error("result document malformed: %s", problems)
    preset.output.parent.mkdir(parents=True, exist_ok=True)
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    preset.output.write_bytes(data)
    stamped = preset.output.parent / f"{started.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if preset.quick else ''}.json"
    stamped.write_bytes(data)
    print()
    print(
        f"bp-stream benchmark ({machine['endpoints']}, {machine['cores']} cores, {machine['cpu_model']}, "
        f"Python {machine['python']}; consumer {classifier['mode']}; repeat {preset.repeat})"
    )
    print(report.format_table(checks))
    for section, message in errors.items():
        print(f"{section}: FAILED: {message}")
    print(f"\nresults: {preset.output} (and {stamped.name})")
    failed = bool(errors) or any(row["passed"] is False for row in checks)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
