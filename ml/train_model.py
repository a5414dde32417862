"""Train and honestly evaluate the personalised risk model: ``python -m ml.train_model``.

Data: the cohort simulator (:mod:`bp.cohort`), labelled by its ground truth (``truth.significant``: the reading
belongs to a clinically significant episode); artefacts and a patient's usual readings are negatives even when a
threshold fires. Features: :func:`bp.features.feature_matrix` over the whole stream in stream order with one
:class:`~bp.features.PatientHistory`, exactly as the consumer computes them.

Patients are split 60/20/20 into train, validation and test (no patient in two splits). The pipeline
(StandardScaler + LogisticRegression, no class weights so that the risk stays a calibrated probability) is
fitted on train. The alert threshold is chosen on validation (:data:`THRESHOLD_RULE`). Every metric is computed
on the held-out test patients only.

Outputs (written atomically): the artifact ``{"pipeline", "metadata"}`` (joblib), a sidecar ``.json`` with the
metadata and the artifact's sha256, the test predictions (``.predictions.csv``), the metrics
(``.metrics.json``) and the model card (markdown).
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
SPLIT_SHARES = (0.6, 0.2, 0.2)  # train, validation, test (by patient)
RECALL_MARGIN = 0.01
THRESHOLD_RULE = (
    "highest threshold (hence fewest false alerts) at which the consumer's actionable alerts "
    "(crisis range, or risk >= threshold) reach, on the validation patients, a recall on significant readings of "
    f"at least the seed rules' recall + {RECALL_MARGIN:.2f} (margin for patient-to-patient variation)"
)
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
            "split_shares": list(SPLIT_SHARES),
            "recall_margin": RECALL_MARGIN,
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
    """Patient indices of train, validation and test; disjoint, every patient in exactly one split."""
    if n_patients < 3:
        raise ConfigError(f"need at least 3 patients (one per split), got {n_patients}")
    order = np.random.default_rng(seed).permutation(n_patients)
    n_test = max(1, round(SPLIT_SHARES[2] * n_patients))
    n_val = max(1, round(SPLIT_SHARES[1] * n_patients))
    n_train = n_patients - n_test - n_val
    return {
        "train": np.sort(order[:n_train]),
        "validation": np.sort(order[n_train : n_train + n_val]),
        "test": np.sort(order[n_train + n_val :]),
    }


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


def choose_threshold(y: BoolArray, risk: FloatArray, rule: BoolArray, crisis: BoolArray) -> dict[str, Any]:
    """Apply THRESHOLD_RULE on the validation readings; returns the threshold and what it achieved there."""
    positives = int(y.sum())
    if positives == 0:
        log.warning("no significant readings among validation patients; threshold falls back to 0.5")
        return {"threshold": 0.5, "rule": "fallback 0.5 (no validation positives)", "rules_recall": None}
    rules_recall = float(rule[y].mean())
    target = min(1.0, rules_recall + RECALL_MARGIN)
    needed = math.ceil(target * positives - 1e-9) - int((y & crisis).sum())  # crisis range is always alerted
    candidates = np.sort(risk[y & ~crisis])[::-1]
    if needed <= 0:
        threshold = float(np.nextafter(risk.max(), 1.0))
    elif needed > candidates.size:
        log.warning("validation recall target %.3f unreachable; using the lowest positive risk", target)
        threshold = float(candidates[-1]) if candidates.size else 0.5
    else:
        threshold = float(candidates[needed - 1])
    threshold = min(max(threshold, 1e-9), 1.0 - 1e-9)
    return {
        "threshold": threshold,
        "rule": THRESHOLD_RULE,
        "rules_recall": rules_recall,
        "target_recall": target,
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
    lines.append("")
    lines.append(
        f"Goal: actionable recall >= rules recall: {goal['actionable_recall_at_least_rules']}; false alerts "
        f"{goal['false_alert_reduction']:.1%} fewer than rules (need >= 30%); crisis-range readings all critical: "
        f"{metrics['crisis_range_all_critical']} ({metrics['crisis_range_readings']} readings)"
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


def sidecar_paths(output: Path) -> dict[str, Path]:
    """Files written next to the artifact."""
    return {
        "sidecar": output.with_suffix(".json"),
        "predictions": output.with_suffix(".predictions.csv"),
        "metrics": output.with_suffix(".metrics.json"),
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


def predictions_csv(rows: dict[str, Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PREDICTION_COLUMNS)
    for values in zip(*(rows[c] for c in PREDICTION_COLUMNS), strict=True):
        writer.writerow(
            [repr(v) if isinstance(v, float) else int(v) if isinstance(v, bool | np.bool_) else v for v in values]
        )
    return buffer.getvalue()


def model_card(metadata: Mapping[str, Any], metrics: Mapping[str, Any], validation: Mapping[str, Any]) -> str:
    params = metadata["params"]
    features = "\n".join(f"- `{name}`" for name in metadata["feature_names"])
    profiles = metrics["false_alerts_per_1000_by_profile"]
    profile_rows = "\n".join(
        f"| {name} | {row['readings']} | {row['rules']:.1f} | {row['actionable']:.1f} |"
        for name, row in profiles.items()
    )
    val_act_fa = _fmt(validation.get("actionable_false_alerts_per_1000"), 1)
    val_rules_fa = _fmt(validation.get("rules_false_alerts_per_1000"), 1)
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
amplitude). Patients split {params["split_shares"]} into train / validation / test; no patient in two splits.
Training-data fingerprint (sha256): `{metadata["training_fingerprint"]}`.

## Model and features
`StandardScaler` + `LogisticRegression` (scikit-learn {metadata["sklearn_version"]}, lbfgs, no class weights, so
the risk is a calibrated probability on this data). Features from `bp.features.PatientHistory.observe`, the
function the consumer uses online (rolling, circadian-adjusted baseline per patient):

{features}

## Threshold
{metadata["threshold"]:.6f}, chosen on the validation patients by this rule: {THRESHOLD_RULE}.
On validation: rules recall {_fmt(validation.get("rules_recall"))}, target {_fmt(validation.get("target_recall"))},
actionable recall {_fmt(validation.get("actionable_recall"))}, actionable false alerts per 1,000 readings
{val_act_fa} (rules: {val_rules_fa}).

## Metrics on held-out test patients
{metrics["readings"]} readings, {metrics["positives"]} significant (base rate {metrics["base_rate"]:.3%}).

{metrics_table(metrics)}

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
- Library versions are pinned in the artifact (scikit-learn {metadata["sklearn_version"]}, joblib
  {metadata["joblib_version"]}); the consumer refuses an artifact built for other versions or features.
"""


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


# --------------------------------------------------------------------------------------------------- run


def run(cfg: TrainConfig) -> dict[str, Any]:
    """The whole training run; returns the test metrics."""
    paths = sidecar_paths(cfg.output)
    check_writable([cfg.output, cfg.model_card, *paths.values()])
    started = time.perf_counter()
    data = build_dataset(cfg)
    splits = split_patients(cfg.patients, cfg.seed)
    masks = {name: np.isin(data.patient, idx) for name, idx in splits.items()}
    train, val, test = masks["train"], masks["validation"], masks["test"]
    log.info(
        "split by patient: train %d / validation %d / test %d patients (%d / %d / %d readings)",
        splits["train"].size, splits["validation"].size, splits["test"].size,
        int(train.sum()), int(val.sum()), int(test.sum()),
    )  # fmt: skip

    fit_started = time.perf_counter()
    pipeline = fit(data.x[train], data.y[train])
    log.info("fitted in %.1f s", time.perf_counter() - fit_started)

    risk_val = pipeline.predict_proba(data.x[val])[:, 1]
    validation = choose_threshold(data.y[val], risk_val, data.rule[val], data.crisis[val])
    threshold = float(validation["threshold"])
    act_val, _ = actionable_flags(data.systolic[val], data.diastolic[val], risk_val, threshold)
    if data.y[val].any():
        val_act = method_stats(act_val, data.y[val])
        val_rules = method_stats(data.rule[val], data.y[val])
        validation |= {
            "actionable_recall": val_act["recall"],
            "actionable_false_alerts_per_1000": val_act["false_alerts_per_1000"],
            "rules_false_alerts_per_1000": val_rules["false_alerts_per_1000"],
        }
    log.info("threshold %.4f (validation: %s)", threshold, {k: v for k, v in validation.items() if k != "rule"})

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
        "validation": validation,
        "metrics": metrics,
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
    _atomic_write(cfg.output, lambda tmp: joblib.dump({"pipeline": pipeline, "metadata": metadata}, tmp))
    sha = hashlib.sha256(cfg.output.read_bytes()).hexdigest()
    _write_text(paths["sidecar"], json.dumps(metadata | {"sha256": sha}, indent=2) + "\n")
    _write_text(paths["metrics"], json.dumps(metrics, indent=2) + "\n")
    _write_text(paths["predictions"], predictions_csv(rows))
    _write_text(cfg.model_card, model_card(metadata, metrics, validation))
    log.info(
        "wrote %s (sha256 %s), %s, %s, %s and %s in %.1f s total",
        cfg.output, sha[:12], paths["sidecar"], paths["metrics"], paths["predictions"], cfg.model_card,
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
