"""Train and honestly evaluate the personalised risk model: ``python -m ml.train_model``.

Data: the cohort simulator (:mod:`bp.cohort`), labelled by its ground truth (``truth.significant``: the reading
belongs to a clinically significant episode); artefacts and a patient's usual readings are negatives even when a
threshold fires. Features: :func:`bp.features.feature_matrix` over the whole stream in stream order with one
:class:`~bp.features.PatientHistory`, exactly as the consumer computes them.

Patients: 20 % are held out as test patients (never used for fitting or for choosing anything); the others
are the development patients, split by patient into :data:`CV_FOLDS` folds balanced by profile. The pipeline
(StandardScaler + LogisticRegression, no class weights so that the risk stays a calibrated probability) is
fitted once per fold on the other folds; its out-of-fold (OOF) risks cover every development reading, and the
alert threshold is chosen on them (:data:`THRESHOLD_RULE`, a per-episode-type recall rule with a false-alert
budget). The artifact's pipeline is then refitted on all development patients. Every reported metric is
computed on the held-out test patients only.

Outputs (written atomically): the artifact ``{"pipeline", "metadata"}`` (joblib), a sidecar ``.json`` with the
metadata and the artifact's sha256, the test predictions (``.predictions.csv``), the OOF predictions the
threshold was chosen from (``.oof.csv``), the metrics (``.metrics.json``) and the model card (markdown).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from bp.clinical import Category, assess, is_actionable, prioritize
from bp.cohort import Cohort, EpisodeKind
from bp.errors import BpError, ConfigError, ModelError
from bp.features import ARTIFACT_FORMAT, FEATURE_NAMES, PatientHistory, feature_matrix
from bp.reading import Priority

log = logging.getLogger("ml.train_model")

DEFAULT_OUTPUT = Path("ml/artifacts/bp_logreg.joblib")
DEFAULT_MODEL_CARD = Path("ml/MODEL_CARD.md")
SIMULATION_START = datetime(2024, 1, 1, tzinfo=UTC)  # fixed, so that a seed always gives the same data
TEST_SHARE = 0.2  # of the patients, held out; the same test patients as the first version for a given seed
CV_FOLDS = 5  # grouped by patient, balanced by profile, over all non-test patients
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
FIRST_VERSION_ACTIONABLE = {"precision": 0.837, "recall": 0.797, "false_alerts_per_1000": 6.9}  # its test run
RULE_HISTORY = """\
The threshold rule was **revised after the first held-out evaluation missed the recall goal**. The first version
fitted on 60 % of the patients and chose the threshold on a single 20 % validation split as "the highest
threshold at which actionable recall (overall) >= rules' recall + 0.01 on validation". Its default run
(400 patients, 7 days, seed 42) gave threshold 0.26 and, on the test patients:

| method | precision | recall | F1 | false alerts /1000 |
|---|---|---|---|---|
| Rules only | 0.074 | 0.872 | 0.136 | 485.3 |
| Actionable (critical + high) | 0.837 | 0.797 | 0.817 | 6.9 |

Recall by episode type, rules / actionable: crisis 1.000 / 0.977, acute hypotension 0.972 / 0.616, sharp rise
0.666 / 0.812. On validation the actionable recall matched the rules', on test it fell short, mostly on acute
hypotension: one small validation split was too noisy a basis, and an overall-recall rule lets the model trade
hypotension episodes (caught by the < 90/60 rule) for sharp rises (missed by the rules). The revision (threshold
on out-of-fold risks of all non-test patients; the recall rule per episode type with a margin; a false-alert
budget) was decided from that diagnosis and from out-of-fold results only; the test patients are the same, and
this card reports the one test evaluation of the revised rule."""
METHODS = ("rules", "acc_aha_stage2_plus", "model", "actionable")
METHOD_TITLES = {
    "rules": "Rules only (seed thresholds)",
    "acc_aha_stage2_plus": "ACC/AHA stage 2 or worse",
    "model": "Model only (risk >= threshold)",
    "actionable": "Actionable alerts (critical + high)",
}

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """What one training run does; built once in main() from the flags."""

    patients: int
    days: float
    seed: int
    interval_minutes: int
    output: Path
    model_card: Path

    @property
    def readings_per_patient(self) -> int:
        return int(self.days * 24 * 60 // self.interval_minutes)

    def params(self) -> dict[str, Any]:
        return {
            "patients": self.patients,
            "days": self.days,
            "interval_minutes": self.interval_minutes,
            "readings_per_patient": self.readings_per_patient,
            "seed": self.seed,
            "simulation_start": SIMULATION_START.isoformat(),
            "test_share": TEST_SHARE,
            "cv_folds": CV_FOLDS,
            "recall_margin": RECALL_MARGIN,
            "false_alert_budget": FALSE_ALERT_BUDGET,
        }


@dataclass(frozen=True, slots=True)
class Dataset:
    """The simulated stream as arrays, one row per reading in stream order."""

    x: FloatArray
    y: BoolArray
    patient: npt.NDArray[np.int64]  # index into patient_ids
    patient_ids: tuple[str, ...]
    profiles: tuple[str, ...]  # per patient
    observation_ids: tuple[str, ...]
    episode: npt.NDArray[np.str_]  # "" outside episodes
    artefact: BoolArray
    systolic: FloatArray
    diastolic: FloatArray
    rule: BoolArray
    stage2_plus: BoolArray
    crisis: BoolArray


# ----------------------------------------------------------------------------------------------------- data


def build_dataset(cfg: TrainConfig) -> Dataset:
    """Simulate the cohort and compute features in stream order, as the consumer would."""
    cohort = Cohort(cfg.patients, cfg.seed, SIMULATION_START, timedelta(minutes=cfg.interval_minutes))
    n = cfg.patients * cfg.readings_per_patient
    log.info("simulating %d patients x %d readings (%d readings)", cfg.patients, cfg.readings_per_patient, n)
    started = time.perf_counter()
    sims = cohort.take(n)
    index = {p.patient_id: i for i, p in enumerate(cohort.patients)}
    readings = [s.reading for s in sims]
    log.info("simulated in %.1f s; computing features", time.perf_counter() - started)
    started = time.perf_counter()
    x = feature_matrix(PatientHistory(max_patients=cfg.patients), readings)
    assessments = [assess(r.systolic, r.diastolic) for r in readings]
    log.info("features and rule assessments in %.1f s", time.perf_counter() - started)
    return Dataset(
        x=x,
        y=np.fromiter((s.truth.significant for s in sims), dtype=np.bool_, count=n),
        patient=np.fromiter((index[r.patient_id] for r in readings), dtype=np.int64, count=n),
        patient_ids=tuple(p.patient_id for p in cohort.patients),
        profiles=tuple(p.profile for p in cohort.patients),
        observation_ids=tuple(r.observation_id or "" for r in readings),
        episode=np.array([s.truth.episode or "" for s in sims], dtype=np.str_),
        artefact=np.fromiter((s.truth.artefact for s in sims), dtype=np.bool_, count=n),
        systolic=np.fromiter((r.systolic for r in readings), dtype=np.float64, count=n),
        diastolic=np.fromiter((r.diastolic for r in readings), dtype=np.float64, count=n),
        rule=np.fromiter((a.is_rule_anomaly for a in assessments), dtype=np.bool_, count=n),
        stage2_plus=np.fromiter(
            (a.category in (Category.STAGE_2, Category.CRISIS) for a in assessments), dtype=np.bool_, count=n
        ),
        crisis=np.fromiter((a.is_crisis for a in assessments), dtype=np.bool_, count=n),
    )


def split_patients(n_patients: int, seed: int) -> dict[str, npt.NDArray[np.int64]]:
    """Patient indices of the development ("train") and test patients; disjoint, together every patient.

    The test patients are the last :data:`TEST_SHARE` of a seeded permutation: the same patients the first
    version (60/20/20 train/validation/test from the same permutation) held out, so the revision changed what is
    done with the development patients, not which patients are tested.
    """
    if n_patients < 3:
        raise ConfigError(f"need at least 3 patients (1 test, 2 for cross-validation), got {n_patients}")
    order = np.random.default_rng(seed).permutation(n_patients)
    n_test = max(1, round(TEST_SHARE * n_patients))
    return {"train": np.sort(order[: n_patients - n_test]), "test": np.sort(order[n_patients - n_test :])}


def cv_folds(patients: npt.NDArray[np.int64], profiles: Sequence[str], seed: int) -> list[npt.NDArray[np.int64]]:
    """Split ``patients`` into min(CV_FOLDS, len) folds of whole patients, each profile spread evenly over them.

    Profiles drive the episode mix (hypotension-prone patients have most hypotensive episodes), so balancing them
    keeps every fold's per-type recall meaningful. Deterministic for a seed.
    """
    k = min(CV_FOLDS, int(patients.size))
    if k < 2:
        raise ConfigError(f"cross-validation needs at least 2 development patients, got {patients.size}")
    shuffled = patients[np.random.default_rng(seed + 1).permutation(patients.size)]
    by_profile = sorted(shuffled.tolist(), key=lambda i: profiles[i])  # stable: shuffled within a profile
    return [np.sort(np.asarray(by_profile[f::k], dtype=np.int64)) for f in range(k)]


def fingerprint(data: Dataset, params: Mapping[str, Any]) -> str:
    """sha256 of the training data: cohort parameters, feature matrix and labels."""
    digest = hashlib.sha256()
    digest.update(json.dumps(params, sort_keys=True).encode())
    digest.update(json.dumps(list(FEATURE_NAMES)).encode())
    digest.update(np.ascontiguousarray(data.x, dtype="<f8").tobytes())
    digest.update(np.ascontiguousarray(data.y, dtype=np.uint8).tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ model


def fit(x: FloatArray, y: BoolArray) -> Pipeline:
    """Scaler + logistic regression (deterministic lbfgs)."""
    if y.all() or not y.any():
        raise ModelError("the training patients have only one class of readings; use more --patients or --days")
    pipeline = Pipeline([("scale", StandardScaler()), ("logreg", LogisticRegression(C=1.0, max_iter=2000))])
    pipeline.fit(x, y)
    return pipeline


def actionable_flags(
    systolic: FloatArray, diastolic: FloatArray, risk: FloatArray, threshold: float
) -> tuple[BoolArray, list[Priority | None]]:
    """The consumer's decision per reading: ``is_actionable(prioritize(assess(s, d), risk, threshold))``."""
    priorities = [
        prioritize(assess(s, d), r, threshold)
        for s, d, r in zip(systolic.tolist(), diastolic.tolist(), risk.tolist(), strict=True)
    ]
    return np.array([is_actionable(p) for p in priorities], dtype=np.bool_), priorities


def actionable_mask(risk: FloatArray, crisis: BoolArray, threshold: float) -> BoolArray:
    """Vectorised :func:`actionable_flags`: crisis range (critical) or risk >= threshold (high)."""
    return crisis | (risk >= threshold)


def out_of_fold_risk(x: FloatArray, y: BoolArray, fold: npt.NDArray[np.int64]) -> FloatArray:
    """Risk of every row from a pipeline fitted on the other folds (``fold[i]`` is row i's fold)."""
    risk = np.full(y.size, np.nan)
    for f in np.unique(fold).tolist():
        held = fold == f
        risk[held] = fit(x[~held], y[~held]).predict_proba(x[held])[:, 1]
    return risk


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


# ---------------------------------------------------------------------------------------------- metrics


def method_stats(flag: BoolArray, y: BoolArray) -> dict[str, float | int]:
    """Confusion counts, precision, recall, F1 and alert rates per 1,000 readings."""
    n = int(y.size)
    tp = int((flag & y).sum())
    fp = int((flag & ~y).sum())
    fn = int((~flag & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_alerts_per_1000": 1000.0 * fp / n if n else 0.0,
        "alerts_per_1000": 1000.0 * (tp + fp) / n if n else 0.0,
    }


def evaluate(
    *,
    y: BoolArray,
    risk: FloatArray,
    flags: Mapping[str, BoolArray],
    episode: npt.NDArray[np.str_],
    artefact: BoolArray,
    crisis: BoolArray,
    priorities: Sequence[Priority | None],
    profiles: Sequence[str],
) -> dict[str, Any]:
    """Every test metric; a pure function of the saved predictions."""
    two_classes = bool(y.any() and not y.all())
    base_rate = float(y.mean()) if y.size else 0.0
    methods = {name: method_stats(flags[name], y) for name in METHODS}
    by_episode: dict[str, dict[str, Any]] = {}
    for kind in EpisodeKind:
        mask = y & (episode == kind.value)
        by_episode[kind.value] = {"n": int(mask.sum())} | {
            name: float(flags[name][mask].mean()) if mask.any() else None for name in METHODS
        }
    profile_arr = np.asarray(profiles, dtype=np.str_)
    by_profile: dict[str, dict[str, Any]] = {}
    for profile in sorted(set(profiles)):
        mask = profile_arr == profile
        negatives = mask & ~y
        by_profile[profile] = {"readings": int(mask.sum())} | {
            name: 1000.0 * float((flags[name] & negatives).sum()) / float(mask.sum()) for name in METHODS
        }
    crisis_critical = all(p is Priority.CRITICAL for p, c in zip(priorities, crisis.tolist(), strict=True) if c)
    rules, actionable = methods["rules"], methods["actionable"]
    per_type = {
        kind: row["actionable"] >= row["rules"] for kind, row in by_episode.items() if row["actionable"] is not None
    }
    reduction = (
        1.0 - float(actionable["false_alerts_per_1000"]) / float(rules["false_alerts_per_1000"])
        if rules["false_alerts_per_1000"]
        else 0.0
    )
    return {
        "readings": int(y.size),
        "positives": int(y.sum()),
        "base_rate": base_rate,
        "methods": methods,
        "model_scores": {
            "roc_auc": float(roc_auc_score(y, risk)) if two_classes else None,
            "pr_auc": float(average_precision_score(y, risk)) if two_classes else None,
            "brier": float(brier_score_loss(y, risk)) if y.size else None,
            "brier_constant_base_rate": base_rate * (1.0 - base_rate),
        },
        "recall_by_episode": by_episode,
        "false_alerts_per_1000_by_profile": by_profile,
        "alerts_on_artefacts": {name: int((flags[name] & artefact).sum()) for name in METHODS},
        "artefacts": int(artefact.sum()),
        "crisis_range_readings": int(crisis.sum()),
        "crisis_range_all_critical": crisis_critical,
        "goal": {
            "actionable_recall_at_least_rules": float(actionable["recall"]) >= float(rules["recall"]),
            "false_alert_reduction": reduction,
            "actionable_recall_at_least_rules_by_episode": per_type,
            "false_alert_reduction_at_least_30pct": reduction >= 0.30,
            "met": float(actionable["recall"]) >= float(rules["recall"]) and reduction >= 0.30 and crisis_critical,
        },
    }


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """A fixed-width table of the test metrics (CLI output and model card)."""
    lines = [
        f"| {'method':<38} | {'precision':>9} | {'recall':>6} | {'F1':>5} | {'false alerts /1000':>18} |",
        f"|{'-' * 40}|{'-' * 11}|{'-' * 8}|{'-' * 7}|{'-' * 20}|",
    ]
    for name in METHODS:
        m = metrics["methods"][name]
        lines.append(
            f"| {METHOD_TITLES[name]:<38} | {m['precision']:>9.3f} | {m['recall']:>6.3f} | {m['f1']:>5.3f} "
            f"| {m['false_alerts_per_1000']:>18.1f} |"
        )
    scores = metrics["model_scores"]

    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines.append("")
    lines.append(
        f"Model: ROC AUC {show(scores['roc_auc'])}, PR AUC {show(scores['pr_auc'])}, Brier {show(scores['brier'])} "
        f"(constant base-rate predictor {scores['brier_constant_base_rate']:.3f})"
    )
    lines.append("")
    lines.append(f"| {'recall by episode type':<22} | {'n':>5} | " + " | ".join(f"{n:>19}" for n in METHODS) + " |")
    lines.append(f"|{'-' * 24}|{'-' * 7}|" + "|".join("-" * 21 for _ in METHODS) + "|")
    for kind, row in metrics["recall_by_episode"].items():
        cells = " | ".join(f"{show(row[name]):>19}" for name in METHODS)
        lines.append(f"| {kind:<22} | {row['n']:>5} | {cells} |")
    goal = metrics["goal"]
    lower = [kind for kind, ok in goal["actionable_recall_at_least_rules_by_episode"].items() if not ok]
    lines.append("")
    lines.append(
        f"Goal: actionable recall >= rules recall: {goal['actionable_recall_at_least_rules']}; false alerts "
        f"{goal['false_alert_reduction']:.1%} fewer than rules (need >= 30%); crisis-range readings all critical: "
        f"{metrics['crisis_range_all_critical']} ({metrics['crisis_range_readings']} readings); goal met: "
        f"{goal['met']}. Episode types where actionable recall < rules recall: {', '.join(lower) or 'none'}"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- outputs

PREDICTION_COLUMNS = (
    "patient_id",
    "profile",
    "observation_id",
    "systolic",
    "diastolic",
    "episode",
    "artefact",
    "label",
    "risk",
    "rule_flag",
    "stage2_flag",
    "crisis_flag",
    "model_flag",
    "actionable_flag",
    "priority",
)
OOF_COLUMNS = (
    "patient_id",
    "fold",
    "systolic",
    "diastolic",
    "episode",
    "label",
    "risk",
    "rule_flag",
    "crisis_flag",
)


def sidecar_paths(output: Path) -> dict[str, Path]:
    """Files written next to the artifact."""
    return {
        "sidecar": output.with_suffix(".json"),
        "predictions": output.with_suffix(".predictions.csv"),
        "metrics": output.with_suffix(".metrics.json"),
        "oof_predictions": output.with_suffix(".oof.csv"),
    }


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write via a temporary file in the same directory, then os.replace (readers never see a partial file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def check_writable(paths: Sequence[Path]) -> None:
    """Fail fast (before the long part) when an output cannot be written."""
    for path in paths:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise ConfigError(f"cannot write {path}: {blocker} is not a directory")
        if path.is_dir():
            raise ConfigError(f"cannot write {path}: it is a directory")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def predictions_csv(rows: Mapping[str, Sequence[Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for values in zip(*(rows[c] for c in columns), strict=True):
        writer.writerow(
            [repr(v) if isinstance(v, float) else int(v) if isinstance(v, bool | np.bool_) else v for v in values]
        )
    return buffer.getvalue()


def selection_table(selection: Mapping[str, Any]) -> str:
    """The recall constraints of the threshold rule and what the chosen threshold achieved on the OOF risks."""
    lines = [
        "| group | significant readings | rules recall | target | highest threshold meeting it | "
        "actionable recall | difference | per fold (min .. max) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    recall = selection["out_of_fold"]["recall"]
    for name, target in selection["targets"].items():
        folds = [f["recall"][name]["difference"] for f in selection["per_fold"]]
        folds = [d for d in folds if d is not None]
        spread = f"{min(folds):+.3f} .. {max(folds):+.3f}" if folds else "n/a"
        lines.append(
            f"| {name} | {target['positives']} | {target['rules_recall']:.3f} | {target['target_recall']:.3f} "
            f"| {_fmt(target['highest_threshold'], 4)} | {_fmt(recall[name]['actionable'])} "
            f"| {recall[name]['difference']:+.3f} | {spread} |"
        )
    return "\n".join(lines)


def model_card(metadata: Mapping[str, Any], metrics: Mapping[str, Any], selection: Mapping[str, Any]) -> str:
    params = metadata["params"]
    features = "\n".join(f"- `{name}`" for name in metadata["feature_names"])
    profiles = metrics["false_alerts_per_1000_by_profile"]
    profile_rows = "\n".join(
        f"| {name} | {row['readings']} | {row['rules']:.1f} | {row['actionable']:.1f} |"
        for name, row in profiles.items()
    )
    folds = metadata["cv_folds"]
    act = metrics["methods"]["actionable"]
    noisier = [name for name, row in profiles.items() if row["actionable"] > row["rules"]]
    cost = (
        f"Cost of the revised rule: the actionable alerts' precision is {act['precision']:.3f} and they raise "
        f"{act['false_alerts_per_1000']:.1f} false alerts per 1,000 readings, against "
        f"{FIRST_VERSION_ACTIONABLE['precision']:.3f} and {FIRST_VERSION_ACTIONABLE['false_alerts_per_1000']:.1f} "
        f"for the first version (recall {FIRST_VERSION_ACTIONABLE['recall']:.3f} then, {act['recall']:.3f} now). "
        + (
            f"For these profiles the actionable alerts are noisier than the rules: {', '.join(noisier)} (table below)."
            if noisier
            else "For no profile are the actionable alerts noisier than the rules."
        )
    )
    if "targets" in selection:
        oof = selection["out_of_fold"]
        fold_reductions = [f["false_alert_reduction"] for f in selection["per_fold"] if f["false_alert_reduction"]]
        verdict = (
            "The rule **was satisfied**: the threshold is the highest meeting every recall constraint, and it is "
            "within the false-alert budget."
            if selection["feasible"]
            else "The rule **could not be satisfied**: the recall constraints need a threshold <= "
            f"{_fmt(selection['highest_threshold_meeting_recall'], 4)}, the false-alert budget one >= "
            f"{_fmt(selection['lowest_threshold_within_budget'], 4)}. As the rule's fallback says, the threshold "
            "is the lowest within the budget (the best smallest per-type recall difference the budget allows); the "
            "constraints with a negative difference below are not met."
        )
        selection_text = f"""{verdict}

Out-of-fold ({sum(len(f) for f in folds)} development patients, {len(folds)} folds; per fold: the same
threshold applied to each fold's OOF risks):

{selection_table(selection)}

False alerts per 1,000 readings (OOF): rules {oof["rules_false_alerts_per_1000"]:.1f}, actionable
{oof["actionable_false_alerts_per_1000"]:.1f}: {_pct(oof["false_alert_reduction"])} fewer (budget: at least
{1 - FALSE_ALERT_BUDGET:.0%} fewer); per fold {_pct(min(fold_reductions, default=None))} to
{_pct(max(fold_reductions, default=None))} fewer."""
    else:
        selection_text = f"Fallback: {selection['rule']}."
    return f"""# Model card: bp-stream blood-pressure risk model

Generated by `python -m ml.train_model` (model version `{metadata["model_version"]}`, created
{metadata["created_at"]}). Do not edit by hand; retrain to regenerate.

## Intended use
Prioritising blood-pressure alerts in the bp-stream demo: the consumer scores every reading with this model and
ranks rule anomalies (critical: hypertensive crisis range, always; high: risk >= threshold; medium: a seed rule
fired but the model scored it low; nothing is hidden, only prioritised). **Not a medical device. Trained and
evaluated on synthetic data only; not validated on any real patient.**

## Data
Simulated by `bp.cohort.Cohort` (seed {params["seed"]}): {params["patients"]} patients, {params["days"]} days,
one reading every {params["interval_minutes"]} min ({params["readings_per_patient"]} readings per patient). Profiles:
normotensive, elevated, hypertension stage 1 and 2, hypotension-prone, athlete, elderly with wide pulse pressure;
circadian dip, biological and cuff noise, isolated cuff artefacts (negative), and clinical episodes (hypertensive
crisis, acute hypotension, sharp rise from the patient's own baseline) that build over several readings. Label:
the simulator's ground truth, "reading belongs to a clinically significant episode" (episode at >= half of its
amplitude). {len(metadata["splits"]["test"])} patients ({params["test_share"]:.0%}) are held out as test patients;
the other {len(metadata["splits"]["train"])} (development patients) are split by patient into {len(folds)}
cross-validation folds balanced by profile; no patient in two folds, no test patient in any fold.
Training-data fingerprint (sha256): `{metadata["training_fingerprint"]}`.

## Model and features
`StandardScaler` + `LogisticRegression` (scikit-learn {metadata["sklearn_version"]}, lbfgs, no class weights, so
the risk is a calibrated probability on this data). Features from `bp.features.PatientHistory.observe`, the
function the consumer uses online (rolling, circadian-adjusted baseline per patient):

{features}

The artifact's pipeline is fitted on all development patients; the per-fold pipelines only produce the
out-of-fold (OOF) risks the threshold is chosen from.

## Threshold
{metadata["threshold"]:.6f}, chosen without the test patients by this rule: {THRESHOLD_RULE}.

{selection_text}

### History of the rule
{RULE_HISTORY}

## Metrics on held-out test patients
{metrics["readings"]} readings of {metrics["test_patients"]} patients, {metrics["positives"]} significant (base rate
{metrics["base_rate"]:.3%}). Evaluated once with the threshold above; nothing was chosen on these patients.
Wall time of the run (simulation, features, {len(folds)}-fold cross-validation, refit, test scoring):
{metadata["wall_seconds"]} s.

{metrics_table(metrics)}

{cost}

False alerts per 1,000 readings by patient profile (test patients):

| profile | readings | rules | actionable |
|---|---|---|---|
{profile_rows}

Alerts on cuff artefacts ({metrics["artefacts"]} artefacts): {metrics["alerts_on_artefacts"]}.

## Limits
- Synthetic data: the episodes, artefacts and baselines follow the simulator's documented assumptions
  (`bp/cohort.py`); real patients, devices and measurement schedules differ. Performance on real data is unknown.
- The features assume a regular measurement schedule and a patient history in the consumer; after a consumer
  restart the history (and so the model's view of a patient's baseline) warms up again over ~50 readings.
- The label marks whole episodes from half amplitude; early ramp readings are not labelled.
- Rule anomalies the model scores low are not dropped: they stay indexed as medium priority.
- Per reading, the start of a hypertensive crisis in a patient whose usual pressure is already stage 2 (half of
  a rise that can be only 10-20 mmHg) looks like that patient's usual readings; the rules "catch" it only because
  they fire on every reading of such a patient. The model gives most of its lowest crisis-episode risks to such
  readings (they stay medium until the crisis reaches crisis range, then critical). As the rules' crisis recall
  is ~1, the capped target is 1.0; this is the constraint that made the per-type recall rule unsatisfiable.
- Library versions are pinned in the artifact (scikit-learn {metadata["sklearn_version"]}, joblib
  {metadata["joblib_version"]}); the consumer refuses an artifact built for other versions or features.
"""


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


# --------------------------------------------------------------------------------------------------- run


@dataclass(frozen=True, slots=True)
class Development:
    """What the development (non-test) patients gave: OOF risks, the threshold choice, the refitted pipeline."""

    rows: npt.NDArray[np.int64]  # dataset rows of the development patients, in stream order
    fold: npt.NDArray[np.int64]  # per row
    risk: FloatArray  # out-of-fold risk per row
    selection: dict[str, Any]
    pipeline: Pipeline


def develop(data: Dataset, train: BoolArray, folds: Sequence[npt.NDArray[np.int64]]) -> Development:
    """Cross-validate over the development patients, choose the threshold on the OOF risks, refit on all of them.

    Never sees a test row: everything here is indexed by ``train``.
    """
    rows = np.flatnonzero(train)
    patient = data.patient[rows]
    fold = np.full(rows.size, -1, dtype=np.int64)
    for f, members in enumerate(folds):
        fold[np.isin(patient, members)] = f
    if (fold < 0).any():
        raise ModelError("internal: a development patient is in no cross-validation fold")
    started = time.perf_counter()
    x, y = data.x[rows], data.y[rows]
    risk = out_of_fold_risk(x, y, fold)
    selection = choose_threshold(
        y=y, risk=risk, rule=data.rule[rows], crisis=data.crisis[rows], episode=data.episode[rows]
    )
    selection["per_fold"] = [
        threshold_outcome(
            y=y[fold == f], risk=risk[fold == f], rule=data.rule[rows][fold == f],
            crisis=data.crisis[rows][fold == f], episode=data.episode[rows][fold == f],
            threshold=float(selection["threshold"]),
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


def run(cfg: TrainConfig) -> dict[str, Any]:
    """The whole training run; returns the test metrics."""
    paths = sidecar_paths(cfg.output)
    check_writable([cfg.output, cfg.model_card, *paths.values()])
    started = time.perf_counter()
    data = build_dataset(cfg)
    splits = split_patients(cfg.patients, cfg.seed)
    folds = cv_folds(splits["train"], data.profiles, cfg.seed)
    train, test = np.isin(data.patient, splits["train"]), np.isin(data.patient, splits["test"])
    log.info(
        "split by patient: %d development patients in %d folds / %d test patients (%d / %d readings)",
        splits["train"].size, len(folds), splits["test"].size, int(train.sum()), int(test.sum()),
    )  # fmt: skip

    development = develop(data, train, folds)
    selection, pipeline = development.selection, development.pipeline
    threshold = float(selection["threshold"])

    risk = pipeline.predict_proba(data.x[test])[:, 1]
    actionable, priorities = actionable_flags(data.systolic[test], data.diastolic[test], risk, threshold)
    flags = {
        "rules": data.rule[test],
        "acc_aha_stage2_plus": data.stage2_plus[test],
        "model": risk >= threshold,
        "actionable": actionable,
    }
    test_patients = data.patient[test]
    profiles = [data.profiles[i] for i in test_patients.tolist()]
    metrics = evaluate(
        y=data.y[test],
        risk=risk,
        flags=flags,
        episode=data.episode[test],
        artefact=data.artefact[test],
        crisis=data.crisis[test],
        priorities=priorities,
        profiles=profiles,
    )
    metrics["threshold"] = threshold
    metrics["test_patients"] = int(splits["test"].size)

    params = cfg.params()
    fp = fingerprint(data, params)
    metadata: dict[str, Any] = {
        "format": ARTIFACT_FORMAT,
        "feature_names": list(FEATURE_NAMES),
        "threshold": threshold,
        "threshold_rule": THRESHOLD_RULE,
        "sklearn_version": sklearn.__version__,
        "joblib_version": joblib.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "training_fingerprint": fp,
        "seed": cfg.seed,
        "params": params,
        "splits": {name: [data.patient_ids[i] for i in idx.tolist()] for name, idx in splits.items()},
        "cv_folds": [[data.patient_ids[i] for i in members.tolist()] for members in folds],
        "threshold_selection": selection,
        "metrics": metrics,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_version": f"logreg-{fp[:12]}",
    }

    idx = np.flatnonzero(test)
    rows: dict[str, Sequence[Any]] = {
        "patient_id": [data.patient_ids[i] for i in test_patients.tolist()],
        "profile": profiles,
        "observation_id": [data.observation_ids[i] for i in idx.tolist()],
        "systolic": data.systolic[test].tolist(),
        "diastolic": data.diastolic[test].tolist(),
        "episode": data.episode[test].tolist(),
        "artefact": data.artefact[test].tolist(),
        "label": data.y[test].tolist(),
        "risk": risk.tolist(),
        "rule_flag": flags["rules"].tolist(),
        "stage2_flag": flags["acc_aha_stage2_plus"].tolist(),
        "crisis_flag": data.crisis[test].tolist(),
        "model_flag": flags["model"].tolist(),
        "actionable_flag": actionable.tolist(),
        "priority": [p.value if p is not None else "" for p in priorities],
    }
    dev = development.rows
    oof_rows: dict[str, Sequence[Any]] = {
        "patient_id": [data.patient_ids[i] for i in data.patient[dev].tolist()],
        "fold": development.fold.tolist(),
        "systolic": data.systolic[dev].tolist(),
        "diastolic": data.diastolic[dev].tolist(),
        "episode": data.episode[dev].tolist(),
        "label": data.y[dev].tolist(),
        "risk": development.risk.tolist(),
        "rule_flag": data.rule[dev].tolist(),
        "crisis_flag": data.crisis[dev].tolist(),
    }
    _atomic_write(cfg.output, lambda tmp: joblib.dump({"pipeline": pipeline, "metadata": metadata}, tmp))
    sha = hashlib.sha256(cfg.output.read_bytes()).hexdigest()
    _write_text(paths["sidecar"], json.dumps(metadata | {"sha256": sha}, indent=2) + "\n")
    _write_text(paths["metrics"], json.dumps(metrics, indent=2) + "\n")
    _write_text(paths["predictions"], predictions_csv(rows, PREDICTION_COLUMNS))
    _write_text(paths["oof_predictions"], predictions_csv(oof_rows, OOF_COLUMNS))
    _write_text(cfg.model_card, model_card(metadata, metrics, selection))
    log.info(
        "wrote %s (sha256 %s), %s, %s, %s, %s and %s in %.1f s total",
        cfg.output, sha[:12], paths["sidecar"], paths["metrics"], paths["predictions"], paths["oof_predictions"],
        cfg.model_card,
        time.perf_counter() - started,
    )  # fmt: skip
    return metrics


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ml.train_model",
        description="Train the bp-stream risk model on a simulated cohort and evaluate it on held-out patients.",
    )
    parser.add_argument("--patients", type=int, default=400, help="simulated patients (default 400)")
    parser.add_argument("--days", type=float, default=7.0, help="simulated days per patient (default 7)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the simulation and the split (default 42)")
    parser.add_argument("--interval-minutes", type=int, default=15, help="minutes between readings (default 15)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"artifact path (default {DEFAULT_OUTPUT})")
    parser.add_argument(
        "--model-card", type=Path, default=DEFAULT_MODEL_CARD, help=f"model card path (default {DEFAULT_MODEL_CARD})"
    )
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig(
        patients=args.patients,
        days=args.days,
        seed=args.seed,
        interval_minutes=args.interval_minutes,
        output=args.output,
        model_card=args.model_card,
    )
    if cfg.patients < 3:
        raise ConfigError(f"--patients must be at least 3 (one patient per split), got {cfg.patients}")
    if cfg.interval_minutes < 1:
        raise ConfigError(f"--interval-minutes must be at least 1, got {cfg.interval_minutes}")
    if not math.isfinite(cfg.days) or cfg.readings_per_patient < 2:
        raise ConfigError(f"--days {cfg.days} gives fewer than 2 readings per patient")
    if cfg.output.suffix != ".joblib":
        raise ConfigError(f"--output must end in .joblib, got {cfg.output}")
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = config_from_args(args)
        log.info("training with %s", asdict(cfg))
        metrics = run(cfg)
    except ConfigError as exc:
        print(f"train_model: error: {exc}", file=sys.stderr)
        return 2
    except (BpError, OSError) as exc:
        print(f"train_model: error: {exc}", file=sys.stderr)
        return 1
    print(metrics_table(metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
