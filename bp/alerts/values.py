"""The values the alert logic keeps and emits: a reading's context, marks, open alerts, the per-patient state and its
byte format, and alert events. Pure.

:class:`Context` (what the patient's history says about a reading, from the model's feature rows), :class:`Mark`
(one recent reading as the logic remembers it), :class:`OpenAlert`, :class:`AlertState` (a patient's state, stored
as bytes by :func:`state_to_bytes`; ``STATE_FORMAT`` tags the layout, older formats stay readable) and
:class:`AlertEvent` (an alert opened, escalated or resolved).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from bp.alerts.policy import AlertKind, AlertStatus, Severity
from bp.features import FEATURE_NAMES


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
    reason: str = ""  # why it opened (and became critical), for people: see :func:`bp.alerts.describe`

    def after_quiet_reading(self) -> OpenAlert:
        """This alert after one more reading without a hit of its kind (what ``dataclasses.replace`` would give
        with ``readings`` and ``quiet`` one higher; spelt out because it runs for every reading while an alert
        is open, and ``replace`` costs several times a constructor call)."""
        return OpenAlert(
            alert_id=self.alert_id,
            kind=self.kind,
            severity=self.severity,
            opened_at=self.opened_at,
            opened_observation=self.opened_observation,
            last_hit_at=self.last_hit_at,
            hits=self.hits,
            readings=self.readings + 1,
            quiet=self.quiet + 1,
            worst_systolic=self.worst_systolic,
            worst_diastolic=self.worst_diastolic,
            reason=self.reason,
        )


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
