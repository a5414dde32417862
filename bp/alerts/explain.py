"""The words of alerts: why an alert opened (and why critical) and the one line a person reads about it. Pure.

:func:`opening_reason` writes the reason :func:`bp.alerts.step` stores with an alert; :func:`describe` turns an
alert event or a ``bp-alerts`` document into one line (who, what, since when, how bad, why); :func:`mmhg` and
:func:`when` format a reading's values and a time the same way everywhere.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bp.alerts.policy import AlertKind, AlertPolicy, Trigger
from bp.alerts.values import Context, Mark
from bp.clinical import CRISIS_DIASTOLIC_ABOVE, CRISIS_SYSTOLIC_ABOVE


def mmhg(m: Mark) -> str:
    return f"{m.systolic:g}/{m.diastolic:g}"


def when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def opening_reason(
    policy: AlertPolicy,
    now: Mark,
    confirming: list[Mark],
    readings: int,
    risk: float | None,
    context: Context | None,
    remeasured: bool,
    crisis_before: list[Mark],
    agreeing: Mark | None = None,
    minutes_since_previous: float | None = None,
) -> str:
    """Why an alert opens (and, if so, why critical), in one short sentence with the readings' values
    (``agreeing``: the previous reading, when its agreement confirmed a lone crisis-range reading;
    ``minutes_since_previous``: the opening reading's, which says its hypotensive threshold)."""
    values = ", ".join(mmhg(m) for m in confirming if not math.isnan(m.systolic)) or mmhg(now)
    # The opening reading's own threshold: its cadence's (dense_threshold at a dense one), or its hypotensive one.
    if now.kind is AlertKind.HYPOTENSIVE:
        threshold = policy.low_threshold(minutes_since_previous)
    else:
        threshold = policy.hit_threshold(minutes_since_previous)
    flagged = f"model risk >= {threshold:g}" if policy.trigger is Trigger.MODEL else "beyond the seed rules"
    crisis = f"crisis range (> {CRISIS_SYSTOLIC_ABOVE:g}/{CRISIS_DIASTOLIC_ABOVE:g} mmHg)"
    if agreeing is not None:
        apart, agree = _minutes(now.t - agreeing.t), f"agreeing within {policy.crisis_agree_mmhg:g} mmHg"
        if now.t - agreeing.t <= policy.remeasure_minutes * 60.0:
            text = f"{crisis} reading {values} mmHg re-measured {apart} before at {mmhg(agreeing)} mmHg, {agree}"
        else:
            above = ""
            if context is not None:
                s, d = now.systolic - context.usual_systolic, now.diastolic - context.usual_diastolic
                rise = f"systolic {s:.0f}" if s >= d else f"diastolic {d:.0f}"
                above = f", {rise} mmHg above this patient's usual "
                above += f"{context.usual_systolic:.0f}/{context.usual_diastolic:.0f}"
            text = f"{crisis} reading {values} mmHg{above}; the reading {apart} before, {mmhg(agreeing)} mmHg, {agree}"
        text += " (a cuff artefact would stand apart)"
    elif now.crisis and len(confirming) == 1 and risk is not None and policy.confirm_k > 1:
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
        text += f"; critical: {crisis} reading {mmhg(m)} mmHg at {when(m.t)}, before it was confirmed"
    return text


def _minutes(seconds: float) -> str:
    minutes = round(seconds / 60.0)
    return f"{minutes} min" if minutes < 120 else f"{minutes / 60.0:.0f} h"


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
