"""Every clinical cut-point, on both sides (values written out by hand from the cited guidelines)."""

from __future__ import annotations

import pytest

from bp.clinical import Category, assess, categorize, is_actionable, is_plausible, prioritize
from bp.reading import Priority

# ACC/AHA 2017: normal <120 and <80; elevated 120-129 and <80; stage 1 130-139 or 80-89; stage 2 >=140 or >=90;
# crisis >180 and/or >120.
CATEGORY_CASES = [
    (119, 79, Category.NORMAL),
    (119.9, 79.9, Category.NORMAL),
    (120, 79, Category.ELEVATED),
    (129, 79, Category.ELEVATED),
    (129.9, 79, Category.ELEVATED),
    (130, 79, Category.STAGE_1),
    (119, 80, Category.STAGE_1),
    (139, 89, Category.STAGE_1),
    (139.9, 89.9, Category.STAGE_1),
    (140, 70, Category.STAGE_2),
    (110, 90, Category.STAGE_2),
    (180, 120, Category.STAGE_2),
    (180.1, 100, Category.CRISIS),
    (181, 100, Category.CRISIS),
    (150, 121, Category.CRISIS),
    (150, 120.1, Category.CRISIS),
    (85, 55, Category.NORMAL),  # hypotension is reported by a rule, not as a category
]


@pytest.mark.parametrize(("systolic", "diastolic", "expected"), CATEGORY_CASES)
def test_acc_aha_categories(systolic: float, diastolic: float, expected: Category) -> None:
    assert categorize(systolic, diastolic) is expected


# Seed thresholds: hypotension if systolic < 90 or diastolic < 60; hypertension if systolic > 140 or diastolic > 90.
RULE_CASES = [
    (90, 60, set()),
    (89.9, 60, {"hypotension"}),
    (90, 59.9, {"hypotension"}),
    (89, 70, {"hypotension"}),
    (100, 59, {"hypotension"}),
    (140, 90, set()),
    (140.1, 90, {"hypertension"}),
    (141, 80, {"hypertension"}),
    (130, 91, {"hypertension"}),
    (120, 80, set()),
    (181, 100, {"hypertension", "hypertensive_crisis"}),
    (150, 121, {"hypertension", "hypertensive_crisis"}),
    (145, 55, {"hypotension", "hypertension"}),  # wide pulse pressure fires both
]


@pytest.mark.parametrize(("systolic", "diastolic", "expected"), RULE_CASES)
def test_seed_rules(systolic: float, diastolic: float, expected: set[str]) -> None:
    assert set(assess(systolic, diastolic).anomaly_types) == expected


@pytest.mark.parametrize(
    ("systolic", "diastolic", "risk", "threshold", "expected"),
    [
        (185, 100, 0.01, 0.5, Priority.CRITICAL),  # crisis is critical whatever the model says
        (185, 100, None, None, Priority.CRITICAL),
        (150, 95, 0.5, 0.5, Priority.HIGH),  # at the threshold counts
        (150, 95, 0.49, 0.5, Priority.MEDIUM),  # rule fired, model low: kept, only prioritised
        (150, 95, None, None, Priority.HIGH),  # rules only
        (125, 78, 0.9, 0.5, Priority.HIGH),  # model alone
        (125, 78, 0.1, 0.5, None),
        (125, 78, None, None, None),
    ],
)
def test_prioritize(
    systolic: float, diastolic: float, risk: float | None, threshold: float | None, expected: Priority | None
) -> None:
    assert prioritize(assess(systolic, diastolic), risk, threshold) == expected


def test_actionable_is_critical_or_high() -> None:
    assert is_actionable(Priority.CRITICAL) and is_actionable(Priority.HIGH)
    assert not is_actionable(Priority.MEDIUM) and not is_actionable(None)


@pytest.mark.parametrize(
    ("systolic", "diastolic", "plausible"),
    [(40, 20, True), (39.9, 20, False), (40, 19.9, False), (300, 200, True), (300.1, 100, False), (150, 200.1, False)],
)
def test_plausibility_bounds(systolic: float, diastolic: float, plausible: bool) -> None:
    assert is_plausible(systolic, diastolic) is plausible
