"""The alert policy: every parameter of the alert logic and the names it speaks in. Pure.

:class:`AlertPolicy` (chosen out of fold by ``ml.train_model`` and stored in the model artifact as a plain dict via
:meth:`AlertPolicy.to_dict`), the kinds, severities and statuses of alerts, what makes a reading a hit
(:class:`Trigger`), the dense-cadence bounds and :func:`rules_policy`, the policy without a model. The rules that
use these parameters are in the :mod:`bp.alerts` docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bp.features import SAME_SESSION_MINUTES


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


def is_dense(minutes_since_previous: float | None) -> bool:
    """Whether a reading taken ``minutes_since_previous`` after the patient's previous one is at a dense cadence."""
    return minutes_since_previous is not None and DENSE_AFTER_MINUTES < minutes_since_previous <= DENSE_WITHIN_MINUTES


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
        A weak hit (below the reading's threshold) never confirms itself by its risk (but see the agreement below).
    crisis_agree_mmhg, crisis_rise_mmhg
        A crisis-range reading confirms itself whatever its risk (the alert opens at once, critical) when the
        patient's previous reading, at most ``confirm_within_minutes`` before it, agrees with it within
        ``crisis_agree_mmhg``, systolic and diastolic, and either re-measured it (at most ``remeasure_minutes``
        before: a home pair) or the reading is at least ``crisis_rise_mmhg`` above the patient's usual pressure
        (systolic or diastolic). A cuff artefact jumps 40-90 mmHg systolic above the patient's pressure for one
        reading, so it does not agree with the reading before; the rise keeps a patient whose usual pressure is
        near 180, read every 15 minutes, from a critical alert at every pair of agreeing readings: the trend must
        be a change. 0 mmHg agreement: off.
    hypotensive_threshold
        Risk threshold for a reading whose direction is hypotensive (see :func:`bp.alerts.mark`), whatever the
        cadence. ``None``: the reading's threshold (``threshold`` or ``dense_threshold``). A drop the model scores
        middling on every reading (a mild, long one, or one at a cold start with no baseline) then still counts.
    sparse_hypotensive_threshold
        Risk threshold for a reading whose direction is hypotensive and that is *not* at a dense cadence (a home
        reading: a pair's second reading, one half a day after the last, a patient's first). ``None``:
        ``hypotensive_threshold``. Home readings come ~25x sparser than an ambulatory monitor's, so a lower
        threshold there costs few false alerts per patient-week, and home drops are often cold starts the model
        scores low (no baseline yet).
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
    crisis_agree_mmhg: float = 0.0
    crisis_rise_mmhg: float = 0.0
    hypotensive_threshold: float | None = None
    sparse_hypotensive_threshold: float | None = None

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
        if not (math.isfinite(self.crisis_agree_mmhg) and self.crisis_agree_mmhg >= 0):
            raise ValueError(f"crisis_agree_mmhg must be a number >= 0, got {self.crisis_agree_mmhg}")
        if not (math.isfinite(self.crisis_rise_mmhg) and self.crisis_rise_mmhg >= 0):
            raise ValueError(f"crisis_rise_mmhg must be a number >= 0, got {self.crisis_rise_mmhg}")
        t = self.dense_threshold
        if t is not None and not (math.isfinite(t) and 0.0 < t <= 1.0):
            raise ValueError(f"dense_threshold must be in (0, 1] or None, got {t}")
        h = self.hypotensive_threshold
        if h is not None and not (math.isfinite(h) and 0.0 < h <= 1.0):
            raise ValueError(f"hypotensive_threshold must be in (0, 1] or None, got {h}")
        h = self.sparse_hypotensive_threshold
        if h is not None and not (math.isfinite(h) and 0.0 < h <= 1.0):
            raise ValueError(f"sparse_hypotensive_threshold must be in (0, 1] or None, got {h}")

    def hit_threshold(self, minutes_since_previous: float | None) -> float:
        """The risk threshold of a reading taken ``minutes_since_previous`` after the patient's previous one."""
        if self.dense_threshold is not None and is_dense(minutes_since_previous):
            return self.dense_threshold
        return self.threshold

    def low_threshold(self, minutes_since_previous: float | None) -> float:
        """The risk threshold of a reading whose direction is hypotensive: ``sparse_hypotensive_threshold`` when
        it is not at a dense cadence and the policy has one, else ``hypotensive_threshold``, else
        :meth:`hit_threshold`."""
        if self.sparse_hypotensive_threshold is not None and not is_dense(minutes_since_previous):
            return self.sparse_hypotensive_threshold
        if self.hypotensive_threshold is not None:
            return self.hypotensive_threshold
        return self.hit_threshold(minutes_since_previous)

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
            "crisis_agree_mmhg": self.crisis_agree_mmhg,
            "crisis_rise_mmhg": self.crisis_rise_mmhg,
            "hypotensive_threshold": self.hypotensive_threshold,
            "sparse_hypotensive_threshold": self.sparse_hypotensive_threshold,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertPolicy:
        """The inverse of :meth:`to_dict`; ValueError (or TypeError/KeyError) when the value is not a policy.

        A policy stored before ``crisis_confirm_risk``, ``dense_threshold`` or the hypotensive thresholds existed
        reads them as ``None`` (the threshold, as it behaved); one stored before the re-measurement parameters
        existed gets them off (its behaviour then), and one stored before the crisis agreement existed gets it off.
        """
        crisis = data.get("crisis_confirm_risk")
        dense = data.get("dense_threshold")
        low = data.get("hypotensive_threshold")
        sparse = data.get("sparse_hypotensive_threshold")
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
            crisis_agree_mmhg=float(data.get("crisis_agree_mmhg", 0.0)),
            crisis_rise_mmhg=float(data.get("crisis_rise_mmhg", 0.0)),
            hypotensive_threshold=None if low is None else float(low),
            sparse_hypotensive_threshold=None if sparse is None else float(sparse),
        )


def rules_policy() -> AlertPolicy:
    """The alert policy without a model (``--rules-only``): two consecutive seed-rule anomalies open an alert."""
    return AlertPolicy(threshold=1.0, confirm_k=2, confirm_n=2, trigger=Trigger.RULES)
