"""Which Kafka and Elasticsearch the integration tests use, decided once per session.

- ``BP_KAFKA_BOOTSTRAP`` and ``BP_ES_URL`` set: those servers; nothing is started.
- otherwise Kafka is real Apache Kafka (infra/kafka.py, jars from `make kafka`) when Java and the jars are there,
  else the noida-db stand-in; ``BP_TEST_KAFKA=real`` or ``BP_TEST_KAFKA=standin`` forces one (``real`` fails the
  session when the broker cannot run). Elasticsearch is always the stand-in (noida-db ``--only elasticsearch``
  next to real Kafka).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from infra.kafka import kafka_version, unavailable


@dataclass(frozen=True, slots=True)
class Backend:
    kafka: str  # "env", "real" or "standin"
    why: str  # one line for the test header

    @property
    def real_kafka(self) -> bool:
        return self.kafka == "real"


def choose() -> Backend:
    if os.environ.get("BP_KAFKA_BOOTSTRAP") and os.environ.get("BP_ES_URL"):
        return Backend("env", f"Kafka {os.environ['BP_KAFKA_BOOTSTRAP']}, Elasticsearch {os.environ['BP_ES_URL']}")
    wanted = os.environ.get("BP_TEST_KAFKA", "").strip().lower()
    if wanted not in ("", "auto", "real", "standin"):
        raise ValueError(f"BP_TEST_KAFKA={wanted!r}: use real, standin or auto")
    reason = unavailable()
    es = "Elasticsearch: noida-db stand-in"
    if wanted == "standin":
        return Backend("standin", f"Kafka: noida-db stand-in (BP_TEST_KAFKA=standin); {es}")
    if reason is None:
        return Backend("real", f"Kafka: Apache Kafka {kafka_version()} (KRaft, one node); {es}")
    if wanted == "real":
        return Backend("real", f"Kafka: Apache Kafka requested (BP_TEST_KAFKA=real) but {reason}")
    return Backend("standin", f"Kafka: noida-db stand-in ({reason}); {es}")
