"""The one feature function: training (``ml.train_model``) and the consumer's online scoring both use it.

Features of a reading depend on the reading and on the patient's history seen *before* it, held in a
:class:`PatientHistory` (a few floats per patient), so the consumer computes exactly what training computed, one
reading at a time. The history is a view over a :class:`bp.state.KeyedState`: each patient's state is an immutable
:class:`PatientState` stored as compact bytes (:data:`STATE_FORMAT`), in memory for training and ``--check``, in
the consumer's durable store when streaming. Patients are forgotten only by the event-time retention rule of
:mod:`bp.state`, never because of memory.

Rolling baseline
    The patient's usual pressure is an exponentially weighted mean (weight :data:`BASELINE_ALPHA`; a running
    mean during the first readings) of *circadian-adjusted* values: a reading divided by the population's
    expected nocturnal dip (:data:`EXPECTED_DIP`, 10 %: ESH/ABPM convention that a normal "dipper" falls 10-20 %
    at night; O'Brien E et al., Lancet 1988;2:397) weighted by hour of the reading's local time. After
    :data:`CLIP_AFTER` readings, each update is clipped to +-:data:`CLIP_SYSTOLIC`/:data:`CLIP_DIASTOLIC` mmHg,
    so an episode or a cuff artefact barely moves the baseline. The expected value now is baseline x
    (1 - dip x night weight); deviation = reading - expected.

Artifact metadata
    The model artifact stores its format, feature names, threshold and library versions;
    :func:`check_artifact_metadata` refuses an artifact that does not match this code.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bp.errors import ModelError, StateError
from bp.reading import Reading
from bp.state import DEFAULT_RETENTION_DAYS, KeyedState, MemoryState, Retained

FEATURE_NAMES: tuple[str, ...] = (
    "systolic",
    "diastolic",
    "mean_arterial",
    "pulse_pressure",
    "baseline_systolic",
    "baseline_diastolic",
    "systolic_dev",
    "diastolic_dev",
    "systolic_dev_abs",
    "diastolic_dev_abs",
    "systolic_delta",
    "diastolic_delta",
    "systolic_delta_abs",
    "sustained_systolic_dev",
    "sustained_diastolic_dev",
    "night_weight",
    "warmup",
    "systolic_below_90",
    "diastolic_below_60",
    "systolic_above_180",
    "diastolic_above_120",
    "systolic_drop_beyond_20",
    "systolic_rise_beyond_20",
    "diastolic_drop_beyond_12",
    "diastolic_rise_beyond_12",
    "sustained_systolic_drop",
    "log_minutes_since_previous",
    "same_session",
    "recent_systolic_delta_abs",
)
"""Feature order of :meth:`PatientHistory.observe` rows (mmHg unless stated).

- systolic, diastolic, mean_arterial, pulse_pressure: the reading itself.
- baseline_systolic/diastolic: the patient's rolling usual (daytime-equivalent) pressure before this reading.
- *_dev: reading minus the expected value at this hour; *_dev_abs its magnitude.
- *_delta: change from the previous reading of the patient (0 for the first); systolic_delta_abs its magnitude.
- sustained_*_dev: magnitude of the deviation shared with the previous reading (min of both magnitudes when
  both deviate in the same direction, else 0): high in an episode that builds, low on an isolated spike.
- night_weight: 0 (day) to 1 (deep night), the weight of the expected nocturnal dip.
- warmup: readings seen before this one / WARMUP_READINGS, capped at 1 (0 for a patient's first reading).
- Hinges, so that a linear model can learn that both tails are bad: systolic_below_90 = max(0, 90 - systolic),
  diastolic_below_60 = max(0, 60 - diastolic), systolic_above_180 = max(0, systolic - 180),
  diastolic_above_120 = max(0, diastolic - 120) (the seed rules' and ACC/AHA's cut-points), and their
  deviation analogues systolic_drop_beyond_20 = max(0, -systolic_dev - 20), systolic_rise_beyond_20 =
  max(0, systolic_dev - 20), diastolic_drop/rise_beyond_12 likewise with 12 mmHg.
- sustained_systolic_drop: sustained_systolic_dev when both deviations are negative (else 0): the direction.
- Cadence: log_minutes_since_previous = ln(1 + minutes since the patient's latest earlier reading, the state
  entry's last event time) (0 for the first; 0.7 for a home pair a minute apart, 2.8 at 15 min, 6.6 at 12 h);
  same_session = 1 when that reading is at most SAME_SESSION_MINUTES old (a confirming re-measurement);
  recent_systolic_delta_abs = systolic_delta_abs when it is at most RECENT_MINUTES old, else 0 (a change over
  half a day says less than one over 15 minutes).
"""

BASELINE_ALPHA = 0.02
EXPECTED_DIP = 0.10
CLIP_AFTER = 5
CLIP_SYSTOLIC = 10.0
CLIP_DIASTOLIC = 7.0
WARMUP_READINGS = 50
SAME_SESSION_MINUTES = 10.0
RECENT_MINUTES = 60.0

# Night weight by local hour of the reading: expected nocturnal dip is EXPECTED_DIP x weight.
NIGHT_WEIGHT_BY_HOUR: tuple[float, ...] = (
    1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.6, 0.2,  # 00-07
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,  # 08-15
    0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.4, 0.8,  # 16-23
)  # fmt: skip

# A reading given with a date only (effective_precision "day") has no hour: it gets the day's mean weight.
UNKNOWN_HOUR_NIGHT_WEIGHT = sum(NIGHT_WEIGHT_BY_HOUR) / len(NIGHT_WEIGHT_BY_HOUR)


def night_weight(reading: Reading) -> float:
    """Night weight of the reading's local hour; the daily mean when its time is only a date."""
    if reading.effective_precision == "day":
        return UNKNOWN_HOUR_NIGHT_WEIGHT
    return NIGHT_WEIGHT_BY_HOUR[reading.effective.hour]


ARTIFACT_FORMAT = 2
RETRAIN_HINT = "retrain with `python -m ml.train_model`"


STATE_FORMAT = 1
"""Tag of :class:`PatientState`'s byte layout: bump it whenever the fields change (stored state is then refused)."""
_STATE = struct.Struct("<B6dI")


@dataclass(frozen=True, slots=True)
class PatientState:
    """Rolling state of one patient: an immutable value, stored as compact bytes."""

    base_s: float
    base_d: float
    prev_s: float
    prev_d: float
    prev_dev_s: float
    prev_dev_d: float
    seen: int

    def to_bytes(self) -> bytes:
        return _STATE.pack(
            STATE_FORMAT,
            *(self.base_s, self.base_d, self.prev_s, self.prev_d, self.prev_dev_s, self.prev_dev_d, self.seen),
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> PatientState:
        return cls(*_state_fields(raw))


def _state_fields(raw: bytes) -> tuple[float, float, float, float, float, float, int]:
    """:class:`PatientState`'s fields, in order, from its bytes (the hot path reads them without the object)."""
    if len(raw) != _STATE.size or raw[0] != STATE_FORMAT:
        found = raw[0] if raw else None
        raise StateError(
            f"stored patient state has format {found!r} ({len(raw)} bytes), this code reads format "
            f"{STATE_FORMAT} ({_STATE.size} bytes); reset the consumer's state (see README: State)"
        )
    return _STATE.unpack(raw)[1:]


def _sustained(dev: float, prev: float) -> float:
    if dev * prev <= 0.0:
        return 0.0
    return min(abs(dev), abs(prev))


def _hinges(s: float, d: float, dev_s: float, dev_d: float) -> tuple[float, ...]:
    """The tail hinges of FEATURE_NAMES, in order (absolute cut-points, then deviation margins)."""
    return (
        max(0.0, 90.0 - s),
        max(0.0, 60.0 - d),
        max(0.0, s - 180.0),
        max(0.0, d - 120.0),
        max(0.0, -dev_s - 20.0),
        max(0.0, dev_s - 20.0),
        max(0.0, -dev_d - 12.0),
        max(0.0, dev_d - 12.0),
    )


class PatientHistory:
    """Per-patient rolling state for feature computation: a view over one partition's :class:`KeyedState`."""

    __slots__ = ("_retained",)

    def __init__(self, state: KeyedState | None = None, retention_days: float = DEFAULT_RETENTION_DAYS) -> None:
        self._retained = Retained(state if state is not None else MemoryState(), retention_days)

    @property
    def state(self) -> KeyedState:
        return self._retained.state

    def observe(self, reading: Reading) -> tuple[float, ...]:
        """Features of ``reading`` given the history so far (order: FEATURE_NAMES); then update the history."""
        s = reading.systolic
        d = reading.diastolic
        w = night_weight(reading)
        factor = 1.0 - EXPECTED_DIP * w
        retained = self._retained
        pid = reading.patient_id
        at = reading.effective.timestamp()
        previous = retained.load(pid, at)
        if previous is None:
            base_s = s / factor
            base_d = d / factor
            retained.save(pid, _STATE.pack(STATE_FORMAT, base_s, base_d, s, d, 0.0, 0.0, 1), at, None)
            return (
                s, d, d + (s - d) / 3.0, s - d, base_s, base_d,
                0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, w, 0.0,
                *_hinges(s, d, 0.0, 0.0), 0.0, 0.0, 0.0, 0.0,
            )  # fmt: skip
        base_s, base_d, prev_s, prev_d, prev_dev_s, prev_dev_d, seen = _state_fields(previous.value)
        dev_s = s - base_s * factor
        dev_d = d - base_d * factor
        delta_s = s - prev_s
        delta_d = d - prev_d
        gap_min = max(at - previous.last_time, 0.0) / 60.0
        sustained_s = _sustained(dev_s, prev_dev_s)
        features = (
            s,
            d,
            d + (s - d) / 3.0,
            s - d,
            base_s,
            base_d,
            dev_s,
            dev_d,
            abs(dev_s),
            abs(dev_d),
            delta_s,
            delta_d,
            abs(delta_s),
            sustained_s,
            _sustained(dev_d, prev_dev_d),
            w,
            min(seen / WARMUP_READINGS, 1.0),
            *_hinges(s, d, dev_s, dev_d),
            sustained_s if dev_s < 0.0 else 0.0,
            math.log1p(gap_min),
            1.0 if gap_min <= SAME_SESSION_MINUTES else 0.0,
            abs(delta_s) if gap_min <= RECENT_MINUTES else 0.0,
        )
        # Update: running mean while warming up, then EWMA; clipped once the baseline has settled.
        alpha = max(1.0 / (seen + 1), BASELINE_ALPHA)
        r_s = s / factor - base_s
        r_d = d / factor - base_d
        if seen >= CLIP_AFTER:
            r_s = CLIP_SYSTOLIC if r_s > CLIP_SYSTOLIC else -CLIP_SYSTOLIC if r_s < -CLIP_SYSTOLIC else r_s
            r_d = CLIP_DIASTOLIC if r_d > CLIP_DIASTOLIC else -CLIP_DIASTOLIC if r_d < -CLIP_DIASTOLIC else r_d
        updated = _STATE.pack(STATE_FORMAT, base_s + alpha * r_s, base_d + alpha * r_d, s, d, dev_s, dev_d, seen + 1)
        retained.save(pid, updated, at, previous)
        return features


_LOG_GAP = FEATURE_NAMES.index("log_minutes_since_previous")
_WARMUP = FEATURE_NAMES.index("warmup")


def minutes_since_previous(row: Sequence[float] | npt.NDArray[np.float64]) -> float | None:
    """Minutes since the patient's previous reading, from a feature row; None for a patient's first reading."""
    if row[_WARMUP] == 0.0:  # seen no reading before
        return None
    return math.expm1(float(row[_LOG_GAP]))


def feature_matrix(history: PatientHistory, readings: Sequence[Reading]) -> npt.NDArray[np.float64]:
    """Observe ``readings`` in order; one row of features per reading, shape (n, len(FEATURE_NAMES))."""
    observe = history.observe
    rows = [observe(r) for r in readings]
    if not rows:
        return np.empty((0, len(FEATURE_NAMES)), dtype=np.float64)
    return np.asarray(rows, dtype=np.float64)


def check_artifact_metadata(metadata: Mapping[str, object], *, sklearn_version: str, joblib_version: str) -> float:
    """Validate a model artifact's metadata against this code and these libraries; return its threshold.

    Raises :class:`~bp.errors.ModelError` with a one-line message saying what differs and how to fix it.
    """
    fmt = metadata.get("format")
    if fmt != ARTIFACT_FORMAT or isinstance(fmt, bool):
        raise ModelError(f"model artifact has format {fmt!r}, this code reads format {ARTIFACT_FORMAT}; {RETRAIN_HINT}")
    names = metadata.get("feature_names")
    if not isinstance(names, list | tuple) or list(names) != list(FEATURE_NAMES):
        if isinstance(names, list | tuple):
            missing = [n for n in FEATURE_NAMES if n not in names]
            extra = [n for n in names if n not in FEATURE_NAMES]
            detail = f"missing {missing}, unexpected {extra}" if missing or extra else "different order"
        else:
            detail = f"got {type(names).__name__}"
        raise ModelError(f"model artifact features do not match this code ({detail}); {RETRAIN_HINT}")
    for key, expected in (("sklearn_version", sklearn_version), ("joblib_version", joblib_version)):
        found = metadata.get(key)
        if found != expected:
            raise ModelError(
                f"model artifact was saved with {key.removesuffix('_version')} {found!r}, "
                f"this environment has {expected!r}; {RETRAIN_HINT}"
            )
    threshold = metadata.get("threshold")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, float | int)
        or not math.isfinite(threshold)
        or not 0.0 < threshold < 1.0
    ):
        raise ModelError(f"model artifact threshold {threshold!r} is not a number in (0, 1); {RETRAIN_HINT}")
    return float(threshold)
