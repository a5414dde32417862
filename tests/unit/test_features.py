"""The shared feature function: LRU-capped history, hand-computed deviations, artifact metadata checks."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from bp.errors import ModelError
from bp.features import (
    ARTIFACT_FORMAT,
    FEATURE_NAMES,
    PatientHistory,
    check_artifact_metadata,
    feature_matrix,
)
from bp.reading import Reading

NOON = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
STEP = timedelta(minutes=15)


def reading(pid: str, systolic: float, diastolic: float, at: datetime = NOON) -> Reading:
    return Reading(pid, at, systolic, diastolic, f"{pid}-{at.isoformat()}")


def named(row: tuple[float, ...]) -> dict[str, float]:
    assert len(row) == len(FEATURE_NAMES)
    return dict(zip(FEATURE_NAMES, row, strict=True))


def test_feature_names_are_unique() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


def test_lru_cap_evicts_least_recently_seen() -> None:
    history = PatientHistory(max_patients=3)
    for pid in ("a", "b", "c"):
        history.observe(reading(pid, 120, 80))
    history.observe(reading("a", 121, 80, NOON + STEP))  # a is now the most recent; b the least
    history.observe(reading("d", 118, 79))
    assert len(history) == 3
    assert "b" not in history
    assert all(p in history for p in ("a", "c", "d"))
    # b comes back as a stranger: first-reading features (no warm-up, no deviation).
    back = named(history.observe(reading("b", 150, 95, NOON + 2 * STEP)))
    assert back["warmup"] == 0.0
    assert back["systolic_dev"] == 0.0
    assert "c" not in history  # c was the least recent then


def test_len_never_exceeds_cap() -> None:
    history = PatientHistory(max_patients=10)
    rng = np.random.default_rng(0)
    for i, pid in enumerate(rng.integers(0, 40, size=2000).tolist()):
        history.observe(reading(f"p{pid}", 120, 80, NOON + i * STEP))
        assert len(history) <= 10
    assert len(history) == 10


def test_invalid_cap_raises() -> None:
    with pytest.raises(ValueError):
        PatientHistory(max_patients=0)


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


def test_observe_is_fast_enough_for_the_consumer() -> None:
    readings = [reading(f"p{i % 500}", 120 + i % 7, 80, NOON + (i // 500) * STEP) for i in range(50_000)]
    history = PatientHistory()
    started = time.perf_counter()
    for r in readings:
        history.observe(r)
    rate = len(readings) / (time.perf_counter() - started)
    assert rate > 20_000, f"{rate:.0f} readings/s"


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
