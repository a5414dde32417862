"""The benchmark's input: simulated readings as FHIR Observations with a chosen share of anomalies and rejects.

The cohort's natural mix is about half rule anomalies (hypotension/hypertension thresholds), so the mix is built
by walking the cohort's stream in order and skipping readings of a class that is over its quota; readings stay in
stream order (per-patient order kept). Every ``1 / reject_share``-th message is malformed, cycling through a
fixed list of defects, each of which the consumer must dead-letter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from bp.clinical import assess
from bp.cohort import Cohort
from bp.fhir import build_observation
from bp.truth import SimReading

BENCH_START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record to produce: key, value and what the bench expects the consumer to make of it."""

    key: bytes
    value: bytes
    kind: str  # "normal" | "anomaly" | "reject" (by the threshold rules; the model may add anomalies)


def _drop_diastolic(obs: dict[str, Any]) -> None:
    obs["component"] = obs["component"][:1]


def _implausible(obs: dict[str, Any]) -> None:
    obs["component"][0]["valueQuantity"]["value"] = 420


def _unknown_unit(obs: dict[str, Any]) -> None:
    obs["component"][1]["valueQuantity"].update(code="cm[H2O]", unit="cmH2O")


def _wrong_type(obs: dict[str, Any]) -> None:
    obs["resourceType"] = "Patient"


def _no_subject(obs: dict[str, Any]) -> None:
    del obs["subject"]


def _inverted(obs: dict[str, Any]) -> None:
    obs["component"][0]["valueQuantity"]["value"] = 60
    obs["component"][1]["valueQuantity"]["value"] = 95


def _string_value(obs: dict[str, Any]) -> None:
    obs["component"][0]["valueQuantity"]["value"] = "120"


def _bad_status(obs: dict[str, Any]) -> None:
    obs["status"] = "entered-in-error"


_MUTATIONS: tuple[Callable[[dict[str, Any]], None], ...] = (
    _drop_diastolic, _implausible, _unknown_unit, _wrong_type, _no_subject, _inverted, _string_value, _bad_status,
)  # fmt: skip


def malformed(obs: dict[str, Any], variant: int) -> bytes:
    """A broken message derived from a valid Observation; ``variant`` picks the defect (cycles)."""
    kinds = len(_MUTATIONS) + 3
    k = variant % kinds
    good = orjson.dumps(obs)
    if k == len(_MUTATIONS):
        return good[: len(good) // 2]  # truncated JSON
    if k == len(_MUTATIONS) + 1:
        return b"\xff\xfe" + good[2:]  # not UTF-8
    if k == len(_MUTATIONS) + 2:
        return good.replace(b'"value":', b'"value":NaN,"x":', 1)  # NaN literal
    broken = orjson.loads(good)
    _MUTATIONS[k](broken)
    return orjson.dumps(broken)


def is_rule_anomaly(sim: SimReading) -> bool:
    return assess(sim.reading.systolic, sim.reading.diastolic).is_rule_anomaly


def mix(
    readings: Iterable[SimReading],
    count: int,
    anomaly_share: float = 0.10,
    reject_share: float = 0.01,
) -> Iterator[Record]:
    """``count`` records: ``reject_share`` malformed, ``anomaly_share`` rule anomalies, the rest normal."""
    if not 0 <= anomaly_share <= 1 or not 0 <= reject_share <= 1 or anomaly_share + reject_share > 1:
        raise ValueError("shares must be in [0, 1] and sum to at most 1")
    reject_every = round(1 / reject_share) if reject_share > 0 else 0
    made = anomalies = rejects = 0
    for sim in readings:
        if made >= count:
            return
        key = sim.reading.patient_id.encode()
        obs = build_observation(sim.reading)
        if reject_every and rejects < reject_share * (made + 1) and made % reject_every == reject_every // 2:
            yield Record(key, malformed(obs, rejects), "reject")
            rejects += 1
            made += 1
            continue
        anomalous = is_rule_anomaly(sim)
        if anomalous and anomalies >= anomaly_share * (made + 1):
            continue  # over quota: skip this reading
        if not anomalous and (made - anomalies - rejects) >= (1 - anomaly_share - reject_share) * (made + 1) + 1:
            continue
        anomalies += anomalous
        made += 1
        yield Record(key, orjson.dumps(obs), "anomaly" if anomalous else "normal")


def cohort_readings(patients: int, seed: int, start: datetime = BENCH_START) -> Iterator[SimReading]:
    """The simulated stream (one reading per patient every 15 min)."""
    return Cohort(patients=patients, seed=seed, start=start, interval=timedelta(minutes=15)).readings()


def build(
    count: int, patients: int, seed: int, anomaly_share: float = 0.10, reject_share: float = 0.01
) -> list[Record]:
    """``count`` records from a cohort of ``patients`` (see :func:`mix`)."""
    return list(mix(cohort_readings(patients, seed), count, anomaly_share, reject_share))
