"""The shared feature function: history over keyed bytes, event-time retention, hand-computed deviations,
artifact metadata checks."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from bp.alerts import context_columns, context_of
from bp.errors import ModelError, StateError
from bp.features import (
    ARTIFACT_FORMAT,
    FEATURE_NAMES,
    STATE_FORMAT,
    PatientHistory,
    PatientState,
    check_artifact_metadata,
    feature_matrix,
    minutes_since_previous,
)
from bp.reading import Reading
from bp.state import NO_WATERMARK, Entry

NOON = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
STEP = timedelta(minutes=15)


def reading(pid: str, systolic: float, diastolic: float, at: datetime = NOON) -> Reading:
    return Reading(pid, at, systolic, diastolic, f"{pid}-{at.isoformat()}")


def named(row: tuple[float, ...]) -> dict[str, float]:
    assert len(row) == len(FEATURE_NAMES)
    return dict(zip(FEATURE_NAMES, row, strict=True))


def test_feature_names_are_unique() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


class BytesOnly:
    """A KeyedState that keeps nothing but bytes and a float per key, and forgets every Python object."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[bytes, float]] = {}
        self.mark = NO_WATERMARK

    @property
    def watermark(self) -> float:
        return self.mark

    def advance(self, event_time: float) -> float:
        self.mark = max(self.mark, event_time)
        return self.mark

    def get(self, key: str) -> Entry | None:
        row = self.rows.get(key)
        return None if row is None else Entry(bytes(row[0]), row[1])

    def put(self, key: str, entry: Entry) -> None:
        assert isinstance(entry.value, bytes) and len(entry.value) <= 64
        self.rows[key] = (bytes(entry.value), entry.last_time)


def test_history_through_bytes_equals_history_in_memory() -> None:
    """The per-patient state is fully described by its compact bytes: a store that keeps only bytes decides
    exactly like the in-memory one (this is what lets the consumer's cache evict without changing decisions)."""
    rng = np.random.default_rng(3)
    readings = [
        reading(f"p{int(pid)}", float(rng.integers(80, 200)), float(rng.integers(45, 110)), NOON + i * STEP)
        for i, pid in enumerate(rng.integers(0, 60, size=3000))
    ]
    readings = [r for r in readings if r.systolic > r.diastolic]
    np.testing.assert_array_equal(
        feature_matrix(PatientHistory(BytesOnly()), readings), feature_matrix(PatientHistory(), readings)
    )


def test_patient_state_round_trips_and_refuses_another_format() -> None:
    state = PatientState(120.5, 80.25, 131.0, 85.0, -1.5, 2.25, 7)
    raw = state.to_bytes()
    assert PatientState.from_bytes(raw) == state
    assert raw[0] == STATE_FORMAT and len(raw) < 64
    for bad in (bytes([STATE_FORMAT + 1]) + raw[1:], raw[:-1], b""):
        with pytest.raises(StateError, match="format"):
            PatientState.from_bytes(bad)


def test_patient_unseen_longer_than_the_retention_starts_again() -> None:
    """Forgetting follows event time only: a gap longer than the retention makes the next reading a first one;
    a gap of exactly the retention keeps the history."""
    history = PatientHistory(retention_days=2)
    history.observe(reading("p", 120, 80))
    kept = named(history.observe(reading("p", 130, 80, NOON + timedelta(days=2))))
    assert kept["warmup"] > 0 and kept["systolic_dev"] == 10
    fresh = named(history.observe(reading("p", 150, 90, NOON + timedelta(days=4, seconds=1))))
    assert fresh["warmup"] == 0.0 and fresh["systolic_dev"] == 0.0


def test_retention_is_measured_against_the_partition_watermark() -> None:
    """Other patients' readings move the watermark: a patient silent for longer than the retention of the
    partition's event time is forgotten even if its own next reading comes late (out of order)."""
    history = PatientHistory(retention_days=1)
    history.observe(reading("quiet", 120, 80))
    history.observe(reading("busy", 120, 80, NOON + timedelta(days=3)))
    late = named(history.observe(reading("quiet", 140, 80, NOON + timedelta(hours=1))))
    assert late["warmup"] == 0.0
    assert history.state.watermark == (NOON + timedelta(days=3)).timestamp()


def test_invalid_retention_raises() -> None:
    with pytest.raises(ValueError):
        PatientHistory(retention_days=0)


def test_first_reading_features() -> None:
    f = named(PatientHistory().observe(reading("p", 130, 85)))
    assert f["systolic"] == 130
    assert f["diastolic"] == 85
    assert f["mean_arterial"] == pytest.approx(85 + 45 / 3)
    assert f["pulse_pressure"] == 45
    assert f["baseline_systolic"] == 130  # noon: no nocturnal dip expected
    for name in (
        "systolic_dev",
        "diastolic_dev",
        "systolic_delta",
        "diastolic_delta",
        "sustained_systolic_dev",
        "sustained_diastolic_dev",
        "warmup",
        "night_weight",
    ):
        assert f[name] == 0.0, name


def test_deviation_delta_and_sustained_by_hand() -> None:
    history = PatientHistory()
    history.observe(reading("p", 120, 80))  # baseline 120/80
    second = named(history.observe(reading("p", 130, 84, NOON + STEP)))
    # Expected by hand: deviation from 120/80, change from the previous reading, nothing sustained yet.
    assert second["baseline_systolic"] == 120
    assert second["systolic_dev"] == 10
    assert second["diastolic_dev"] == 4
    assert second["systolic_delta"] == 10
    assert second["systolic_delta_abs"] == 10
    assert second["sustained_systolic_dev"] == 0
    assert second["warmup"] == pytest.approx(1 / 50)
    # Running mean while warming up: baseline becomes (120 + 130) / 2 = 125 and (80 + 84) / 2 = 82.
    third = named(history.observe(reading("p", 140, 90, NOON + 2 * STEP)))
    assert third["baseline_systolic"] == pytest.approx(125)
    assert third["baseline_diastolic"] == pytest.approx(82)
    assert third["systolic_dev"] == pytest.approx(15)
    assert third["diastolic_dev"] == pytest.approx(8)
    assert third["systolic_delta"] == 10
    assert third["diastolic_delta"] == 6
    assert third["sustained_systolic_dev"] == pytest.approx(10)  # min(15, 10), same direction
    assert third["sustained_diastolic_dev"] == pytest.approx(4)  # min(8, 4)
    assert third["mean_arterial"] == pytest.approx(90 + 50 / 3)
    assert third["pulse_pressure"] == 50
    # A fall after a rise is not sustained.
    fourth = named(history.observe(reading("p", 110, 75, NOON + 3 * STEP)))
    assert fourth["systolic_dev"] < 0
    assert fourth["sustained_systolic_dev"] == 0


def test_night_readings_are_compared_with_a_dipped_baseline() -> None:
    two_am = datetime(2024, 5, 6, 2, 0, tzinfo=UTC)
    history = PatientHistory()
    history.observe(reading("p", 108, 72, two_am))  # 10 % nocturnal dip: daytime-equivalent 120/80
    f = named(history.observe(reading("p", 99, 63, two_am + STEP)))
    assert f["night_weight"] == 1.0
    assert f["baseline_systolic"] == pytest.approx(120)
    assert f["baseline_diastolic"] == pytest.approx(80)
    assert f["systolic_dev"] == pytest.approx(99 - 108)
    assert f["diastolic_dev"] == pytest.approx(63 - 72)


def test_settled_baseline_barely_moves_on_a_spike() -> None:
    history = PatientHistory()
    for i in range(5):
        history.observe(reading("p", 120, 80, NOON + i * STEP))
    history.observe(reading("p", 220, 80, NOON + 5 * STEP))  # the 6th reading: weight 1/6, clipped to +10
    f = named(history.observe(reading("p", 120, 80, NOON + 6 * STEP)))
    assert f["baseline_systolic"] == pytest.approx(120 + 10 / 6)
    assert f["systolic_delta"] == -100


def test_feature_matrix_matches_observe_in_order() -> None:
    readings = [reading(f"p{i % 3}", 110 + i, 70 + i % 5, NOON + i * STEP) for i in range(30)]
    matrix = feature_matrix(PatientHistory(), readings)
    assert matrix.shape == (30, len(FEATURE_NAMES))
    assert matrix.dtype == np.float64
    one_by_one = PatientHistory()
    expected = np.array([one_by_one.observe(r) for r in readings])
    np.testing.assert_array_equal(matrix, expected)
    assert feature_matrix(PatientHistory(), []).shape == (0, len(FEATURE_NAMES))


# ------------------------------------------------------------------------------------------ artifact metadata

SK, JL = "1.9.1", "1.6.0"


def good_metadata() -> dict[str, object]:
    return {
        "format": ARTIFACT_FORMAT,
        "feature_names": list(FEATURE_NAMES),
        "threshold": 0.25,
        "sklearn_version": SK,
        "joblib_version": JL,
    }


def test_matching_metadata_returns_threshold() -> None:
    assert check_artifact_metadata(good_metadata(), sklearn_version=SK, joblib_version=JL) == 0.25


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("format", ARTIFACT_FORMAT + 1),
        ("format", None),
        ("format", True),
        ("feature_names", list(FEATURE_NAMES[:-1])),
        ("feature_names", [*FEATURE_NAMES, "extra"]),
        ("feature_names", list(reversed(FEATURE_NAMES))),
        ("feature_names", "systolic"),
        ("sklearn_version", "1.5.0"),
        ("joblib_version", "1.4.2"),
        ("threshold", 0.0),
        ("threshold", 1.0),
        ("threshold", 1.5),
        ("threshold", -0.1),
        ("threshold", "0.3"),
        ("threshold", True),
        ("threshold", math.nan),
        ("threshold", None),
    ],
)
def test_mismatched_metadata_is_refused(key: str, value: object) -> None:
    metadata = good_metadata() | {key: value}
    with pytest.raises(ModelError) as info:
        check_artifact_metadata(metadata, sklearn_version=SK, joblib_version=JL)
    message = str(info.value)
    assert "python -m ml.train_model" in message
    assert "\n" not in message


def test_missing_keys_are_refused() -> None:
    for key in good_metadata():
        metadata = good_metadata()
        del metadata[key]
        with pytest.raises(ModelError):
            check_artifact_metadata(metadata, sklearn_version=SK, joblib_version=JL)


def test_removed_feature_is_named_in_the_message() -> None:
    metadata = good_metadata() | {"feature_names": [n for n in FEATURE_NAMES if n != "systolic_dev"]}
    with pytest.raises(ModelError, match="systolic_dev"):
        check_artifact_metadata(metadata, sklearn_version=SK, joblib_version=JL)


def test_date_only_reading_has_no_hour_so_night_weight_is_the_daily_mean() -> None:
    weights = (1.0,) * 5 + (0.9, 0.6, 0.2) + (0.0,) * 13 + (0.1, 0.4, 0.8)  # the table, written out
    midnight = datetime(2024, 3, 1, tzinfo=UTC)
    timed = PatientHistory().observe(Reading("p", midnight, 120.0, 80.0))
    dated = PatientHistory().observe(Reading("p", midnight, 120.0, 80.0, effective_precision="day"))
    column = FEATURE_NAMES.index("night_weight")
    assert timed[column] == 1.0  # 00:00 is deep night
    assert dated[column] == pytest.approx(sum(weights) / 24)


def test_both_tails_have_hinges() -> None:
    low = named(PatientHistory().observe(reading("p", 72, 44)))
    assert (low["systolic_below_90"], low["diastolic_below_60"]) == (18, 16)
    assert (low["systolic_above_180"], low["diastolic_above_120"]) == (0, 0)
    high = named(PatientHistory().observe(reading("p", 201, 127)))
    assert (high["systolic_above_180"], high["diastolic_above_120"]) == (21, 7)
    assert (high["systolic_below_90"], high["diastolic_below_60"]) == (0, 0)
    edge = named(PatientHistory().observe(reading("p", 90, 60)))
    assert edge["systolic_below_90"] == edge["diastolic_below_60"] == 0


def test_deviation_hinges_follow_the_deviation() -> None:
    history = PatientHistory()
    for k in range(60):
        history.observe(reading("p", 120, 80, NOON + k * STEP))
    drop = named(history.observe(reading("p", 85, 55, NOON + 60 * STEP)))
    assert drop["systolic_drop_beyond_20"] == pytest.approx(-drop["systolic_dev"] - 20)
    assert drop["diastolic_drop_beyond_12"] == pytest.approx(-drop["diastolic_dev"] - 12)
    assert drop["systolic_rise_beyond_20"] == drop["diastolic_rise_beyond_12"] == 0
    again = named(history.observe(reading("p", 84, 54, NOON + 61 * STEP)))
    assert again["sustained_systolic_drop"] == pytest.approx(again["sustained_systolic_dev"])
    assert again["sustained_systolic_drop"] > 0
    rise = named(history.observe(reading("p", 160, 100, NOON + 62 * STEP)))
    assert rise["systolic_rise_beyond_20"] == pytest.approx(rise["systolic_dev"] - 20)
    assert rise["sustained_systolic_drop"] == 0


@pytest.mark.parametrize(
    ("gap", "same_session", "recent"),
    [(timedelta(minutes=1), 1.0, True), (STEP, 0.0, True), (timedelta(hours=12), 0.0, False)],
)
def test_cadence_features_know_the_time_since_the_previous_reading(
    gap: timedelta, same_session: float, recent: bool
) -> None:
    history = PatientHistory()
    first = named(history.observe(reading("p", 120, 80)))
    assert first["log_minutes_since_previous"] == first["same_session"] == first["recent_systolic_delta_abs"] == 0
    f = named(history.observe(reading("p", 131, 80, NOON + gap)))
    assert f["log_minutes_since_previous"] == pytest.approx(math.log1p(gap.total_seconds() / 60))
    assert f["same_session"] == same_session
    assert f["recent_systolic_delta_abs"] == (11 if recent else 0)
    assert f["systolic_delta_abs"] == 11  # the plain change stays, whatever the gap


@pytest.mark.parametrize("gap", [timedelta(0), timedelta(minutes=1), STEP, timedelta(hours=12)])
def test_minutes_since_previous_reads_a_feature_row(gap: timedelta) -> None:
    """What the alert logic gets (its dense cadence): None for a patient's first reading, else the gap."""
    history = PatientHistory()
    assert minutes_since_previous(history.observe(reading("p", 120, 80))) is None
    row = np.asarray(history.observe(reading("p", 125, 80, NOON + gap)))
    assert minutes_since_previous(row) == pytest.approx(gap.total_seconds() / 60)


def test_alert_context_is_the_usual_pressure_and_the_previous_reading() -> None:
    """What the alert logic gets from the history (bp.alerts.context_columns): the expected pressure at this hour
    (the reading minus its deviation) and the previous reading; no previous reading for a first one."""
    history = PatientHistory()
    values = [(130.0, 85.0, NOON), (128.0, 84.0, NOON + STEP), (96.0, 58.0, NOON + STEP + timedelta(minutes=1))]
    rows = feature_matrix(history, [reading("p", s, d, at) for s, d, at in values])
    first, second, third = (context_of(c) for c in context_columns(rows).tolist())
    assert (first.usual_systolic, first.usual_diastolic) == (130.0, 85.0)
    assert first.previous_systolic is None and first.previous_diastolic is None
    assert (second.previous_systolic, second.previous_diastolic) == (130.0, 85.0)
    assert (third.previous_systolic, third.previous_diastolic) == (128.0, 84.0)
    named_third = named(tuple(rows[2]))
    assert third.usual_systolic == pytest.approx(96.0 - named_third["systolic_dev"])
    assert third.deviation(96.0, 58.0) < -50  # far below this patient's usual pressure
