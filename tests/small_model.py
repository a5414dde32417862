"""A small risk model fitted on simulated data and saved in the artifact format the consumer checks (tests only).

Fitted on the features of :mod:`bp.features`, so its risk depends on each patient's history, as the real model's
does; it takes about a second instead of ``make train``'s minutes.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import joblib
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.preprocessing import StandardScaler

from bp.alerts import AlertPolicy
from bp.cohort import Cohort
from bp.features import ARTIFACT_FORMAT, FEATURE_NAMES, PatientHistory, feature_matrix


def fit_small_model(directory: Path, threshold: float = 0.4) -> Path:
    """Fit, save ``directory/small.joblib`` plus its checksum sidecar, return the artifact's path."""
    sims = Cohort(patients=40, seed=3, start=datetime(2026, 1, 1, tzinfo=UTC), interval=timedelta(minutes=30)).take(
        8000
    )
    matrix = feature_matrix(PatientHistory(), [sim.reading for sim in sims])
    labels = [sim.truth.significant for sim in sims]
    model = SkPipeline([("scale", StandardScaler()), ("logreg", LogisticRegression(max_iter=500))]).fit(matrix, labels)
    metadata = {
        "format": ARTIFACT_FORMAT,
        "feature_names": list(FEATURE_NAMES),
        "threshold": threshold,
        "alert_policy": AlertPolicy(threshold=threshold).to_dict(),
        "sklearn_version": sklearn.__version__,
        "joblib_version": joblib.__version__,
        "model_version": "test-small",
    }
    path = directory / "small.joblib"
    joblib.dump({"pipeline": model, "metadata": metadata}, path)
    sidecar = {**metadata, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path
