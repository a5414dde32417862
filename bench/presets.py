"""The benchmark's sizes: two frozen presets (full and ``--quick``) and the flags that override single fields."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from bench.processes import ROOT

RESULTS_DIR = ROOT / "bench" / "results"
SECTIONS = ("consumer", "producer", "latency", "memory")


@dataclass(frozen=True, slots=True)
class Preset:
    """Everything one benchmark run is parameterised by (written to the result document as ``config``)."""

    repeat: int  # repeats of the throughput runs
    messages: int  # consumer throughput: messages
    patients: int  # consumer throughput: cohort size
    producer_messages: int
    producer_patients: int
    rate: float  # latency: readings/s
    latency_seconds: float
    latency_patients: int
    memory_messages: int  # memory: largest size
    memory_checkpoint: int  # memory: intermediate RSS point
    memory_patients: int
    seed: int = 2026
    sections: tuple[str, ...] = SECTIONS
    quick: bool = False
    rules_only: bool = False
    kafka: str = "standin"  # standin (noida-db) or real (Apache Kafka from `make kafka`; ES stays the stand-in)
    model: Path = Path("ml/artifacts/bp_logreg.joblib")
    output: Path = RESULTS_DIR / "latest.json"


FULL = Preset(
    repeat=3,
    messages=100_000,
    patients=10_000,
    producer_messages=100_000,
    producer_patients=1000,
    rate=1000.0,
    latency_seconds=60.0,
    latency_patients=1000,
    memory_messages=1_200_000,
    memory_checkpoint=300_000,
    memory_patients=1_000_000,
)
QUICK = dataclasses.replace(
    FULL,
    repeat=1,
    messages=20_000,
    producer_messages=20_000,
    latency_seconds=15.0,
    memory_messages=30_000,
    memory_checkpoint=10_000,
    memory_patients=10_000,
    quick=True,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke run (~1 min): small sizes, one repeat, 15 s latency")
    add("--repeat", type=int, help=f"repeats of the throughput runs (default {FULL.repeat}; --quick {QUICK.repeat})")
    add("--messages", type=int,
        help=f"consumer throughput: messages (default {FULL.messages}; --quick {QUICK.messages})")
    add("--patients", type=int, help=f"consumer throughput: cohort size (default {FULL.patients})")
    add("--producer-messages", type=int,
        help=f"producer throughput: messages (default {FULL.producer_messages}; --quick {QUICK.producer_messages})")
    add("--producer-patients", type=int, help=f"producer throughput: cohort size (default {FULL.producer_patients})")
    add("--rate", type=float, help=f"latency: readings/s (default {FULL.rate:g})")
    add("--latency-seconds", type=float,
        help=f"latency: duration (default {FULL.latency_seconds:g}; --quick {QUICK.latency_seconds:g})")
    add("--latency-patients", type=int, help=f"latency: cohort size (default {FULL.latency_patients})")
    add("--memory-messages", type=int,
        help=f"memory: largest size (default {FULL.memory_messages}; --quick {QUICK.memory_messages})")
    add("--memory-checkpoint", type=int,
        help=f"memory: intermediate RSS point (default {FULL.memory_checkpoint}; --quick {QUICK.memory_checkpoint})")
    add("--memory-patients", type=int,
        help=f"memory: distinct patients (default {FULL.memory_patients}; --quick {QUICK.memory_patients})")
    add("--seed", type=int, help=f"simulation seed (default {FULL.seed})")
    add("--only", help=f"comma list of {','.join(SECTIONS)} (default all)")
    add("--rules-only", action="store_true", default=None, help="benchmark the consumer without the model")
    add("--kafka", choices=["standin", "real"],
        help="Kafka to start: standin (default, noida-db) or real (Apache Kafka from `make kafka`)")
    add("--model", type=Path, help=f"model artifact (default {FULL.model})")
    add("--output", type=Path, help=f"result file (default {FULL.output.relative_to(ROOT)})")
    return parser  # fmt: skip


def parse_preset(argv: list[str] | None, description: str = "") -> Preset:
    """The preset chosen by ``--quick``, with every flag given on the command line replacing its field."""
    parser = build_parser()
    parser.description = description
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    names = {f.name for f in dataclasses.fields(Preset)} - {"sections", "quick"}
    given = {name: value for name, value in vars(args).items() if name in names and value is not None}
    if args.only:
        unknown = sorted(set(args.only.split(",")) - set(SECTIONS))
        if unknown:
            parser.error(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
        given["sections"] = tuple(args.only.split(","))
    preset = dataclasses.replace(base, **given)
    if preset.repeat < 1:
        parser.error("--repeat must be ≥ 1")
    return preset
