"""The alert logic: one reading's step from a patient's alert state to the new state and its events. Pure.

:func:`mark` decides whether a reading is a hit and of which kind (direction), the re-measurement rule lets a
home pair confirm itself, and :func:`step` opens, updates, escalates and resolves alerts as the :mod:`bp.alerts`
docstring says; the words of an alert's reason come from :mod:`bp.alerts.explain`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from bp.alerts import explain
from bp.alerts.policy import AlertKind, AlertPolicy, AlertStatus, Severity, Trigger
from bp.alerts.values import EMPTY, AlertEvent, AlertState, Context, Mark, OpenAlert
from bp.clinical import (
    CRISIS_DIASTOLIC_ABOVE,
    CRISIS_SYSTOLIC_ABOVE,
    STAGE_2_DIASTOLIC_FROM,
    STAGE_2_SYSTOLIC_FROM,
    assess,
)
from bp.reading import Reading


def _is_crisis(systolic: float, diastolic: float) -> bool:
    return systolic > CRISIS_SYSTOLIC_ABOVE or diastolic > CRISIS_DIASTOLIC_ABOVE


def _low(s: float, d: float, policy: AlertPolicy, context: Context | None) -> bool:
    """A hit's direction is hypotensive when the reading is below the hypotension cut-points or, with a context,
    below the patient's usual pressure and under stage 2 hypertension (a relative drop, e.g. 110/65 mmHg in a
    patient who usually has 150/90)."""
    if s < policy.low_systolic or d < policy.low_diastolic:
        return True
    if context is None or s >= STAGE_2_SYSTOLIC_FROM or d >= STAGE_2_DIASTOLIC_FROM:
        return False  # stage 2 hypertension is never called hypotensive, however high the patient's usual pressure
    return context.deviation(s, d) < 0.0


def hypotensive_rows(
    systolic: npt.NDArray[np.float64],
    diastolic: npt.NDArray[np.float64],
    contexts: npt.NDArray[np.float64] | None,
    policy: AlertPolicy,
) -> npt.NDArray[np.bool_]:
    """Per reading: would a hit be hypotensive? :func:`mark`'s direction, vectorised (``contexts``: rows of
    :func:`bp.alerts.context_columns`, None without the patient's history). Crisis range is never hypotensive."""
    crisis = (systolic > CRISIS_SYSTOLIC_ABOVE) | (diastolic > CRISIS_DIASTOLIC_ABOVE)
    low = (systolic < policy.low_systolic) | (diastolic < policy.low_diastolic)
    if contexts is not None:
        below_stage_2 = (systolic < STAGE_2_SYSTOLIC_FROM) & (diastolic < STAGE_2_DIASTOLIC_FROM)
        deviation = (systolic - contexts[:, 0]) + (diastolic - contexts[:, 1])
        low |= below_stage_2 & (deviation < 0.0)
    result: npt.NDArray[np.bool_] = low & ~crisis
    return result


def mark(
    reading: Reading,
    risk: float | None,
    policy: AlertPolicy,
    minutes_since_previous: float | None = None,
    context: Context | None = None,
) -> Mark:
    """Whether ``reading`` is a hit under ``policy``, and of which kind (``minutes_since_previous``: the time since
    the patient's previous reading, None when unknown; ``context``: the patient's usual pressure)."""
    s, d = reading.systolic, reading.diastolic
    crisis = _is_crisis(s, d)
    low = not crisis and _low(s, d, policy, context)
    # A reading whose direction is hypotensive is a hit from the hypotensive threshold (when the policy has one).
    threshold = policy.low_threshold(minutes_since_previous) if low else policy.hit_threshold(minutes_since_previous)
    if policy.trigger is Trigger.MODEL:
        hit = crisis or (risk is not None and risk >= threshold)
    else:
        hit = assess(s, d).is_rule_anomaly
    kind = None
    weak = False
    if hit:
        kind = AlertKind.HYPOTENSIVE if low else AlertKind.HYPERTENSIVE
        weak = policy.trigger is Trigger.MODEL and crisis and not (risk is not None and risk >= threshold)
    return Mark(reading.effective.timestamp(), kind, crisis, weak, s, d)


def _agree(a_s: float, a_d: float, b_s: float, b_d: float, mmhg: float) -> bool:
    return abs(a_s - b_s) <= mmhg and abs(a_d - b_d) <= mmhg


def _remeasured(
    recent: tuple[Mark, ...],
    now: Mark,
    minutes_since_previous: float | None,
    context: Context | None,
    policy: AlertPolicy,
) -> tuple[tuple[Mark, ...], Mark]:
    """Apply the re-measurement rule (see :class:`AlertPolicy`) to the previous reading and this one: the marks
    of both as they count. A weak crisis-range hit whose re-measurement agrees is no longer weak: a cuff artefact
    does not repeat itself a minute later."""
    if (
        policy.remeasure_agree_mmhg <= 0
        or minutes_since_previous is None
        or minutes_since_previous > policy.remeasure_minutes
        or context is None
        or context.previous_systolic is None
        or context.previous_diastolic is None
    ):
        return recent, now
    ps, pd = context.previous_systolic, context.previous_diastolic
    if not _agree(ps, pd, now.systolic, now.diastolic, policy.remeasure_agree_mmhg):
        return recent, now
    prev_t = now.t - minutes_since_previous * 60.0
    last = recent[-1] if recent and abs(recent[-1].t - prev_t) < 1.0 else None  # the previous reading's mark
    if now.kind is not None:
        now = replace(now, weak=False)
        if last is None:
            return (*recent, Mark(prev_t, now.kind, _is_crisis(ps, pd), False, ps, pd)), now
        if last.kind is None or last.kind is now.kind:
            return (*recent[:-1], replace(last, kind=now.kind, weak=False)), now
        return recent, now
    if last is not None and last.kind is not None:
        return (*recent[:-1], replace(last, weak=False)), replace(now, kind=last.kind)
    return recent, now


def _agreeing_previous(
    now: Mark, minutes_since_previous: float | None, context: Context | None, policy: AlertPolicy
) -> Mark | None:
    """The patient's previous reading when it confirms ``now``, a crisis-range reading, by agreeing with it (see
    ``crisis_agree_mmhg`` and ``crisis_rise_mmhg`` in :class:`AlertPolicy`); None otherwise."""
    if (
        policy.crisis_agree_mmhg <= 0
        or not now.crisis
        or minutes_since_previous is None
        or minutes_since_previous > policy.confirm_within_minutes
        or context is None
        or context.previous_systolic is None
        or context.previous_diastolic is None
    ):
        return None
    ps, pd = context.previous_systolic, context.previous_diastolic
    if not _agree(ps, pd, now.systolic, now.diastolic, policy.crisis_agree_mmhg):
        return None
    rise = max(now.systolic - context.usual_systolic, now.diastolic - context.usual_diastolic)
    if minutes_since_previous > policy.remeasure_minutes and rise < policy.crisis_rise_mmhg:
        return None  # not a re-measurement, and no change from the patient's usual pressure
    return Mark(now.t - minutes_since_previous * 60.0, None, _is_crisis(ps, pd), False, ps, pd)


def step(
    state: AlertState,
    reading: Reading,
    risk: float | None,
    policy: AlertPolicy,
    minutes_since_previous: float | None = None,
    context: Context | None = None,
) -> tuple[AlertState, tuple[AlertEvent, ...]]:
    """The new state and the events of one reading (see the :mod:`bp.alerts` docstring for the rules)."""
    now = mark(reading, risk, policy, minutes_since_previous, context)
    if now.kind is None and (state is EMPTY or (not state.open and all(m.kind is None for m in state.recent))):
        return EMPTY, ()  # the hot path: recent readings that were no hits cannot confirm anything
    hit_alone = now
    recent, now = _remeasured(state.recent, now, minutes_since_previous, context, policy)
    remeasured = now is not hit_alone or recent is not state.recent
    state = AlertState(recent, state.open)
    risk_confirms = (
        policy.trigger is Trigger.MODEL and not now.weak and risk is not None and risk >= policy.crisis_risk
    )
    agreeing = _agreeing_previous(now, minutes_since_previous, context, policy)
    if agreeing is not None:
        now = replace(now, weak=False)  # the trend confirms it: no artefact, whatever the model scored
    window = [m for m in state.recent if now.t - m.t <= policy.confirm_within_minutes * 60.0] + [now]
    crisis_marks = [m for m in window[-policy.confirm_n :] if m.crisis]
    confirmed_crisis = now.crisis and (
        policy.confirm_k == 1  # a policy that confirms nothing does not confirm a crisis either
        or risk_confirms
        or agreeing is not None
        or len(crisis_marks) >= 2
    )
    events: list[AlertEvent] = []
    still_open: list[OpenAlert] = []
    open_kinds = set()
    for alert in state.open:
        open_kinds.add(alert.kind)
        if now.kind is alert.kind:
            # A crisis-range reading of a problem already confirmed is critical at once.
            severity = Severity.CRITICAL if now.crisis else alert.severity
            low = alert.kind is AlertKind.HYPOTENSIVE
            reason = alert.reason
            if severity is not alert.severity:
                reason = f"{reason}; critical from {explain.when(now.t)}: crisis-range reading {explain.mmhg(now)} mmHg"
            updated = replace(
                alert,
                severity=severity,
                reason=reason,
                last_hit_at=now.t,
                hits=alert.hits + 1,
                readings=alert.readings + 1,
                quiet=0,
                worst_systolic=(min if low else max)(alert.worst_systolic, reading.systolic),
                worst_diastolic=(min if low else max)(alert.worst_diastolic, reading.diastolic),
            )
            if severity is not alert.severity:
                events.append(_event(updated, reading, AlertStatus.ESCALATED))
            still_open.append(updated)
            continue
        updated = alert.after_quiet_reading()
        if updated.quiet >= policy.resolve_readings and now.t - alert.last_hit_at >= policy.resolve_minutes * 60.0:
            events.append(_event(updated, reading, AlertStatus.RESOLVED))
        else:
            still_open.append(updated)
    if now.kind is not None and now.kind not in open_kinds:
        confirming = [m for m in window[-policy.confirm_n :] if m.kind is now.kind]
        if sum(m.crisis for m in confirming) < 2:  # a weak hit confirms only with another crisis-range reading
            confirming = [m for m in confirming if not m.weak]
        hits = len(confirming)
        crisis_confirms = hits >= policy.confirm_k and any(m.crisis for m in confirming)
        # A crisis-range hit among the readings just before (as many as an alert needs quiet ones to resolve)
        # belongs to the problem this alert confirms: it opens critical, as if it had been open then. Not a weak
        # one: the model called it an artefact.
        before = [m for m in window[:-1] if m.crisis and not m.weak and m.kind is now.kind]
        if hits >= policy.confirm_k or confirmed_crisis:
            if confirmed_crisis and not crisis_confirms:
                confirming = crisis_marks if len(crisis_marks) >= 2 and not risk_confirms else [now]
            low = now.kind is AlertKind.HYPOTENSIVE
            known = [m for m in confirming if not math.isnan(m.systolic)] or [now]
            reason = explain.opening_reason(
                policy, now, confirming, len(window[-policy.confirm_n :]), risk, context, remeasured, before,
                agreeing if confirming == [now] and not risk_confirms else None, minutes_since_previous,
            )  # fmt: skip
            opened = OpenAlert(
                alert_id=f"{reading.patient_id}:{now.kind.value}:{reading.observation_id}",
                kind=now.kind,
                severity=Severity.CRITICAL if confirmed_crisis or crisis_confirms or before else Severity.HIGH,
                opened_at=now.t,
                opened_observation=reading.observation_id or "",
                last_hit_at=now.t,
                hits=hits,
                readings=1,
                quiet=0,
                worst_systolic=(min if low else max)(m.systolic for m in known),
                worst_diastolic=(min if low else max)(m.diastolic for m in known),
                reason=reason,
            )
            events.append(_event(opened, reading, AlertStatus.OPENED))
            still_open.append(opened)
    new = _remember(AlertState(state.recent, tuple(still_open)), now, policy)
    if not new.open and all(m.kind is None for m in new.recent):
        new = EMPTY
    return new, tuple(events)


def _remember(state: AlertState, now: Mark, policy: AlertPolicy) -> AlertState:
    keep = max(policy.confirm_n - 1, policy.resolve_readings)
    recent = (*state.recent, now)[-keep:] if keep else ()
    return AlertState(recent, state.open)


def _event(alert: OpenAlert, reading: Reading, status: AlertStatus) -> AlertEvent:
    return AlertEvent(
        alert_id=alert.alert_id,
        patient_id=reading.patient_id,
        kind=alert.kind,
        status=status,
        severity=alert.severity,
        at=reading.effective,
        observation_id=reading.observation_id or "",
        opened_at=datetime.fromtimestamp(alert.opened_at, UTC),
        opened_observation_id=alert.opened_observation,
        hits=alert.hits,
        worst_systolic=alert.worst_systolic,
        worst_diastolic=alert.worst_diastolic,
        reason=alert.reason,
    )
