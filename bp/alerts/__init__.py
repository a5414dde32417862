"""Alerts a clinician can act on: patient-level episodes opened, escalated and resolved from readings. Pure.

The seed rules define *anomalies* (per reading); an *alert* is what a clinician is asked to look at: one per patient
and kind while the problem lasts. :func:`step` is the whole logic: it takes a patient's :class:`AlertState` (a
small serialisable value, kept per patient in the consumer's state store), one reading, the model's risk of that
reading, the :class:`AlertPolicy` and (with the model) the reading's :class:`Context` -- the patient's usual
pressure and previous reading, from the model's feature history -- and returns the new state and the events the
reading caused.

A reading is a *hit* when the policy's trigger fires: ``model`` -- risk >= the threshold or the reading is in the
hypertensive crisis range (the threshold is ``hypotensive_threshold`` for a reading whose direction is
hypotensive, when the policy has one; else ``dense_threshold`` for a reading at a dense cadence, see
:data:`DENSE_AFTER_MINUTES`, else ``threshold``); ``rules`` -- a seed rule fires or the reading is in crisis range
(the baselines). A hit has a direction: *hypotensive* when systolic < ``low_systolic`` or diastolic <
``low_diastolic``, or when it is below the patient's usual pressure and under stage 2 hypertension (a relative
drop: 110/68 in a patient who usually has 150/90), else *hypertensive* (crisis range always). The two directions
are the two alert kinds.

- **Open** an alert of a kind when at least ``confirm_k`` of the patient's last ``confirm_n`` readings (this one
  included, none older than ``confirm_within_minutes``) are hits of that kind and this reading is one of them; a
  crisis-range reading whose model risk is >= ``crisis_confirm_risk`` opens at once (the model confirms it), and so
  does one the patient's previous reading agrees with (``crisis_agree_mmhg``; a re-measurement, or a reading
  ``crisis_rise_mmhg`` above the usual pressure: the trend confirms it, whatever the risk). A
  lone reading never opens an alert otherwise when ``confirm_k`` >= 2: cuff artefacts are single readings. A
  crisis-range reading whose risk is below ``threshold`` (the model calls it an artefact) is a *weak* hit: it
  confirms only together with another crisis-range reading (or an agreeing previous one), never with a hit of the
  model alone.
- **Re-measurement** (home pairs, ``remeasure_*``): a reading taken minutes after the previous one re-measures it;
  when one of the two is a hit and their values agree, the other counts as a hit of the same kind (and a weak
  crisis-range hit is no longer weak): a cuff artefact does not repeat itself a minute later.
- **Severity**: an alert opens critical when its opening hit is in crisis range and confirmed (a second
  crisis-range reading among the recent ones, risk >= ``crisis_confirm_risk`` or an agreeing previous reading; with
  ``confirm_k`` = 1 no confirmation) or
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

Where things are: :mod:`bp.alerts.policy` (the parameters, kinds and severities), :mod:`bp.alerts.values` (the
context, the per-patient state and its byte format, the events), :mod:`bp.alerts.logic` (:func:`mark`,
:func:`step`), :mod:`bp.alerts.explain` (the reasons and :func:`describe`), :mod:`bp.alerts.patients`
(:class:`PatientAlerts` over a keyed state). Import every name from :mod:`bp.alerts`.
"""

from __future__ import annotations

from bp.alerts.explain import describe
from bp.alerts.logic import hypotensive_rows, mark, step
from bp.alerts.patients import STATE_KEY_PREFIX, PatientAlerts
from bp.alerts.policy import (
    DENSE_AFTER_MINUTES,
    DENSE_WITHIN_MINUTES,
    AlertKind,
    AlertPolicy,
    AlertStatus,
    Severity,
    Trigger,
    rules_policy,
)
from bp.alerts.values import (
    EMPTY,
    READABLE_FORMATS,
    STATE_FORMAT,
    AlertEvent,
    AlertState,
    Context,
    Mark,
    OpenAlert,
    context_columns,
    context_of,
    state_from_bytes,
    state_to_bytes,
)

__all__ = [
    "DENSE_AFTER_MINUTES",
    "DENSE_WITHIN_MINUTES",
    "EMPTY",
    "READABLE_FORMATS",
    "STATE_FORMAT",
    "STATE_KEY_PREFIX",
    "AlertEvent",
    "AlertKind",
    "AlertPolicy",
    "AlertState",
    "AlertStatus",
    "Context",
    "Mark",
    "OpenAlert",
    "PatientAlerts",
    "Severity",
    "Trigger",
    "context_columns",
    "context_of",
    "describe",
    "hypotensive_rows",
    "mark",
    "rules_policy",
    "state_from_bytes",
    "state_to_bytes",
    "step",
]
