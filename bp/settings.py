"""Settings: one frozen object, built once from ``BP_*`` environment variables and CLI flags (flags win).

Every field maps to an environment variable named ``BP_`` + the field name in upper case, e.g.
``kafka_bootstrap`` ↔ ``BP_KAFKA_BOOTSTRAP``. CLIs pass only the flags the user actually gave as overrides.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bp.errors import ConfigError
from bp.fhir import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TIME_FLOOR, ParseLimits

DEFAULT_TOPIC = "blood-pressure"
DEFAULT_DLQ_TOPIC = "blood-pressure.dlq"
DEFAULT_GROUP = "bp-analyzer"
DEFAULT_INDEX = "bp-anomalies"
DEFAULT_STATS_INDEX = "bp-stats"
DEFAULT_ALERTS_INDEX = "bp-alerts"
DEFAULT_MODEL_PATH = Path("ml/artifacts/bp_logreg.joblib")
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class Settings(BaseSettings):
    """Every knob of bp-stream. Immutable once built."""

    model_config = SettingsConfigDict(env_prefix="BP_", frozen=True, extra="forbid", case_sensitive=False)

    # Kafka
    kafka_bootstrap: str = Field("localhost:9092", description="Kafka bootstrap servers, host:port[,host:port]")
    topic: str = Field(DEFAULT_TOPIC, description="topic of FHIR blood-pressure Observations")
    dlq_topic: str = Field(DEFAULT_DLQ_TOPIC, description="dead-letter topic for rejected messages")
    partitions: int = Field(6, ge=1, le=1000, description="partitions when the producer creates the topic")
    group: str = Field(DEFAULT_GROUP, description="consumer group id")
    consumer_instance_id: str | None = Field(None, description="static group membership id (group_instance_id)")
    session_timeout_ms: int = Field(10_000, ge=6_000, le=300_000, description="consumer session timeout")
    max_poll_interval_ms: int = Field(300_000, ge=10_000, description="max time between polls before eviction")
    auto_offset_reset: str = Field("earliest", pattern="^(earliest|latest)$", description="where a new group starts")
    connect_timeout_s: float = Field(10.0, gt=0, le=300, description="give up reaching Kafka/ES at start after this")
    compression: str | None = Field("lz4", description="producer compression: lz4, gzip, zstd, or none")
    # Kafka: record sizes and retries (consumer)
    fetch_max_bytes: int = Field(52_428_800, ge=1024, description="consumer: most bytes one fetch response holds")
    max_partition_fetch_bytes: int = Field(
        1_048_576, ge=1024, description="consumer: most bytes per partition per fetch (a bigger record still arrives)"
    )
    dlq_max_request_size: int = Field(
        1_048_576, ge=16_384, description="dead-letter producer: largest record it sends; bigger letters are truncated"
    )
    retry_timeout_s: float = Field(
        600.0, gt=0, description="consumer: exit 1 when sinks or Kafka keep failing for this long"
    )
    # Kafka: security, for every client (producer, consumer, dead-letter producer, admin)
    kafka_security_protocol: str = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    kafka_sasl_mechanism: str | None = Field(None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    kafka_sasl_username: str | None = Field(None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (never printed)")
    kafka_ssl_cafile: Path | None = Field(None, description="CA certificate (PEM) to verify the brokers")
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (PEM) for mutual TLS")
    kafka_ssl_keyfile: Path | None = Field(None, description="client private key (PEM) for mutual TLS")

    # Elasticsearch
    es_url: str = Field("http://localhost:9200", description="Elasticsearch URL")
    es_username: str | None = Field(None, description="Elasticsearch basic-auth user")
    es_password: str | None = Field(None, description="Elasticsearch basic-auth password")
    es_api_key: str | None = Field(None, description="Elasticsearch API key (instead of user/password)")
    es_ca_cert: Path | None = Field(None, description="CA certificate to verify Elasticsearch's TLS certificate")
    index: str = Field(DEFAULT_INDEX, description="Elasticsearch index of anomalies")
    stats_index: str = Field(DEFAULT_STATS_INDEX, description="Elasticsearch index of consumer statistics")
    alerts_index: str = Field(DEFAULT_ALERTS_INDEX, description="Elasticsearch index of patient-level alerts")

    # Consumer
    archive_dir: Path = Field(Path("data/normal"), description="directory of the normal-reading archive")
    model_path: Path = Field(DEFAULT_MODEL_PATH, description="model artifact (python -m ml.train_model)")
    rules_only: bool = Field(False, description="classify with the threshold rules only, no model")
    batch_size: int = Field(1000, ge=1, le=100_000, description="max messages per consumer batch")
    state_dir: Path = Field(Path("data/state"), description="directory of the consumer's per-patient state store")
    state_store: str = Field(
        "sqlite",
        pattern="^(sqlite|memory)$",
        description="per-patient state: sqlite (durable, exactly-once outcomes) or memory (lost on restart: "
        "only a baseline for benchmarks)",
    )
    state_cache_patients: int = Field(
        100_000, ge=1, description="patients' state cached in memory (evicting never changes a decision)"
    )
    state_retention_days: float = Field(
        30.0, gt=0, le=36_500, description="forget a patient not seen for this many days of event time"
    )
    state_restore_timeout_s: float = Field(
        240.0, gt=0, description="give up restoring a partition's state from its changelog after this"
    )
    state_changelog_interval_s: float = Field(
        5.0, ge=0, le=300, description="seconds between changelog writes (0: with every batch)"
    )
    stats_interval_s: float = Field(5.0, gt=0, description="seconds between statistics documents")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Prometheus metrics port (off if unset)")
    metrics_host: str = Field("127.0.0.1", description="address the metrics endpoint binds to (0.0.0.0 in containers)")

    # Parser (bp/fhir/): size limit and plausible-time window
    max_message_bytes: int = Field(
        DEFAULT_MAX_MESSAGE_BYTES, ge=1024, le=1 << 30, description="larger messages are rejected (too_large)"
    )
    future_tolerance_hours: float = Field(
        24.0, ge=0, le=24 * 366, description="readings later than arrival + this are rejected (bad_time)"
    )
    time_floor: date = Field(DEFAULT_TIME_FLOOR, description="readings before this date (UTC) are rejected (bad_time)")

    @field_validator("compression")
    @classmethod
    def _compression(cls, value: str | None) -> str | None:
        if value is None or value.lower() in ("", "none"):
            return None
        if value.lower() not in ("lz4", "gzip", "zstd", "snappy"):
            raise ValueError("must be one of lz4, gzip, zstd, snappy, none")
        return value.lower()

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.strip().upper() if value else None

    @field_validator("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {value} not found")
        return value

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        protocol = self.kafka_security_protocol
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ValueError(f"BP_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}")
        sasl = protocol.startswith("SASL_")
        if sasl:
            if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
                raise ValueError(f"{protocol} needs BP_KAFKA_SASL_MECHANISM, one of {', '.join(KAFKA_SASL_MECHANISMS)}")
            if not self.kafka_sasl_username or self.kafka_sasl_password is None:
                raise ValueError(f"{protocol} needs BP_KAFKA_SASL_USERNAME and BP_KAFKA_SASL_PASSWORD")
        elif self.kafka_sasl_mechanism or self.kafka_sasl_username or self.kafka_sasl_password is not None:
            raise ValueError(
                f"SASL settings given but BP_KAFKA_SECURITY_PROTOCOL is {protocol} (SASL_SSL or SASL_PLAINTEXT?)"
            )
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if not protocol.endswith("SSL") and any(tls_files):
            raise ValueError(f"TLS files given but BP_KAFKA_SECURITY_PROTOCOL is {protocol} (SSL or SASL_SSL?)")
        return self

    @field_validator("kafka_bootstrap", "es_url", "topic", "dlq_topic", "group", "index", "stats_index", "alerts_index")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    def secrets(self) -> list[str]:
        """Values that must never be printed (pass them to ``bp.redact.mask``)."""
        kafka = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password is not None else None
        return [value for value in (self.es_password, self.es_api_key, kafka) if value]

    @property
    def parse_limits(self) -> ParseLimits:
        """What the parser tolerates: size limit and plausible-time window."""
        return ParseLimits(self.max_message_bytes, self.future_tolerance_hours * 3600.0, self.time_floor)

    @property
    def bootstrap_servers(self) -> list[str]:
        """The bootstrap list as kafka-python wants it."""
        return [part.strip() for part in self.kafka_bootstrap.split(",") if part.strip()]


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment plus explicit overrides (None means "not given").

    Raises ConfigError with one readable line naming the variable or flag at fault.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            field = ".".join(str(part) for part in error["loc"])
            if not field:  # a rule over several settings: its message names them
                problems.append(message)
                continue
            origin = "flag" if field in given else f"BP_{field.upper()}"
            problems.append(f"{field} ({origin}): {message}")
        raise ConfigError("invalid setting: " + "; ".join(problems)) from None
