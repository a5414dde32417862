"""``make demo``: a bounded end-to-end run, stand-in up → producer → consumer → summary → report → stand-in down.

Uses the endpoints in BP_KAFKA_BOOTSTRAP / BP_ES_URL when set; otherwise starts a throwaway noida-db stand-in on
free loopback ports and stops it at the end (also on failure or Ctrl-C). With ``--kafka real`` (``make demo
KAFKA=real``) Kafka is a real Apache Kafka broker (infra/kafka.py, jars from `make kafka`) and the stand-in serves
Elasticsearch only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bp.archive import LAYOUT
from bp.errors import KafkaBrokerError
from infra.kafka import KafkaBroker, kafka_version
from infra.standin import StandIn, StandInError, free_port, real_endpoints_configured

ROOT = Path(__file__).resolve().parent.parent
READING_INTERVAL_S = 900  # simulated: one reading per patient every 15 minutes (an ambulatory monitor)
MALFORMED = [
    b"this is not JSON",
    b'{"resourceType": "Patient", "id": "not-an-observation"}',
    b'{"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org", '
    b'"code": "85354-9"}]}, "subject": {"reference": "Patient/x"}, "effectiveDateTime": "2026-01-01T08:00:00Z", '
    b'"component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, '
    b'"valueQuantity": {"value": -20, "code": "mm[Hg]"}}]}',
]


def run(module: str, args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    print(f"$ python -m {module} {' '.join(args)}", flush=True)
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, timeout=timeout, check=False,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"demo: {module} failed with exit code {result.returncode}")
    return result


def inject_malformed(bootstrap: str, topic: str) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for value in MALFORMED:
        producer.send(topic, key=b"demo-malformed", value=value)
    producer.flush(timeout=30)
    producer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.demo", description=__doc__)
    parser.add_argument("--count", type=int, default=2000, help="readings to publish (default 2000)")
    parser.add_argument("--patients", type=int, default=50, help="cohort size (default 50)")
    parser.add_argument("--seed", type=int, default=2026, help="simulation seed (default 2026)")
    parser.add_argument("--rules-only", action="store_true", help="run the consumer without the model")
    parser.add_argument(
        "--kafka", choices=["standin", "real"], default="standin",
        help="standin (default: noida-db, nothing to install) or real (Apache Kafka from `make kafka`)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    env = {k: v for k, v in os.environ.items()}
    env["PYTHONUNBUFFERED"] = "1"
    standin: StandIn | None = None
    broker: KafkaBroker | None = None
    archive = ROOT / "data" / "normal"
    summary_file = Path(tempfile.mkstemp(prefix="bp-demo-", suffix=".json")[1])
    try:
        if real_endpoints_configured():
            print(
                f"demo: using Kafka {env.get('BP_KAFKA_BOOTSTRAP', 'localhost:9092')} and "
                f"Elasticsearch {env.get('BP_ES_URL', 'http://localhost:9200')} from the environment"
            )
        else:
            data_dir = ROOT / ".infra" / "demo"
            shutil.rmtree(data_dir, ignore_errors=True)
            if args.kafka == "real":
                broker = KafkaBroker(ROOT / ".infra" / "demo-kafka", free_port(), free_port())
                shutil.rmtree(broker.data_dir, ignore_errors=True)
                broker.start()
                print(f"demo: Apache Kafka {kafka_version()} up (pid {broker.pid}) on {broker.bootstrap}")
            standin = StandIn(data_dir, None if broker else free_port(), free_port())
            standin.start()
            env["BP_KAFKA_BOOTSTRAP"] = broker.bootstrap if broker else standin.bootstrap
            env["BP_ES_URL"] = standin.es_url
            kafka = "" if broker else f"Kafka {standin.bootstrap}, "
            print(f"demo: stand-in up (pid {standin.pid}): {kafka}Elasticsearch {standin.es_url}")
            # A fresh broker restarts offsets at 0: clear the previous demo's archive and per-patient state so
            # nothing is mistaken for a replay.
            for path in archive.glob("*"):
                if path.name != ".gitkeep":
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            shutil.rmtree(ROOT / "data" / "state", ignore_errors=True)
        started = time.monotonic()
        run("producer.producer",
            ["--count", str(args.count), "--rate", "0", "--patients", str(args.patients), "--seed", str(args.seed),
             "--interval", str(READING_INTERVAL_S), "--emit-truth"], env, timeout=300)  # fmt: skip
        inject_malformed(env["BP_KAFKA_BOOTSTRAP"], env.get("BP_TOPIC", "blood-pressure"))
        print(f"demo: also sent {len(MALFORMED)} malformed messages to show the dead-letter path")
        consumer_args = ["--stop-when-idle", "3", "--summary-json", str(summary_file), "--instance-id", "demo"]
        if args.rules_only:
            consumer_args.append("--rules-only")
        run("consumer.consumer", consumer_args, env, timeout=600)
        elapsed = time.monotonic() - started
        summary = json.loads(summary_file.read_text())
        report = ROOT / "reports" / "bp-report.html"
        report_result = subprocess.run(
            [sys.executable, "-m", "consumer.report", "--output", str(report)], cwd=ROOT, env=env, timeout=300,
            check=False, capture_output=True, text=True,
        )  # fmt: skip
        sys.stdout.write(report_result.stdout)
        patient_days = args.count * READING_INTERVAL_S / 86_400
        print_summary(
            summary, elapsed, archive, env, report if report_result.returncode == 0 else None, patient_days,
            explained_alerts(report_result.stdout),
        )  # fmt: skip
        if report_result.returncode != 0:
            sys.stderr.write(report_result.stderr)
            print("demo: the report failed (see above)")
            return 1
        return 0
    except (StandInError, KafkaBrokerError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    finally:
        summary_file.unlink(missing_ok=True)
        if standin is not None:
            standin.stop()
            print("demo: stand-in stopped")
        if broker is not None:
            broker.stop()
            print("demo: Apache Kafka stopped")


def alert_lines(alerts: dict[str, int], patient_days: float) -> list[str]:
    """Patient-level alerts first: what a clinician would be asked to look at, and how often."""
    opened = {k.split("/", 1)[1]: n for k, n in alerts.items() if k.startswith("opened/")}
    resolved = {k.split("/", 1)[1]: n for k, n in alerts.items() if k.startswith("resolved/")}
    total = sum(opened.values())
    burden = f"{total / patient_days:.2f} per patient-day" if patient_days else "n/a per patient-day"
    lines = [f"alerts opened          {total:>8}   ({burden}; {patient_days:.1f} patient-days simulated)"]
    for kind in sorted(set(opened) | set(resolved)):
        lines.append(f"  {kind:<20} opened {opened.get(kind, 0):>4}, resolved {resolved.get(kind, 0):>4}")
    escalated = sum(n for k, n in alerts.items() if k.startswith("escalated/"))
    if escalated:
        lines.append(f"  escalated to critical {escalated:>4}")
    return lines


def explained_alerts(report_output: str) -> list[str]:
    """The report's one-line explanation of each open alert (``report: alert ...`` lines, and how many more)."""
    lines = []
    for line in report_output.splitlines():
        if line.startswith("report: alert "):
            lines.append(line.removeprefix("report: alert "))
        elif line.startswith("report: ... and "):
            lines.append(line.removeprefix("report: "))
    return lines


def print_summary(
    summary: dict[str, Any],
    elapsed: float,
    archive: Path,
    env: dict[str, str],
    report: Path | None,
    patient_days: float = 0.0,
    explanations: list[str] | None = None,
) -> None:
    decided = summary["normal"] + summary["anomalies"]
    rate = 100.0 * summary["anomalies"] / decided if decided else 0.0
    priorities = summary["anomalies_by_priority"]
    actionable = priorities.get("critical", 0) + priorities.get("high", 0)
    lines = [
        "",
        "=" * 72,
        "bp-stream demo summary",
        "=" * 72,
        f"messages consumed      {summary['messages']:>8}   ({summary['readings']} readings, {elapsed:.1f} s total)",
        *alert_lines(summary.get("alerts", {}), patient_days),
        *(f"  - {line}" for line in explanations or ()),
        f"normal (archived)      {summary['normal']:>8}",
        f"anomalies (indexed)    {summary['anomalies']:>8}   ({rate:.1f} % of readings)",
    ]
    for name, count in summary["anomalies_by_type"].items():
        lines.append(f"  type {name:<22}{count:>6}")
    for name in ("critical", "high", "medium"):
        lines.append(f"  priority {name:<18}{priorities.get(name, 0):>6}")
    lines.append(f"  actionable (critical + high) {actionable}")
    lines.append(f"rejected (dead letters) {summary['rejected']:>7}   {summary['rejected_by_reason']}")
    lines.append(f"archive                {archive.relative_to(ROOT)}/{LAYOUT}")
    index = env.get("BP_INDEX", "bp-anomalies")
    if real_endpoints_configured():
        lines.append(f"query the index        curl -s '{env['BP_ES_URL']}/{index}/_search?q=priority:critical&size=5'")
    else:
        lines.append(f"index                  {index} (the demo's stand-in is stopped now; `make infra-up` keeps one)")
    if report is not None:
        lines.append(f"report                 {report.relative_to(ROOT)}")
    lines.append("=" * 72)
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
