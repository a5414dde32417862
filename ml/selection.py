"""Choices made on the development patients only: the out-of-fold risks and the alert policy.

The pipeline (StandardScaler + LogisticRegression, no class weights so that the risk stays a calibrated
probability) is fitted once per cross-validation fold on the other folds
(:func:`sklearn.model_selection.cross_val_predict` with ``method="predict_proba"``); its out-of-fold (OOF) risks
cover every development reading, and the alert threshold is chosen on them (:data:`THRESHOLD_RULE`). The
artifact's pipeline is then refitted on all development patients.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from bp.alerts import AlertPolicy
from bp.errors import ModelError
from bp.truth import EpisodeKind
from ml.dataset import BoolArray, Dataset, FloatArray, IntArray, fold_of_rows
from ml.episodes import WEEK_S, gaps_from_features, patient_outcomes, run_alerts, summarise

log = logging.getLogger("ml.selection")

# The goals of issue 13, per episode type (recall on both schedules), in the clinical unit.
RECALL_GOALS: dict[str, float] = {
    EpisodeKind.HYPERTENSIVE_CRISIS.value: 0.99,
    EpisodeKind.ACUTE_HYPOTENSION.value: 0.98,
    EpisodeKind.SHARP_RISE.value: 0.90,
}
FALSE_ALERTS_GOAL = 0.25  # false alert episodes per patient-week
SHARE_TRUE_GOAL = 0.5  # of all alerts, at the default prevalence
MEDIAN_DELAY_GOAL = 2.0  # readings
RECALL_MARGIN = 0.005  # asked of the out-of-fold recall on top of the goal (absorbs sampling variation)
THRESHOLDS = (0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8)
CONFIRMATIONS = ((1, 1), (2, 2), (2, 3))
# An hour, a day or two days without a hit before an alert resolves. Longer is quieter (a flare a day after the last
# one is the same problem); the grid stops at two days, about as long as a clinician's review of an open alert waits.
RESOLVE_MINUTES = (60.0, 1440.0, 2880.0)
CRISIS_CONFIRM_RISKS = (None, 0.9)  # None: the threshold; without confirmation (1 of 1) it makes no difference
DENSE_STEPS = (0.05, 0.1, 0.15, 0.2)  # second stage: dense_threshold = the chosen threshold + each
HYPOTENSIVE_STEPS = (0.05, 0.1, 0.15, 0.2)  # fourth stage: hypotensive_threshold = the chosen threshold - each
# fifth stage: sparse_hypotensive_threshold = the fourth stage's hypotensive threshold (else its threshold) - each
SPARSE_HYPOTENSIVE_STEPS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
# sixth stage: dense_threshold = the fifth stage's dense threshold (else its threshold) + each, hypertensive only
DENSE_HYPERTENSIVE_STEPS = DENSE_STEPS
RECALL_COST_ALLOWANCE = 0.01  # episode recall (any goal, any schedule) the sixth stage may give up for quiet
FALSE_ALERTS_MARGIN = 0.03  # the fourth stage keeps this much of the false-alert goal free out of fold
REMEASURE_AGREE_MMHG = (0.0, 10.0, 15.0)  # 0: off; a home pair's re-measurement confirms a hit it agrees with
MAX_WORKERS = 4  # processes that run the candidates (at most the machine's cores)
CRITICAL_GOAL = 1.0  # share of confirmed crisis-range episodes alerted as critical (ml.episodes.DEFINITIONS)
# Third stage: a crisis-range reading whose previous reading agrees within crisis_agree_mmhg and that is at least
# crisis_rise_mmhg above the patient's usual pressure confirms itself. Every agreement stays >= 15 mmHg below the
# smallest cuff-artefact jump (+40 mmHg systolic, bp.physiology), so an artefact never agrees with the reading before.
CRISIS_AGREE_MMHG = (10.0, 15.0, 20.0, 25.0)
CRISIS_RISE_MMHG = (20.0, 25.0, 30.0)
CRISIS_FALSE_ALERT_ALLOWANCE = 0.01  # false alert episodes per patient-week the third stage may add, per schedule
POLICY_RULE = (
    "on the out-of-fold risks of the development patients, every combination of a risk threshold "
    f"({', '.join(f'{t:g}' for t in THRESHOLDS)}), a confirmation k of n "
    f"({', '.join(f'{k} of {n}' for k, n in CONFIRMATIONS)}), a resolution time after the last hit "
    f"({', '.join(f'{m:g}' for m in RESOLVE_MINUTES)} min) and a risk at which a lone crisis-range reading "
    f"confirms itself ({', '.join('the threshold' if c is None else f'{c:g}' for c in CRISIS_CONFIRM_RISKS)}) "
    "and how closely a re-measurement must agree with a hit to confirm it "
    f"({', '.join('off' if a == 0 else f'{a:g} mmHg' for a in REMEASURE_AGREE_MMHG)}) "
    "(1 of 1 confirms every hit, so only with the threshold and without re-measurement) "
    "is run through bp.alerts on each schedule; among "
    f"those whose episode recall reaches every goal + {RECALL_MARGIN} on every schedule and whose median "
    f"detection delay is <= {MEDIAN_DELAY_GOAL:g} readings (and, if any of those alerts every confirmed crisis-range "
    "episode "
    f"as critical, share >= {CRITICAL_GOAL:g}, on every schedule within the false-alert goal, among those only), "
    "the one with the fewest false alert episodes per "
    "patient-week on its worst schedule (ties: the fewest summed over the schedules, then the higher threshold, "
    "then the shorter resolution time, then the lower crisis confirmation risk). If none qualifies: among those "
    "within the "
    f"false-alert goal ({FALSE_ALERTS_GOAL:g} per patient-week) on every schedule, the one with the largest "
    "smallest recall slack (recall - goal), so that alerts stay few enough to be read; if none is within it either, "
    "the one with the fewest false alerts. The run then says the goals were not met out of fold. When one "
    "qualified, a second stage runs the chosen policy with a threshold for readings at a dense cadence "
    f"(dense_threshold) of its threshold + {', + '.join(f'{d:g}' for d in DENSE_STEPS)} the same way and "
    "picks among them and the first choice by the same rule (ties: the lower dense threshold, none first). "
    "A third stage runs that choice with a crisis-range reading confirmed by the patient's previous reading when "
    "the two agree within crisis_agree_mmhg "
    f"({', '.join(f'{a:g}' for a in CRISIS_AGREE_MMHG)} mmHg) and the reading is a re-measurement or at least "
    f"crisis_rise_mmhg ({', '.join(f'{r:g}' for r in CRISIS_RISE_MMHG)} mmHg) above the patient's usual pressure; "
    "among those that "
    "still qualify (and meet the crisis goal if the choice did), stay within the false-alert goal and add at most "
    f"{CRISIS_FALSE_ALERT_ALLOWANCE:g} false alert episodes per patient-week on any schedule, the one that alerts "
    "the largest share of crisis-range episodes as critical already at their first crisis-range reading (worst "
    "schedule; ties: the fewest false alerts, then the smaller agreement, then the larger rise) replaces the choice "
    "if that share is larger. Out of fold nearly every crisis-range episode is alerted as critical sooner or later, "
    "so that share cannot tell the candidates apart; the share already at the first crisis-range reading is what an "
    "episode gets whose later readings are missing or whose only crisis-range reading that one is. A fourth "
    "stage runs that choice with a threshold for readings whose direction is hypotensive (hypotensive_threshold) of "
    f"its threshold - {', - '.join(f'{d:g}' for d in HYPOTENSIVE_STEPS)} and keeps, among those that still qualify "
    f"and stay within the false-alert goal - {FALSE_ALERTS_MARGIN:g} per patient-week on every schedule, the one "
    "with the highest acute-hypotension recall on its worst schedule (the goal with the least slack; ties: the "
    "fewest false alerts, then the higher hypotensive threshold, none first). A fifth stage runs that choice with "
    "a threshold for hypotensive readings not at a dense cadence (sparse_hypotensive_threshold: home readings) of "
    f"its hypotensive threshold (else its threshold) - {', - '.join(f'{d:g}' for d in SPARSE_HYPOTENSIVE_STEPS)} "
    "and keeps, among those that still qualify and stay within the same false-alert margin on every schedule, the "
    "one with the highest acute-hypotension recall summed over the schedules (ties: the fewest false alerts, then "
    "the higher threshold, none first). When the choice has a hypotensive threshold (so that a dense threshold "
    "no longer applies to hypotensive readings), a sixth stage runs it with a dense threshold of its dense "
    f"threshold (else its threshold) + {', + '.join(f'{d:g}' for d in DENSE_HYPERTENSIVE_STEPS)} and keeps, among "
    "those that still qualify and keep every episode recall on every schedule within "
    f"{RECALL_COST_ALLOWANCE:g} of the choice's, the one with the fewest false alerts by the first rule (ties: "
    "the lower dense threshold). The second stage ran before the hypotensive thresholds existed, when a higher "
    "dense threshold also missed drops; the sixth asks the question again for hypertensive readings alone, at a "
    "bounded cost in recall"
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


def _schedule_rows(data: Dataset, rows: IntArray) -> dict[str, IntArray]:
    schedules = np.asarray(data.schedules, dtype=np.str_)[data.patient[rows]]
    return {name: rows[schedules == name] for name in sorted(set(schedules.tolist()))}


def _weeks(data: Dataset, rows: IntArray) -> float:
    """Observed weeks per patient (the simulated span of these rows)."""
    return float(data.time[rows].max() - data.time[rows].min() + 1.0) / WEEK_S if rows.size else 0.0


def choose_policy(data: Dataset, rows: IntArray, risk: FloatArray) -> dict[str, Any]:
    """Apply :data:`POLICY_RULE` to the out-of-fold risks ``risk`` of ``rows``; the policy, whether it held, why."""
    by_schedule = _schedule_rows(data, rows)
    position = {int(r): i for i, r in enumerate(rows.tolist())}
    schedule_risk = {name: risk[[position[int(r)] for r in srows.tolist()]] for name, srows in by_schedule.items()}
    candidates: list[dict[str, Any]] = []
    grid = [
        AlertPolicy(
            threshold=t, confirm_k=k, confirm_n=n, resolve_minutes=m, crisis_confirm_risk=c, remeasure_agree_mmhg=a
        )
        for t in THRESHOLDS
        for k, n in CONFIRMATIONS
        for m in RESOLVE_MINUTES
        for c in CRISIS_CONFIRM_RISKS
        for a in REMEASURE_AGREE_MMHG
        if k > 1 or (c is None and a == 0)
    ]
    # A schedule without re-measurements (no reading within remeasure_minutes of the previous one, e.g. every
    # 15 min) gives the same alerts whatever the agreement: those runs are done once.
    gaps = {name: gaps_from_features(data.x[srows]) for name, srows in by_schedule.items()}
    done: dict[tuple[str, str], dict[str, Any]] = {}

    def key_of(name: str, policy: AlertPolicy) -> tuple[str, str]:
        effective = policy
        if not (gaps[name] <= policy.remeasure_minutes).any():
            effective = replace(policy, remeasure_agree_mmhg=0.0)
        return name, json.dumps(effective.to_dict(), sort_keys=True)

    def run(key: tuple[str, str]) -> dict[str, Any]:
        name, policy = key[0], AlertPolicy.from_dict(json.loads(key[1]))
        srows = by_schedule[name]
        alerts = run_alerts(data, srows, schedule_risk[name], policy, gaps[name])
        return summarise(patient_outcomes(data, srows, alerts, _weeks(data, srows)), resamples=0)

    def evaluate(policy: AlertPolicy) -> dict[str, Any]:
        per: dict[str, dict[str, Any]] = {}
        for name in by_schedule:
            key = key_of(name, policy)
            if key not in done:
                done[key] = run(key)
            per[name] = done[key]
        slack = min(
            (s["recall"][kind]["value"] or 0.0) - goal for s in per.values() for kind, goal in RECALL_GOALS.items()
        )

        def worst_share(metric: str) -> float:
            """The smallest share over the schedules (a schedule without such episodes counts as 1)."""
            return min(1.0 if s[metric]["value"] is None else s[metric]["value"] for s in per.values())

        critical = worst_share("crisis_alerted_critical")
        confirmed = worst_share("confirmed_crisis_alerted_critical")
        at_first = worst_share("crisis_critical_at_first")
        delay = max(s["median_delay_readings"]["value"] or 0.0 for s in per.values())
        false = max(s["false_alerts_per_patient_week"]["value"] or 0.0 for s in per.values())
        return {
            "policy": policy.to_dict(),
            "recall_slack": slack,
            "crisis_alerted_critical": critical,
            "confirmed_crisis_alerted_critical": confirmed,
            "crisis_critical_at_first": at_first,
            "median_delay_readings": delay,
            "false_alerts_per_patient_week": false,
            "false_alerts_summed": sum(s["false_alerts_per_patient_week"]["value"] or 0.0 for s in per.values()),
            "qualifies": slack >= RECALL_MARGIN and delay <= MEDIAN_DELAY_GOAL,
            "critical_and_quiet": confirmed >= CRITICAL_GOAL and false <= FALSE_ALERTS_GOAL,
            "by_schedule": {
                name: {
                    "recall": {kind: s["recall"][kind]["value"] for kind in RECALL_GOALS},
                    "crisis_alerted_critical": s["crisis_alerted_critical"]["value"],
                    "confirmed_crisis_alerted_critical": s["confirmed_crisis_alerted_critical"]["value"],
                    "crisis_critical_at_first": s["crisis_critical_at_first"]["value"],
                    "false_alerts_per_patient_week": s["false_alerts_per_patient_week"]["value"],
                    "alerts_per_patient_week": s["alerts_per_patient_week"]["value"],
                    "median_delay_readings": s["median_delay_readings"]["value"],
                }
                for name, s in per.items()
            },
        }

    def evaluate_all(policies: Sequence[AlertPolicy]) -> list[dict[str, Any]]:
        """:func:`evaluate` of each, the runs not done yet spread over the cores first."""
        keys = (key_of(name, policy) for policy in policies for name in by_schedule)
        pending = [key for key in dict.fromkeys(keys) if key not in done]
        done.update(zip(pending, _in_parallel(run, pending), strict=True))
        return [evaluate(policy) for policy in policies]

    candidates = evaluate_all(grid)
    qualifying = [c for c in candidates if c["qualifies"]]
    # The crisis goal narrows the choice only where it costs no more than the false-alert goal allows.
    strict = any(c["critical_and_quiet"] for c in qualifying)

    def eligible(c: dict[str, Any]) -> bool:
        return bool(c["qualifies"] and (c["critical_and_quiet"] or not strict))

    def roomy(stage: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The hypotensive stages' pool: eligible and FALSE_ALERTS_MARGIN within the false-alert goal."""
        return [
            c
            for c in stage
            if eligible(c) and c["false_alerts_per_patient_week"] <= FALSE_ALERTS_GOAL - FALSE_ALERTS_MARGIN
        ]

    stages: list[dict[str, Any]] = []  # the choice after each stage (feasible runs only)
    if qualifying:
        best = min(filter(eligible, qualifying), key=_preference)
        stages.append(best["policy"])
        first = AlertPolicy.from_dict(best["policy"])
        dense = evaluate_all(
            [
                replace(first, dense_threshold=round(first.threshold + step, 2))
                for step in DENSE_STEPS
                if first.threshold + step <= 1.0
            ]
        )
        candidates += dense
        best = min([best, *filter(eligible, dense)], key=_preference)
        stages.append(best["policy"])
        chosen = AlertPolicy.from_dict(best["policy"])
        crisis = evaluate_all(
            [
                replace(chosen, crisis_agree_mmhg=agree, crisis_rise_mmhg=rise)
                for agree in CRISIS_AGREE_MMHG
                for rise in CRISIS_RISE_MMHG
            ]
        )
        candidates += crisis
        best = _crisis_stage(best, crisis, eligible)
        stages.append(best["policy"])
        third = AlertPolicy.from_dict(best["policy"])
        low = evaluate_all(
            [
                replace(third, hypotensive_threshold=round(third.threshold - step, 2))
                for step in HYPOTENSIVE_STEPS
                if third.threshold - step > 0.0
            ]
        )
        candidates += low
        best = min([best, *roomy(low)], key=_hypotension_preference)
        stages.append(best["policy"])
        fourth = AlertPolicy.from_dict(best["policy"])
        low_threshold = fourth.threshold if fourth.hypotensive_threshold is None else fourth.hypotensive_threshold
        sparse = evaluate_all(
            [
                replace(fourth, sparse_hypotensive_threshold=round(low_threshold - step, 2))
                for step in SPARSE_HYPOTENSIVE_STEPS
                if low_threshold - step > 0.0
            ]
        )
        candidates += sparse
        best = min([best, *roomy(sparse)], key=_sparse_hypotension_preference)
        stages.append(best["policy"])
        fifth = AlertPolicy.from_dict(best["policy"])
        if fifth.hypotensive_threshold is not None:
            high = fifth.threshold if fifth.dense_threshold is None else fifth.dense_threshold
            dense_high = evaluate_all(
                [
                    replace(fifth, dense_threshold=round(high + step, 2))
                    for step in DENSE_HYPERTENSIVE_STEPS
                    if high + step <= 1.0
                ]
            )
            candidates += dense_high
            kept = [c for c in dense_high if eligible(c) and _recall_kept(c, best, RECALL_COST_ALLOWANCE)]
            best = min([best, *kept], key=_preference)
        stages.append(best["policy"])
    else:
        quiet = [c for c in candidates if c["false_alerts_per_patient_week"] <= FALSE_ALERTS_GOAL]
        if quiet:
            best = max(quiet, key=lambda c: (round(c["recall_slack"], 6), -c["false_alerts_per_patient_week"]))
        else:
            best = min(candidates, key=lambda c: c["false_alerts_per_patient_week"])
        log.warning("no alert policy meets the recall goals out of fold; using the rule's fallback")
    return {
        "rule": POLICY_RULE,
        "feasible": bool(qualifying),
        "chosen": best,
        "stages": stages,
        "candidates": candidates,
    }


_WORK: list[Callable[[Any], Any]] = []  # the function _in_parallel's forked workers run (inherited, not pickled)


def _call(item: Any) -> Any:
    return _WORK[0](item)


def _in_parallel(function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``[function(i) for i in items]``, spread over the machine's cores by forked workers, which inherit the data
    the function closes over instead of receiving a copy (only each item and its result are pickled). The runs are
    independent and deterministic, so the result is the same as in one process; without ``fork`` (or with one
    core) it is that loop."""
    workers = min(os.cpu_count() or 1, MAX_WORKERS, len(items))
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [function(i) for i in items]
    _WORK[:] = [function]
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_call, items, chunksize=1)
    finally:
        _WORK.clear()


def _crisis_stage(
    best: dict[str, Any], candidates: Sequence[dict[str, Any]], eligible: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The third stage of :data:`POLICY_RULE`: ``best`` or the crisis-agreement candidate that replaces it."""

    def affordable(c: dict[str, Any]) -> bool:
        return c["false_alerts_per_patient_week"] <= FALSE_ALERTS_GOAL and all(
            s["false_alerts_per_patient_week"]
            <= best["by_schedule"][name]["false_alerts_per_patient_week"] + CRISIS_FALSE_ALERT_ALLOWANCE
            for name, s in c["by_schedule"].items()
        )

    pool = [c for c in candidates if eligible(c) and affordable(c)]
    if best["critical_and_quiet"]:
        pool = [c for c in pool if c["critical_and_quiet"]]
    if not pool:
        return best
    top = min(
        pool,
        key=lambda c: (
            -c["crisis_critical_at_first"],
            c["false_alerts_per_patient_week"],
            round(c["false_alerts_summed"], 9),
            c["policy"]["crisis_agree_mmhg"],
            -c["policy"]["crisis_rise_mmhg"],
        ),
    )
    return top if top["crisis_critical_at_first"] > best["crisis_critical_at_first"] else best


def _recall_kept(candidate: dict[str, Any], best: dict[str, Any], allowance: float) -> bool:
    """Every episode recall of ``candidate``, on every schedule, is at most ``allowance`` below ``best``'s."""
    return all(
        (s["recall"][kind] or 0.0) >= (best["by_schedule"][name]["recall"][kind] or 0.0) - allowance - 1e-9
        for name, s in candidate["by_schedule"].items()
        for kind in RECALL_GOALS
    )


def _preference(candidate: dict[str, Any]) -> tuple[float, float, float, float, float, float]:
    """Order of the qualifying candidates: fewest false alerts on the worst schedule; ties: fewest summed over the
    schedules, higher threshold, shorter resolution time, lower crisis confirmation risk, lower dense threshold
    (none: the threshold)."""
    p = candidate["policy"]
    crisis = p["threshold"] if p.get("crisis_confirm_risk") is None else p["crisis_confirm_risk"]
    dense = p["threshold"] if p.get("dense_threshold") is None else p["dense_threshold"]
    return (
        candidate["false_alerts_per_patient_week"],
        round(candidate["false_alerts_summed"], 9),
        -p["threshold"],
        p["resolve_minutes"],
        crisis,
        dense,
    )


def _hypotension_preference(candidate: dict[str, Any]) -> tuple[float, float, float]:
    """Order of the third stage: highest acute-hypotension recall on the worst schedule, then the fewest false
    alerts, then the higher hypotensive threshold (none: the threshold)."""
    kind = EpisodeKind.ACUTE_HYPOTENSION.value
    recall = min((s["recall"][kind] or 0.0) for s in candidate["by_schedule"].values())
    p = candidate["policy"]
    low = p["threshold"] if p.get("hypotensive_threshold") is None else p["hypotensive_threshold"]
    return (-round(recall, 9), round(candidate["false_alerts_per_patient_week"], 9), -low)


def _sparse_hypotension_preference(candidate: dict[str, Any]) -> tuple[float, float, float]:
    """Order of the fifth stage: highest acute-hypotension recall summed over the schedules, then the fewest false
    alerts, then the higher sparse hypotensive threshold (none: the hypotensive threshold, else the threshold)."""
    kind = EpisodeKind.ACUTE_HYPOTENSION.value
    recall = sum((s["recall"][kind] or 0.0) for s in candidate["by_schedule"].values())
    p = candidate["policy"]
    low = p.get("sparse_hypotensive_threshold") or p.get("hypotensive_threshold") or p["threshold"]
    return (-round(recall, 9), round(candidate["false_alerts_per_patient_week"], 9), -low)


@dataclass(frozen=True, slots=True)
class Development:
    """What the development (non-test) patients gave: OOF risks, the threshold choice, the refitted pipeline."""

    rows: IntArray  # dataset rows of the development patients, in stream order
    fold: IntArray  # per row
    risk: FloatArray  # out-of-fold risk per row
    selection: dict[str, Any]
    pipeline: Pipeline

    @property
    def policy(self) -> AlertPolicy:
        return AlertPolicy.from_dict(self.selection["chosen"]["policy"])


def develop(data: Dataset, train: BoolArray, folds: Sequence[IntArray]) -> Development:
    """Cross-validate over the development patients, choose the threshold on the OOF risks, refit on all of them.

    Never sees a test row: everything here is indexed by ``train``.
    """
    rows = np.flatnonzero(train)
    fold = fold_of_rows(data.patient[rows], folds)
    started = time.perf_counter()
    x, y = data.x[rows], data.y[rows]
    risk = out_of_fold_risk(x, y, fold)
    log.info("%d-fold out-of-fold risks in %.1f s", len(folds), time.perf_counter() - started)
    started = time.perf_counter()
    selection = choose_policy(data, rows, risk)
    chosen = selection["chosen"]
    log.info(
        "alert policy chosen in %.1f s (%s): %s; out of fold: false alerts %.3f/patient-week, recall slack %+.3f",
        time.perf_counter() - started,
        "recall and delay goals reachable" if selection["feasible"] else "recall or delay goal missed",
        chosen["policy"], chosen["false_alerts_per_patient_week"], chosen["recall_slack"],
    )  # fmt: skip
    started = time.perf_counter()
    pipeline = fit(x, y)
    log.info("refitted on all %d development readings in %.1f s", rows.size, time.perf_counter() - started)
    return Development(rows=rows, fold=fold, risk=risk, selection=selection, pipeline=pipeline)
