"""What the simulator (:mod:`bp.cohort`) knows and the consumer never sees: the simulated patient behind a
reading and the reading's ground truth. :class:`Truth` never leaves Python: it is not part of the
:class:`~bp.reading.Reading` and so never part of the FHIR resource; ``ml`` learns from it and scores against it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bp.reading import Reading


class EpisodeKind(StrEnum):
    """The kind of clinically significant episode a reading belongs to."""

    HYPERTENSIVE_CRISIS = "hypertensive_crisis"
    ACUTE_HYPOTENSION = "acute_hypotension"
    SHARP_RISE = "sharp_rise"


@dataclass(frozen=True, slots=True)
class Patient:
    """A simulated patient: pseudonymous id, demographics and usual daytime pressure (mmHg)."""

    patient_id: str
    age: int
    sex: str
    profile: str
    baseline_systolic: float
    baseline_diastolic: float


@dataclass(frozen=True, slots=True)
class Truth:
    """Ground truth of a simulated reading (for training and evaluation only, never published)."""

    significant: bool
    episode: str | None
    artefact: bool
    episode_id: str | None = None  # unique per patient and episode (patient id + "-e" + its number)


@dataclass(frozen=True, slots=True)
class SimReading:
    """A reading with its ground truth and its patient."""

    reading: Reading
    truth: Truth
    patient: Patient
