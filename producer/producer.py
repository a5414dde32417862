"""``python -m producer.producer``: simulate a patient cohort and publish FHIR blood-pressure Observations.

Each reading becomes one FHIR R4 Observation (JSON), keyed by patient id (so a patient's readings stay in order
on one partition), sent with acks=all by an idempotent producer. ``--dry-run`` writes the Observations as JSON
Lines to stdout instead, without Kafka.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import IO, Any

import orjson

from bp.cohort import REALISTIC_EPISODES_PER_MONTH, Cohort, Schedule, SimReading, parse_profile_mix
from bp.errors import BpError, ConfigError, EndpointError
from bp.fhir import CONTENT_TYPE, build_observation
from bp.kafka_config import admin_kwargs, producer_kwargs
from bp.settings import Settings, load_settings
from runtime.cli import (
    StopFlag,
    aware_datetime,
    configure_logging,
    error_exit,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    tune_gc,
)

log = logging.getLogger("bp.producer")

PROGRESS_EVERY_S = 5.0
DEFAULT_INTERVAL_S = 900.0  # per-patient measurement interval when publishing as fast as possible
DEFAULT_RATE = 5.0  # readings/s of a live run without --rate


@dataclass
class Stats:
    """Counters of one producer run."""

    sent: int = 0
    acked: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def on_error(self, exc: BaseException) -> None:
        self.failed += 1
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0


def encode(sim: SimReading) -> bytes:
    """The Kafka value of a simulated reading: its FHIR Observation as compact JSON."""
    return orjson.dumps(build_observation(sim.reading))


def truth_headers(sim: SimReading) -> list[tuple[str, bytes]]:
    """Ground truth as Kafka headers (only with --emit-truth); never inside the FHIR resource."""
    truth = sim.truth
    return [
        ("bp-truth-significant", b"1" if truth.significant else b"0"),
        ("bp-truth-episode", (truth.episode or "").encode()),
        ("bp-truth-artefact", b"1" if truth.artefact else b"0"),
    ]


def truth_line(sim: SimReading) -> bytes:
    """One line of ``--truth-file``: the ground truth of a published reading, joined on observation_id."""
    reading, truth = sim.reading, sim.truth
    return orjson.dumps(
        {
            "observation_id": reading.observation_id,
            "patient_id": reading.patient_id,
            "effective": reading.effective.isoformat(),
            "episode_id": truth.episode_id,
            "episode_type": truth.episode,
            "significant": truth.significant,
        }
    )


def prevalence(text: str) -> float | None:
    """``--prevalence``: dense (None: the simulator's training hazards), realistic, or episodes per patient-month."""
    if text == "dense":
        return None
    if text == "realistic":
        return REALISTIC_EPISODES_PER_MONTH
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected dense, realistic or a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"episodes per patient-month must be >= 0, got {text!r}")
    return value


def profile_mix(text: str) -> dict[str, float]:
    try:
        return parse_profile_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def paced(
    items: Iterator[SimReading],
    rate: float,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Iterator[SimReading]:
    """Yield items at ``rate`` per second overall (0 = as fast as possible), without drift."""
    if rate <= 0:
        yield from items
        return
    clock, sleep = clock or time.monotonic, sleep or time.sleep  # looked up now: tests may replace them
    start = clock()
    for index, item in enumerate(items):
        delay = start + index / rate - clock()
        if delay > 0:
            sleep(delay)
        yield item


def make_cohort(args: argparse.Namespace) -> Cohort:
    start = args.start or datetime.now(UTC).replace(microsecond=0)
    if args.interval is not None:
        interval_s = args.interval
    elif simulated_rate(args) > 0:
        interval_s = args.patients / simulated_rate(args)  # simulated time then follows the wall clock
    else:
        interval_s = DEFAULT_INTERVAL_S
    return Cohort(
        patients=args.patients,
        seed=args.seed,
        start=start,
        interval=timedelta(seconds=interval_s),
        schedule=args.schedule,
        episodes_per_month=args.prevalence,
        profile_mix=args.profile_mix,
    )


def simulated_rate(args: argparse.Namespace) -> float:
    """The rate the simulated clock follows: ``--rate``, else the live default (a dry run shows the same data)."""
    return DEFAULT_RATE if args.rate is None else float(args.rate)


def pacing_rate(args: argparse.Namespace) -> float:
    """Readings per wall-clock second: ``--rate`` if given; else the live default, or no pacing for a dry run."""
    if args.rate is None:
        return 0.0 if args.dry_run else DEFAULT_RATE
    return float(args.rate)


def readings_to_send(args: argparse.Namespace) -> Iterator[SimReading]:
    """The simulated readings of this run: ``--count`` of them (0 = endless), at the pacing rate."""
    return paced(islice(make_cohort(args).readings(), args.count or None), pacing_rate(args))


def run_dry(args: argparse.Namespace, out: IO[bytes], stop: StopFlag, truth: IO[bytes] | None = None) -> Stats:
    """Write the Observations as JSON Lines to ``out`` (and their ground truth to ``truth``)."""
    stats = Stats()
    for sim in readings_to_send(args):
        if stop.stopped:
            break
        out.write(encode(sim) + b"\n")
        if truth is not None:
            truth.write(truth_line(sim) + b"\n")
        stats.sent += 1
        stats.acked += 1
    out.flush()
    if truth is not None:
        truth.flush()
    return stats


def ensure_topic(settings: Settings, partitions: int) -> None:
    """Create the topic with ``partitions`` if it does not exist (an existing topic is left as it is)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(**admin_kwargs(settings, "bp-producer-admin"))
    except (KafkaError, OSError) as exc:
        raise EndpointError(
            f"cannot reach Kafka at {settings.kafka_bootstrap} within {settings.connect_timeout_s:.0f} s ({exc}); "
            "start it (`make infra-up` or `docker compose up -d` in docker/) or set --bootstrap-servers"
        ) from None
    try:
        if settings.topic not in admin.list_topics():
            try:
                admin.create_topics([NewTopic(settings.topic, partitions, 1)])
                log.info("created topic %s with %d partitions", settings.topic, partitions)
            except TopicAlreadyExistsError:
                pass
    except KafkaError as exc:
        raise EndpointError(f"cannot create topic {settings.topic}: {exc}") from None
    finally:
        admin.close()


def make_producer(settings: Settings) -> Any:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        return KafkaProducer(**producer_kwargs(settings, "bp-producer", linger_ms=10, batch_size=128 * 1024))
    except (KafkaError, OSError) as exc:
        raise EndpointError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from None


def run_kafka(args: argparse.Namespace, settings: Settings, stop: StopFlag) -> Stats:
    """Publish to Kafka; returns the counters after a final flush."""
    from kafka.errors import KafkaError

    ensure_topic(settings, settings.partitions)
    producer = make_producer(settings)
    tune_gc()
    stats = Stats()
    base_headers = [("content-type", CONTENT_TYPE.encode())]

    def acked(_: object) -> None:
        stats.acked += 1

    next_progress = time.monotonic() + PROGRESS_EVERY_S
    try:
        for sim in readings_to_send(args):
            if stop.stopped:
                break
            headers = base_headers + truth_headers(sim) if args.emit_truth else base_headers
            try:
                future = producer.send(
                    settings.topic, value=encode(sim), key=sim.reading.patient_id.encode(), headers=headers
                )
            except KafkaError as exc:  # e.g. buffer full beyond max_block_ms: counted, reported
                stats.on_error(exc)
                continue
            future.add_callback(acked)
            future.add_errback(stats.on_error)
            stats.sent += 1
            if time.monotonic() >= next_progress:
                next_progress += PROGRESS_EVERY_S
                log.info("sent %d (%.0f/s), acked %d, errors %d", stats.sent, stats.rate(), stats.acked, stats.failed)
    finally:
        try:
            producer.flush(timeout=max(30.0, settings.connect_timeout_s))
        except KafkaError as exc:
            log.error("flush failed: %s", exc)
        producer.close(timeout=10)
    return stats


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m producer.producer",
        description="Simulate a cohort of patients and publish FHIR R4 blood-pressure Observations to Kafka.",
    )
    parser.add_argument(
        "--bootstrap-servers", help="Kafka bootstrap servers (env BP_KAFKA_BOOTSTRAP; default localhost:9092)"
    )
    parser.add_argument("--topic", help="topic (env BP_TOPIC; default blood-pressure)")
    parser.add_argument(
        "--partitions", type=int, help="partitions when creating the topic (env BP_PARTITIONS; default 6)"
    )
    parser.add_argument("--compression", help="lz4 | gzip | zstd | none (env BP_COMPRESSION; default lz4)")
    parser.add_argument("--patients", type=positive_int, default=50, help="cohort size (default 50)")
    parser.add_argument(
        "--rate",
        type=non_negative_float,
        default=None,
        help=f"readings/s overall; 0 = as fast as possible (default {DEFAULT_RATE:g}; a --dry-run without --rate "
        "is not paced)",
    )
    parser.add_argument(
        "--count", type=non_negative_int, default=0, help="readings to publish; 0 = forever (default 0)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="simulation seed (default: random, printed in the summary)"
    )
    parser.add_argument(
        "--start", type=aware_datetime, default=None, help="simulated start time, ISO 8601 with offset (default: now)"
    )
    parser.add_argument(
        "--interval",
        type=positive_float,
        default=None,
        help="seconds between two readings of one patient (default: patients/rate, or 900 when --rate 0)",
    )
    parser.add_argument(
        "--schedule",
        type=Schedule,
        choices=list(Schedule),
        default=Schedule.AMBULATORY,
        help="ambulatory: a reading every --interval; home: morning and evening pairs a minute apart, missed days "
        "(default ambulatory)",
    )
    parser.add_argument(
        "--prevalence",
        type=prevalence,
        default=None,
        metavar="dense|realistic|N",
        help="episode prevalence: dense (the training default), realistic (about 1 episode per patient-month) or N "
        "episodes per patient-month (default dense)",
    )
    parser.add_argument(
        "--profile-mix",
        type=profile_mix,
        default=None,
        metavar="default|shifted|NAME=SHARE,...",
        help="patient profile shares (default: the documented mix; shifted: older and sicker)",
    )
    parser.add_argument(
        "--emit-truth",
        action="store_true",
        help="publish the simulator's ground truth: as Kafka headers, or with --dry-run to --truth-file",
    )
    parser.add_argument(
        "--truth-file", type=Path, default=None, help="with --dry-run --emit-truth: ground truth as JSON Lines here"
    )
    parser.add_argument("--dry-run", action="store_true", help="write Observations as JSON Lines to stdout, no Kafka")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


@contextlib.contextmanager
def truth_output(args: argparse.Namespace) -> Iterator[IO[bytes] | None]:
    """The open ``--truth-file`` of a dry run with ``--emit-truth``, else None."""
    if not args.emit_truth:
        yield None
        return
    try:
        handle = args.truth_file.open("wb")
    except OSError as exc:
        raise ConfigError(f"cannot write --truth-file {args.truth_file}: {exc.strerror or exc}") from None
    with handle:
        yield handle


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.truth_file is not None and not (args.dry_run and args.emit_truth):
        parser.error("--truth-file needs --dry-run and --emit-truth")
    if args.dry_run and args.emit_truth and args.truth_file is None:
        parser.error("--emit-truth with --dry-run needs --truth-file PATH (the Observations go to stdout)")
    configure_logging("producer", args.quiet)
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big")
    stop = StopFlag.install()
    try:
        settings = load_settings(
            kafka_bootstrap=args.bootstrap_servers,
            topic=args.topic,
            partitions=args.partitions,
            compression=args.compression,
        )
        if args.dry_run:
            try:
                with truth_output(args) as truth:
                    stats = run_dry(args, sys.stdout.buffer, stop, truth)
            except BrokenPipeError:  # e.g. `| head`: the reader has what it wanted
                return 0
        else:
            log.info(
                "publishing to %s topic %s (seed %d, %d patients, rate %s/s, count %s)",
                settings.kafka_bootstrap,
                settings.topic,
                args.seed,
                args.patients,
                pacing_rate(args) or "max",
                args.count or "unbounded",
            )
            stats = run_kafka(args, settings, stop)
    except BpError as exc:
        return error_exit("producer", exc)
    except KeyboardInterrupt:
        print("producer: interrupted before the final flush; unacknowledged readings may be lost", file=sys.stderr)
        return 130
    elapsed = time.monotonic() - stats.started
    summary = (
        f"producer: sent {stats.sent}, acked {stats.acked}, failed {stats.failed} in {elapsed:.1f} s "
        f"({stats.sent / elapsed if elapsed else 0:.0f}/s), seed {args.seed}"
    )
    if stats.errors:
        summary += " errors: " + ", ".join(f"{name}×{n}" for name, n in sorted(stats.errors.items()))
    print(summary, file=sys.stderr)
    return 0 if stats.failed == 0 and stats.acked == stats.sent else 1


if __name__ == "__main__":
    raise SystemExit(main())
