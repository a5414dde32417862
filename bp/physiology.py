"""One simulated patient's pressure over time, as :class:`bp.cohort.Cohort` drives it (pure, deterministic).

Readings
    value = usual x (1 - nocturnal dip x night weight) + slow biological variation (AR(1), phi 0.85,
    SD 5/3.5 mmHg x profile variability) + cuff noise (SD 4/3 mmHg), rounded to whole mmHg and clamped to
    plausible values (systolic 40-300, diastolic 20-200, systolic > diastolic + 10). Night weight is 1 from
    23:30 to 05:00 local time of ``start`` (shifted per patient by up to +-60 min), 0 from 07:30 to 21:00, with
    cosine ramps in between; the dip is drawn per patient around the profile's mean (dippers and non-dippers).

Artefacts (label negative)
    A single reading far off, not a clinical event: with probability :data:`ARTEFACT_RATE` per reading outside
    episodes (never two in a row), a cuff error adds +40..+90/+15..+45 mmHg (70 %) or removes 25..45/15..30 mmHg (30 %).

Clinical episodes (label positive while significant)
    Start with a per-reading hazard (:data:`EPISODE_RATES` x the profile's multiplier), outside any episode and
    at least :data:`EPISODE_COOLDOWN` readings after the last one. An episode ramps over 3-6 readings, holds 4-16
    readings, resolves over 3-6 readings. The episode's fraction goes 1/ramp, 2/ramp, ... 1 ... then down;
    ``Truth.episode`` names the kind on every reading of the episode and ``Truth.significant`` is true while
    the fraction is >= 0.5 (the episode has built at least half of its amplitude).

    - hypertensive crisis: towards an absolute target 185-220 / 105-130 mmHg (> 180 and/or > 120 at full hold);
    - acute hypotension: towards 70-85 / 40-55 mmHg, and at most 80 % of the patient's pressure when the
      episode starts (a drop of at least 20 % also for a low-pressure patient at night);
    - sharp rise: +25..+40 / +10..+20 mmHg above the patient's own level, which may stay under 140/90 in a
      normotensive patient (the event fixed thresholds miss).

On the home schedule the episode timeline counts sessions instead of readings (:data:`HOME_RAMP_SESSIONS`,
:data:`HOME_HOLD_SESSIONS`, :data:`HOME_RESOLVE_SESSIONS`, :data:`HOME_COOLDOWN_SESSIONS`: episodes of days, the
kind home monitoring can see).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bp.clinical import DIASTOLIC_BOUNDS, SYSTOLIC_BOUNDS
from bp.profiles import PROFILES, Profile
from bp.reading import Reading
from bp.truth import EpisodeKind, Patient, SimReading, Truth

# Per-reading hazard of an episode starting (before the profile's multiplier).
EPISODE_RATES: dict[EpisodeKind, float] = {
    EpisodeKind.HYPERTENSIVE_CRISIS: 0.0012,
    EpisodeKind.ACUTE_HYPOTENSION: 0.0011,
    EpisodeKind.SHARP_RISE: 0.0013,
}
ARTEFACT_RATE = 0.005
EPISODE_COOLDOWN = 16
RAMP_READINGS = (3, 6)
HOLD_READINGS = (4, 16)
RESOLVE_READINGS = (3, 6)
SIGNIFICANT_FRACTION = 0.5
NOMINAL_READING_MINUTES = 15.0  # the reading slot EPISODE_RATES are per (dense prevalence)

# Home schedule: the episode timeline counts sessions (two a day) instead of readings.
HOME_RAMP_SESSIONS = (1, 3)
HOME_HOLD_SESSIONS = (2, 8)
HOME_RESOLVE_SESSIONS = (1, 3)
HOME_COOLDOWN_SESSIONS = 6

# Plausibility limits (mmHg) the simulator never leaves; same as bp.clinical's bounds.
_SYS_MIN, _SYS_MAX = map(int, SYSTOLIC_BOUNDS)
_DIA_MIN, _DIA_MAX = map(int, DIASTOLIC_BOUNDS)
_MIN_PULSE_PRESSURE = 11

_AR_PHI = 0.85
_AR_SD = (5.0, 3.5)
_CUFF_SD = (4.0, 3.0)
_MINUTES_PER_DAY = 1440


def _night_weight(minute: float) -> float:
    """1 in deep night (23:30-05:00), 0 in the day (07:30-21:00), cosine ramps in between."""
    h = (minute % _MINUTES_PER_DAY) / 60.0
    if 7.5 <= h < 21.0:
        return 0.0
    if h >= 23.5 or h < 5.0:
        return 1.0
    # falling asleep 21:00 -> 23:30, waking 05:00 -> 07:30
    x = (h - 21.0) / 2.5 if h >= 21.0 else 1.0 - (h - 5.0) / 2.5
    return 0.5 - 0.5 * math.cos(math.pi * x)


_NIGHT: tuple[float, ...] = tuple(_night_weight(m) for m in range(_MINUTES_PER_DAY))

_TRUTH_NORMAL = Truth(False, None, False)
_TRUTH_ARTEFACT = Truth(False, None, True)
_KINDS = (EpisodeKind.HYPERTENSIVE_CRISIS, EpisodeKind.ACUTE_HYPOTENSION, EpisodeKind.SHARP_RISE)
_SHARP_RISE = EpisodeKind.SHARP_RISE.value


@dataclass(frozen=True, slots=True)
class SimParams:
    """Hidden per-patient simulation parameters (not part of the Patient)."""

    dip_systolic: float
    dip_diastolic: float
    phase_minutes: float
    ar_sd_systolic: float
    ar_sd_diastolic: float
    cumulative_rates: tuple[float, float, float]


class Physiology:
    """The mutable per-patient simulation state of one :meth:`bp.cohort.Cohort.readings` stream.

    :meth:`step` advances a patient's physiology by one slot (a reading, or a home session) and returns the
    pressure before cuff noise; :meth:`measure` turns it into a reading (artefacts, cuff noise, rounding).
    ``home``: the episode timeline counts home sessions instead of readings.
    """

    def __init__(self, patients: Sequence[Patient], params: Sequence[SimParams], seed: int, home: bool) -> None:
        rng = random.Random(f"bp-stream-readings-{seed}")
        self.gauss = rng.gauss
        self.rand = rng.random
        self.uniform = rng.uniform
        self.randint = rng.randint
        n = len(patients)
        self.patients = patients
        self.params = params
        self.ramp = HOME_RAMP_SESSIONS if home else RAMP_READINGS
        self.hold = HOME_HOLD_SESSIONS if home else HOLD_READINGS
        self.resolve = HOME_RESOLVE_SESSIONS if home else RESOLVE_READINGS
        self.cooldown_slots = HOME_COOLDOWN_SESSIONS if home else EPISODE_COOLDOWN
        self.innov = math.sqrt(1.0 - _AR_PHI * _AR_PHI)
        self.ar_s = [0.0] * n
        self.ar_d = [0.0] * n
        self.cooldown = [0] * n
        self.plan: list[list[float] | None] = [None] * n
        self.step_of = [0] * n
        self.kind_of: list[str] = [""] * n
        self.target_s = [0.0] * n
        self.target_d = [0.0] * n
        self.episodes = [0] * n
        self.seq = [0] * n
        self.last_artefact = [False] * n

    def step(self, i: int, minute: float) -> tuple[float, float, Truth]:
        """Advance patient ``i`` to local ``minute`` of the day (any value; taken modulo a day)."""
        patient = self.patients[i]
        p = self.params[i]
        gauss = self.gauss
        w = _NIGHT[int(minute + p.phase_minutes) % _MINUTES_PER_DAY]
        g = gauss(0.0, 1.0)
        self.ar_s[i] = _AR_PHI * self.ar_s[i] + self.innov * p.ar_sd_systolic * g
        self.ar_d[i] = _AR_PHI * self.ar_d[i] + self.innov * p.ar_sd_diastolic * (0.6 * g + 0.8 * gauss(0.0, 1.0))
        s = patient.baseline_systolic * (1.0 - p.dip_systolic * w) + self.ar_s[i]
        d = patient.baseline_diastolic * (1.0 - p.dip_diastolic * w) + self.ar_d[i]
        fracs = self.plan[i]
        if fracs is None:
            if self.cooldown[i] > 0:
                self.cooldown[i] -= 1
                return s, d, _TRUTH_NORMAL
            r = self.rand()
            c1, c2, c3 = p.cumulative_rates
            if r >= c3:
                return s, d, _TRUTH_NORMAL
            kind = _KINDS[0] if r < c1 else _KINDS[1] if r < c2 else _KINDS[2]
            uniform = self.uniform
            ramp = self.randint(*self.ramp)
            hold = self.randint(*self.hold)
            resolve = self.randint(*self.resolve)
            fracs = (
                [(k + 1) / ramp for k in range(ramp)]
                + [1.0] * hold
                + [1.0 - (k + 1) / (resolve + 1) for k in range(resolve)]
            )
            self.plan[i] = fracs
            self.step_of[i] = 0
            self.kind_of[i] = kind.value
            self.episodes[i] += 1
            if kind is EpisodeKind.HYPERTENSIVE_CRISIS:
                self.target_s[i] = uniform(185.0, 220.0)
                self.target_d[i] = uniform(105.0, 130.0)
            elif kind is EpisodeKind.ACUTE_HYPOTENSION:
                # at least a 20 % drop from the patient's current level (night included)
                self.target_s[i] = min(uniform(70.0, 85.0), 0.8 * s)
                self.target_d[i] = min(uniform(40.0, 55.0), 0.8 * d)
            else:
                self.target_s[i] = uniform(25.0, 40.0)
                self.target_d[i] = uniform(10.0, 20.0)
        # Crisis and hypotension move towards an absolute target; a sharp rise adds to the patient's own level.
        frac = fracs[self.step_of[i]]
        kind_value = self.kind_of[i]
        if kind_value == _SHARP_RISE:
            s += frac * self.target_s[i]
            d += frac * self.target_d[i]
        else:
            s += frac * (self.target_s[i] - s)
            d += frac * (self.target_d[i] - d)
        truth = Truth(frac >= SIGNIFICANT_FRACTION, kind_value, False, f"{patient.patient_id}-e{self.episodes[i]}")
        self.step_of[i] += 1
        if self.step_of[i] == len(fracs):
            self.plan[i] = None
            self.cooldown[i] = self.cooldown_slots
        return s, d, truth

    def measure(self, i: int, s: float, d: float, truth: Truth, at: datetime) -> SimReading:
        """A reading of patient ``i`` at ``at``: maybe a cuff artefact (outside episodes), cuff noise, clamping."""
        if truth.episode is None and self.rand() < ARTEFACT_RATE and not self.last_artefact[i]:
            truth = _TRUTH_ARTEFACT
            uniform = self.uniform
            if self.rand() < 0.7:
                s += uniform(40.0, 90.0)
                d += uniform(15.0, 45.0)
            else:
                s -= uniform(25.0, 45.0)
                d -= uniform(15.0, 30.0)
        gauss = self.gauss
        si = round(s + gauss(0.0, _CUFF_SD[0]))
        di = round(d + gauss(0.0, _CUFF_SD[1]))
        si = _SYS_MIN if si < _SYS_MIN else _SYS_MAX if si > _SYS_MAX else si
        di = _DIA_MIN if di < _DIA_MIN else _DIA_MAX if di > _DIA_MAX else di
        if si - di < _MIN_PULSE_PRESSURE:
            di = si - _MIN_PULSE_PRESSURE
            if di < _DIA_MIN:
                di = _DIA_MIN
                si = _DIA_MIN + _MIN_PULSE_PRESSURE
        self.last_artefact[i] = truth is _TRUTH_ARTEFACT
        patient = self.patients[i]
        k = self.seq[i]
        self.seq[i] = k + 1
        pid = patient.patient_id
        return SimReading(Reading(pid, at, float(si), float(di), f"{pid}-{k}"), truth, patient)


def make_patient(pid: str, age: int, sex: str, profile: Profile, rng: random.Random) -> Patient:
    """Usual daytime pressure in the profile's range, nudged by age and sex, clipped to the range."""
    mid_age = (profile.age[0] + profile.age[1]) / 2.0
    male = sex == "male"
    s = rng.uniform(*profile.systolic) + 0.25 * (age - mid_age) + (3.0 if male else 0.0)
    d = rng.uniform(*profile.diastolic) + (2.0 if male else 0.0)
    s = min(max(s, profile.systolic[0]), profile.systolic[1])
    d = min(max(d, profile.diastolic[0]), profile.diastolic[1])
    return Patient(pid, age, sex, profile.name, round(s, 1), round(d, 1))


def _profile_hazard(profile: Profile) -> float:
    return (
        EPISODE_RATES[EpisodeKind.HYPERTENSIVE_CRISIS] * profile.crisis
        + EPISODE_RATES[EpisodeKind.ACUTE_HYPOTENSION] * profile.hypotension
        + EPISODE_RATES[EpisodeKind.SHARP_RISE] * profile.sharp_rise
    )


# Per-slot hazard of the default population: episodes_per_month rescales hazards relative to it.
MEAN_HAZARD = sum(p.share * _profile_hazard(p) for p in PROFILES)


def sim_params(profile: Profile, rng: random.Random, hazard_scale: float = 1.0) -> SimParams:
    dip = min(max(rng.gauss(profile.dip, 0.03), 0.0), 0.22)
    var = profile.variability * rng.uniform(0.8, 1.2)
    c1 = EPISODE_RATES[EpisodeKind.HYPERTENSIVE_CRISIS] * profile.crisis * hazard_scale
    c2 = c1 + EPISODE_RATES[EpisodeKind.ACUTE_HYPOTENSION] * profile.hypotension * hazard_scale
    c3 = c2 + EPISODE_RATES[EpisodeKind.SHARP_RISE] * profile.sharp_rise * hazard_scale
    return SimParams(
        dip_systolic=dip,
        dip_diastolic=min(dip * 1.15, 0.25),
        phase_minutes=rng.uniform(-60.0, 60.0),
        ar_sd_systolic=_AR_SD[0] * var,
        ar_sd_diastolic=_AR_SD[1] * var,
        cumulative_rates=(c1, c2, c3),
    )
