"""Episode scoring (ml.episodes): caught, delay, false and artefact alerts on a hand-made stream."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from bp.alerts import AlertKind, AlertPolicy, Trigger
from bp.features import FEATURE_NAMES, PatientHistory, feature_matrix
from bp.reading import Reading
from ml.dataset import SIMULATION_START, Dataset, FloatArray, Simulation, build_dataset
from ml.episodes import (
    Opened,
    gaps_from_features,
    hit_mask,
    patient_outcomes,
    rules_policies,
    run_alerts,
    summarise,
)

T0 = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
STEP = timedelta(minutes=15)
RISE, HYPO = "sharp_rise", "acute_hypotension"


def dataset(rows: list[tuple[float, float, str, str, bool, bool]]) -> Dataset:
    """One patient; each row: systolic, diastolic, episode type, episode id, significant, artefact."""
    n = len(rows)
    readings = tuple(Reading("p", T0 + i * STEP, s, d, f"p-{i}") for i, (s, d, *_) in enumerate(rows))
    return Dataset(
        x=np.zeros((n, len(FEATURE_NAMES))),  # warmup 0: no history, so no context for the alerts
        y=np.array([r[4] for r in rows]),
        patient=np.zeros(n, dtype=np.int64),
        patient_ids=("p",),
        profiles=("normotensive",),
        schedules=("ambulatory",),
        observation_ids=tuple(r.observation_id or "" for r in readings),
        readings=readings,
        time=np.array([r.effective.timestamp() for r in readings]),
        episode=np.array([r[2] for r in rows], dtype=np.str_),
        episode_id=np.array([r[3] for r in rows], dtype=np.str_),
        artefact=np.array([r[5] for r in rows]),
        systolic=np.array([r[0] for r in rows], dtype=np.float64),
        diastolic=np.array([r[1] for r in rows], dtype=np.float64),
        rule=np.array([r[0] > 140 or r[1] > 90 or r[0] < 90 or r[1] < 60 for r in rows]),
        stage2_plus=np.zeros(n, dtype=bool),
        crisis=np.array([r[0] > 180 or r[1] > 120 for r in rows]),
    )


def every_15_minutes(n: int) -> FloatArray:
    """The gaps of one patient's stream of ``n`` readings 15 min apart (none before the first)."""
    return np.array([np.nan] + [15.0] * (n - 1))


NORMAL = (118.0, 76.0, "", "", False, False)
STREAM = [
    NORMAL,
    NORMAL,
    (128.0, 80.0, RISE, "e1", False, False),  # 2: ramp
    (140.0, 86.0, RISE, "e1", True, False),  # 3: first significant
    (146.0, 90.0, RISE, "e1", True, False),  # 4
    (147.0, 91.0, RISE, "e1", True, False),  # 5
    (125.0, 79.0, RISE, "e1", False, False),  # 6: resolving
    NORMAL,
    (190.0, 110.0, "", "", False, True),  # 8: artefact
    NORMAL,
    (92.0, 58.0, HYPO, "e2", False, False),  # 10
    (80.0, 50.0, HYPO, "e2", True, False),  # 11
    (82.0, 52.0, HYPO, "e2", True, False),  # 12
    NORMAL,
]


def test_caught_delay_false_and_artefact_alerts() -> None:
    data = dataset(STREAM)
    rows = np.arange(len(STREAM))
    alerts = {
        0: [
            Opened(AlertKind.HYPERTENSIVE, row=5, critical_row=None, resolved_row=7),  # e1, 2 readings late
            Opened(AlertKind.HYPERTENSIVE, row=8, critical_row=8, resolved_row=None),  # on the artefact: false
            Opened(AlertKind.HYPERTENSIVE, row=11, critical_row=None, resolved_row=None),  # wrong direction in e2
        ]
    }
    (o,) = patient_outcomes(data, rows, alerts, weeks=0.5)
    assert o.episodes == {"hypertensive_crisis": 0, "acute_hypotension": 1, "sharp_rise": 1}
    assert o.caught == {"hypertensive_crisis": 0, "acute_hypotension": 0, "sharp_rise": 1}
    assert o.delays_readings == [2.0]
    assert o.delays_minutes == [30.0]
    assert (o.alerts, o.true_alerts, o.artefact_alerts, o.critical_alerts) == (3, 1, 1, 1)
    summary = summarise([o], resamples=50)
    assert summary["false_alerts_per_patient_week"]["value"] == pytest.approx(2 / 0.5)
    assert summary["share_true"]["value"] == pytest.approx(1 / 3)
    assert summary["recall"][RISE]["value"] == 1.0
    assert summary["recall"][HYPO]["value"] == 0.0


def test_an_alert_open_before_the_episode_catches_it_with_no_delay() -> None:
    data = dataset(STREAM)
    early = {0: [Opened(AlertKind.HYPERTENSIVE, row=1, critical_row=None, resolved_row=None)]}
    (o,) = patient_outcomes(data, np.arange(len(STREAM)), early, weeks=1.0)
    assert o.caught["sharp_rise"] == 1
    assert o.delays_readings == [0.0]
    assert o.true_alerts == 0  # it opened on a normal reading
    resolved_before = {0: [Opened(AlertKind.HYPERTENSIVE, row=0, critical_row=None, resolved_row=1)]}
    (o,) = patient_outcomes(data, np.arange(len(STREAM)), resolved_before, weeks=1.0)
    assert o.caught["sharp_rise"] == 0


def test_run_alerts_uses_the_alert_logic() -> None:
    data = dataset(STREAM)
    risk = np.array([0.9 if row[2] else 0.01 for row in STREAM])  # the model sees every episode reading
    policy = AlertPolicy(threshold=0.5, confirm_k=2, confirm_n=2, resolve_readings=2, resolve_minutes=15)
    alerts = run_alerts(data, np.arange(len(STREAM)), risk, policy, every_15_minutes(len(STREAM)))
    opened = [(a.kind, a.row) for a in alerts[0]]
    assert opened == [(AlertKind.HYPERTENSIVE, 3), (AlertKind.HYPOTENSIVE, 11)]  # the artefact opens nothing
    # The crisis-range artefact (row 8) is a hit that keeps the open alert alive; two quiet readings later it
    # resolves (row 10).
    assert alerts[0][0].resolved_row == 10


def test_rule_baselines_resolve_like_the_policy_and_confirm_crises_by_rules() -> None:
    policy = AlertPolicy(threshold=0.45, crisis_confirm_risk=0.9, resolve_minutes=1440.0)
    baselines = rules_policies(policy)
    assert set(baselines) == {"rules_every_anomaly", "rules_confirmed"}
    for baseline in baselines.values():
        assert baseline.trigger is Trigger.RULES
        assert baseline.resolve_minutes == 1440.0
        assert baseline.crisis_confirm_risk is None


def test_gaps_are_the_consumers_minutes_since_previous_of_each_feature_row() -> None:
    readings = [  # two patients interleaved, as in a stream: p every 15 min, q a home pair a minute apart
        Reading("p", T0, 120, 80),
        Reading("q", T0, 130, 85),
        Reading("q", T0 + timedelta(minutes=1), 128, 84),
        Reading("p", T0 + STEP, 122, 81),
        Reading("p", T0 + 2 * STEP, 119, 79),
        Reading("q", T0 + timedelta(hours=12), 131, 86),
    ]
    gaps = gaps_from_features(feature_matrix(PatientHistory(), readings))
    assert np.isnan(gaps[[0, 1]]).all()  # each patient's first reading
    assert gaps[[2, 3, 4, 5]] == pytest.approx([1.0, 15.0, 15.0, 719.0])
    assert gaps_from_features(np.zeros((3, len(FEATURE_NAMES)))).tolist() == pytest.approx([np.nan] * 3, nan_ok=True)


def test_a_cold_start_scenarios_gaps_restart_at_the_reset_like_its_feature_rows() -> None:
    sim = Simulation(patients=3, days=1.0, seed=5, history_reset_day=0.5)
    data = build_dataset(sim)
    gaps = gaps_from_features(data.x)
    reset_at = SIMULATION_START.timestamp() + 0.5 * 86_400.0
    expected = np.full(data.y.size, np.nan)  # recomputed from the simulated times, independently of the features
    for patient in np.unique(data.patient).tolist():
        rows = np.flatnonzero(data.patient == patient)
        t = data.time[rows]
        gap = np.concatenate([[np.nan], np.diff(t) / 60.0])
        gap[1:][(t[:-1] < reset_at) & (t[1:] >= reset_at)] = np.nan  # the history was lost at the reset
        expected[rows] = gap
    assert np.isnan(gaps).sum() == 2 * sim.patients  # the first reading, and the first after the reset
    assert np.array_equal(np.isnan(gaps), np.isnan(expected))
    assert gaps[~np.isnan(gaps)] == pytest.approx(expected[~np.isnan(expected)])


def test_a_dense_threshold_applies_to_the_15_minute_stream() -> None:
    data = dataset(STREAM)
    rows = np.arange(len(STREAM))
    gaps = every_15_minutes(len(STREAM))
    risk = np.array([0.6 if row[2] else 0.01 for row in STREAM])
    policy = AlertPolicy(threshold=0.5, confirm_k=2, confirm_n=2, resolve_readings=2, resolve_minutes=15)
    assert [a.row for a in run_alerts(data, rows, risk, policy, gaps)[0]] == [3, 11]
    dense = AlertPolicy.from_dict(policy.to_dict() | {"dense_threshold": 0.7})
    assert hit_mask(data, rows, risk, dense, gaps).tolist() == data.crisis.tolist()
    assert run_alerts(data, rows, risk, dense, gaps)[0] == []  # the artefact alone (a weak hit) opens nothing either
    # The gaps given are the ones used: without them (no previous reading known) no reading is at a dense cadence.
    unknown = np.full(len(STREAM), np.nan)
    assert [a.row for a in run_alerts(data, rows, risk, dense, unknown)[0]] == [3, 11]


def test_a_hypotensive_threshold_applies_to_hypotensive_readings_only() -> None:
    data = dataset(STREAM)
    rows = np.arange(len(STREAM))
    gaps = every_15_minutes(len(STREAM))
    risk = np.array([0.35 if row[2] else 0.01 for row in STREAM])  # the model scores every episode middling
    policy = AlertPolicy(threshold=0.5, confirm_k=2, confirm_n=2, resolve_readings=2, resolve_minutes=15)
    assert run_alerts(data, rows, risk, policy, gaps)[0] == []
    low = AlertPolicy.from_dict(policy.to_dict() | {"hypotensive_threshold": 0.3})
    hits = hit_mask(data, rows, risk, low, gaps)
    assert np.flatnonzero(hits).tolist() == [8, 10, 11, 12]  # the crisis-range artefact, and the drop below 90/60
    assert [(a.kind, a.row) for a in run_alerts(data, rows, risk, low, gaps)[0]] == [(AlertKind.HYPOTENSIVE, 11)]
    # The sparse hypotensive threshold leaves a 15-minute stream alone and applies where no gap is dense.
    sparse = AlertPolicy.from_dict(low.to_dict() | {"sparse_hypotensive_threshold": 0.2})
    faint = np.array([0.25 if row[2] else 0.01 for row in STREAM])
    assert np.flatnonzero(hit_mask(data, rows, faint, sparse, gaps)).tolist() == [8]
    unknown = np.full(len(STREAM), np.nan)
    assert np.flatnonzero(hit_mask(data, rows, faint, sparse, unknown)).tolist() == [8, 10, 11, 12]


def test_an_episode_inside_an_alert_opened_earlier_is_caught_by_an_open_alert() -> None:
    rise = [(146.0, 90.0, RISE, "e1", True, False), (160.0, 98.0, RISE, "e2", True, False)]
    rows = [NORMAL, rise[0], rise[0], NORMAL, NORMAL, rise[1], rise[1], NORMAL]
    data = dataset(rows)
    still_open = {0: [Opened(AlertKind.HYPERTENSIVE, 2, None, None)]}
    (o,) = patient_outcomes(data, np.arange(len(rows)), still_open, weeks=1.0)
    assert o.caught["sharp_rise"] == 2 and o.caught_open == 1  # e2 began while e1's alert was open
    summary = summarise([o], resamples=10)
    assert summary["caught_by_open_alert"]["value"] == 0.5
    resolved = {0: [Opened(AlertKind.HYPERTENSIVE, 2, None, 4), Opened(AlertKind.HYPERTENSIVE, 6, None, None)]}
    (o,) = patient_outcomes(data, np.arange(len(rows)), resolved, weeks=1.0)
    assert o.caught["sharp_rise"] == 2 and o.caught_open == 0


def test_a_crisis_episode_is_critical_at_its_first_crisis_range_reading_only_when_already_then() -> None:
    crisis = "hypertensive_crisis"
    rows = [
        NORMAL,
        (170.0, 100.0, crisis, "e1", True, False),  # 1
        (186.0, 110.0, crisis, "e1", True, False),  # 2: the first crisis-range reading
        (195.0, 118.0, crisis, "e1", True, False),  # 3
        NORMAL,
    ]
    data = dataset(rows)
    for critical_row, at_first in ((2, 1), (3, 0), (1, 1)):
        alerts = {0: [Opened(AlertKind.HYPERTENSIVE, 1, critical_row, None)]}
        (o,) = patient_outcomes(data, np.arange(len(rows)), alerts, weeks=1.0)
        assert (o.crisis_range_episodes, o.crisis_critical, o.crisis_critical_at_first) == (1, 1, at_first)
        assert summarise([o], resamples=10)["crisis_critical_at_first"]["value"] == at_first


def test_only_an_episode_with_two_crisis_range_readings_is_a_confirmed_crisis_range_episode() -> None:
    rise = "sharp_rise"
    lone = [NORMAL, (150.0, 95.0, rise, "e1", True, False), (183.0, 96.0, rise, "e1", True, False)]
    lone += [(166.0, 98.0, rise, "e1", True, False), NORMAL]  # the next reading does not confirm the crisis range
    data = dataset(lone)
    alerts = {0: [Opened(AlertKind.HYPERTENSIVE, 1, None, None)]}  # caught, never critical
    (o,) = patient_outcomes(data, np.arange(len(lone)), alerts, weeks=1.0)
    assert (o.crisis_range_episodes, o.crisis_critical) == (1, 0)
    assert (o.confirmed_crisis_episodes, o.confirmed_crisis_critical) == (0, 0)
    summary = summarise([o], resamples=10)
    assert summary["crisis_alerted_critical"]["value"] == 0.0
    assert summary["confirmed_crisis_alerted_critical"]["value"] is None  # no confirmed crisis-range episode
    twice = [*lone[:3], (188.0, 99.0, rise, "e1", True, False), NORMAL]
    data = dataset(twice)
    for critical_row, confirmed_critical in ((None, 0), (3, 1)):
        alerts = {0: [Opened(AlertKind.HYPERTENSIVE, 1, critical_row, None)]}
        (o,) = patient_outcomes(data, np.arange(len(twice)), alerts, weeks=1.0)
        assert (o.confirmed_crisis_episodes, o.confirmed_crisis_critical) == (1, confirmed_critical)
