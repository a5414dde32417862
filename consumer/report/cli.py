"""``python -m consumer.report``: build the report from Elasticsearch and the archive, write it, print a headline."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from bp.alerts import describe
from bp.errors import BpError, ConfigError
from bp.settings import Settings, load_settings
from consumer.report.archive import scan_archive
from consumer.report.model import Report, Sources, public_url
from consumer.report.queries import query_alerts, query_anomalies, query_stats
from consumer.report.render import rate_text, render_html
from runtime.cli import configure_logging, error_exit
from runtime.files import atomic_write_text

SHOWN_ALERTS = 10  # open alerts printed by the CLI (all are in the report)
log = logging.getLogger("bp.report")

DEFAULT_OUTPUT = Path("reports/bp-report.html")


def consistency_notes(report: Report) -> list[str]:
    """Plain-language notes where the sources disagree or are missing."""
    notes: list[str] = []
    sources, stats, archive = report.sources, report.stats, report.archive
    if not report.anomalies.exists:
        notes.append(f"The anomaly index {sources.index} does not exist: no anomalies are shown.")
    if not stats.exists:
        notes.append(
            f"The statistics index {sources.stats_index} does not exist: no anomaly rate over time, rejected = 0."
        )
    if not archive.exists:
        notes.append(f"The archive directory {sources.archive_dir} does not exist: normal = 0.")
    if archive.unreadable:
        notes.append(f"{archive.unreadable} archive lines are not valid JSON and were not counted.")
    if archive.incomplete:
        notes.append(f"{archive.incomplete} archive lines were still being written and were not counted.")
    if stats.windows and (stats.normal != report.normal or stats.anomalies != report.anomalies.total):
        notes.append(
            f"The consumers' statistics windows count {stats.normal} normal readings and {stats.anomalies} "
            f"anomalies; the archive holds {report.normal} and the index {report.anomalies.total}. They differ "
            "when the archive or the index hold readings of other runs, when a consumer is still running "
            "(its current window is not written yet), or when a batch was replayed after a crash (the "
            "archive and the index never duplicate a reading; a replayed window is counted again)."
        )
    return notes


# ------------------------------------------------------------------------------------------------- output
def write_report(path: Path, text: str) -> None:
    """The page, written atomically (a reader never sees half a report)."""
    if path.is_dir():
        raise ConfigError(f"--output {path} is a directory; give a file name")
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise BpError(f"cannot write the report to {path}: {exc.strerror or exc}") from None


def build_report(settings: Settings) -> Report:
    from consumer.clients import make_es

    es = make_es(settings)
    try:
        log.info("querying %s and %s at %s", settings.index, settings.stats_index, public_url(settings.es_url))
        anomalies = query_anomalies(es, settings.index)
        stats = query_stats(es, settings.stats_index)
        alerts = query_alerts(es, settings.alerts_index)
    finally:
        es.close()
    log.info("reading the archive %s", settings.archive_dir)
    archive = scan_archive(settings.archive_dir)
    report = Report(
        generated_at=datetime.now(UTC),
        sources=Sources(public_url(settings.es_url), settings.index, settings.stats_index, str(settings.archive_dir)),
        anomalies=anomalies,
        stats=stats,
        archive=archive,
        alerts=alerts,
    )
    notes = consistency_notes(report)
    for note in notes:
        log.warning("%s", note)
    return dataclasses.replace(report, notes=tuple(notes))


def headline(report: Report) -> str:
    return (
        f"open alerts {len(report.alerts.open)}, readings {report.readings}, normal {report.normal}, "
        f"anomalies {report.anomalies.total} (rate {rate_text(report.anomaly_rate)}), "
        f"actionable {report.actionable}, rejected {report.rejected}"
    )


def alert_lines(report: Report, limit: int = SHOWN_ALERTS) -> list[str]:
    """The open alerts as one line each (who, what, since when, how bad, why: :func:`bp.alerts.describe`), most
    severe and longest open first."""
    lines = [f"alert {describe(alert)}" for alert in report.alerts.open[:limit]]
    hidden = len(report.alerts.open) - limit
    if hidden > 0:
        lines.append(f"... and {hidden} more open alerts in the report")
    return lines


# ---------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m consumer.report",
        description="Write one self-contained HTML report (the Kibana dashboard's panels and summary numbers) "
        "from the anomaly index, the statistics index and the normal archive. Opens without network.",
        epilog="Credentials and TLS come from the environment like the consumer's: BP_ES_USERNAME, "
        "BP_ES_PASSWORD, BP_ES_API_KEY, BP_ES_CA_CERT.",
    )
    add = parser.add_argument
    add("--output", type=Path, default=DEFAULT_OUTPUT, help=f"HTML file to write (default {DEFAULT_OUTPUT})")
    add("--es-url", help="Elasticsearch URL (env BP_ES_URL; default http://localhost:9200)")
    add("--index", help="anomaly index (env BP_INDEX; default bp-anomalies)")
    add("--stats-index", help="statistics index (env BP_STATS_INDEX; default bp-stats)")
    add("--alerts-index", help="alerts index (env BP_ALERTS_INDEX; default bp-alerts)")
    add("--archive-dir", type=Path, help="normal-reading archive directory (env BP_ARCHIVE_DIR; default data/normal)")
    add("--quiet", action="store_true", help="warnings and errors only")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("report", args.quiet)
    try:
        settings = load_settings(
            es_url=args.es_url,
            index=args.index,
            stats_index=args.stats_index,
            alerts_index=args.alerts_index,
            archive_dir=args.archive_dir,
        )
        if args.output.is_dir():  # checked again when writing; fail before the queries if it is wrong already
            raise ConfigError(f"--output {args.output} is a directory; give a file name")
        report = build_report(settings)
        write_report(args.output, render_html(report))
    except BpError as exc:
        return error_exit("report", exc)
    except KeyboardInterrupt:
        print("report: interrupted; no report written", file=sys.stderr)
        return 130
    print(f"report: wrote {args.output}")
    print(f"report: {headline(report)}")
    for line in alert_lines(report):
        print(f"report: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
