"""Choices made on the development patients only: the out-of-fold risks and the alert threshold.

The pipeline (StandardScaler + LogisticRegression, no class weights so that the risk stays a calibrated
probability) is fitted once per cross-validation fold on the other folds
(:func:`sklearn.model_selection.cross_val_predict` with ``method="predict_proba"``); its out-of-fold (OOF) risks
cover every development reading, and the alert threshold is chosen on them (:data:`THRESHOLD_RULE`). The
artifact's pipeline is then refitted on all development patients.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from bp.cohort import EpisodeKind
from bp.errors import ModelError
from ml.dataset import BoolArray, Dataset, FloatArray, IntArray, fold_of_rows

log = logging.getLogger("ml.selection")

RECALL_MARGIN = 0.02
FALSE_ALERT_BUDGET = 0.60  # actionable false alerts <= this share of the rules' (goal: <= 0.70, less a margin)
THRESHOLD_RULE = (
    "on the out-of-fold risks of all development (non-test) patients, the highest threshold (hence fewest false "
    "alerts) at which the consumer's actionable alerts (crisis range, or risk >= threshold) reach a recall on "
    "significant readings of at least min(1, the seed rules' recall + "
    f"{RECALL_MARGIN:.2f}) overall AND for every episode type (the model must not lose what the rules catch on any "
    "kind of episode; the margin absorbs patient-mix variation between samples), provided the actionable false "
    f"alerts stay within {FALSE_ALERT_BUDGET:.0%} of the rules' false alerts. If no threshold satisfies both, "
    "the lowest threshold within the false-alert budget, which maximises the smallest per-type recall "
    "difference (actionable - rules) within the budget; the run then says the rule was not satisfiable"
)


def make_pipeline() -> Pipeline:
    """Scaler + logistic regression (deterministic lbfgs), unfitted."""
    return Pipeline([("scale", StandardScaler()), ("logreg", LogisticRegression(C=1.0, max_iter=2000))])


def fit(x: FloatArray, y: BoolArray) -> Pipeline:
    """:func:`make_pipeline` fitted on ``x``, ``y``."""
    if y.all() or not y.any():
        raise ModelError("the training patients have only one class of readings; use more --patients or --days")
    return make_pipeline().fit(x, y)


def out_of_fold_risk(x: FloatArray, y: BoolArray, fold: IntArray) -> FloatArray:
    """Risk of every row from a pipeline fitted on the other folds (``fold[i]`` is row i's fold)."""
    if y.all() or not y.any():
        raise ModelError("the development patients have only one class of readings; use more --patients or --days")
    proba = cross_val_predict(make_pipeline(), x, y, cv=PredefinedSplit(fold), method="predict_proba")
    risk: FloatArray = proba[:, 1]
    return risk


def actionable_mask(risk: FloatArray, crisis: BoolArray, threshold: float) -> BoolArray:
    """The consumer's actionable decision, vectorised: crisis range (critical) or risk >= threshold (high)."""
    return crisis | (risk >= threshold)


def recall_groups(y: BoolArray, episode: npt.NDArray[np.str_]) -> dict[str, BoolArray]:
    """The significant readings the recall rule is applied to: all of them, and each episode type."""
    return {"overall": y} | {kind.value: y & (episode == kind.value) for kind in EpisodeKind}


def _clamp(threshold: float) -> float:
    return min(max(threshold, 1e-9), 1.0 - 1e-9)


def threshold_outcome(
    *,
    y: BoolArray,
    risk: FloatArray,
    rule: BoolArray,
    crisis: BoolArray,
    episode: npt.NDArray[np.str_],
    threshold: float,
) -> dict[str, Any]:
    """Recall of rules and actionable alerts per group and false alerts per 1,000 readings at ``threshold``."""
    act = actionable_mask(risk, crisis, threshold)
    recall: dict[str, dict[str, float | int | None]] = {}
    for name, mask in recall_groups(y, episode).items():
        n = int(mask.sum())
        rules_recall = float(rule[mask].mean()) if n else None
        act_recall = float(act[mask].mean()) if n else None
        diff = act_recall - rules_recall if act_recall is not None and rules_recall is not None else None
        recall[name] = {"positives": n, "rules": rules_recall, "actionable": act_recall, "difference": diff}
    n = max(int(y.size), 1)
    rules_fa = 1000.0 * float((rule & ~y).sum()) / n
    act_fa = 1000.0 * float((act & ~y).sum()) / n
    return {
        "recall": recall,
        "min_recall_difference": min(
            (r["difference"] for r in recall.values() if r["difference"] is not None), default=None
        ),
        "rules_false_alerts_per_1000": rules_fa,
        "actionable_false_alerts_per_1000": act_fa,
        "false_alert_reduction": 1.0 - act_fa / rules_fa if rules_fa else None,
    }


def choose_threshold(
    *, y: BoolArray, risk: FloatArray, rule: BoolArray, crisis: BoolArray, episode: npt.NDArray[np.str_]
) -> dict[str, Any]:
    """Apply :data:`THRESHOLD_RULE` to the out-of-fold readings; the threshold, whether the rule held, and why.

    Recall falls and false alerts fall as the threshold rises, so each recall constraint gives a highest
    admissible threshold (the needed-th highest risk among its significant readings outside crisis range, which
    are alerted anyway) and the false-alert budget a lowest one; the rule holds when they do not cross.
    """
    if not y.any():
        log.warning("no significant readings among development patients; threshold falls back to 0.5")
        return {"threshold": 0.5, "rule": "fallback 0.5 (no significant development readings)", "feasible": False}
    targets: dict[str, dict[str, float | int | None]] = {}
    highest = math.inf  # highest threshold meeting every recall constraint
    for name, mask in recall_groups(y, episode).items():
        positives = int(mask.sum())
        if positives == 0:
            continue
        target = min(1.0, float(rule[mask].mean()) + RECALL_MARGIN)
        needed = math.ceil(target * positives - 1e-9) - int((mask & crisis).sum())
        candidates = np.sort(risk[mask & ~crisis])[::-1]
        limit = math.inf if needed <= 0 else float(candidates[needed - 1])  # target <= 1: needed <= candidates
        targets[name] = {
            "positives": positives,
            "rules_recall": float(rule[mask].mean()),
            "target_recall": target,
            "highest_threshold": None if limit == math.inf else limit,  # None: met by crisis-range alerts alone
        }
        highest = min(highest, limit)
    negatives = ~y
    budget = FALSE_ALERT_BUDGET * float((rule & negatives).sum())
    allowed = math.floor(budget + 1e-9) - int((crisis & negatives).sum())  # crisis range alerts in any case
    negative_risk = np.sort(risk[negatives & ~crisis])[::-1]
    if allowed < 0:
        lowest = math.inf
    elif allowed >= negative_risk.size:
        lowest = 0.0
    else:
        lowest = float(np.nextafter(negative_risk[allowed], math.inf))  # at most `allowed` risks are >= it
    if highest == math.inf:
        highest = float(np.nextafter(risk.max(), math.inf))
    feasible = highest >= lowest
    if feasible:
        threshold = _clamp(highest)
    else:
        threshold = _clamp(lowest)
        log.warning(
            "threshold rule not satisfiable on the out-of-fold predictions: the recall constraints need a "
            "threshold <= %.4g, the false-alert budget >= %.4g; using %.4g (best smallest recall difference "
            "within the budget)",
            highest, lowest, threshold,
        )  # fmt: skip
    return {
        "threshold": threshold,
        "rule": THRESHOLD_RULE,
        "feasible": feasible,
        "highest_threshold_meeting_recall": highest,
        "lowest_threshold_within_budget": None if lowest == math.inf else lowest,  # None: budget unreachable
        "targets": targets,
        "out_of_fold": threshold_outcome(
            y=y, risk=risk, rule=rule, crisis=crisis, episode=episode, threshold=threshold
        ),
    }


@dataclass(frozen=True, slots=True)
class Development:
    """What the development (non-test) patients gave: OOF risks, the threshold choice, the refitted pipeline."""

    rows: IntArray  # dataset rows of the development patients, in stream order
    fold: IntArray  # per row
    risk: FloatArray  # out-of-fold risk per row
    selection: dict[str, Any]
    pipeline: Pipeline


def develop(data: Dataset, train: BoolArray, folds: Sequence[IntArray]) -> Development:
    """Cross-validate over the development patients, choose the threshold on the OOF risks, refit on all of them.

    Never sees a test row: everything here is indexed by ``train``.
    """
    rows = np.flatnonzero(train)
    fold = fold_of_rows(data.patient[rows], folds)
    started = time.perf_counter()
    x, y = data.x[rows], data.y[rows]
    rule, crisis, episode = data.rule[rows], data.crisis[rows], data.episode[rows]
    risk = out_of_fold_risk(x, y, fold)
    selection = choose_threshold(y=y, risk=risk, rule=rule, crisis=crisis, episode=episode)
    selection["per_fold"] = [
        threshold_outcome(
            y=y[fold == f], risk=risk[fold == f], rule=rule[fold == f], crisis=crisis[fold == f],
            episode=episode[fold == f], threshold=float(selection["threshold"]),
        )
        for f in range(len(folds))
    ]  # fmt: skip
    log.info(
        "%d-fold cross-validation in %.1f s; threshold %.4g (rule %s); out-of-fold: %s",
        len(folds), time.perf_counter() - started, selection["threshold"],
        "satisfied" if selection["feasible"] else "NOT satisfiable",
        {k: v for k, v in selection["out_of_fold"].items() if k != "recall"},
    )  # fmt: skip
    started = time.perf_counter()
    pipeline = fit(x, y)
    log.info("refitted on all %d development readings in %.1f s", rows.size, time.perf_counter() - started)
    return Development(rows=rows, fold=fold, risk=risk, selection=selection, pipeline=pipeline)
