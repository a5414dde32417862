"""The alert episode logic (bp.alerts): confirmation, one alert per kind, escalation, resolution, serialisation."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bp.alerts import (
    EMPTY,
    STATE_FORMAT,
    AlertEvent,
    AlertKind,
    AlertPolicy,
    AlertState,
    AlertStatus,
    Context,
    OpenAlert,
    PatientAlerts,
    Severity,
    Trigger,
    context_of,
    describe,
    hypotensive_rows,
    mark,
    rules_policy,
    state_from_bytes,
    state_to_bytes,
    step,
)
from bp.reading import Reading
from bp.state import MemoryState

T0 = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)
STEP = timedelta(minutes=15)
POLICY = AlertPolicy(threshold=0.5, confirm_k=2, confirm_n=3, resolve_readings=3, resolve_minutes=30)
NORMAL = (120.0, 80.0, 0.01)


def run(
    values: Sequence[tuple[float, float, float | None]],
    policy: AlertPolicy = POLICY,
    gap: timedelta = STEP,
    state: AlertState = EMPTY,
    first: int = 0,
    since: float | None = None,
    usual: tuple[float, float] | None = None,
) -> tuple[AlertState, list[tuple[int, AlertEvent]]]:
    """Feed readings of one patient; events with the index of the reading that caused them (``since``: minutes
    since the previous reading, as the feature history tells the consumer; with ``usual``, the patient's usual
    pressure, each reading also gets a :class:`Context`: the usual pressure and the previous reading; ``since``
    then defaults to ``gap``)."""
    events: list[tuple[int, AlertEvent]] = []
    previous: tuple[float, float] | None = None
    for i, (s, d, risk) in enumerate(values, start=first):
        reading = Reading("p1", T0 + i * gap, s, d, f"p1-{i}")
        context = None
        minutes = since
        if usual is not None:
            context = Context(*usual) if previous is None else Context(*usual, *previous)
            minutes = None if previous is None else since if since is not None else gap.total_seconds() / 60
        state, new = step(state, reading, risk, policy, minutes, context)
        events += [(i, e) for e in new]
        previous = (s, d)
    return state, events


def statuses(events: list[tuple[int, AlertEvent]]) -> list[tuple[int, str, str, str]]:
    return [(i, e.kind.value, e.status.value, e.severity.value) for i, e in events]


def test_normal_readings_keep_the_empty_state() -> None:
    state, events = run([NORMAL] * 20)
    assert state is EMPTY
    assert events == []


def test_a_lone_high_risk_reading_never_opens_an_alert() -> None:
    _, events = run([NORMAL, (175.0, 100.0, 0.95), NORMAL, NORMAL, (176.0, 101.0, 0.9), NORMAL, NORMAL])
    assert events == []  # two hits, but never 2 of 3 consecutive readings


def test_two_of_three_open_one_alert_and_later_hits_update_it() -> None:
    hit = (150.0, 95.0, 0.8)
    state, events = run([NORMAL, hit, NORMAL, hit, hit, hit])
    assert statuses(events) == [(3, "hypertensive", "opened", "high")]
    (alert,) = state.open
    assert alert.alert_id == "p1:hypertensive:p1-3"
    assert alert.hits == 4  # the two that confirmed it, then two more
    assert alert.worst_systolic == 150.0


def test_resolves_after_quiet_readings_and_minutes_then_can_open_again() -> None:
    hit = (150.0, 95.0, 0.8)
    values = [hit, hit, NORMAL, NORMAL, NORMAL, NORMAL, hit, hit]
    _, events = run(values)
    assert statuses(events) == [
        (1, "hypertensive", "opened", "high"),
        (4, "hypertensive", "resolved", "high"),  # 3 quiet readings, 45 min >= 30 min after the last hit
        (7, "hypertensive", "opened", "high"),
    ]
    assert events[1][1].alert_id == events[0][1].alert_id
    assert events[2][1].alert_id != events[0][1].alert_id


def test_resolution_waits_for_the_minutes_too() -> None:
    hit = (150.0, 95.0, 0.8)
    _, events = run([hit, hit, NORMAL, NORMAL, NORMAL, NORMAL], gap=timedelta(minutes=1))
    assert [e.status for _, e in events] == [AlertStatus.OPENED]  # 4 quiet readings, but only 4 minutes


def test_low_hits_open_a_hypotensive_alert_beside_a_hypertensive_one() -> None:
    high, low = (150.0, 95.0, 0.8), (78.0, 48.0, 0.9)
    state, events = run([high, high, low, low])
    assert statuses(events) == [(1, "hypertensive", "opened", "high"), (3, "hypotensive", "opened", "high")]
    assert {a.kind for a in state.open} == {AlertKind.HYPERTENSIVE, AlertKind.HYPOTENSIVE}
    hypo = next(a for a in state.open if a.kind is AlertKind.HYPOTENSIVE)
    assert (hypo.worst_systolic, hypo.worst_diastolic) == (78.0, 48.0)


def test_crisis_confirmed_by_model_risk_opens_critical_at_once() -> None:
    _, events = run([NORMAL, (195.0, 118.0, 0.7)])
    assert statuses(events) == [(1, "hypertensive", "opened", "critical")]


def test_crisis_with_low_risk_waits_for_a_second_crisis_reading() -> None:
    artefact = (205.0, 110.0, 0.02)
    _, events = run([NORMAL, artefact, NORMAL, NORMAL, NORMAL])
    assert events == []  # a lone crisis-range reading the model calls an artefact
    _, events = run([NORMAL, artefact, (199.0, 112.0, 0.03)])
    assert statuses(events) == [(2, "hypertensive", "opened", "critical")]


def test_an_open_alert_escalates_once_when_a_crisis_is_confirmed() -> None:
    hit = (160.0, 100.0, 0.8)
    state, events = run([hit, hit, (190.0, 115.0, 0.9), (195.0, 119.0, 0.95)])
    assert statuses(events) == [(1, "hypertensive", "opened", "high"), (2, "hypertensive", "escalated", "critical")]
    assert state.open[0].severity is Severity.CRITICAL


def test_old_hits_do_not_confirm() -> None:
    policy = AlertPolicy(threshold=0.5, confirm_k=2, confirm_n=2, confirm_within_minutes=60)
    hit = (150.0, 95.0, 0.8)
    _, events = run([hit, hit], policy=policy, gap=timedelta(hours=2))
    assert events == []
    _, events = run([hit, hit], policy=policy, gap=timedelta(minutes=30))
    assert len(events) == 1


def test_rules_trigger_is_the_baseline_policy() -> None:
    every = AlertPolicy(threshold=1.0, confirm_k=1, confirm_n=1, trigger=Trigger.RULES)
    _, events = run([(145.0, 85.0, None), (120.0, 80.0, None)], policy=every)
    assert statuses(events) == [(0, "hypertensive", "opened", "high")]
    _, events = run([(85.0, 55.0, None)], policy=every)
    assert statuses(events) == [(0, "hypotensive", "opened", "high")]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"confirm_k": 3, "confirm_n": 2},
        {"confirm_k": 0},
        {"threshold": 0.0},
        {"threshold": float("nan")},
        {"resolve_readings": 0},
        {"confirm_within_minutes": 0},
        {"threshold": 0.5, "crisis_confirm_risk": 0.4},
        {"crisis_confirm_risk": 1.5},
        {"crisis_confirm_risk": float("nan")},
        {"dense_threshold": 0.0},
        {"dense_threshold": 1.2},
        {"hypotensive_threshold": 0.0},
        {"hypotensive_threshold": 1.2},
        {"hypotensive_threshold": float("nan")},
        {"sparse_hypotensive_threshold": 0.0},
        {"sparse_hypotensive_threshold": 1.2},
    ],
)
def test_bad_policy_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AlertPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("since", "opens"),
    [(15.0, False), (45.0, False), (60.0, False), (None, True), (1.0, True), (10.0, True), (61.0, True), (720.0, True)],
)
def test_a_dense_cadence_asks_for_the_dense_threshold(since: float | None, opens: bool) -> None:
    """Readings 10-60 min after the previous one (an ambulatory monitor) need dense_threshold; a home pair's
    second reading, a reading half a day later or one without a known previous reading need the threshold."""
    policy = replace(POLICY, threshold=0.5, dense_threshold=0.7)
    middling = (150.0, 95.0, 0.6)
    _, events = run([NORMAL, middling, middling, middling], policy=policy, since=since)
    assert bool(events) is opens
    _, events = run([NORMAL, (150.0, 95.0, 0.7), (150.0, 95.0, 0.7)], policy=policy, since=since)
    assert statuses(events) == [(2, "hypertensive", "opened", "high")]  # at dense_threshold it is a hit anyway
    dense = since is not None and 10.0 < since <= 60.0
    expected = "model risk >= 0.7" if dense else "model risk >= 0.5"  # the opening reading's own threshold
    assert expected in events[0][1].reason, events[0][1].reason


def test_a_crisis_range_reading_below_the_dense_threshold_is_weak_at_a_dense_cadence() -> None:
    policy = replace(POLICY, threshold=0.5, dense_threshold=0.7)
    _, events = run([NORMAL, (236.0, 108.0, 0.6), (172.0, 101.0, 0.8), NORMAL], policy=policy, since=15.0)
    assert events == []
    _, events = run([NORMAL, (236.0, 108.0, 0.6), (172.0, 101.0, 0.8)], policy=policy, since=None)
    assert statuses(events) == [(1, "hypertensive", "opened", "critical")]  # 0.6 >= threshold confirms it


def test_policy_round_trips_through_json() -> None:
    for policy in (
        AlertPolicy(threshold=0.31, confirm_k=1, confirm_n=2, trigger=Trigger.RULES),
        AlertPolicy(threshold=0.45, crisis_confirm_risk=0.8, resolve_minutes=1440.0, dense_threshold=0.55),
        AlertPolicy(threshold=0.5, dense_threshold=0.6, hypotensive_threshold=0.3),
        AlertPolicy(threshold=0.5, hypotensive_threshold=0.4, sparse_hypotensive_threshold=0.2),
    ):
        assert AlertPolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy


def test_a_policy_stored_before_crisis_confirm_risk_confirms_crises_at_its_threshold() -> None:
    stored = AlertPolicy(threshold=0.4).to_dict()
    del stored["crisis_confirm_risk"], stored["dense_threshold"], stored["hypotensive_threshold"]
    del stored["sparse_hypotensive_threshold"]
    policy = AlertPolicy.from_dict(stored)
    assert policy.crisis_confirm_risk is None and policy.crisis_risk == 0.4
    assert policy.dense_threshold is None and policy.hit_threshold(15.0) == 0.4
    assert policy.hypotensive_threshold is None and policy.low_threshold(15.0) == 0.4
    assert policy.sparse_hypotensive_threshold is None and policy.low_threshold(720.0) == 0.4
    _, events = run([NORMAL, (236.0, 108.0, 0.45)], policy=policy)
    assert statuses(events) == [(1, "hypertensive", "opened", "critical")]


readings = st.lists(st.tuples(st.integers(60, 230), st.integers(35, 130), st.floats(0, 1)), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(readings, st.integers(1, 39))
def test_state_survives_serialisation_mid_stream(values: list[tuple[int, int, float]], cut: int) -> None:
    """A restart from the serialised state (the state store) gives exactly the events of an uninterrupted run."""
    triples = [(float(s), float(min(d, s - 11)), r) for s, d, r in values]
    cut = min(cut, len(triples))
    _, whole = run(triples)
    state, before = run(triples[:cut])
    restored = AlertState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
    _, after = run(triples[cut:], state=restored, first=cut)
    assert before + after == whole


@settings(max_examples=150, deadline=None)
@given(readings)
def test_invariants(values: list[tuple[int, int, float]]) -> None:
    triples = [(float(s), float(min(d, s - 11)), r) for s, d, r in values]
    state = EMPTY
    opened: dict[str, AlertEvent] = {}
    for i, (s, d, risk) in enumerate(triples):
        state, events = step(state, Reading("p1", T0 + i * STEP, s, d, f"p1-{i}"), risk, POLICY)
        assert len({a.kind for a in state.open}) == len(state.open)  # one open alert per kind
        assert len(state.recent) <= max(POLICY.confirm_n - 1, POLICY.resolve_readings)
        for e in events:
            if e.status is AlertStatus.OPENED:
                assert e.alert_id not in opened
                opened[e.alert_id] = e
            else:
                assert e.alert_id in opened  # escalate/resolve only what was opened
        crisis = s > 180 or d > 120
        if crisis and risk >= POLICY.threshold:
            assert any(a.severity is Severity.CRITICAL for a in state.open)


def test_a_crisis_range_hit_among_the_confirming_ones_makes_the_alert_critical() -> None:
    policy = replace(POLICY, crisis_confirm_risk=0.9)
    _, events = run([NORMAL, (186.0, 104.0, 0.6), (165.0, 98.0, 0.7)], policy=policy)
    assert statuses(events) == [(2, "hypertensive", "opened", "critical")]


def test_a_lone_crisis_range_reading_opens_at_once_only_from_crisis_confirm_risk() -> None:
    policy = replace(POLICY, crisis_confirm_risk=0.8)
    _, events = run([NORMAL, (236.0, 108.0, 0.6), NORMAL, NORMAL], policy=policy)
    assert events == []  # a hit, but a middling risk does not confirm a lone crisis-range reading (artefacts)
    _, events = run([NORMAL, (236.0, 108.0, 0.8)], policy=policy)
    assert statuses(events) == [(1, "hypertensive", "opened", "critical")]
    _, events = run([NORMAL, (236.0, 108.0, 0.6), (172.0, 101.0, 0.7)], policy=policy)
    assert statuses(events) == [(2, "hypertensive", "opened", "critical")]  # a second hit confirms it


def test_a_crisis_range_reading_the_model_calls_an_artefact_confirms_only_another_crisis_reading() -> None:
    artefact = (207.0, 99.0, 0.03)
    _, events = run([NORMAL, artefact, (141.0, 93.0, 0.6), NORMAL, NORMAL])
    assert events == []  # one model hit next to a weak crisis-range hit
    _, events = run([NORMAL, artefact, (150.0, 95.0, 0.8), (150.0, 95.0, 0.8)])
    assert statuses(events) == [(3, "hypertensive", "opened", "high")]  # two model hits confirm; not critical
    _, events = run([NORMAL, artefact, (199.0, 112.0, 0.03)])
    assert statuses(events) == [(2, "hypertensive", "opened", "critical")]  # two crisis-range readings do


def test_a_weak_crisis_hit_escalates_an_open_alert() -> None:
    hit = (160.0, 100.0, 0.8)
    _, events = run([hit, hit, (183.0, 104.0, 0.03)])
    assert statuses(events) == [(1, "hypertensive", "opened", "high"), (2, "hypertensive", "escalated", "critical")]


def test_an_open_alert_turns_critical_at_its_first_crisis_range_hit() -> None:
    hit = (160.0, 100.0, 0.8)
    _, events = run([hit, hit, (183.0, 104.0, 0.3)])
    assert statuses(events) == [(1, "hypertensive", "opened", "high"), (2, "hypertensive", "escalated", "critical")]


def test_state_as_bytes_round_trips_and_refuses_another_format() -> None:
    hit = (160.0, 100.0, 0.8)
    state, _ = run([hit, hit, (183.0, 104.0, 0.3), NORMAL])
    assert state.open
    raw = state_to_bytes(state)
    assert state_from_bytes(raw) == state
    with pytest.raises(ValueError, match="format"):
        state_from_bytes(bytes([STATE_FORMAT + 1]) + raw[1:])
    with pytest.raises(ValueError, match="damaged"):
        state_from_bytes(raw[:-5])


def test_state_of_format_1_is_still_read() -> None:
    """Format 1 (before weak hits) stored marks as [t, kind, crisis]: they read as hits that are not weak."""
    hit = (160.0, 100.0, 0.8)
    state, _ = run([hit, hit, NORMAL, (150.0, 95.0, 0.8)])
    assert state.open and any(m.kind for m in state.recent)
    as_dict = state.to_dict()
    as_dict["recent"] = [mark[:3] for mark in as_dict["recent"]]
    old = bytes([1]) + json.dumps(as_dict).encode()
    assert STATE_FORMAT == 4
    assert without_values(state_from_bytes(old)) == without_values(state)


def test_patient_alerts_keep_state_per_patient_in_the_keyed_state() -> None:
    state = MemoryState()
    alerts = PatientAlerts(POLICY, state)
    hit = (150.0, 95.0, 0.8)
    events = []
    for i in range(3):
        for pid in ("a", "b"):
            s, d, risk = hit if pid == "a" else NORMAL
            events += alerts.observe(Reading(pid, T0 + i * STEP, s, d, f"{pid}-{i}"), risk)
    assert [(e.patient_id, e.status) for e in events] == [("a", AlertStatus.OPENED)]
    assert state.get("alerts/a") is not None
    assert state.get("alerts/b") is None  # nothing to remember about a patient without hits
    again = PatientAlerts(POLICY, state)  # e.g. after a restart from the store: the alert is still open
    more = again.observe(Reading("a", T0 + 3 * STEP, *hit[:2], "a-3"), hit[2])
    assert more == ()


def test_rules_policy_needs_two_rule_anomalies() -> None:
    _, events = run(
        [(145.0, 85.0, None), (120.0, 80.0, None), (145.0, 85.0, None), (150.0, 92.0, None)], policy=rules_policy()
    )
    assert statuses(events) == [(3, "hypertensive", "opened", "high")]


def without_values(state: AlertState) -> AlertState:
    """The state with its marks' values and its alerts' reasons left out (formats 1 and 2 stored neither)."""
    return AlertState(
        tuple(replace(m, systolic=0.0, diastolic=0.0) for m in state.recent),
        tuple(replace(a, reason="") for a in state.open),
    )


def test_state_of_format_2_is_still_read_without_values() -> None:
    """Format 2 stored marks as [t, kind, crisis, weak]: they read with unknown (NaN) values."""
    state, _ = run([(160.0, 100.0, 0.8), (150.0, 95.0, 0.3)])
    as_dict = state.to_dict()
    as_dict["recent"] = [mark[:4] for mark in as_dict["recent"]]
    restored = state_from_bytes(bytes([2]) + json.dumps(as_dict).encode())
    assert without_values(restored) == without_values(state)
    assert all(math.isnan(m.systolic) and math.isnan(m.diastolic) for m in restored.recent)
    assert state_from_bytes(state_to_bytes(state)) == state  # format 3 keeps the values


# --- direction from the patient's own pressure ------------------------------------------------------------------
HYPERTENSIVE_USUAL = (150.0, 90.0)


def test_a_relative_drop_the_model_flags_opens_a_hypotensive_alert() -> None:
    """110/68 is no hypotension by the cut-points, but 40/22 mmHg below this patient's usual 150/90."""
    drop = (110.0, 68.0, 0.8)
    _, events = run([NORMAL, drop, drop], usual=HYPERTENSIVE_USUAL)
    assert statuses(events) == [(2, "hypotensive", "opened", "high")]
    _, events = run([NORMAL, drop, drop])  # without the patient's history: the cut-points alone
    assert statuses(events) == [(2, "hypertensive", "opened", "high")]


def test_a_hit_above_the_usual_pressure_stays_hypertensive() -> None:
    rise = (170.0, 100.0, 0.8)
    _, events = run([NORMAL, rise, rise], usual=HYPERTENSIVE_USUAL)
    assert statuses(events) == [(2, "hypertensive", "opened", "high")]


def test_below_the_cut_points_is_hypotensive_even_above_a_low_usual_pressure() -> None:
    """A patient whose history began during hypotension has a low 'usual' pressure: 80/45 is still hypotension."""
    low = (80.0, 45.0, 0.8)
    _, events = run([low, low, low], usual=(72.0, 40.0))
    assert statuses(events) == [(1, "hypotensive", "opened", "high")]


# --- the hypotensive threshold ----------------------------------------------------------------------------------
LOW_THRESHOLD = replace(POLICY, threshold=0.5, dense_threshold=0.7, hypotensive_threshold=0.3)


@pytest.mark.parametrize("since", [None, 1.0, 15.0, 720.0])
def test_a_hypotensive_reading_is_a_hit_from_the_hypotensive_threshold_at_any_cadence(since: float | None) -> None:
    """A drop the model scores middling on every reading (0.35 < threshold 0.5, < dense threshold 0.7) opens a
    hypotensive alert; the same middling risk on readings above the usual pressure opens nothing."""
    low = (84.0, 54.0, 0.35)
    _, events = run([NORMAL, low, low], policy=LOW_THRESHOLD, since=since)
    assert statuses(events) == [(2, "hypotensive", "opened", "high")]
    assert "model risk >= 0.3" in events[0][1].reason
    _, events = run([NORMAL, low, low], policy=replace(LOW_THRESHOLD, hypotensive_threshold=None), since=since)
    assert events == []
    _, events = run([NORMAL, (84.0, 54.0, 0.25), (84.0, 54.0, 0.25)], policy=LOW_THRESHOLD, since=since)
    assert events == []  # below the hypotensive threshold too
    high = (150.0, 95.0, 0.35)
    _, events = run([NORMAL, high, high], policy=LOW_THRESHOLD, since=since)
    assert events == []


def test_a_relative_drop_counts_from_the_hypotensive_threshold_only_with_the_patients_history() -> None:
    """110/68 is hypotensive only below this patient's usual 150/90 (the direction needs the context)."""
    drop = (110.0, 68.0, 0.35)
    _, events = run([NORMAL, drop, drop], policy=LOW_THRESHOLD, usual=HYPERTENSIVE_USUAL)
    assert statuses(events) == [(2, "hypotensive", "opened", "high")]
    _, events = run([NORMAL, drop, drop], policy=LOW_THRESHOLD)
    assert events == []
    _, events = run([NORMAL, drop, drop], policy=LOW_THRESHOLD, usual=(100.0, 60.0))  # above this usual pressure
    assert events == []


@pytest.mark.parametrize(("since", "opens"), [(None, True), (1.0, True), (720.0, True), (15.0, False), (60.0, False)])
def test_the_sparse_hypotensive_threshold_applies_only_away_from_a_dense_cadence(
    since: float | None, opens: bool
) -> None:
    """Home readings (a pair a minute apart, half a day after the last, or the first) count from the sparse
    hypotensive threshold; an ambulatory monitor's readings 10-60 min apart keep the hypotensive threshold."""
    policy = replace(LOW_THRESHOLD, sparse_hypotensive_threshold=0.2)
    low = (84.0, 54.0, 0.25)  # under the hypotensive threshold 0.3, over the sparse one
    _, events = run([NORMAL, low, low], policy=policy, since=since)
    assert bool(events) is opens
    if opens:
        assert statuses(events) == [(2, "hypotensive", "opened", "high")]
        assert "model risk >= 0.2" in events[0][1].reason
    assert policy.low_threshold(since) == (0.2 if opens else 0.3)
    _, events = run([NORMAL, (150.0, 95.0, 0.25), (150.0, 95.0, 0.25)], policy=policy, since=since)
    assert events == []  # never for a hypertensive reading


def test_hypotensive_rows_is_the_direction_of_mark() -> None:
    """The vectorised direction (training's hit mask) says what mark says, reading by reading."""
    rng = np.random.default_rng(7)
    n = 400
    s = rng.integers(60, 230, n).astype(float)
    d = np.minimum(rng.integers(35, 130, n), s - 11).astype(float)
    contexts = np.column_stack([rng.uniform(80, 170, n), rng.uniform(45, 100, n), s, d])
    policy = replace(LOW_THRESHOLD, hypotensive_threshold=0.01, threshold=0.99, dense_threshold=None)
    for ctx in (contexts, None):
        low = hypotensive_rows(s, d, ctx, policy)
        for i in range(n):
            reading = Reading("p1", T0, float(s[i]), float(d[i]), "p1-0")
            context = None if ctx is None else context_of(ctx[i].tolist())
            m = mark(reading, 0.5, policy, 15.0, context)
            assert (m.kind is AlertKind.HYPOTENSIVE) is bool(low[i]), (s[i], d[i], None if ctx is None else ctx[i])


# --- re-measurement (home pairs a minute apart) ------------------------------------------------------------------
PAIR = timedelta(minutes=1)
REMEASURE = replace(POLICY, remeasure_agree_mmhg=10.0)


def test_a_hit_confirmed_by_its_agreeing_re_measurement_opens_an_alert() -> None:
    """The model scores the first reading of a session low and its re-measurement a minute later high."""
    pair = [(94.0, 55.0, 0.28), (95.0, 51.0, 0.88)]
    _, events = run(pair, policy=REMEASURE, gap=PAIR, usual=(120.0, 78.0))
    assert statuses(events) == [(1, "hypotensive", "opened", "high")]
    _, events = run(pair, policy=POLICY, gap=PAIR, usual=(120.0, 78.0))  # re-measurement off
    assert events == []
    _, events = run(pair, policy=REMEASURE, gap=STEP, usual=(120.0, 78.0))  # 15 min apart: not a re-measurement
    assert events == []


def test_a_re_measurement_that_disagrees_confirms_nothing() -> None:
    """A cuff artefact differs from its re-measurement by far more than the agreement."""
    _, events = run([(70.0, 38.0, 0.2), (95.0, 51.0, 0.88)], policy=REMEASURE, gap=PAIR, usual=(120.0, 78.0))
    assert events == []


def test_a_re_measurement_confirms_a_hit_before_it() -> None:
    _, events = run([(95.0, 51.0, 0.88), (94.0, 55.0, 0.28)], policy=REMEASURE, gap=PAIR, usual=(120.0, 78.0))
    assert statuses(events) == [(1, "hypotensive", "opened", "high")]


def test_a_crisis_range_reading_confirmed_by_its_re_measurement_opens_critical() -> None:
    """183/79 scored low (an artefact, the model thinks) is re-measured at 179/78: real, so critical."""
    pair = [(183.0, 79.0, 0.19), (179.0, 78.0, 0.10)]
    _, events = run(pair, policy=REMEASURE, gap=PAIR, usual=(160.0, 75.0))
    assert statuses(events) == [(1, "hypertensive", "opened", "critical")]
    _, events = run(pair, policy=POLICY, gap=PAIR, usual=(160.0, 75.0))
    assert events == []


def test_remeasure_parameters_round_trip_and_old_policies_read_them_as_off() -> None:
    assert AlertPolicy.from_dict(REMEASURE.to_dict()) == REMEASURE
    old = {k: v for k, v in REMEASURE.to_dict().items() if not k.startswith("remeasure")}
    assert AlertPolicy.from_dict(old).remeasure_agree_mmhg == 0.0
    with pytest.raises(ValueError):
        replace(POLICY, remeasure_agree_mmhg=-1.0)


# --- a crisis-range reading just before the alert opens ----------------------------------------------------------
def test_a_crisis_range_reading_just_before_the_opening_makes_it_critical() -> None:
    """The crisis-range hit did not confirm itself (risk below crisis_confirm_risk) and the next readings were no
    hits; the hits that then open the alert confirm the problem it belongs to."""
    policy = AlertPolicy(threshold=0.5, confirm_k=2, confirm_n=3, resolve_readings=4, crisis_confirm_risk=0.9)
    crisis, quiet, hit = (183.0, 83.0, 0.57), (167.0, 79.0, 0.3), (171.0, 76.0, 0.7)
    _, events = run([NORMAL, crisis, quiet, quiet, hit, hit], policy=policy)
    assert statuses(events) == [(5, "hypertensive", "opened", "critical")]
    far = [NORMAL, crisis] + [quiet] * policy.resolve_readings + [hit, hit]
    _, events = run(far, policy=policy)  # as many quiet readings as resolve an alert: another problem
    assert statuses(events) == [(len(far) - 1, "hypertensive", "opened", "high")]
    weak = (183.0, 83.0, 0.1)  # scored as an artefact: it does not make the alert critical
    _, events = run([NORMAL, weak, quiet, quiet, hit, hit], policy=policy)
    assert statuses(events) == [(5, "hypertensive", "opened", "high")]


def test_stage_2_readings_are_never_hypotensive_however_high_the_usual_pressure() -> None:
    high = (150.0, 95.0, 0.8)
    _, events = run([NORMAL, high, high], usual=(175.0, 105.0))
    assert statuses(events) == [(2, "hypertensive", "opened", "high")]


# --- what an alert says -----------------------------------------------------------------------------------------
def opened(events: list[tuple[int, AlertEvent]]) -> AlertEvent:
    (event,) = [e for _, e in events if e.status is AlertStatus.OPENED]
    return event


def test_worst_values_count_the_readings_that_confirmed_the_alert() -> None:
    """The first of the confirming readings was the lowest: it is the alert's worst value from the start."""
    _, events = run([NORMAL, (78.0, 46.0, 0.9), (84.0, 52.0, 0.8)])
    event = opened(events)
    assert (event.worst_systolic, event.worst_diastolic) == (78.0, 46.0)
    _, events = run([NORMAL, (160.0, 101.0, 0.9), (150.0, 95.0, 0.8)])
    assert (opened(events).worst_systolic, opened(events).worst_diastolic) == (160.0, 101.0)


def test_an_alert_says_which_readings_confirmed_it() -> None:
    _, events = run([NORMAL, (150.0, 95.0, 0.8), NORMAL, (152.0, 96.0, 0.7)])
    assert opened(events).reason == "2 of the last 3 readings flagged (model risk >= 0.5): 150/95, 152/96 mmHg"


def test_a_relative_drop_says_how_far_below_the_usual_pressure() -> None:
    drop = (110.0, 68.0, 0.8)
    _, events = run([NORMAL, drop, drop], usual=HYPERTENSIVE_USUAL)
    assert opened(events).reason.endswith("; 40/22 mmHg below this patient's usual 150/90")


def test_a_crisis_confirmed_by_the_model_says_so() -> None:
    _, events = run([NORMAL, (195.0, 118.0, 0.7)])
    assert opened(events).reason == "crisis range (> 180/120 mmHg) reading 195/118 mmHg with model risk 0.70 (>= 0.5)"
    _, events = run([NORMAL, (205.0, 110.0, 0.02), (199.0, 112.0, 0.03)])
    assert opened(events).reason == "2 crisis range (> 180/120 mmHg) readings: 205/110, 199/112 mmHg"


def test_a_re_measured_alert_and_an_escalated_one_say_so() -> None:
    pair = [(94.0, 55.0, 0.28), (95.0, 51.0, 0.88)]
    _, events = run(pair, policy=REMEASURE, gap=PAIR, usual=(120.0, 78.0))
    assert opened(events).reason == (
        "a reading flagged (model risk >= 0.5) and its re-measurement minutes apart agree: 94/55, 95/51 mmHg"
    )  # below 90/60 already: no word about the usual pressure
    _, events = run([(160.0, 100.0, 0.8), (160.0, 100.0, 0.8), (190.0, 115.0, 0.9)])
    escalated = events[-1][1]
    assert escalated.status is AlertStatus.ESCALATED
    assert escalated.reason.endswith("; critical from 2024-05-06 08:30 UTC: crisis-range reading 190/115 mmHg")
    assert escalated.reason.startswith("2 readings in a row flagged (model risk >= 0.5): 160/100, 160/100 mmHg")


def test_describe_is_one_line_with_who_what_since_when_how_bad_and_why() -> None:
    _, events = run([NORMAL, (78.0, 46.0, 0.9), (84.0, 52.0, 0.8)])
    line = describe(opened(events).to_dict())
    assert line == (
        "p1: high hypotensive alert, opened, since 2024-05-06 08:30 UTC (2 readings, lowest 78/46 mmHg): "
        "2 readings in a row flagged (model risk >= 0.5): 78/46, 84/52 mmHg"
    )
    assert "reason not recorded" in describe({**opened(events).to_dict(), "reason": ""})


# --- a crisis-range reading its previous reading agrees with (the trend confirms it) -----------------------------
CRISIS_POLICY = replace(POLICY, crisis_confirm_risk=0.9)
AGREE = replace(CRISIS_POLICY, crisis_agree_mmhg=10.0)
HIGH_USUAL = (165.0, 80.0)


def test_a_crisis_range_reading_its_previous_reading_agrees_with_opens_critical() -> None:
    """A sharp rise hovering at 180: 185/76 scored just below the threshold (a weak hit) next to 179/84 (a hit)
    was never confirmed; the reading before it, 180/78, says the pressure really is there."""
    values = [(176.0, 74.0, 0.3), (180.0, 78.0, 0.4), (185.0, 76.0, 0.49), (179.0, 84.0, 0.56), (176.0, 80.0, 0.4)]
    _, events = run(values, policy=CRISIS_POLICY, usual=HIGH_USUAL)
    assert events == []
    _, events = run(values, policy=AGREE, usual=HIGH_USUAL)
    assert statuses(events) == [(2, "hypertensive", "opened", "critical")]


def test_the_trend_confirms_a_crisis_whatever_the_model_scored() -> None:
    """The model does not see a rise (risk 0.1) to 186/84; the reading before, 177/80, agrees within 10 mmHg."""
    values = [(150.0, 75.0, 0.0), (177.0, 80.0, 0.1), (186.0, 84.0, 0.1), (172.0, 80.0, 0.1)]
    _, events = run(values, policy=AGREE, usual=HIGH_USUAL)
    assert statuses(events) == [(2, "hypertensive", "opened", "critical")]
    _, events = run(values, policy=CRISIS_POLICY, usual=HIGH_USUAL)
    assert events == []


@pytest.mark.parametrize(
    ("previous", "opens"),
    [
        ((175.0, 76.0), True),  # 10/0 mmHg apart: agrees
        ((174.0, 76.0), False),  # 11 mmHg systolic
        ((180.0, 87.0), False),  # 11 mmHg diastolic
        ((130.0, 70.0), False),  # a cuff artefact: +55 mmHg above the pressure for one reading
    ],
)
def test_the_previous_reading_agrees_on_both_values_or_confirms_nothing(
    previous: tuple[float, float], opens: bool
) -> None:
    _, events = run([(*previous, 0.2), (185.0, 76.0, 0.3), (140.0, 72.0, 0.1)], policy=AGREE, usual=HIGH_USUAL)
    assert statuses(events) == ([(1, "hypertensive", "opened", "critical")] if opens else [])


def test_a_previous_reading_too_long_ago_or_unknown_confirms_nothing() -> None:
    values = [(180.0, 78.0, 0.4), (185.0, 76.0, 0.3)]
    policy = replace(AGREE, confirm_within_minutes=60.0)
    _, events = run(values, policy=policy, gap=timedelta(minutes=61), usual=HIGH_USUAL)
    assert events == []
    _, events = run(values, policy=policy, gap=timedelta(minutes=60), usual=HIGH_USUAL)
    assert statuses(events) == [(1, "hypertensive", "opened", "critical")]
    _, events = run(values, policy=policy)  # no context (no history, or --rules-only): no previous reading known
    assert events == []


def test_a_crisis_the_trend_confirmed_says_so() -> None:
    _, events = run([(180.0, 78.0, 0.4), (185.0, 76.0, 0.49)], policy=AGREE, usual=HIGH_USUAL)
    assert opened(events).reason == (
        "crisis range (> 180/120 mmHg) reading 185/76 mmHg, systolic 20 mmHg above this patient's usual 165/80; "
        "the reading 15 min before, 180/78 mmHg, agreeing within 10 mmHg (a cuff artefact would stand apart)"
    )
    _, events = run([(150.0, 118.0, 0.4), (155.0, 122.0, 0.4)], policy=AGREE, gap=timedelta(hours=12), usual=(150, 90))
    assert "reading 155/122 mmHg, diastolic 32 mmHg above this patient's usual 150/90; the reading 12 h before" in (
        opened(events).reason
    )
    _, events = run([(173.0, 110.0, 0.35), (184.0, 103.0, 0.57)], policy=replace(AGREE, crisis_agree_mmhg=15.0),
                    gap=PAIR, usual=(161.0, 97.0))  # fmt: skip
    assert opened(events).reason == (
        "crisis range (> 180/120 mmHg) reading 184/103 mmHg re-measured 1 min before at 173/110 mmHg, agreeing within "
        "15 mmHg (a cuff artefact would stand apart)"
    )


def test_away_from_a_re_measurement_the_trend_confirms_only_a_rise_above_the_usual_pressure() -> None:
    """A patient whose usual pressure is near 180 has agreeing crisis-range readings every day: no change, so no
    critical alert on them; the same readings 25 mmHg above the usual pressure are a change; a home pair is a
    re-measurement and confirms whatever the usual pressure."""
    policy = replace(AGREE, crisis_rise_mmhg=25.0)
    values = [(176.0, 80.0, 0.1), (184.0, 82.0, 0.2), (150.0, 80.0, 0.0)]
    _, events = run(values, policy=policy, usual=(172.0, 80.0))  # 12 mmHg above the usual pressure
    assert events == []
    _, events = run(values, policy=policy, usual=(159.0, 80.0))  # 25 mmHg
    assert statuses(events) == [(1, "hypertensive", "opened", "critical")]
    _, events = run(values, policy=policy, gap=PAIR, usual=(172.0, 80.0))  # re-measured a minute later
    assert statuses(events) == [(1, "hypertensive", "opened", "critical")]


def test_crisis_agree_round_trips_and_old_policies_read_it_as_off() -> None:
    assert AlertPolicy.from_dict(json.loads(json.dumps(AGREE.to_dict()))) == AGREE
    rising = replace(AGREE, crisis_rise_mmhg=25.0)
    assert AlertPolicy.from_dict(json.loads(json.dumps(rising.to_dict()))) == rising
    old = {k: v for k, v in rising.to_dict().items() if k not in ("crisis_agree_mmhg", "crisis_rise_mmhg")}
    assert (AlertPolicy.from_dict(old).crisis_agree_mmhg, AlertPolicy.from_dict(old).crisis_rise_mmhg) == (0.0, 0.0)
    for name in ("crisis_agree_mmhg", "crisis_rise_mmhg"):
        for bad in (-1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match=name):
                replace(POLICY, **{name: bad})


@settings(max_examples=100, deadline=None)
@given(readings, st.integers(1, 39))
def test_state_survives_serialisation_mid_stream_with_the_crisis_agreement(
    values: list[tuple[int, int, float]], cut: int
) -> None:
    policy = replace(AGREE, crisis_agree_mmhg=25.0, crisis_rise_mmhg=25.0)
    triples = [(float(s), float(min(d, s - 11)), r) for s, d, r in values]
    cut = min(cut, len(triples))
    _, whole = run(triples, policy=policy, usual=HIGH_USUAL)
    state, before = run(triples[:cut], policy=policy, usual=HIGH_USUAL)
    restored = state_from_bytes(state_to_bytes(state))
    assert restored == state
    # The first reading after the restart still knows its previous reading (the feature history has it).
    previous = triples[cut - 1]
    rest = [previous, *triples[cut:]]
    events: list[tuple[int, AlertEvent]] = []
    for i, (s, d, risk) in enumerate(rest[1:], start=cut):
        context = Context(*HIGH_USUAL, *rest[i - cut][:2])
        restored, new = step(restored, Reading("p1", T0 + i * STEP, s, d, f"p1-{i}"), risk, policy, 15.0, context)
        events += [(i, e) for e in new]
    assert before + events == whole


def test_an_open_alert_after_a_quiet_reading_is_replace_with_one_more_reading_and_quiet() -> None:
    alert = OpenAlert(
        alert_id="p:hypertensive:o1", kind=AlertKind.HYPERTENSIVE, severity=Severity.CRITICAL, opened_at=1.0,
        opened_observation="o1", last_hit_at=2.0, hits=3, readings=4, quiet=1, worst_systolic=190.0,
        worst_diastolic=121.0, reason="why",
    )  # fmt: skip
    assert alert.after_quiet_reading() == replace(alert, readings=5, quiet=2)
