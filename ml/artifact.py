"""What a training run writes, atomically: the artifact, its sidecars and the model card.

Files next to the artifact ``X.joblib``: ``X.json`` (the metadata and the artifact's sha256: what the consumer
checks), ``X.metrics.json``, ``X.predictions.csv`` (test patients), ``X.oof.csv`` (the out-of-fold predictions the
threshold was chosen from) and ``X.card.md`` (the model card). The committed ``ml/MODEL_CARD.md`` is written only
when asked (``--model-card``, as ``make train`` does), so demos and tests leave the work tree clean.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from bp.errors import ConfigError
from runtime.files import atomic_write

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
        "card": output.with_suffix(".card.md"),
    }


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


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


def write_outputs(
    output: Path,
    *,
    pipeline: Any,
    metadata: Mapping[str, Any],
    metrics: Mapping[str, Any],
    predictions: Mapping[str, Sequence[Any]],
    oof_predictions: Mapping[str, Sequence[Any]],
    card: str,
    extra_card: Path | None,
) -> str:
    """Write the artifact and everything beside it (and the card to ``extra_card`` too); return the sha256."""
    paths = sidecar_paths(output)
    atomic_write(output, lambda tmp: joblib.dump({"pipeline": pipeline, "metadata": dict(metadata)}, tmp))
    sha = hashlib.sha256(output.read_bytes()).hexdigest()
    write_text(paths["sidecar"], json.dumps(dict(metadata) | {"sha256": sha}, indent=2) + "\n")
    write_text(paths["metrics"], json.dumps(metrics, indent=2) + "\n")
    write_text(paths["predictions"], predictions_csv(predictions, PREDICTION_COLUMNS))
    write_text(paths["oof_predictions"], predictions_csv(oof_predictions, OOF_COLUMNS))
    write_text(paths["card"], card)
    if extra_card is not None:
        write_text(extra_card, card)
    return sha
