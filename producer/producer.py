"""``python -m producer.producer``: simulate a patient cohort and publish FHIR blood-pressure Observations.

Each reading becomes one FHIR R4 Observation (JSON), keyed by patient id (so a patient's readings stay in order
on one partition), sent with acks=all by an idempotent producer. ``--dry-run`` writes the Observations as JSON
Lines to stdout instead, without Kafka. The flags become a frozen ``Run`` in ``producer/options.py``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import IO, Any, Protocol

import orjson

from bp.cohort import Cohort
from bp.errors import BpError, ConfigError, EndpointError, WaitTimeout
from bp.fhir import CONTENT_TYPE, build_observation
from bp.kafka_config import admin_kwargs, producer_kwargs
from bp.redact import mask
from bp.settings import Settings, load_settings
from bp.truth import SimReading
from producer.options import Run, parse_run
from runtime.cli import (
    StopFlag,
    configure_logging,
    error_exit,
    tune_gc,
)
from runtime.waits import wait_until

log = logging.getLogger("bp.producer")

PROGRESS_EVERY_S = 5.0


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


def make_cohort(run: Run) -> Cohort:
    return Cohort(
        patients=run.patients,
        seed=run.seed,
        start=run.start or datetime.now(UTC).replace(microsecond=0),
        interval=timedelta(seconds=run.simulated_interval_s),
        schedule=run.schedule,
        episodes_per_month=run.prevalence,
        profile_mix=None if run.profile_mix is None else dict(run.profile_mix),
    )


def readings_to_send(run: Run) -> Iterator[SimReading]:
    """The simulated readings of this run: ``count`` of them (0 = endless), at the pacing rate."""
    return paced(islice(make_cohort(run).readings(), run.count or None), run.pacing_rate)


def run_dry(run: Run, out: IO[bytes], stop: StopFlag, truth: IO[bytes] | None = None) -> Stats:
    """Write the Observations as JSON Lines to ``out`` (and their ground truth to ``truth``)."""
    stats = Stats()
    for sim in readings_to_send(run):
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
            f"cannot reach Kafka at {settings.kafka_bootstrap} within {settings.connect_timeout_s:.0f} s "
            f"({mask(str(exc), settings.secrets())}); "
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
        raise EndpointError(f"cannot create topic {settings.topic}: {mask(str(exc), settings.secrets())}") from None
    finally:
        admin.close()


class SendFuture(Protocol):
    def add_callback(self, callback: Callable[[Any], object]) -> object: ...
    def add_errback(self, errback: Callable[[BaseException], object]) -> object: ...


class Publisher(Protocol):
    """What the producer needs of ``kafka.KafkaProducer``."""

    def send(self, topic: str, *, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> SendFuture: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def close(self, timeout: float | None = None) -> None: ...


def make_producer(settings: Settings) -> Publisher:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        producer: Publisher = KafkaProducer(
            **producer_kwargs(settings, "bp-producer", linger_ms=10, batch_size=128 * 1024)
        )
    except (KafkaError, OSError) as exc:
        raise EndpointError(
            f"cannot reach Kafka at {settings.kafka_bootstrap}: {mask(str(exc), settings.secrets())}"
        ) from None
    return producer


def run_kafka(run: Run, settings: Settings, stop: StopFlag) -> Stats:
    """Publish to Kafka; returns the counters after a final flush."""
    from kafka.errors import KafkaError

    ensure_topic(settings, settings.partitions)
    producer: Publisher = make_producer(settings)
    tune_gc()
    stats = Stats()
    base_headers = [("content-type", CONTENT_TYPE.encode())]

    def acked(_: object) -> None:
        stats.acked += 1

    next_progress = time.monotonic() + PROGRESS_EVERY_S
    try:
        for sim in readings_to_send(run):
            if stop.stopped:
                break
            headers = base_headers + truth_headers(sim) if run.emit_truth else base_headers
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
        final_flush(producer, max(30.0, settings.connect_timeout_s))
        try:
            producer.close(timeout=10)
        except KafkaError as exc:  # unacknowledged records are counted as not acked in the summary
            log.error("close failed: %s", exc)
    return stats


def final_flush(producer: Publisher, timeout_s: float) -> bool:
    """Flush until every record is acknowledged or failed; False (logged) if ``timeout_s`` passes first.

    kafka-python 3.0.12 splits a batch that the broker refused as too large (the topic's max.message.bytes is
    below the batch, e.g. uncompressed) and resends the halves, but a flush() running meanwhile raises
    UnknownError('Future not done'): the records are still on their way, so flush again.
    """
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    last: list[str] = []

    def flushed() -> bool:
        try:
            producer.flush(timeout=max(0.1, deadline - time.monotonic()))
        except KafkaError as exc:
            last.append(str(exc))
            log.warning("flush interrupted (%s); flushing again", exc)
            return False
        return True

    try:
        wait_until(flushed, timeout_s, "producer flush")
    except WaitTimeout:
        log.error("flush failed: %s", last[-1] if last else "timed out")
        return False
    return True


@contextlib.contextmanager
def truth_output(run: Run) -> Iterator[IO[bytes] | None]:
    """The open ``--truth-file`` of a dry run with ``--emit-truth``, else None."""
    if not run.emit_truth or run.truth_file is None:
        yield None
        return
    try:
        handle = run.truth_file.open("wb")
    except OSError as exc:
        raise ConfigError(f"cannot write --truth-file {run.truth_file}: {exc.strerror or exc}") from None
    with handle:
        yield handle


def main(argv: list[str] | None = None) -> int:
    run, overrides = parse_run(argv)
    configure_logging("producer", run.quiet)
    stop = StopFlag.install()
    try:
        settings = load_settings(**overrides)
        if run.dry_run:
            try:
                with truth_output(run) as truth:
                    stats = run_dry(run, sys.stdout.buffer, stop, truth)
            except BrokenPipeError:  # e.g. `| head`: the reader has what it wanted
                return 0
        else:
            log.info(
                "publishing to %s topic %s (seed %d, %d patients, rate %s/s, count %s)",
                settings.kafka_bootstrap,
                settings.topic,
                run.seed,
                run.patients,
                run.pacing_rate or "max",
                run.count or "unbounded",
            )
            stats = run_kafka(run, settings, stop)
    except BpError as exc:
        return error_exit("producer", exc)
    except KeyboardInterrupt:
        print("producer: interrupted before the final flush; unacknowledged readings may be lost", file=sys.stderr)
        return 130
    elapsed = time.monotonic() - stats.started
    summary = (
        f"producer: sent {stats.sent}, acked {stats.acked}, failed {stats.failed} in {elapsed:.1f} s "
        f"({stats.sent / elapsed if elapsed else 0:.0f}/s), seed {run.seed}"
    )
    if stats.errors:
        summary += " errors: " + ", ".join(f"{name}×{n}" for name, n in sorted(stats.errors.items()))
    print(summary, file=sys.stderr)
    return 0 if stats.failed == 0 and stats.acked == stats.sent else 1


if __name__ == "__main__":
    raise SystemExit(main())
