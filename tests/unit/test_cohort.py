"""The cohort simulator: deterministic, pseudonymous, time-ordered, plausible, and with the documented mix."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter, defaultdict
from dataclasses import fields
from datetime import datetime, timedelta, timezone

import pytest
from faker import Faker

from bp.clinical import categorize, is_plausible
from bp.cohort import EXPECTED_CATEGORY_SHARES, EXPECTED_SHARES, REALISTIC_EPISODES_PER_MONTH, Cohort, Schedule
from bp.fhir import build_observation
from bp.physiology import HOLD_READINGS, RAMP_READINGS, RESOLVE_READINGS
from bp.profiles import PROFILE_MIXES, PROFILES, parse_profile_mix
from bp.truth import EpisodeKind, Patient, SimReading

START = datetime(2024, 3, 1, 6, 0, tzinfo=timezone(timedelta(hours=1)))
PSEUDONYM = re.compile(r"^pt-[0-9a-f]{10}$")


@pytest.fixture(scope="module")
def big() -> list[SimReading]:
    """A few hundred patients over ~1 day: enough for cohort-level shares."""
    return Cohort(400, 11, START).take(400 * 250)


def by_patient(sims: list[SimReading]) -> dict[str, list[SimReading]]:
    out: dict[str, list[SimReading]] = defaultdict(list)
    for s in sims:
        out[s.reading.patient_id].append(s)
    return out


def test_same_seed_same_readings_different_seed_different() -> None:
    a = Cohort(20, 5, START).take(3000)
    b = Cohort(20, 5, START).take(3000)
    c = Cohort(20, 6, START).take(3000)
    assert a == b
    assert [s.reading.systolic for s in a] != [s.reading.systolic for s in c]
    assert {p.patient_id for p in Cohort(20, 5, START).patients}.isdisjoint(
        p.patient_id for p in Cohort(20, 6, START).patients
    )


def test_readings_restart_on_each_call() -> None:
    cohort = Cohort(7, 2, START)
    first = [s for _, s in zip(range(100), cohort.readings(), strict=False)]
    assert first == cohort.take(100)


@pytest.mark.parametrize(
    ("patients", "start", "interval"),
    [
        (0, START, timedelta(minutes=15)),
        (-3, START, timedelta(minutes=15)),
        (5, START, timedelta(0)),
        (5, START, timedelta(minutes=-1)),
        (5, datetime(2024, 1, 1), timedelta(minutes=15)),  # naive
    ],
)
def test_invalid_arguments_raise(patients: int, start: datetime, interval: timedelta) -> None:
    with pytest.raises(ValueError):
        Cohort(patients, 1, start, interval)


def test_take_negative_raises() -> None:
    with pytest.raises(ValueError):
        Cohort(2, 1, START).take(-1)


def test_ids_are_pseudonyms_and_no_names_leave_the_simulator() -> None:
    seed = 9
    cohort = Cohort(300, seed, START)
    ids = [p.patient_id for p in cohort.patients]
    assert all(PSEUDONYM.match(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert {f.name for f in fields(Patient)} == {
        "patient_id",
        "age",
        "sex",
        "profile",
        "baseline_systolic",
        "baseline_diastolic",
    }
    assert {p.sex for p in cohort.patients} <= {"female", "male"}
    assert {p.profile for p in cohort.patients} <= {p.name for p in PROFILES}
    # Names the same seeded Faker would make never appear in any text a reading or patient carries.
    fake = Faker()
    fake.seed_instance(seed)
    names = {fake.first_name() for _ in range(500)} | {fake.last_name() for _ in range(500)}
    texts = [p.patient_id for p in cohort.patients] + [s.reading.observation_id or "" for s in cohort.take(2000)]
    assert not [t for t in texts for n in names if n in t]


def test_observation_ids_are_deterministic_and_unique() -> None:
    sims = Cohort(10, 4, START).take(5000)
    obs = [s.reading.observation_id for s in sims]
    assert len(set(obs)) == len(obs)
    assert all(o is not None and re.fullmatch(r"pt-[0-9a-f]{10}-\d+", o) for o in obs)


def test_ground_truth_never_reaches_the_fhir_resource() -> None:
    for s in Cohort(30, 3, START).take(3000):
        if s.truth.episode or s.truth.artefact:
            text = json.dumps(build_observation(s.reading))
            assert s.patient.profile not in text
            assert not any(k in text for k in ("episode", "significant", "artefact", *EpisodeKind))


def test_time_order_interval_and_stagger() -> None:
    interval = timedelta(minutes=15)
    n = 13
    sims = Cohort(n, 8, START, interval).take(n * 200)
    times = [s.reading.effective for s in sims]
    assert times == sorted(times)
    assert all(t.utcoffset() == START.utcoffset() for t in times)
    per = by_patient(sims)
    assert len(per) == n
    firsts = sorted(rs[0].reading.effective for rs in per.values())
    assert firsts[0] == START
    assert firsts[-1] < START + interval
    assert len(set(firsts)) == n  # staggered within the interval
    for rs in per.values():
        assert len(rs) == 200
        gaps = {b.reading.effective - a.reading.effective for a, b in itertools.pairwise(rs)}
        assert gaps == {interval}


def test_values_are_plausible_integers(big: list[SimReading]) -> None:
    sims = big[:50_000]
    for s in sims:
        sys_, dia = s.reading.systolic, s.reading.diastolic
        assert sys_.is_integer()
        assert dia.is_integer()
        assert 40 <= sys_ <= 300
        assert 20 <= dia <= 200
        assert sys_ > dia + 10
        assert is_plausible(sys_, dia)


def test_profile_shares_are_exact_quotas() -> None:
    n = 250
    counts = Counter(p.profile for p in Cohort(n, 1, START).patients)
    for profile in PROFILES:
        assert abs(counts[profile.name] - profile.share * n) < 1
    assert sum(p.share for p in PROFILES) == pytest.approx(1.0)


def test_episode_and_artefact_shares_within_documented_ranges(big: list[SimReading]) -> None:
    n = len(big)
    counts: Counter[str] = Counter()
    for s in big:
        t = s.truth
        if t.episode is not None:
            counts["in_episode"] += 1
            counts[t.episode] += 1
        counts["significant"] += t.significant
        counts["artefact"] += t.artefact
    for key, (low, high) in EXPECTED_SHARES.items():
        assert low <= counts[key] / n <= high, (key, counts[key] / n)


def test_category_shares_within_documented_ranges(big: list[SimReading]) -> None:
    n = len(big)
    counts: Counter[str] = Counter()
    for s in big:
        r = s.reading
        counts[categorize(r.systolic, r.diastolic).value] += 1
        counts["hypotension"] += r.systolic < 90 or r.diastolic < 60
    for key, (low, high) in EXPECTED_CATEGORY_SHARES.items():
        assert low <= counts[key] / n <= high, (key, counts[key] / n)


def test_artefacts_are_negative_isolated_spikes(big: list[SimReading]) -> None:
    jumps: list[float] = []
    for rs in by_patient(big).values():
        for prev, cur, nxt in zip(rs, rs[1:], rs[2:], strict=False):
            if cur.truth.artefact:
                assert not cur.truth.significant
                assert cur.truth.episode is None
                assert not prev.truth.artefact
                assert not nxt.truth.artefact
                jumps.append(abs(cur.reading.systolic - (prev.reading.systolic + nxt.reading.systolic) / 2))
    assert len(jumps) > 50
    assert sorted(jumps)[len(jumps) // 10] >= 15  # nine in ten are at least 15 mmHg off both neighbours


def _runs(rs: list[SimReading]) -> list[tuple[str, list[SimReading], bool]]:
    """Maximal runs of consecutive readings of one episode kind: (kind, readings, touches the stream's end)."""
    runs: list[tuple[str, list[SimReading], bool]] = []
    current: list[SimReading] = []
    for s in rs:
        if current and s.truth.episode != current[0].truth.episode:
            runs.append((current[0].truth.episode or "", current, False))
            current = []
        if s.truth.episode is not None:
            current.append(s)
    if current:
        runs.append((current[0].truth.episode or "", current, True))
    return [r for r in runs if r[0]]


def test_episodes_span_several_consecutive_readings(big: list[SimReading]) -> None:
    shortest = RAMP_READINGS[0] + HOLD_READINGS[0] + RESOLVE_READINGS[0]
    complete = 0
    for rs in by_patient(big).values():
        for kind, run, at_end in _runs(rs):
            significant = [s.truth.significant for s in run]
            if at_end:
                continue
            assert sum(significant) >= 2
            complete += 1
            assert len(run) >= shortest
            assert not significant[0]  # builds up: the first reading is below half amplitude
            first, last = significant.index(True), len(significant) - 1 - significant[::-1].index(True)
            assert all(significant[first : last + 1])  # significant readings are consecutive
            assert kind in set(EpisodeKind)
    assert complete > 100


def test_episodes_reach_their_clinical_range(big: list[SimReading]) -> None:
    under_threshold_rises = 0
    for rs in by_patient(big).values():
        usual = sorted(s.reading.systolic for s in rs)[len(rs) // 2]
        for kind, run, at_end in _runs(rs):
            if at_end:
                continue
            sig = [s.reading for s in run if s.truth.significant]
            if kind == EpisodeKind.HYPERTENSIVE_CRISIS:
                assert max(r.systolic for r in sig) > 180 or max(r.diastolic for r in sig) > 120
            elif kind == EpisodeKind.ACUTE_HYPOTENSION:
                assert min(r.systolic for r in sig) < 90 or min(r.diastolic for r in sig) < 60
            else:
                assert max(r.systolic for r in sig) - usual >= 15
                if all(r.systolic <= 140 and r.diastolic <= 90 for r in sig):
                    under_threshold_rises += 1
    assert under_threshold_rises > 0  # the kind of event fixed thresholds miss


# --------------------------------------------------------------------------- schedules, prevalence, profile mix


def _home(n: int, seed: int, days: int, **kwargs: object) -> list[SimReading]:
    cohort = Cohort(n, seed, START, schedule=Schedule.HOME, **kwargs)  # type: ignore[arg-type]
    end = START + timedelta(days=days)
    return list(itertools.takewhile(lambda s: s.reading.effective < end, cohort.readings()))


def test_home_schedule_pairs_a_minute_apart_morning_and_evening_with_missed_days() -> None:
    sims = _home(40, 2, 20)
    times = [s.reading.effective for s in sims]
    assert times == sorted(times)
    assert all(t >= START for t in times)
    per = by_patient(sims)
    assert len(per) == 40
    days_measured = 0
    for rs in per.values():
        sessions: dict[datetime, list[SimReading]] = defaultdict(list)
        for a, b in zip(rs[::2], rs[1::2], strict=True):  # readings come in pairs ...
            assert b.reading.effective - a.reading.effective == timedelta(minutes=1)  # ... a minute apart
            assert a.truth.episode_id == b.truth.episode_id  # of the same state
            sessions[a.reading.effective].append(a)
        for at in sessions:
            minutes = at.hour * 60 + at.minute
            assert 7 * 60 <= minutes < 8 * 60 + 30 or 19 * 60 + 30 <= minutes < 21 * 60, at
        days_measured += len({at.date() for at in sessions})
    missed_days = 1 - days_measured / (40 * 20)
    assert 0.08 <= missed_days <= 0.25  # HOME_MISSED_DAY 0.15 (a day of missed sessions adds a little)


def _episodes_per_patient_month(sims: list[SimReading], patients: int, days: float) -> float:
    episodes = {s.truth.episode_id for s in sims if s.truth.episode_id is not None}
    return len(episodes) / patients / (days / 30.0)


@pytest.mark.parametrize("schedule", list(Schedule))
def test_realistic_prevalence_is_about_one_episode_per_patient_month(schedule: Schedule) -> None:
    patients, days = 100, 30
    if schedule is Schedule.HOME:
        sims = _home(patients, 4, days, episodes_per_month=REALISTIC_EPISODES_PER_MONTH)
    else:
        cohort = Cohort(patients, 4, START, episodes_per_month=REALISTIC_EPISODES_PER_MONTH)
        sims = cohort.take(patients * days * 96)
    assert 0.7 <= _episodes_per_patient_month(sims, patients, days) <= 1.3
    dense = Cohort(patients, 4, START).take(patients * 96 * 3)
    assert _episodes_per_patient_month(dense, patients, 3) > 5  # the default is the dense training prevalence


def test_episode_ids_name_one_episode_each() -> None:
    sims = Cohort(30, 9, START).take(30 * 400)
    kinds: dict[str, set[str]] = defaultdict(set)
    for s in sims:
        if s.truth.episode_id is None:
            assert s.truth.episode is None
            continue
        assert s.truth.episode_id.startswith(s.reading.patient_id + "-e")
        kinds[s.truth.episode_id].add(str(s.truth.episode))
    assert kinds
    assert all(len(k) == 1 for k in kinds.values())
    for rs in by_patient(sims).values():  # an episode's readings are consecutive
        ids = [s.truth.episode_id for s in rs]
        runs = [key for key, _ in itertools.groupby(ids) if key is not None]
        assert len(runs) == len(set(runs))


def test_profile_mix_sets_the_quotas() -> None:
    mix = parse_profile_mix("shifted")
    assert mix == PROFILE_MIXES["shifted"]
    counts = Counter(p.profile for p in Cohort(100, 1, START, profile_mix=mix).patients)
    assert counts == {name: round(share * 100) for name, share in mix.items()}
    only = parse_profile_mix("athlete=1, hypotension_prone=3")
    assert only == {"athlete": 0.25, "hypotension_prone": 0.75}
    counts = Counter(p.profile for p in Cohort(8, 1, START, profile_mix=only).patients)
    assert counts == {"athlete": 2, "hypotension_prone": 6}


@pytest.mark.parametrize("text", ["", "nobody=1", "athlete", "athlete=x", "athlete=-1", "athlete=0", "athlete=nan"])
def test_bad_profile_mix_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="profile mix"):
        parse_profile_mix(text)
