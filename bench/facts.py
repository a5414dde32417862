"""Facts recorded with every result: which classifier the consumer ran, the machine, the library versions."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import platform
import shutil
from pathlib import Path
from typing import Any

from bench.context import Bench
from bench.presets import Preset
from bp.redact import mask_urls

LIBRARIES = (
    "kafka-python",
    "elasticsearch",
    "elastic-transport",
    "orjson",
    "lz4",
    "numpy",
    "scikit-learn",
    "joblib",
    "noida-db",
    "pydantic",
)


def choose_classifier(preset: Preset, work: Path) -> dict[str, Any]:
    if preset.rules_only:
        return {"mode": "rules-only", "reason": "--rules-only given", "consumer_flags": ["--rules-only"]}
    from bp.errors import ModelError
    from consumer.scoring import load_model, sidecar_path

    # A private copy: another engineer retraining mid-run must not change (or remove) the model under us.
    copy = work / "model" / preset.model.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copy2(preset.model, copy)
        shutil.copy2(sidecar_path(preset.model), sidecar_path(copy))
        model = load_model(copy)
    except (OSError, ModelError) as exc:
        return {"mode": "rules-only", "reason": f"model not usable: {exc}", "consumer_flags": ["--rules-only"]}
    return {
        "mode": "model",
        "model_path": str(preset.model),
        "model_version": model.version,
        "threshold": model.threshold,
        "sha256": hashlib.sha256(copy.read_bytes()).hexdigest(),
        "consumer_flags": ["--model", str(copy)],
    }


def machine_facts(bench: Bench) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    libs: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            libs[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            libs[name] = None
    mem_total = None
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        mem_total = round(int(handle.readline().split()[1]) / 1024 / 1024, 1)
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": mem_total,
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": libs,
        "endpoints": endpoints_fact(bench),
        "kafka_bootstrap": bench.bootstrap,
        "es_url": mask_urls(bench.es_url),  # results are shared: never a password
        "es_version": bench.es.info()["version"]["number"],
    }


def endpoints_fact(bench: Bench) -> str:
    """Which servers the run measured against."""
    if bench.broker is not None:
        from infra.kafka import kafka_version

        return f"Apache Kafka {kafka_version()} (KRaft, one node, throwaway data dir); Elasticsearch: stand-in"
    if bench.standin is not None:
        return "stand-in (noida-db, throwaway data dir)"
    return "real (from env)"
