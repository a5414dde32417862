"""Clinical threshold rules and blood-pressure categories: the one table every component uses.

Sources:
- Seed thresholds: the alerting rule of the original bp-stream prototype (and of most projects of this kind):
  hypotension if systolic < 90 or diastolic < 60 mmHg; hypertension if systolic > 140 or diastolic > 90 mmHg.
  Hypotension at < 90/60 is also the usual clinical convention (e.g. NHS, AHA "Low blood pressure").
- Categories: Whelton PK et al., 2017 ACC/AHA Guideline for the Prevention, Detection, Evaluation and Management of
  High Blood Pressure in Adults, Hypertension 2018;71:e13-e115, Table 6 (normal, elevated, stage 1, stage 2) and
  section 11.2 (hypertensive crisis: systolic > 180 and/or diastolic > 120 mmHg).
- Plausibility bounds: wider than any value a working cuff reports on a living adult (records reported in the
  literature stay inside 40-300 / 20-200 mmHg); outside them a reading is a device or transcription error.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from bp.reading import Priority


class Category(StrEnum):
    """ACC/AHA 2017 blood-pressure category (hypotension is reported separately, as a rule)."""

    NORMAL = "normal"
    ELEVATED = "elevated"
    STAGE_1 = "hypertension_stage_1"
    STAGE_2 = "hypertension_stage_2"
    CRISIS = "hypertensive_crisis"


# Anomaly types (keyword values in Elasticsearch, labels on dashboards).
HYPOTENSION = "hypotension"
HYPERTENSION = "hypertension"
HYPERTENSIVE_CRISIS = "hypertensive_crisis"
MODEL_RISK = "model_risk"
ANOMALY_TYPES = (HYPOTENSION, HYPERTENSION, HYPERTENSIVE_CRISIS, MODEL_RISK)

# Plausibility bounds in mmHg, inclusive. Outside: rejected as implausible.
SYSTOLIC_BOUNDS = (40.0, 300.0)
DIASTOLIC_BOUNDS = (20.0, 200.0)


@dataclass(frozen=True, slots=True)
class Rule:
    """A seed threshold rule: fires when systolic or diastolic crosses its limit (strictly)."""

    name: str
    anomaly_type: str
    systolic_below: float | None = None
    diastolic_below: float | None = None
    systolic_above: float | None = None
    diastolic_above: float | None = None

    def fires(self, systolic: float, diastolic: float) -> bool:
        """True when the reading crosses any of this rule's limits."""
        return (
            (self.systolic_below is not None and systolic < self.systolic_below)
            or (self.diastolic_below is not None and diastolic < self.diastolic_below)
            or (self.systolic_above is not None and systolic > self.systolic_above)
            or (self.diastolic_above is not None and diastolic > self.diastolic_above)
        )


# The seed thresholds (see module docstring).
RULES: tuple[Rule, ...] = (
    Rule("hypotension_lt_90_60", HYPOTENSION, systolic_below=90, diastolic_below=60),
    Rule("hypertension_gt_140_90", HYPERTENSION, systolic_above=140, diastolic_above=90),
)

# ACC/AHA 2017 cut-points (mmHg). A reading takes the highest category either value reaches.
CRISIS_SYSTOLIC_ABOVE = 180.0
CRISIS_DIASTOLIC_ABOVE = 120.0
STAGE_2_SYSTOLIC_FROM = 140.0
STAGE_2_DIASTOLIC_FROM = 90.0
STAGE_1_SYSTOLIC_FROM = 130.0
STAGE_1_DIASTOLIC_FROM = 80.0
ELEVATED_SYSTOLIC_FROM = 120.0


def categorize(systolic: float, diastolic: float) -> Category:
    """ACC/AHA 2017 category of a reading."""
    if systolic > CRISIS_SYSTOLIC_ABOVE or diastolic > CRISIS_DIASTOLIC_ABOVE:
        return Category.CRISIS
    if systolic >= STAGE_2_SYSTOLIC_FROM or diastolic >= STAGE_2_DIASTOLIC_FROM:
        return Category.STAGE_2
    if systolic >= STAGE_1_SYSTOLIC_FROM or diastolic >= STAGE_1_DIASTOLIC_FROM:
        return Category.STAGE_1
    if systolic >= ELEVATED_SYSTOLIC_FROM:
        return Category.ELEVATED
    return Category.NORMAL


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the rules say about a reading."""

    category: Category
    rules_fired: tuple[str, ...]
    anomaly_types: tuple[str, ...]

    @property
    def is_crisis(self) -> bool:
        return self.category is Category.CRISIS

    @property
    def is_rule_anomaly(self) -> bool:
        return bool(self.rules_fired) or self.is_crisis


@lru_cache(maxsize=65_536)  # readings are whole mmHg in practice: a few thousand distinct pairs
def assess(systolic: float, diastolic: float) -> Assessment:
    """Apply every seed rule and the ACC/AHA category to a reading (pure, so cached; Assessment is frozen)."""
    category = categorize(systolic, diastolic)
    fired = tuple(rule for rule in RULES if rule.fires(systolic, diastolic))
    types = [rule.anomaly_type for rule in fired]
    if category is Category.CRISIS:
        types.append(HYPERTENSIVE_CRISIS)
    return Assessment(category, tuple(rule.name for rule in fired), tuple(types))


def is_plausible(systolic: float, diastolic: float) -> bool:
    """Inside the documented physiological bounds (inclusive)."""
    return (
        SYSTOLIC_BOUNDS[0] <= systolic <= SYSTOLIC_BOUNDS[1] and DIASTOLIC_BOUNDS[0] <= diastolic <= DIASTOLIC_BOUNDS[1]
    )


def prioritize(assessment: Assessment, risk: float | None, threshold: float | None) -> Priority | None:
    """The priority of an anomaly, or None when the reading is not one.

    critical: crisis range, always, whatever the model says. high: the model's risk is at or above its
    threshold (or, without a model, any rule anomaly). medium: only a rule fired and the model scored it below
    its threshold. A rule anomaly is never dropped by the model, only prioritised.
    """
    model_alert = risk is not None and threshold is not None and risk >= threshold
    if assessment.is_crisis:
        return Priority.CRITICAL
    if model_alert:
        return Priority.HIGH
    if assessment.rules_fired:
        return Priority.HIGH if risk is None else Priority.MEDIUM
    return None


def is_actionable(priority: Priority | None) -> bool:
    """Critical and high are the alerts a clinician should act on."""
    return priority in (Priority.CRITICAL, Priority.HIGH)
