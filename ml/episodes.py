"""Alerts in the clinical unit: run an :class:`~bp.alerts.AlertPolicy` over simulated patients, score episodes.

:func:`run_alerts` feeds each patient's readings, in stream order, through :func:`bp.alerts.step` -- the function
the consumer uses -- and :func:`patient_outcomes` scores what came out against the simulator's ground truth, per
patient, so that :func:`summarise` can bootstrap over patients.

Definitions: :data:`DEFINITIONS` (stated in the model card).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bp.alerts import (
    DENSE_AFTER_MINUTES,
    DENSE_WITHIN_MINUTES,
    EMPTY,
    AlertKind,
    AlertPolicy,
    AlertState,
    AlertStatus,
    Severity,
    Trigger,
    context_columns,
    context_of,
    hypotensive_rows,
    step,
)
from bp.features import minutes_since_previous
from bp.truth import EpisodeKind
from ml.dataset import BoolArray, Dataset, FloatArray, IntArray

WEEK_S = 7 * 86_400.0
DEFINITIONS = """\
- An alert *direction* matches an episode type: hypertensive for hypertensive crisis and sharp rise, hypotensive
  for acute hypotension.
- An alert is *true* when the reading that opened it belongs to an episode (ramp included: no extra lead window)
  whose type matches its direction; otherwise it is a *false alert episode*.
- Episodes count when at least one of their significant readings was measured (a home patient can miss all of
  them). An episode is *caught* when an alert of the matching direction opens at one of its readings or is already open
  at its first reading. *Detection delay*: readings (and minutes) from the episode's first significant reading to
  the opening reading, 0 when the alert opened earlier. *Caught by an alert already open*: the share of caught
  episodes whose alert opened before the episode's first reading (a recurrence while the alert of an earlier
  problem is still open: no new alert is raised for it, only an escalation if it reaches crisis range).
- An episode with a measured crisis-range reading (> 180 or > 120 mmHg) is *alerted as critical* when a matching
  alert is critical at one of its readings (*at its first crisis-range reading* when already then: what an episode
  whose later readings are missing, or whose only crisis-range reading that one is, gets). It is a *confirmed
  crisis-range episode* when at least two of its measured readings are in crisis range: a single crisis-range
  reading is re-measured to confirm it (AHA 2019), and one whose re-measurement or next reading is out of range
  does not confirm a crisis by itself (the alert policy raises no critical alert on it without model risk).
- *Artefact alerts*: alerts opened by a cuff-artefact reading.
"""
KINDS = tuple(kind.value for kind in EpisodeKind)
DIRECTION = {
    EpisodeKind.HYPERTENSIVE_CRISIS.value: AlertKind.HYPERTENSIVE,
    EpisodeKind.SHARP_RISE.value: AlertKind.HYPERTENSIVE,
    EpisodeKind.ACUTE_HYPOTENSION.value: AlertKind.HYPOTENSIVE,
}


@dataclass(frozen=True, slots=True)
class Opened:
    """An alert as the evaluation sees it: where it opened (row index) and when it became critical or resolved."""

    kind: AlertKind
    row: int
    critical_row: int | None  # first row at which it was critical
    resolved_row: int | None


def patient_rows(data: Dataset, rows: IntArray) -> dict[int, IntArray]:
    """``rows`` grouped by patient, each in stream order."""
    order = rows[np.argsort(data.patient[rows], kind="stable")]
    patients, starts = np.unique(data.patient[order], return_index=True)
    return {int(p): part for p, part in zip(patients.tolist(), np.split(order, starts[1:]), strict=True)}


def gaps_from_features(x: FloatArray) -> FloatArray:
    """Per feature row (:meth:`bp.features.PatientHistory.observe`): minutes since the patient's previous reading,
    exactly as the consumer reads it (:func:`bp.features.minutes_since_previous`, row by row), NaN where that says
    None: the patient's first reading in that history -- the first ever, the first after the history was evicted,
    or the first after a cold start when the rows were built with one (``Simulation.history_reset_day``)."""
    gaps = np.full(len(x), np.nan)
    for i, row in enumerate(x):
        gap = minutes_since_previous(row)
        if gap is not None:
            gaps[i] = gap
    return gaps


def hit_mask(
    data: Dataset,
    rows: IntArray,
    risk: FloatArray,
    policy: AlertPolicy,
    gaps: FloatArray,
    contexts: FloatArray | None = None,
) -> BoolArray:
    """Which rows are hits under ``policy`` (vectorised :func:`bp.alerts.mark`; ``gaps[i]``: minutes since the
    previous reading of ``rows[i]``, from :func:`gaps_from_features`; ``contexts``: :func:`bp.alerts.context_columns`
    of the rows, None without the patient's history)."""
    if policy.trigger is Trigger.MODEL:
        # AlertPolicy.hit_threshold and low_threshold, vectorised (same precedence).
        threshold = np.full(rows.size, policy.threshold)
        dense = (gaps > DENSE_AFTER_MINUTES) & (gaps <= DENSE_WITHIN_MINUTES)  # bp.alerts.is_dense; NaN: never dense
        if policy.dense_threshold is not None:
            threshold[dense] = policy.dense_threshold
        if policy.hypotensive_threshold is not None or policy.sparse_hypotensive_threshold is not None:
            low = hypotensive_rows(data.systolic[rows], data.diastolic[rows], contexts, policy)
            if policy.hypotensive_threshold is not None:
                threshold[low] = policy.hypotensive_threshold
            if policy.sparse_hypotensive_threshold is not None:
                threshold[low & ~dense] = policy.sparse_hypotensive_threshold
        return data.crisis[rows] | (risk >= threshold)
    return data.rule[rows].copy()


def run_alerts(
    data: Dataset,
    rows: IntArray,
    risk: FloatArray,
    policy: AlertPolicy,
    gaps: FloatArray,
    reset_at: float | None = None,
) -> dict[int, list[Opened]]:
    """Alerts per patient from :func:`bp.alerts.step` over ``rows`` (``risk[i]`` and ``gaps[i]`` belong to
    ``rows[i]``; ``gaps`` from :func:`gaps_from_features` of ``data.x[rows]``, computed once per set of rows and
    shared by every policy run over them).

    A reading that is not a hit leaves an empty state empty (``step``'s first rule, unit-tested), so such readings
    are skipped without calling it. ``reset_at``: every patient's alert state is lost at that time (a restart
    without the state store), to measure what a cold start costs; the feature history's loss at that time is in the
    rows themselves (their risks and gaps), built with ``Simulation.history_reset_day``.
    """
    position = {int(r): i for i, r in enumerate(rows.tolist())}
    model = policy.trigger is Trigger.MODEL  # the rule baselines run without the patient's history, as --rules-only
    contexts = context_columns(data.x[rows]) if model else None
    hits = hit_mask(data, rows, risk, policy, gaps, contexts)
    out: dict[int, list[Opened]] = {}
    for patient, prow in patient_rows(data, rows).items():
        state: AlertState = EMPTY
        alerts: dict[str, Opened] = {}
        reset_done = reset_at is None
        for r in prow.tolist():
            i = position[r]
            if not reset_done and data.time[r] >= reset_at:
                state, reset_done = EMPTY, True
            if state is EMPTY and not hits[i]:
                continue
            gap = None if np.isnan(gaps[i]) else float(gaps[i])
            context = context_of(contexts[i].tolist()) if contexts is not None else None
            state, events = step(state, data.readings[r], float(risk[i]), policy, gap, context)
            for e in events:
                if e.status is AlertStatus.OPENED:
                    critical = r if e.severity is Severity.CRITICAL else None
                    alerts[e.alert_id] = Opened(e.kind, r, critical, None)
                elif e.alert_id in alerts:
                    a = alerts[e.alert_id]
                    if e.status is AlertStatus.ESCALATED and a.critical_row is None:
                        alerts[e.alert_id] = Opened(a.kind, a.row, r, a.resolved_row)
                    elif e.status is AlertStatus.RESOLVED:
                        alerts[e.alert_id] = Opened(a.kind, a.row, a.critical_row, r)
        out[patient] = list(alerts.values())
    return out


@dataclass
class PatientOutcome:
    """One patient's episode-level counts (summed over patients, then bootstrapped)."""

    weeks: float
    episodes: dict[str, int] = field(default_factory=dict)
    caught: dict[str, int] = field(default_factory=dict)
    caught_open: int = 0  # caught episodes whose alert opened before the episode's first reading
    crisis_range_episodes: int = 0
    crisis_critical: int = 0
    crisis_critical_at_first: int = 0  # ... critical already at the episode's first crisis-range reading
    confirmed_crisis_episodes: int = 0  # episodes with at least two crisis-range readings measured
    confirmed_crisis_critical: int = 0
    delays_readings: list[float] = field(default_factory=list)
    delays_minutes: list[float] = field(default_factory=list)
    alerts: int = 0
    true_alerts: int = 0
    artefact_alerts: int = 0
    critical_alerts: int = 0


def patient_outcomes(
    data: Dataset, rows: IntArray, alerts: Mapping[int, Sequence[Opened]], weeks: float
) -> list[PatientOutcome]:
    """Score each patient's alerts against the ground truth (definitions in the module docstring)."""
    out: list[PatientOutcome] = []
    for patient, prow in patient_rows(data, rows).items():
        o = PatientOutcome(weeks=weeks, episodes=dict.fromkeys(KINDS, 0), caught=dict.fromkeys(KINDS, 0))
        mine = sorted(alerts.get(patient, ()), key=lambda a: a.row)
        pos = {int(r): k for k, r in enumerate(prow.tolist())}
        for a in mine:
            o.alerts += 1
            o.critical_alerts += a.critical_row is not None
            o.artefact_alerts += bool(data.artefact[a.row])
            kind = str(data.episode[a.row])
            o.true_alerts += bool(kind) and DIRECTION[kind] is a.kind
        ep_ids = data.episode_id[prow]
        for ep in np.unique(ep_ids[ep_ids != ""]).tolist():
            members = prow[ep_ids == ep]
            kind = str(data.episode[members[0]])
            first, last = pos[int(members[0])], pos[int(members[-1])]
            significant = members[data.y[members]]
            if not significant.size:
                continue  # never measured while significant (missed sessions): nothing could detect it
            first_sig = pos[int(significant[0])]
            o.episodes[kind] += 1
            crisis_readings = int(data.crisis[members].sum())
            crisis_range, confirmed = crisis_readings >= 1, crisis_readings >= 2
            o.crisis_range_episodes += crisis_range
            o.confirmed_crisis_episodes += confirmed
            matching = [a for a in mine if a.kind is DIRECTION[kind]]
            live = [
                a for a in matching if pos[a.row] <= last and (a.resolved_row is None or pos[a.resolved_row] >= first)
            ]
            if not live:
                continue
            o.caught[kind] += 1
            opened = min(pos[a.row] for a in live)
            o.caught_open += opened < first
            delay = max(opened - first_sig, 0)
            o.delays_readings.append(float(delay))
            start_row = int(prow[first_sig])
            o.delays_minutes.append(max(float(data.time[prow[opened]] - data.time[start_row]), 0.0) / 60.0)
            if crisis_range and any(a.critical_row is not None and pos[a.critical_row] <= last for a in live):
                o.crisis_critical += 1
                o.confirmed_crisis_critical += confirmed
                first_crisis = pos[int(members[data.crisis[members]][0])]
                o.crisis_critical_at_first += any(
                    a.critical_row is not None and pos[a.critical_row] <= first_crisis for a in live
                )
        out.append(o)
    return out


def _ratio(num: np.ndarray[Any, Any], den: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def summarise(outcomes: Sequence[PatientOutcome], seed: int = 0, resamples: int = 400) -> dict[str, Any]:
    """Point estimates and patient-level bootstrap 95 % intervals (percentile) of every episode metric."""
    p = len(outcomes)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, p, size=(resamples, p)) if p else np.zeros((resamples, 0), dtype=np.int64)

    def col(get: Any) -> np.ndarray[Any, Any]:
        return np.array([get(o) for o in outcomes], dtype=np.float64)

    def stat(num: np.ndarray[Any, Any], den: np.ndarray[Any, Any]) -> dict[str, float | None]:
        point = float(num.sum() / den.sum()) if den.sum() > 0 else None
        boot = _ratio(num[idx].sum(axis=1), den[idx].sum(axis=1))
        boot = boot[np.isfinite(boot)]
        low, high = (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))) if boot.size else (None, None)
        return {"value": point, "low": low, "high": high, "n": int(den.sum())}

    weeks = col(lambda o: o.weeks)
    alerts = col(lambda o: o.alerts)
    true = col(lambda o: o.true_alerts)
    result: dict[str, Any] = {
        "patients": p,
        "patient_weeks": float(weeks.sum()),
        "recall": {k: stat(col(lambda o, k=k: o.caught[k]), col(lambda o, k=k: o.episodes[k])) for k in KINDS},
        "caught_by_open_alert": stat(col(lambda o: o.caught_open), col(lambda o: sum(o.caught.values()))),
        "crisis_alerted_critical": stat(col(lambda o: o.crisis_critical), col(lambda o: o.crisis_range_episodes)),
        "confirmed_crisis_alerted_critical": stat(
            col(lambda o: o.confirmed_crisis_critical), col(lambda o: o.confirmed_crisis_episodes)
        ),
        "crisis_critical_at_first": stat(
            col(lambda o: o.crisis_critical_at_first), col(lambda o: o.crisis_range_episodes)
        ),
        "false_alerts_per_patient_week": stat(alerts - true, weeks),
        "alerts_per_patient_week": stat(alerts, weeks),
        "share_true": stat(true, alerts),
        "artefact_alerts": int(col(lambda o: o.artefact_alerts).sum()),
        "artefact_alerts_per_patient_week": stat(col(lambda o: o.artefact_alerts), weeks),
        "episodes": int(sum(sum(o.episodes.values()) for o in outcomes)),
        "alerts": int(alerts.sum()),
    }
    for unit, get in (("readings", "delays_readings"), ("minutes", "delays_minutes")):
        delays = [np.asarray(getattr(o, get), dtype=np.float64) for o in outcomes]
        flat = np.concatenate(delays) if delays else np.empty(0)
        boots = []
        for b in range(min(resamples, 200)):
            sample = [delays[i] for i in idx[b].tolist()]
            joined = np.concatenate(sample) if sample else np.empty(0)
            if joined.size:
                boots.append(float(np.median(joined)))
        result[f"median_delay_{unit}"] = {
            "value": float(np.median(flat)) if flat.size else None,
            "low": float(np.percentile(boots, 2.5)) if boots else None,
            "high": float(np.percentile(boots, 97.5)) if boots else None,
            "n": int(flat.size),
        }
    return result


def evaluate_policy(
    data: Dataset,
    rows: IntArray,
    risk: FloatArray,
    policy: AlertPolicy,
    weeks: float,
    seed: int = 0,
    reset_at: float | None = None,
) -> dict[str, Any]:
    """Run and score ``policy`` on ``rows``; the bootstrapped summary."""
    alerts = run_alerts(data, rows, risk, policy, gaps_from_features(data.x[rows]), reset_at)
    return summarise(patient_outcomes(data, rows, alerts, weeks), seed=seed)


def rules_policies(policy: AlertPolicy) -> dict[str, AlertPolicy]:
    """The seed rules as alert policies (baselines), resolving like ``policy``."""
    base = policy.to_dict() | {
        "trigger": Trigger.RULES.value,
        "threshold": 1.0,
        "crisis_confirm_risk": None,
        "dense_threshold": None,
        "hypotensive_threshold": None,
        "sparse_hypotensive_threshold": None,
    }
    return {
        "rules_every_anomaly": AlertPolicy.from_dict(base | {"confirm_k": 1, "confirm_n": 1}),
        "rules_confirmed": AlertPolicy.from_dict(base | {"confirm_k": 2, "confirm_n": 2}),
    }
