"""A simulated cohort of patients whose blood-pressure readings carry a ground-truth label.

Pure and deterministic: the same ``(patients, seed, start, interval)`` always yields the same patients and the
same readings. The producer publishes the readings; ``ml.train_model`` learns from them and their labels (the
label, :class:`~bp.truth.Truth`, is never published). This module is the cohort and its clock: who the patients
are, when they are measured (:class:`Schedule`), how often episodes start (prevalence).

Patients
    Demographics (age, sex) come from a Faker instance seeded with the seed; identifiers are pseudonyms
    ``pt-`` + 10 hex characters drawn from ``random.Random(seed)``. No name is ever generated. Each patient gets a
    profile (exact quota of :data:`bp.profiles.PROFILES` shares, shuffled), a usual *daytime* pressure drawn from
    the profile's range and nudged by age (+0.25 mmHg systolic per year from the profile's middle age) and sex
    (men +3/+2), clipped to the profile's range (:func:`bp.physiology.make_patient`).

Readings, artefacts and episodes
    One patient's pressure over time (circadian dip, slow variation, cuff noise, cuff artefacts, clinical
    episodes that build over several readings) is :mod:`bp.physiology`; the label of each reading is a
    :class:`~bp.truth.Truth`.

Schedules (:class:`Schedule`)
    ``ambulatory`` (default): one reading per patient every ``interval``, as an ambulatory monitor takes them; the
    episode timeline counts these readings. ``home``: self-measured blood pressure as the AHA/AMA 2020
    statement recommends it: a morning (07:00) and an evening (19:30) session per day, each a *pair* of readings
    a minute apart (same physiological state, independent cuff noise), patients staggered over 90 minutes; a patient
    misses a whole day with probability :data:`HOME_MISSED_DAY` and a single session with
    :data:`HOME_MISSED_SESSION` (the physiology goes on; nothing is measured). The episode timeline then counts
    sessions (:data:`bp.physiology.HOME_RAMP_SESSIONS` and the like: episodes of days, the kind home monitoring
    can see), ``interval`` is ignored.

Prevalence
    ``episodes_per_month=None`` (default, "dense"): the per-reading hazards of
    :data:`bp.physiology.EPISODE_RATES` -- about 10 episodes per patient-month at 15-minute ambulatory readings,
    dense enough to train on; on the home schedule
    :data:`HOME_DENSE_EPISODES_PER_MONTH`. A number instead sets the expected episode starts per patient per 30
    days of simulated time (the hazards are rescaled by the time one reading slot stands for);
    :data:`REALISTIC_EPISODES_PER_MONTH` is the realistic option (about one episode per patient-month).

Profile mix
    ``profile_mix`` replaces the profiles' default shares (:mod:`bp.profiles`).

Expected shares with the defaults (asserted by the tests, see :data:`EXPECTED_SHARES`): about 6 % of readings
inside an episode (crisis ~2 %, hypotension ~2 %, sharp rise ~2 %), ~5 % significant, 0.5 % artefacts.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import islice

from faker import Faker

from bp.physiology import MEAN_HAZARD, Physiology, SimParams, make_patient, sim_params
from bp.profiles import PROFILES, quotas
from bp.truth import EpisodeKind, Patient, SimReading


class Schedule(StrEnum):
    """When readings are taken: an ambulatory monitor every interval, or home pairs morning and evening."""

    AMBULATORY = "ambulatory"
    HOME = "home"


REALISTIC_EPISODES_PER_MONTH = 1.0

# Home schedule (self-measured blood pressure): session times (local time of start), pairs, missed days.
HOME_SESSIONS_MINUTES = (7 * 60, 19 * 60 + 30)
HOME_STAGGER_MINUTES = 90.0
HOME_PAIR_GAP = timedelta(minutes=1)
HOME_MISSED_DAY = 0.15
HOME_MISSED_SESSION = 0.10
HOME_DENSE_EPISODES_PER_MONTH = 2.0  # the home schedule's dense prevalence (its readings are ~25x sparser)

# Documented ranges (share of readings) the tests assert on a cohort of a few hundred patients.
EXPECTED_SHARES: dict[str, tuple[float, float]] = {
    "in_episode": (0.04, 0.10),
    "significant": (0.03, 0.08),
    EpisodeKind.HYPERTENSIVE_CRISIS: (0.01, 0.035),
    EpisodeKind.ACUTE_HYPOTENSION: (0.01, 0.035),
    EpisodeKind.SHARP_RISE: (0.012, 0.04),
    "artefact": (0.003, 0.007),
}
# ACC/AHA category shares of all readings (asserted by the tests); hypotension: systolic < 90 or diastolic < 60.
EXPECTED_CATEGORY_SHARES: dict[str, tuple[float, float]] = {
    "normal": (0.35, 0.60),
    "elevated": (0.04, 0.14),
    "hypertension_stage_1": (0.08, 0.22),
    "hypertension_stage_2": (0.15, 0.32),
    "hypertensive_crisis": (0.01, 0.05),
    "hypotension": (0.08, 0.22),
}


class Cohort:
    """A deterministic simulated cohort; iterate :meth:`readings` for an endless, time-ordered stream."""

    def __init__(
        self,
        patients: int,
        seed: int,
        start: datetime,
        interval: timedelta = timedelta(minutes=15),
        *,
        schedule: Schedule = Schedule.AMBULATORY,
        episodes_per_month: float | None = None,
        profile_mix: Mapping[str, float] | None = None,
    ) -> None:
        if patients < 1:
            raise ValueError(f"a cohort needs at least one patient, got {patients}")
        if interval <= timedelta(0):
            raise ValueError(f"interval must be positive, got {interval}")
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")
        self.episodes_per_month = episodes_per_month  # None: dense
        if episodes_per_month is not None and not (math.isfinite(episodes_per_month) and episodes_per_month >= 0):
            raise ValueError(f"episodes_per_month must be a number >= 0, got {episodes_per_month}")
        if profile_mix is not None and sum(profile_mix.get(p.name, 0.0) for p in PROFILES) <= 0:
            raise ValueError(f"profile mix {dict(profile_mix)} has no known profile with a positive share")
        self.seed = seed
        self.start = start
        self.interval = interval
        self.schedule = Schedule(schedule)
        slot_minutes = 720.0 if self.schedule is Schedule.HOME else interval.total_seconds() / 60.0
        if episodes_per_month is None and self.schedule is Schedule.HOME:
            episodes_per_month = HOME_DENSE_EPISODES_PER_MONTH
        hazard_scale = 1.0 if episodes_per_month is None else episodes_per_month * slot_minutes / 43200.0 / MEAN_HAZARD
        rng = random.Random(seed)
        fake = Faker()
        fake.seed_instance(seed)
        profiles = quotas(patients, profile_mix)
        rng.shuffle(profiles)
        made: list[Patient] = []
        params: list[SimParams] = []
        seen: set[str] = set()
        for profile in profiles:
            pid = f"pt-{rng.getrandbits(40):010x}"
            while pid in seen:
                pid = f"pt-{rng.getrandbits(40):010x}"
            seen.add(pid)
            age = fake.random_int(*profile.age)
            sex = fake.random_element(
                OrderedDict((("female", profile.female_share), ("male", 1.0 - profile.female_share)))
            )
            made.append(make_patient(pid, age, str(sex), profile, rng))
            params.append(sim_params(profile, rng, hazard_scale))
        self.patients: tuple[Patient, ...] = tuple(made)
        self._params: tuple[SimParams, ...] = tuple(params)

    def take(self, n: int) -> list[SimReading]:
        """The first n readings of the stream."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return list(islice(self.readings(), n))

    def readings(self) -> Iterator[SimReading]:
        """Endless stream in non-decreasing effective time; restarts from the beginning on every call."""
        if self.schedule is Schedule.HOME:
            return self._home()
        return self._ambulatory()

    def _ambulatory(self) -> Iterator[SimReading]:
        """One reading per patient per tick, patients staggered evenly within the interval."""
        sim = Physiology(self.patients, self._params, self.seed, home=False)
        step, measure = sim.step, sim.measure
        n = len(self.patients)
        interval_min = self.interval.total_seconds() / 60.0
        staggers = [self.interval * i / n for i in range(n)]
        stagger_min = [s.total_seconds() / 60.0 for s in staggers]
        start_min = self.start.hour * 60 + self.start.minute + self.start.second / 60.0
        tick_time = self.start
        tick = 0
        while True:
            base_min = start_min + tick * interval_min
            for i in range(n):
                s, d, truth = step(i, base_min + stagger_min[i])
                yield measure(i, s, d, truth, tick_time + staggers[i])
            tick += 1
            tick_time = tick_time + self.interval

    def _home(self) -> Iterator[SimReading]:
        """Morning and evening sessions of two readings a minute apart; missed days and sessions."""
        sim = Physiology(self.patients, self._params, self.seed, home=True)
        step, measure = sim.step, sim.measure
        rand = random.Random(f"bp-stream-home-{self.seed}").random
        n = len(self.patients)
        staggers = [timedelta(minutes=HOME_STAGGER_MINUTES * i / n) for i in range(n)]
        stagger_min = [s.total_seconds() / 60.0 for s in staggers]
        midnight = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        slots = len(HOME_SESSIONS_MINUTES)
        tick = next(
            k for k in range(slots + 1)
            if k == slots or midnight + timedelta(minutes=HOME_SESSIONS_MINUTES[k]) >= self.start
        )  # fmt: skip
        missed_day = [False] * n
        while True:
            day, slot = divmod(tick, slots)
            session = midnight + timedelta(days=day, minutes=HOME_SESSIONS_MINUTES[slot])
            session_min = float(HOME_SESSIONS_MINUTES[slot])
            batch: list[SimReading] = []
            for i in range(n):
                s, d, truth = step(i, session_min + stagger_min[i])
                if slot == 0 or tick == 0:
                    missed_day[i] = rand() < HOME_MISSED_DAY
                if missed_day[i] or rand() < HOME_MISSED_SESSION:
                    continue
                at = session + staggers[i]
                batch.append(measure(i, s, d, truth, at))
                batch.append(measure(i, s, d, truth, at + HOME_PAIR_GAP))
            batch.sort(key=_effective)
            yield from batch
            tick += 1


def _effective(sim: SimReading) -> datetime:
    return sim.reading.effective
