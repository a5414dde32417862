"""Alerts a clinician can act on: patient-level episodes opened, escalated and resolved from readings. Pure.

The seed rules define *anomalies* (per reading); an *alert* is what a clinician is asked to look at: one per patient
and kind while the problem lasts. :func:`step` is the whole logic: it takes a patient's :class:`AlertState` (a
small serialisable value, kept per patient in the consumer's state store), one reading, the model's risk of that
reading, the :class:`AlertPolicy` and (with the model) the reading's :class:`Context` -- the patient's usual
pressure and previous reading, from the model's feature history -- and returns the new state and the events the
reading caused.

A reading is a *hit* when the policy's trigger fires: ``model`` -- risk >= the threshold or the reading is in the
hypertensive crisis range (the threshold is ``dense_threshold`` for a reading at a dense cadence, see
:data:`DENSE_AFTER_MINUTES`, else ``threshold``); ``rules`` -- a seed rule fires or the reading is in crisis range
(the baselines). A hit has a direction: *hypotensive* when systolic < ``low_systolic`` or diastolic <
``low_diastolic``, or when it is below the patient's usual pressure and under stage 2 hypertension (a relative
drop: 110/68 in a patient who usually has 150/90), else *hypertensive* (crisis range always). The two directions
are the two alert kinds.

- **Open** an alert of a kind when at least ``confirm_k`` of the patient's last ``confirm_n`` readings (this one
  included, none older than ``confirm_within_minutes``) are hits of that kind and this reading is one of them; a
  crisis-range reading whose model risk is >= ``crisis_confirm_risk`` opens at once (the model confirms it). A
  lone reading never opens an alert otherwise when ``confirm_k`` >= 2: cuff artefacts are single readings. A
  crisis-range reading whose risk is below ``threshold`` (the model calls it an artefact) is a *weak* hit: it
  confirms only together with another crisis-range reading, never with a hit of the model alone.
- **Re-measurement** (home pairs, ``remeasure_*``): a reading taken minutes after the previous one re-measures it;
  when one of the two is a hit and their values agree, the other counts as a hit of the same kind (and a weak
  crisis-range hit is no longer weak): a cuff artefact does not repeat itself a minute later.
- **Severity**: an alert opens critical when its opening hit is in crisis range and confirmed (a second
  crisis-range reading among the recent ones, or risk >= threshold; with ``confirm_k`` = 1 no confirmation) or
  when one of the hits that confirm it is in crisis range, or when a (not weak) crisis-range hit of its kind came
  within the last ``resolve_readings`` readings (the same problem, before it was confirmed), else high; an open
  (so already confirmed) alert
  becomes critical at its first crisis-range hit. An open alert whose severity rises is **escalated** (one
  event).
- **Update**: later hits of the kind update the open alert (hits, worst values, last hit); no new alert opens.
- **Resolve** after ``resolve_readings`` consecutive readings without a hit of the kind, at least
  ``resolve_minutes`` after the last hit.

Alert ids are stable: ``<patient>:<kind>:<observation id of the opening reading>``, so a replay of the same
readings gives the same ids.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from bp.clinical import (
    CRISIS_DIASTOLIC_ABOVE,
    CRISIS_SYSTOLIC_ABOVE,
    STAGE_2_DIASTOLIC_FROM,
    STAGE_2_SYSTOLIC_FROM,
    assess,
)
from bp.features import FEATURE_NAMES, SAME_SESSION_MINUTES
from bp.reading import Reading
from bp.state import DEFAULT_RETENTION_DAYS, KeyedState, MemoryState, Retained


class AlertKind(StrEnum):
    """The problem an alert is about."""

    HYPERTENSIVE = "hypertensive"
    HYPOTENSIVE = "hypotensive"


class Severity(StrEnum):
    HIGH = "high"
    CRITICAL = "critical"


class AlertStatus(StrEnum):
    OPENED = "opened"
    ESCALATED = "escalated"
    RESOLVED = "resolved"


# A reading is at a dense cadence when the patient's previous reading is more than DENSE_AFTER_MINUTES old (not a
# re-measurement in the same session: bp.features.SAME_SESSION_MINUTES) and at most DENSE_WITHIN_MINUTES.
DENSE_AFTER_MINUTES = SAME_SESSION_MINUTES
DENSE_WITHIN_MINUTES = 60.0


class Trigger(StrEnum):
    """What makes a reading a hit: the model's risk (the product) or the seed rules (baselines)."""

    MODEL = "model"
    RULES = "rules"


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """Every parameter of the alert logic. Chosen on out-of-fold data by ``ml.train_model``; stored in the artifact.

    threshold
        Model risk at or above which a reading is a hit (trigger ``model``).
    confirm_k, confirm_n
        An alert opens when ``confirm_k`` of the last ``confirm_n`` readings are hits of its kind (1 <= k <= n).
    confirm_within_minutes
        Readings older than this (before the current one) do not count towards the confirmation.
    low_systolic, low_diastolic
        A hit below either is hypotensive, else hypertensive (the seed hypotension rule's cut-points, 90/60).
    resolve_readings, resolve_minutes
        An open alert resolves after this many consecutive readings without a hit of its kind, once at least
        this long has passed since its last hit.
    remeasure_minutes, remeasure_agree_mmhg
        A reading taken at most ``remeasure_minutes`` after the patient's previous one re-measures it (a home
        pair: two readings a minute apart). When one of the two is a hit and both their systolic and diastolic
        values are within ``remeasure_agree_mmhg`` of each other, the other counts as a hit of the same kind too:
        the re-measurement confirms the reading was real, not a cuff artefact. 0 mmHg: off.
    trigger
        ``model`` (the product) or ``rules`` (seed rules as an alert policy, the baselines).
    dense_threshold
        Risk threshold for a reading at a dense cadence: the patient's previous reading is more than 10 and at
        most 60 minutes old (DENSE_AFTER_MINUTES, DENSE_WITHIN_MINUTES: an ambulatory monitor every 15 min; not
        the second reading of a home pair, not a reading half a day after the last). ``None``: ``threshold``. A
        monitor reading four times an hour offers ~25x the chances of a chance pair of hits that twice a day does:
        the false alerts per patient-week grow with the cadence unless a dense reading needs more risk to count.
    crisis_confirm_risk
        Model risk at or above which a crisis-range reading confirms itself: the alert opens at once, critical.
        ``None``: ``threshold``. Cuff artefacts in crisis range can score a middling risk, so a higher value
        asks a lone crisis-range reading for more than a hit (below it, it needs a second hit like any other).
        A weak hit (below the reading's threshold) never confirms itself.
    """

    threshold: float = 0.5
    confirm_k: int = 2
    confirm_n: int = 2
    confirm_within_minutes: float = 1440.0
    low_systolic: float = 90.0
    low_diastolic: float = 60.0
    resolve_readings: int = 4
    resolve_minutes: float = 60.0
    remeasure_minutes: float = 10.0
    remeasure_agree_mmhg: float = 0.0
    trigger: Trigger = Trigger.MODEL
    crisis_confirm_risk: float | None = None
    dense_threshold: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.confirm_k <= self.confirm_n:
            raise ValueError(f"need 1 <= confirm_k <= confirm_n, got {self.confirm_k} and {self.confirm_n}")
        if not (math.isfinite(self.threshold) and 0.0 < self.threshold <= 1.0):
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.resolve_readings < 1 or self.resolve_minutes < 0 or self.confirm_within_minutes <= 0:
            raise ValueError("resolve_readings must be >= 1, resolve_minutes >= 0, confirm_within_minutes > 0")
        c = self.crisis_confirm_risk
        if c is not None and not (math.isfinite(c) and self.threshold <= c <= 1.0):
            raise ValueError(f"crisis_confirm_risk must be in [threshold, 1] or None, got {c}")
        if not (self.remeasure_minutes >= 0 and self.remeasure_agree_mmhg >= 0):
            raise ValueError("remeasure_minutes and remeasure_agree_mmhg must be >= 0")
        t = self.dense_threshold
        if t is not None and not (math.isfinite(t) and 0.0 < t <= 1.0):
            raise ValueError(f"dense_threshold must be in (0, 1] or None, got {t}")

    def hit_threshold(self, minutes_since_previous: float | None) -> float:
        """The risk threshold of a reading taken ``minutes_since_previous`` after the patient's previous one."""
        if (
            self.dense_threshold is not None
            and minutes_since_previous is not None
            and DENSE_AFTER_MINUTES < minutes_since_previous <= DENSE_WITHIN_MINUTES
        ):
            return self.dense_threshold
        return self.threshold

    @property
    def crisis_risk(self) -> float:
        """The risk at which a crisis-range reading confirms itself (``crisis_confirm_risk``, else ``threshold``)."""
        return self.threshold if self.crisis_confirm_risk is None else self.crisis_confirm_risk

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "confirm_k": self.confirm_k,
            "confirm_n": self.confirm_n,
            "confirm_within_minutes": self.confirm_within_minutes,
            "low_systolic": self.low_systolic,
            "low_diastolic": self.low_diastolic,
            "resolve_readings": self.resolve_readings,
            "resolve_minutes": self.resolve_minutes,
            "remeasure_minutes": self.remeasure_minutes,
            "remeasure_agree_mmhg": self.remeasure_agree_mmhg,
            "trigger": self.trigger.value,
            "crisis_confirm_risk": self.crisis_confirm_risk,
            "dense_threshold": self.dense_threshold,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertPolicy:
        """The inverse of :meth:`to_dict`; ValueError (or TypeError/KeyError) when the value is not a policy.

        A policy stored before ``crisis_confirm_risk`` or ``dense_threshold`` existed reads them as ``None`` (the
        threshold, as it behaved); one stored before the re-measurement parameters existed gets them off (its
        behaviour then).
        """
        crisis = data.get("crisis_confirm_risk")
        dense = data.get("dense_threshold")
        return cls(
            threshold=float(data["threshold"]),
            confirm_k=int(data["confirm_k"]),
            confirm_n=int(data["confirm_n"]),
            confirm_within_minutes=float(data["confirm_within_minutes"]),
            low_systolic=float(data["low_systolic"]),
            low_diastolic=float(data["low_diastolic"]),
            resolve_readings=int(data["resolve_readings"]),
            resolve_minutes=float(data["resolve_minutes"]),
            remeasure_minutes=float(data.get("remeasure_minutes", 10.0)),
            remeasure_agree_mmhg=float(data.get("remeasure_agree_mmhg", 0.0)),
            trigger=Trigger(data["trigger"]),
            crisis_confirm_risk=None if crisis is None else float(crisis),
            dense_threshold=None if dense is None else float(dense),
        )


@dataclass(frozen=True, slots=True)
class Context:
    """What the patient's own history says about a reading (from :mod:`bp.features`, the model's history; see
    :func:`context_columns`).

    ``usual_*``: the patient's usual pressure at this hour (rolling baseline x expected nocturnal dip);
    ``previous_*``: the patient's previous reading (None for a patient's first reading).
    """

    usual_systolic: float
    usual_diastolic: float
    previous_systolic: float | None = None
    previous_diastolic: float | None = None

    def deviation(self, systolic: float, diastolic: float) -> float:
        """How far a reading is above (> 0) or below (< 0) the usual pressure: systolic + diastolic mmHg."""
        return (systolic - self.usual_systolic) + (diastolic - self.usual_diastolic)


_S, _D, _DEV_S, _DEV_D, _DELTA_S, _DELTA_D, _WARMUP = (
    FEATURE_NAMES.index(name)
    for name in (
        "systolic", "diastolic", "systolic_dev", "diastolic_dev", "systolic_delta", "diastolic_delta", "warmup",
    )
)  # fmt: skip


def context_columns(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """What feature rows (:meth:`bp.features.PatientHistory.observe`, one per row of ``x``) tell the alert logic,
    shape (n, 4): the patient's usual systolic and diastolic pressure at this hour (the reading minus its
    deviation) and the previous reading's systolic and diastolic (NaN for a patient's first reading)."""
    first = x[:, _WARMUP] <= 0.0
    previous = np.where(first[:, None], np.nan, x[:, [_S, _D]] - x[:, [_DELTA_S, _DELTA_D]])
    return np.column_stack([x[:, [_S, _D]] - x[:, [_DEV_S, _DEV_D]], previous])


def context_of(values: Sequence[float]) -> Context:
    """The :class:`Context` of one row of :func:`context_columns`."""
    usual_s, usual_d, prev_s, prev_d = values
    if math.isnan(prev_s):
        return Context(usual_s, usual_d)
    return Context(usual_s, usual_d, prev_s, prev_d)


@dataclass(frozen=True, slots=True)
class Mark:
    """What the alert logic remembers of one recent reading: time, whether it was a hit (of which kind), values."""

    t: float  # POSIX seconds
    kind: AlertKind | None  # the hit's direction, None when not a hit
    crisis: bool = False
    weak: bool = False  # a crisis-range hit the model scored below threshold: confirms only with another crisis
    systolic: float = math.nan  # nan: not known (state stored by formats 1 and 2)
    diastolic: float = math.nan


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An alert while it is open."""

    alert_id: str
    kind: AlertKind
    severity: Severity
    opened_at: float
    opened_observation: str
    last_hit_at: float
    hits: int
    readings: int
    quiet: int  # consecutive readings without a hit of this kind
    worst_systolic: float
    worst_diastolic: float
    reason: str = ""  # why it opened (and became critical), for people: see :func:`describe`


@dataclass(frozen=True, slots=True)
class AlertState:
    """A patient's alert state: the recent readings' marks (at most confirm_n - 1) and the open alerts."""

    recent: tuple[Mark, ...] = ()
    open: tuple[OpenAlert, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "recent": [
                [m.t, m.kind.value if m.kind else None, m.crisis, m.weak, m.systolic, m.diastolic] for m in self.recent
            ],
            "open": [
                {
                    "alert_id": a.alert_id,
                    "kind": a.kind.value,
                    "severity": a.severity.value,
                    "opened_at": a.opened_at,
                    "opened_observation": a.opened_observation,
                    "last_hit_at": a.last_hit_at,
                    "hits": a.hits,
                    "readings": a.readings,
                    "quiet": a.quiet,
                    "worst_systolic": a.worst_systolic,
                    "worst_diastolic": a.worst_diastolic,
                    "reason": a.reason,
                }
                for a in self.open
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertState:
        # Format 1 stored [t, kind, crisis]: no weak hits then (weak False is how it behaved); formats 1 and 2
        # stored no values (NaN: unknown, left out of worst values and reasons).
        recent = tuple(
            Mark(float(t), AlertKind(k) if k else None, bool(c), *_mark_tail(rest)) for t, k, c, *rest in data["recent"]
        )
        opened = tuple(
            OpenAlert(
                alert_id=str(a["alert_id"]),
                kind=AlertKind(a["kind"]),
                severity=Severity(a["severity"]),
                opened_at=float(a["opened_at"]),
                opened_observation=str(a["opened_observation"]),
                last_hit_at=float(a["last_hit_at"]),
                hits=int(a["hits"]),
                readings=int(a["readings"]),
                quiet=int(a["quiet"]),
                worst_systolic=float(a["worst_systolic"]),
                worst_diastolic=float(a["worst_diastolic"]),
                reason=str(a.get("reason", "")),  # formats 1-3 stored none
            )
            for a in data["open"]
        )
        return cls(recent, opened)


def _mark_tail(rest: list[Any]) -> tuple[bool, float, float]:
    weak = bool(rest[0]) if rest else False
    values = (float(rest[1]), float(rest[2])) if len(rest) >= 3 else (math.nan, math.nan)
    return (weak, *values)


EMPTY = AlertState()
STATE_FORMAT = 4  # tag of AlertState.to_bytes(); bump when the fields change
# 1: marks without the weak flag (read as not weak); 1, 2: marks without values; 1-3: open alerts without a reason
READABLE_FORMATS = (1, 2, 3, 4)


def state_to_bytes(state: AlertState) -> bytes:
    """The state as compact bytes for a keyed state store (format tag, then JSON)."""
    return bytes([STATE_FORMAT]) + json.dumps(state.to_dict(), separators=(",", ":")).encode()


def state_from_bytes(raw: bytes) -> AlertState:
    """The inverse of :func:`state_to_bytes`; ValueError for another format or a damaged value."""
    if not raw or raw[0] not in READABLE_FORMATS:
        raise ValueError(
            f"stored alert state has format {raw[0] if raw else None!r}, this code reads {READABLE_FORMATS}"
        )
    try:
        return AlertState.from_dict(json.loads(raw[1:]))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"stored alert state is damaged: {exc}") from None


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An alert opened, escalated or resolved by one reading (``observation_id``, at ``at``)."""

    alert_id: str
    patient_id: str
    kind: AlertKind
    status: AlertStatus
    severity: Severity
    at: datetime
    observation_id: str
    opened_at: datetime
    opened_observation_id: str
    hits: int
    worst_systolic: float
    worst_diastolic: float
    reason: str = ""  # why the alert opened (and became critical), in words

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "patient_id": self.patient_id,
            "kind": self.kind.value,
            "status": self.status.value,
            "severity": self.severity.value,
            "at": self.at.isoformat(),
            "observation_id": self.observation_id,
            "opened_at": self.opened_at.isoformat(),
            "opened_observation_id": self.opened_observation_id,
            "hits": self.hits,
            "worst_systolic": self.worst_systolic,
            "worst_diastolic": self.worst_diastolic,
            "reason": self.reason,
        }


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
    threshold = policy.hit_threshold(minutes_since_previous)
    if policy.trigger is Trigger.MODEL:
        hit = crisis or (risk is not None and risk >= threshold)
    else:
        hit = assess(s, d).is_rule_anomaly
    kind = None
    weak = False
    if hit:
        low = not crisis and _low(s, d, policy, context)
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


def step(
    state: AlertState,
    reading: Reading,
    risk: float | None,
    policy: AlertPolicy,
    minutes_since_previous: float | None = None,
    context: Context | None = None,
) -> tuple[AlertState, tuple[AlertEvent, ...]]:
    """The new state and the events of one reading (see the module docstring for the rules)."""
    now = mark(reading, risk, policy, minutes_since_previous, context)
    if now.kind is None and (state is EMPTY or (not state.open and all(m.kind is None for m in state.recent))):
        return EMPTY, ()  # the hot path: recent readings that were no hits cannot confirm anything
    hit_alone = now
    recent, now = _remeasured(state.recent, now, minutes_since_previous, context, policy)
    remeasured = now is not hit_alone or recent is not state.recent
    state = AlertState(recent, state.open)
    window = [m for m in state.recent if now.t - m.t <= policy.confirm_within_minutes * 60.0] + [now]
    risk_confirms = (
        policy.trigger is Trigger.MODEL and not now.weak and risk is not None and risk >= policy.crisis_risk
    )
    confirmed_crisis = now.crisis and (
        policy.confirm_k == 1  # a policy that confirms nothing does not confirm a crisis either
        or risk_confirms
        or sum(m.crisis for m in window[-policy.confirm_n :]) >= 2
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
                reason = f"{reason}; critical from {_when(now.t)}: crisis-range reading {_mmhg(now)} mmHg"
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
        quiet = alert.quiet + 1
        updated = replace(alert, readings=alert.readings + 1, quiet=quiet)
        if quiet >= policy.resolve_readings and now.t - alert.last_hit_at >= policy.resolve_minutes * 60.0:
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
                confirming = [m for m in window[-policy.confirm_n :] if m.crisis] if not risk_confirms else [now]
            low = now.kind is AlertKind.HYPOTENSIVE
            known = [m for m in confirming if not math.isnan(m.systolic)] or [now]
            reason = _opening_reason(
                policy, now, confirming, len(window[-policy.confirm_n :]), risk, context, remeasured, before
            )
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


def _mmhg(m: Mark) -> str:
    return f"{m.systolic:g}/{m.diastolic:g}"


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _opening_reason(
    policy: AlertPolicy,
    now: Mark,
    confirming: list[Mark],
    readings: int,
    risk: float | None,
    context: Context | None,
    remeasured: bool,
    crisis_before: list[Mark],
) -> str:
    """Why an alert opens (and, if so, why critical), in one short sentence with the readings' values."""
    values = ", ".join(_mmhg(m) for m in confirming if not math.isnan(m.systolic)) or _mmhg(now)
    flagged = f"model risk >= {policy.threshold:g}" if policy.trigger is Trigger.MODEL else "beyond the seed rules"
    crisis = f"crisis range (> {CRISIS_SYSTOLIC_ABOVE:g}/{CRISIS_DIASTOLIC_ABOVE:g} mmHg)"
    if now.crisis and len(confirming) == 1 and risk is not None and policy.confirm_k > 1:
        text = f"{crisis} reading {values} mmHg with model risk {risk:.2f} (>= {policy.crisis_risk:g})"
    elif now.crisis and confirming and all(m.crisis for m in confirming) and policy.confirm_k > 1:
        text = f"{len(confirming)} {crisis} readings: {values} mmHg"
    elif len(confirming) == 1:
        text = f"reading {values} mmHg flagged ({flagged})"
    elif remeasured:
        text = f"a reading flagged ({flagged}) and its re-measurement minutes apart agree: {values} mmHg"
    elif len(confirming) == readings:
        text = f"{readings} readings in a row flagged ({flagged}): {values} mmHg"
    else:
        text = f"{len(confirming)} of the last {readings} readings flagged ({flagged}): {values} mmHg"
    if len(confirming) > 1 and any(m.crisis for m in confirming) and not all(m.crisis for m in confirming):
        text += f", {crisis} among them"
    if (
        now.kind is AlertKind.HYPOTENSIVE
        and context is not None
        and not (now.systolic < policy.low_systolic or now.diastolic < policy.low_diastolic)
    ):
        text += (
            f"; {context.usual_systolic - now.systolic:.0f}/{context.usual_diastolic - now.diastolic:.0f} mmHg "
            f"below this patient's usual {context.usual_systolic:.0f}/{context.usual_diastolic:.0f}"
        )
    if crisis_before and not any(m.crisis for m in confirming):
        m = crisis_before[-1]
        text += f"; critical: {crisis} reading {_mmhg(m)} mmHg at {_when(m.t)}, before it was confirmed"
    return text


def describe(alert: Mapping[str, Any]) -> str:
    """One line a person reads in seconds: who, what, since when, how bad, why. ``alert``: an
    :meth:`AlertEvent.to_dict` or a ``bp-alerts`` document (``status`` open/resolved or the event's status)."""
    kind = str(alert.get("kind", ""))
    worst = "lowest" if kind == AlertKind.HYPOTENSIVE.value else "highest"
    opened = str(alert.get("opened_at", ""))
    with contextlib.suppress(ValueError):  # shown as stored when it is no ISO time
        opened = datetime.fromisoformat(opened).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    values = f"{_number(alert.get('worst_systolic'))}/{_number(alert.get('worst_diastolic'))} mmHg"
    reason = alert.get("reason") or "reason not recorded (alert opened before reasons were kept)"
    return (
        f"{alert.get('patient_id')}: {alert.get('severity')} {kind} alert, {alert.get('status')}, since {opened} "
        f"({alert.get('hits')} readings, {worst} {values}): {reason}"
    )


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else "?"


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


STATE_KEY_PREFIX = "alerts/"  # alert state lives beside the feature history in the same keyed state


class PatientAlerts:
    """Per-patient alert state over a :class:`~bp.state.KeyedState` (key ``alerts/<patient>``): what the consumer
    and ``--check`` use. Patients are forgotten only by the state's event-time retention, like the features."""

    __slots__ = ("_retained", "policy")

    def __init__(
        self, policy: AlertPolicy, state: KeyedState | None = None, retention_days: float = DEFAULT_RETENTION_DAYS
    ) -> None:
        self.policy = policy
        self._retained = Retained(state if state is not None else MemoryState(), retention_days)

    def observe(
        self,
        reading: Reading,
        risk: float | None,
        minutes_since_previous: float | None = None,
        context: Context | None = None,
    ) -> tuple[AlertEvent, ...]:
        """The alert events of ``reading`` (in stream order per patient); the patient's state is updated.
        ``minutes_since_previous`` and ``context``: from the feature history
        (:func:`bp.features.minutes_since_previous`, :func:`context_columns`)."""
        key = STATE_KEY_PREFIX + reading.patient_id
        at = reading.effective.timestamp()
        previous = self._retained.load(key, at)
        state = EMPTY if previous is None else state_from_bytes(previous.value)
        new, events = step(state, reading, risk, self.policy, minutes_since_previous, context)
        if new is not state and not (previous is None and new is EMPTY):
            self._retained.save(key, state_to_bytes(new), at, previous)
        return events


def rules_policy() -> AlertPolicy:
    """The alert policy without a model (``--rules-only``): two consecutive seed-rule anomalies open an alert."""
    return AlertPolicy(threshold=1.0, confirm_k=2, confirm_n=2, trigger=Trigger.RULES)
