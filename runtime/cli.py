"""Process plumbing shared by the command-line entry points: argparse value types, logging set-up, the stop flag
(SIGINT/SIGTERM), garbage-collector tuning and the error-to-exit-code mapping.

The value types raise ``argparse.ArgumentTypeError``, so a bad flag gets argparse's usage error (exit 2).
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import signal
import sys
from collections.abc import Iterable
from datetime import datetime
from types import FrameType

from bp.errors import BpError, ConfigError, EndpointError, ModelError
from bp.redact import mask_urls

NOISY_LOGGERS = ("kafka", "elastic_transport", "elasticsearch", "matplotlib")


def configure_logging(program: str, quiet: bool, noisy: Iterable[str] = NOISY_LOGGERS) -> None:
    """``HH:MM:SS <program> message`` on stderr; client libraries only speak when something is badly wrong.

    Passwords inside URLs are masked in every line (``http://user:***@host``)."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_MaskingFormatter(f"%(asctime)s {program} %(message)s", datefmt="%H:%M:%S"))
    for name in noisy:
        logging.getLogger(name).setLevel(logging.CRITICAL)


class _MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_urls(super().format(record))


class StopFlag:
    """Set by the first SIGINT/SIGTERM: the loop finishes what it is doing, flushes, commits and summarises.

    A second signal raises KeyboardInterrupt to leave at once (uncommitted work is replayed next time).
    """

    def __init__(self) -> None:
        self.stopped = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.stopped:
            raise KeyboardInterrupt
        self.stopped = True

    def __bool__(self) -> bool:
        return self.stopped

    @classmethod
    def install(cls) -> StopFlag:
        flag = cls()
        signal.signal(signal.SIGINT, flag)
        signal.signal(signal.SIGTERM, flag)
        return flag


def error_exit(program: str, exc: BpError) -> int:
    """Print a bp-stream error as one line and return its exit code: 2 for a bad setting or an unreachable
    endpoint, 3 for a missing or mismatched model, 1 for anything else."""
    print(f"{program}: error: {mask_urls(str(exc))}", file=sys.stderr)
    if isinstance(exc, ConfigError | EndpointError):
        return 2
    if isinstance(exc, ModelError):
        return 3
    return 1


def tune_gc() -> None:
    """Call once start-up is done: the streaming loops allocate many short-lived objects per message.

    Start-up objects (modules, the model, clients) are frozen out of the collector's sight, and young objects
    are collected every 50,000 allocations instead of 700: measured ~15 % more producer throughput. Reference
    counting still frees almost everything at once; only cycles wait a little longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _number(text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def aware_datetime(text: str) -> datetime:
    """An ISO 8601 time with a UTC offset."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs a UTC offset, e.g. {text}+00:00")
    return value
