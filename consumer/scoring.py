"""Load the risk-model artifact written by ``python -m ml.train_model`` and check it fits this code."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt
import sklearn

from bp.alerts import AlertPolicy
from bp.errors import ModelError
from bp.features import check_artifact_metadata

RETRAIN = "retrain with `python -m ml.train_model` (or `make train`), or run with --rules-only"


@dataclass(frozen=True)
class LoadedModel:
    """A verified scikit-learn pipeline with its alert threshold."""

    pipeline: Any
    threshold: float
    version: str
    metadata: dict[str, Any]
    alert_policy: AlertPolicy

    def risk(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Probability of a clinically significant episode, one per row, in one call."""
        result: npt.NDArray[np.float64] = self.pipeline.predict_proba(features)[:, 1]
        return result


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def load_model(path: Path) -> LoadedModel:
    """Load and verify the artifact: checksum from the sidecar JSON, feature names, library versions."""
    sidecar = sidecar_path(path)
    if not path.is_file():
        raise ModelError(f"model artifact {path} not found; {RETRAIN}")
    if not sidecar.is_file():
        raise ModelError(f"model metadata {sidecar} not found; {RETRAIN}")
    try:
        expected = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"model metadata {sidecar} unreadable ({exc}); {RETRAIN}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if expected.get("sha256") != digest:
        raise ModelError(f"model artifact {path} does not match the checksum in {sidecar}; {RETRAIN}")
    try:
        bundle = joblib.load(path)
        pipeline, metadata = bundle["pipeline"], bundle["metadata"]
    except Exception as exc:  # a corrupt pickle can raise nearly anything
        raise ModelError(f"model artifact {path} cannot be loaded ({type(exc).__name__}: {exc}); {RETRAIN}") from None
    threshold = check_artifact_metadata(
        metadata, sklearn_version=sklearn.__version__, joblib_version=joblib.__version__
    )
    try:
        policy = AlertPolicy.from_dict(metadata["alert_policy"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"model artifact {path} has no valid alert policy ({exc}); {RETRAIN}") from None
    return LoadedModel(pipeline, threshold, str(metadata.get("model_version", "unknown")), dict(metadata), policy)
