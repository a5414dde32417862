"""The producer's command line: its flags become one frozen :class:`Run` (what to simulate, how to publish) and
the settings overrides (where to publish). Nothing after ``main`` sees ``argparse``."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bp.cohort import REALISTIC_EPISODES_PER_MONTH, Schedule
from bp.kafka_config import add_security_flags, security_overrides
from bp.profiles import parse_profile_mix
from runtime.cli import aware_datetime, non_negative_float, non_negative_int, positive_float, positive_int

DEFAULT_INTERVAL_S = 900.0  # per-patient measurement interval when publishing as fast as possible
DEFAULT_RATE = 5.0  # readings/s of a live run without --rate
SETTINGS_FLAGS = {  # flag dest -> Settings field (the rest comes from BP_* variables)
    "bootstrap_servers": "kafka_bootstrap",
    "topic": "topic",
    "partitions": "partitions",
    "compression": "compression",
}


@dataclass(frozen=True, slots=True)
class Run:
    """One producer run: the cohort to simulate, how many readings, how fast, and where they go."""

    patients: int
    seed: int
    count: int = 0  # 0 = endless
    rate: float | None = None  # None: the default (paced live, unpaced dry run)
    start: datetime | None = None  # None: now
    interval_s: float | None = None  # None: patients / rate (or DEFAULT_INTERVAL_S unpaced)
    schedule: Schedule = Schedule.AMBULATORY
    prevalence: float | None = None  # None: dense (the training hazards)
    profile_mix: Mapping[str, float] | None = None
    emit_truth: bool = False
    truth_file: Path | None = None
    dry_run: bool = False
    quiet: bool = False

    @property
    def simulated_rate(self) -> float:
        """The rate simulated time follows: ``--rate``, else the live default (a dry run shows the same data)."""
        return DEFAULT_RATE if self.rate is None else self.rate

    @property
    def pacing_rate(self) -> float:
        """Readings per wall-clock second: ``--rate``; else the live default, or unpaced for a dry run."""
        if self.rate is None:
            return 0.0 if self.dry_run else DEFAULT_RATE
        return self.rate

    @property
    def simulated_interval_s(self) -> float:
        """Seconds between two readings of one patient in simulated time."""
        if self.interval_s is not None:
            return self.interval_s
        if self.simulated_rate > 0:
            return self.patients / self.simulated_rate  # simulated time then follows the wall clock
        return DEFAULT_INTERVAL_S


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
    add_security_flags(parser)
    return parser


def parse_run(argv: list[str] | None = None) -> tuple[Run, dict[str, Any]]:
    """The run and the settings overrides from the command line (a bad combination is a usage error, exit 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.truth_file is not None and not (args.dry_run and args.emit_truth):
        parser.error("--truth-file needs --dry-run and --emit-truth")
    if args.dry_run and args.emit_truth and args.truth_file is None:
        parser.error("--emit-truth with --dry-run needs --truth-file PATH (the Observations go to stdout)")
    run = Run(
        patients=args.patients,
        seed=int.from_bytes(os.urandom(4), "big") if args.seed is None else args.seed,
        count=args.count,
        rate=args.rate,
        start=args.start,
        interval_s=args.interval,
        schedule=args.schedule,
        prevalence=args.prevalence,
        profile_mix=args.profile_mix,
        emit_truth=args.emit_truth,
        truth_file=args.truth_file,
        dry_run=args.dry_run,
        quiet=args.quiet,
    )
    return run, {field: getattr(args, flag) for flag, field in SETTINGS_FLAGS.items()} | security_overrides(args)
