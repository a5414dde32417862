"""Train and honestly evaluate the personalised risk model: ``python -m ml.train_model``.

The run, stage by stage (each stage is its own module):

1. :mod:`ml.dataset` simulates the training cohorts (ambulatory and home schedules), computes features as the
   consumer does, and splits the patients: 20 % held out as test patients (the reading-level table), the others
   (development patients) into cross-validation folds by patient, balanced by profile and schedule.
2. :mod:`ml.selection` computes out-of-fold risks on the development patients, chooses the alert policy on
   them (:mod:`ml.episodes` runs :mod:`bp.alerts` over them), and refits the pipeline on all development patients.
3. :mod:`ml.alert_evaluation` evaluates the alerts in the clinical unit on held-out seeds (new patients of both
   schedules, a shifted profile mix, realistic prevalence, a cold start) and computes the goal check;
   :mod:`ml.evaluation` keeps the reading-level table on the test patients for continuity.
4. :mod:`ml.artifact` writes the artifact and its sidecars; :mod:`ml.card` renders the model card next to it (and
   to ``--model-card PATH`` when asked, as ``make train`` does for the committed ``ml/MODEL_CARD.md``).
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn

from bp.cohort import Schedule
from bp.errors import BpError, ConfigError
from bp.features import ARTIFACT_FORMAT, FEATURE_NAMES
from ml.alert_evaluation import HELD_OUT_OFFSET, RETIRED_HELD_OUT_SEEDS, EvalPlan, evaluate_alerts
from ml.artifact import check_writable, sidecar_paths, write_outputs
from ml.card import goal_summary, model_card
from ml.dataset import (
    CV_FOLDS,
    TEST_SHARE,
    Simulation,
    build_dataset,
    cv_folds,
    fingerprint,
    split_patients,
)
from ml.evaluation import actionable_flags, evaluate, metrics_table
from ml.selection import POLICY_RULE, develop

log = logging.getLogger("ml.train_model")

DEFAULT_OUTPUT = Path("ml/artifacts/bp_logreg.joblib")
COMMITTED_MODEL_CARD = Path("ml/MODEL_CARD.md")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """What one training run does; built once in main() from the flags."""

    ambulatory: Simulation
    home: Simulation
    evaluation: EvalPlan
    output: Path
    model_card: Path | None  # an extra copy of the card (the committed one), besides the one next to the artifact

    def params(self) -> dict[str, Any]:
        return {
            "training_cohorts": [self.ambulatory.params(), self.home.params()],
            "seed": self.ambulatory.seed,
            "test_share": TEST_SHARE,
            "cv_folds": CV_FOLDS,
        }


def run(cfg: TrainConfig) -> dict[str, Any]:
    """The whole training run; returns the metrics (reading level on test patients, alerts on held-out seeds)."""
    paths = sidecar_paths(cfg.output)
    check_writable([cfg.output, *paths.values(), *([cfg.model_card] if cfg.model_card else [])])
    started = time.perf_counter()
    seed = cfg.ambulatory.seed
    data = build_dataset(cfg.ambulatory, cfg.home)
    splits = split_patients(len(data.patient_ids), seed)
    strata = [f"{p}/{s}" for p, s in zip(data.profiles, data.schedules, strict=True)]
    folds = cv_folds(splits["train"], strata, seed)
    train, test = np.isin(data.patient, splits["train"]), np.isin(data.patient, splits["test"])
    log.info(
        "split by patient: %d development patients in %d folds / %d test patients (%d / %d readings)",
        splits["train"].size, len(folds), splits["test"].size, int(train.sum()), int(test.sum()),
    )  # fmt: skip

    development = develop(data, train, folds)
    selection, pipeline, policy = development.selection, development.pipeline, development.policy
    threshold = policy.threshold

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
    reading_level = evaluate(
        y=data.y[test],
        risk=risk,
        flags=flags,
        episode=data.episode[test],
        artefact=data.artefact[test],
        crisis=data.crisis[test],
        priorities=priorities,
        profiles=profiles,
    )
    reading_level["threshold"] = threshold
    reading_level["test_patients"] = int(splits["test"].size)
    eval_started = time.perf_counter()
    log.info(
        "alert evaluation on seeds %s (%s)", ", ".join(map(str, cfg.evaluation.evaluation_seeds())),
        "held out" if cfg.evaluation.is_held_out() else "NOT held out: development seeds",
    )  # fmt: skip
    alerts = evaluate_alerts(pipeline, policy, cfg.evaluation)
    log.info("alert evaluation in %.1f s; goal met: %s", time.perf_counter() - eval_started,
             alerts["goal"]["met"])  # fmt: skip
    metrics = {"alerts": alerts, "readings": reading_level}

    params = cfg.params()
    fp = fingerprint(data, params)
    metadata: dict[str, Any] = {
        "format": ARTIFACT_FORMAT,
        "feature_names": list(FEATURE_NAMES),
        "threshold": threshold,
        "alert_policy": policy.to_dict(),
        "policy_rule": POLICY_RULE,
        "sklearn_version": sklearn.__version__,
        "joblib_version": joblib.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "training_fingerprint": fp,
        "seed": seed,
        "params": params,
        "splits": {name: [data.patient_ids[i] for i in idx.tolist()] for name, idx in splits.items()},
        "cv_folds": [[data.patient_ids[i] for i in members.tolist()] for members in folds],
        "policy_selection": selection,
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
        "observation_id": [data.observation_ids[i] for i in dev.tolist()],
        "effective": [data.readings[i].effective.isoformat() for i in dev.tolist()],
        "systolic": data.systolic[dev].tolist(),
        "diastolic": data.diastolic[dev].tolist(),
        "episode": data.episode[dev].tolist(),
        "episode_id": data.episode_id[dev].tolist(),
        "label": data.y[dev].tolist(),
        "risk": development.risk.tolist(),
        "rule_flag": data.rule[dev].tolist(),
        "crisis_flag": data.crisis[dev].tolist(),
    }
    card = model_card(metadata, metrics)
    sha = write_outputs(
        cfg.output, pipeline=pipeline, metadata=metadata, metrics=metrics, predictions=rows,
        oof_predictions=oof_rows, card=card, extra_card=cfg.model_card,
    )  # fmt: skip
    log.info(
        "wrote %s (sha256 %s) and its sidecars %s%s in %.1f s total",
        cfg.output, sha[:12], ", ".join(str(p) for p in paths.values()),
        f" and {cfg.model_card}" if cfg.model_card else "", time.perf_counter() - started,
    )  # fmt: skip
    return metrics


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ml.train_model",
        description="Train the bp-stream risk model on a simulated cohort and evaluate it on held-out patients.",
    )
    parser.add_argument(
        "--patients", type=int, default=400, help="simulated training patients per schedule (default 400)"
    )
    parser.add_argument(
        "--days", type=float, default=7.0, help="simulated days per patient, ambulatory schedule (default 7)"
    )
    parser.add_argument(
        "--home-days", type=float, default=56.0, help="simulated days per patient, home schedule (default 56)"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the simulation and the split (default 42)")
    parser.add_argument("--interval-minutes", type=int, default=15, help="minutes between readings (default 15)")
    parser.add_argument("--eval-seeds", type=int, default=3, help="held-out seeds of the alert evaluation (default 3)")
    parser.add_argument(
        "--eval-first-seed",
        type=int,
        default=None,
        metavar="N",
        help=f"first seed of the alert evaluation (default: --seed + {HELD_OUT_OFFSET}, the held-out seeds); "
        f"e.g. {RETIRED_HELD_OUT_SEEDS[0]} runs the whole evaluation on development seeds; the card then says the "
        "seeds were not held out. Must not include a training seed (--seed, --seed + 1)",
    )
    parser.add_argument(
        "--eval-patients", type=int, default=80, help="patients per held-out scenario and seed (default 80)"
    )
    parser.add_argument(
        "--eval-days",
        type=float,
        default=7.0,
        help="days per held-out ambulatory scenario (home: 4x; realistic prevalence: 2x) (default 7)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"artifact path (default {DEFAULT_OUTPUT})")
    parser.add_argument(
        "--model-card",
        type=Path,
        default=None,
        help="also write the model card here (`make train` passes the committed "
        f"{COMMITTED_MODEL_CARD}); it is always written next to the artifact as .card.md",
    )
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    ambulatory = Simulation(
        patients=args.patients, days=args.days, seed=args.seed, interval_minutes=args.interval_minutes
    )
    home = Simulation(patients=args.patients, days=args.home_days, seed=args.seed + 1, schedule=Schedule.HOME)
    plan = EvalPlan(
        seed=args.seed,
        seeds=args.eval_seeds,
        patients=args.eval_patients,
        days=args.eval_days,
        first_seed=args.eval_first_seed,
    )
    cfg = TrainConfig(ambulatory, home, plan, output=args.output, model_card=args.model_card)
    if ambulatory.patients < 3:
        raise ConfigError(f"--patients must be at least 3 (one patient per split), got {ambulatory.patients}")
    if ambulatory.interval_minutes < 1:
        raise ConfigError(f"--interval-minutes must be at least 1, got {ambulatory.interval_minutes}")
    if not math.isfinite(ambulatory.days) or ambulatory.readings_per_patient < 2:
        raise ConfigError(f"--days {ambulatory.days} gives fewer than 2 readings per patient")
    if not math.isfinite(home.days) or home.days < 1:
        raise ConfigError(f"--home-days must be at least 1, got {home.days}")
    if plan.seeds < 1 or plan.patients < 1 or not (math.isfinite(plan.days) and plan.days >= 1):
        raise ConfigError("--eval-seeds and --eval-patients must be >= 1 and --eval-days >= 1")
    _check_evaluation_seeds(plan, training=(ambulatory.seed, home.seed))
    if cfg.output.suffix != ".joblib":
        raise ConfigError(f"--output must end in .joblib, got {cfg.output}")
    return cfg


def _check_evaluation_seeds(plan: EvalPlan, training: tuple[int, ...]) -> None:
    """The evaluation never simulates a training seed."""
    seeds = plan.evaluation_seeds()
    clash = sorted(set(seeds) & set(training))
    if clash:
        raise ConfigError(
            f"--eval-first-seed {seeds[0]} with --eval-seeds {plan.seeds} evaluates on seeds {seeds[0]}-{seeds[-1]}, "
            f"which include the training seed(s) {', '.join(map(str, clash))} (--seed {plan.seed} trains on "
            f"{training[0]} and {training[1]}); choose a first seed outside them "
            f"(default {plan.seed + HELD_OUT_OFFSET})"
        )


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
    print(metrics_table(metrics["readings"]))
    print(goal_summary(metrics["alerts"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
