"""The training data: the simulated cohort as arrays, the patient split and the cross-validation folds.

Data come from the cohort simulator (:mod:`bp.cohort`), labelled by its ground truth (``truth.significant``: the
reading belongs to a clinically significant episode); artefacts and a patient's usual readings are negatives even
when a threshold fires. Features: :func:`bp.features.feature_matrix` over the whole stream in stream order with
one :class:`~bp.features.PatientHistory`, exactly as the consumer computes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import StratifiedGroupKFold

from bp.clinical import Category, assess
from bp.cohort import Cohort, Schedule
from bp.errors import ConfigError
from bp.features import FEATURE_NAMES, PatientHistory, feature_matrix
from bp.profiles import parse_profile_mix
from bp.reading import Reading
from bp.truth import SimReading

log = logging.getLogger("ml.dataset")

SIMULATION_START = datetime(2024, 1, 1, tzinfo=UTC)  # fixed, so that a seed always gives the same data
TEST_SHARE = 0.2  # of the patients, held out; the same test patients as the first version for a given seed
CV_FOLDS = 5  # grouped by patient, balanced by profile, over all non-test patients

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Simulation:
    """Which cohort to simulate: every reading with effective time in [SIMULATION_START, + days)."""

    patients: int
    days: float
    seed: int
    interval_minutes: int = 15
    schedule: Schedule = Schedule.AMBULATORY
    episodes_per_month: float | None = None  # None: the simulator's dense default
    profile_mix: str = "default"
    history_reset_day: float | None = None  # feature history lost at this day (a cold start), for evaluation

    @property
    def readings_per_patient(self) -> int:
        """Readings per patient on the ambulatory schedule (the home schedule has at most 4 a day)."""
        return int(self.days * 24 * 60 // self.interval_minutes)

    @property
    def label(self) -> str:
        prevalence = "dense" if self.episodes_per_month is None else f"{self.episodes_per_month:g}/patient-month"
        return f"{self.schedule.value}, {self.profile_mix} mix, {prevalence} prevalence, seed {self.seed}"

    def params(self) -> dict[str, Any]:
        return {
            "patients": self.patients,
            "days": self.days,
            "seed": self.seed,
            "interval_minutes": self.interval_minutes,
            "schedule": self.schedule.value,
            "episodes_per_month": self.episodes_per_month,
            "profile_mix": self.profile_mix,
            "history_reset_day": self.history_reset_day,
            "simulation_start": SIMULATION_START.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Dataset:
    """The simulated stream as arrays, one row per reading in stream order."""

    x: FloatArray
    y: BoolArray
    patient: IntArray  # index into patient_ids
    patient_ids: tuple[str, ...]
    profiles: tuple[str, ...]  # per patient
    schedules: tuple[str, ...]  # per patient
    observation_ids: tuple[str, ...]
    readings: tuple[Reading, ...]
    time: FloatArray  # POSIX seconds
    episode: npt.NDArray[np.str_]  # "" outside episodes
    episode_id: npt.NDArray[np.str_]  # "" outside episodes
    artefact: BoolArray
    systolic: FloatArray
    diastolic: FloatArray
    rule: BoolArray
    stage2_plus: BoolArray
    crisis: BoolArray


def simulate(sim: Simulation) -> tuple[Cohort, list[SimReading]]:
    """The cohort and its readings in stream order."""
    cohort = Cohort(
        sim.patients,
        sim.seed,
        SIMULATION_START,
        timedelta(minutes=sim.interval_minutes),
        schedule=sim.schedule,
        episodes_per_month=sim.episodes_per_month,
        profile_mix=parse_profile_mix(sim.profile_mix),
    )
    end = SIMULATION_START + timedelta(days=sim.days)
    return cohort, list(takewhile(lambda s: s.reading.effective < end, cohort.readings()))


def build_dataset(*sims: Simulation) -> Dataset:
    """Simulate the cohorts and compute features in stream order, as the consumer would (one history each)."""
    parts = [_one_dataset(sim) for sim in sims]
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [len(p.patient_ids) for p in parts[:-1]])
    return Dataset(
        x=np.concatenate([p.x for p in parts]),
        y=np.concatenate([p.y for p in parts]),
        patient=np.concatenate([p.patient + off for p, off in zip(parts, offsets, strict=True)]),
        patient_ids=tuple(i for p in parts for i in p.patient_ids),
        profiles=tuple(i for p in parts for i in p.profiles),
        schedules=tuple(i for p in parts for i in p.schedules),
        observation_ids=tuple(i for p in parts for i in p.observation_ids),
        readings=tuple(r for p in parts for r in p.readings),
        time=np.concatenate([p.time for p in parts]),
        episode=np.concatenate([p.episode for p in parts]),
        episode_id=np.concatenate([p.episode_id for p in parts]),
        artefact=np.concatenate([p.artefact for p in parts]),
        systolic=np.concatenate([p.systolic for p in parts]),
        diastolic=np.concatenate([p.diastolic for p in parts]),
        rule=np.concatenate([p.rule for p in parts]),
        stage2_plus=np.concatenate([p.stage2_plus for p in parts]),
        crisis=np.concatenate([p.crisis for p in parts]),
    )


def _one_dataset(sim: Simulation) -> Dataset:
    started = time.perf_counter()
    cohort, sims = simulate(sim)
    n = len(sims)
    index = {p.patient_id: i for i, p in enumerate(cohort.patients)}
    readings = tuple(s.reading for s in sims)
    if sim.history_reset_day is None:
        x = feature_matrix(PatientHistory(), readings)
    else:  # a cold start: readings from the reset on see a fresh history
        reset = SIMULATION_START + timedelta(days=sim.history_reset_day)
        cut = next((i for i, r in enumerate(readings) if r.effective >= reset), n)
        x = np.concatenate(
            [feature_matrix(PatientHistory(), readings[:cut]), feature_matrix(PatientHistory(), readings[cut:])]
        )
    assessments = [assess(r.systolic, r.diastolic) for r in readings]
    log.info("%s: %d readings of %d patients in %.1f s", sim.label, n, sim.patients, time.perf_counter() - started)
    return Dataset(
        x=x,
        y=np.fromiter((s.truth.significant for s in sims), dtype=np.bool_, count=n),
        patient=np.fromiter((index[r.patient_id] for r in readings), dtype=np.int64, count=n),
        patient_ids=tuple(p.patient_id for p in cohort.patients),
        profiles=tuple(p.profile for p in cohort.patients),
        schedules=tuple(sim.schedule.value for _ in cohort.patients),
        observation_ids=tuple(r.observation_id or "" for r in readings),
        readings=readings,
        time=np.fromiter((r.effective.timestamp() for r in readings), dtype=np.float64, count=n),
        episode=np.array([s.truth.episode or "" for s in sims], dtype=np.str_),
        episode_id=np.array([s.truth.episode_id or "" for s in sims], dtype=np.str_),
        artefact=np.fromiter((s.truth.artefact for s in sims), dtype=np.bool_, count=n),
        systolic=np.fromiter((r.systolic for r in readings), dtype=np.float64, count=n),
        diastolic=np.fromiter((r.diastolic for r in readings), dtype=np.float64, count=n),
        rule=np.fromiter((a.is_rule_anomaly for a in assessments), dtype=np.bool_, count=n),
        stage2_plus=np.fromiter(
            (a.category in (Category.STAGE_2, Category.CRISIS) for a in assessments), dtype=np.bool_, count=n
        ),
        crisis=np.fromiter((a.is_crisis for a in assessments), dtype=np.bool_, count=n),
    )


def split_patients(n_patients: int, seed: int) -> dict[str, IntArray]:
    """Patient indices of the development ("train") and test patients; disjoint, together every patient.

    The test patients are the last :data:`TEST_SHARE` of a seeded permutation: the same patients the first
    version (60/20/20 train/validation/test from the same permutation) held out, so the revision changed what is
    done with the development patients, not which patients are tested.
    """
    if n_patients < 3:
        raise ConfigError(f"need at least 3 patients (1 test, 2 for cross-validation), got {n_patients}")
    order = np.random.default_rng(seed).permutation(n_patients)
    n_test = max(1, round(TEST_SHARE * n_patients))
    return {"train": np.sort(order[: n_patients - n_test]), "test": np.sort(order[n_patients - n_test :])}


def cv_folds(patients: IntArray, profiles: Sequence[str], seed: int) -> list[IntArray]:
    """Split ``patients`` into min(CV_FOLDS, len) folds of whole patients, each profile spread evenly over them.

    scikit-learn's :class:`~sklearn.model_selection.StratifiedGroupKFold` (groups: patients, strata: profiles).
    Profiles drive the episode mix (hypotension-prone patients have most hypotensive episodes), so balancing them
    keeps every fold's per-type recall meaningful. Deterministic for a seed.
    """
    k = min(CV_FOLDS, int(patients.size))
    if k < 2:
        raise ConfigError(f"cross-validation needs at least 2 development patients, got {patients.size}")
    strata = np.array([profiles[i] for i in patients.tolist()], dtype=np.str_)
    if np.unique(strata, return_counts=True)[1].max() < k:  # too few patients of any profile to stratify
        strata = np.zeros(patients.size, dtype=np.str_)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed + 1)
    with warnings.catch_warnings():  # a profile with fewer patients than folds is fine: it cannot be in every fold
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return [np.sort(patients[test]) for _, test in splitter.split(patients, strata, groups=patients)]


def fold_of_rows(patient: IntArray, folds: Sequence[IntArray]) -> IntArray:
    """The fold of each row (``patient[i]`` is row i's patient); every patient must be in a fold."""
    fold = np.full(patient.size, -1, dtype=np.int64)
    for f, members in enumerate(folds):
        fold[np.isin(patient, members)] = f
    if (fold < 0).any():
        raise ValueError("a row's patient is in no cross-validation fold")
    return fold


def fingerprint(data: Dataset, params: Mapping[str, Any]) -> str:
    """sha256 of the training data: cohort parameters, feature matrix and labels."""
    digest = hashlib.sha256()
    digest.update(json.dumps(params, sort_keys=True).encode())
    digest.update(json.dumps(list(FEATURE_NAMES)).encode())
    digest.update(np.ascontiguousarray(data.x, dtype="<f8").tobytes())
    digest.update(np.ascontiguousarray(data.y, dtype=np.uint8).tobytes())
    return digest.hexdigest()
