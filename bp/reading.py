"""Domain values: a blood-pressure reading and the decision the pipeline takes about it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Reading:
    """One blood-pressure measurement, in mmHg, with a timezone-aware time.

    ``effective_precision`` is ``second`` for a full date-time, ``day`` when the sender gave only a date
    (``effective`` is then 00:00 UTC of that day and its hour means nothing).
    """

    patient_id: str
    effective: datetime
    systolic: float
    diastolic: float
    observation_id: str | None = None
    effective_precision: str = "second"

    @property
    def mean_arterial(self) -> float:
        """Mean arterial pressure estimate: diastolic + (systolic - diastolic) / 3."""
        return self.diastolic + (self.systolic - self.diastolic) / 3.0

    @property
    def pulse_pressure(self) -> float:
        """Systolic minus diastolic."""
        return self.systolic - self.diastolic


class Priority(StrEnum):
    """How urgently a clinician should look at an anomaly (critical and high are actionable)."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"


@dataclass(frozen=True, slots=True)
class Normal:
    """A reading that needs no attention; it goes to the normal archive."""

    reading: Reading
    category: str
    risk: float | None


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A reading that fired a rule, sits in crisis range, or that the model scored at/above its threshold."""

    reading: Reading
    category: str
    anomaly_types: tuple[str, ...]
    rules_fired: tuple[str, ...]
    priority: Priority
    risk: float | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that could not be turned into a valid reading; it goes to the dead-letter topic."""

    reason: str
    detail: str
    stage: str = "parse"


Decision = Normal | Anomaly | Rejected
