"""Metrics on the held-out test patients: a pure function of the saved predictions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, brier_score_loss, precision_recall_fscore_support, roc_auc_score

from bp.clinical import assess, is_actionable, prioritize
from bp.reading import Priority
from bp.truth import EpisodeKind
from ml.dataset import BoolArray, FloatArray

METHODS = ("rules", "acc_aha_stage2_plus", "model", "actionable")
METHOD_TITLES = {
    "rules": "Rules only (seed thresholds)",
    "acc_aha_stage2_plus": "ACC/AHA stage 2 or worse",
    "model": "Model only (risk >= threshold)",
    "actionable": "Actionable alerts (critical + high)",
}


def actionable_flags(
    systolic: FloatArray, diastolic: FloatArray, risk: FloatArray, threshold: float
) -> tuple[BoolArray, list[Priority | None]]:
    """The consumer's decision per reading: ``is_actionable(prioritize(assess(s, d), risk, threshold))``."""
    priorities = [
        prioritize(assess(s, d), r, threshold)
        for s, d, r in zip(systolic.tolist(), diastolic.tolist(), risk.tolist(), strict=True)
    ]
    return np.array([is_actionable(p) for p in priorities], dtype=np.bool_), priorities


def method_stats(flag: BoolArray, y: BoolArray) -> dict[str, float | int]:
    """Confusion counts, precision, recall, F1 (scikit-learn's) and alert rates per 1,000 readings."""
    n = int(y.size)
    tp = int((flag & y).sum())
    fp = int((flag & ~y).sum())
    fn = int((~flag & y).sum())
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, flag, average="binary", pos_label=True, zero_division=0.0
    )
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
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
    calibration: list[dict[str, float | int]] = []
    if two_classes:
        bins = np.minimum((risk * 10).astype(np.int64), 9)
        for b in range(10):
            mask = bins == b
            if mask.any():
                calibration.append(
                    {"bin": b, "readings": int(mask.sum()), "mean_risk": float(risk[mask].mean()),
                     "observed": float(y[mask].mean())}
                )  # fmt: skip
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
            "calibration": calibration,
        },
        "recall_by_episode": by_episode,
        "false_alerts_per_1000_by_profile": by_profile,
        "alerts_on_artefacts": {name: int((flags[name] & artefact).sum()) for name in METHODS},
        "artefacts": int(artefact.sum()),
        "crisis_range_readings": int(crisis.sum()),
        "crisis_range_all_critical": crisis_critical,
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
    return "\n".join(lines)
