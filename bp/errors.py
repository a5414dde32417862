"""Every exception bp-stream raises on purpose derives from :class:`BpError`.

BpError
├── ConfigError          a setting or flag is invalid
├── EndpointError        Kafka or Elasticsearch cannot be reached
├── ModelError           the model artifact is missing, corrupt or does not match this code
├── SinkError            a sink could not durably write a batch (the batch is retried, never committed)
├── StateError           the per-patient state store cannot be read, written or restored
├── WaitTimeout          a condition polled with a deadline did not hold in time (runtime.waits)
├── StandInError         the local stand-in (infra.standin) could not be started, reached or stopped
├── KafkaBrokerError     the local Apache Kafka broker (infra.kafka) could not be started, reached or stopped
└── BenchError           a benchmark step failed (a child exited early, a deadline passed)
"""


class BpError(Exception):
    """Root of bp-stream's own errors; CLIs turn it into one readable line and a non-zero exit."""


class ConfigError(BpError):
    """A setting, flag or environment variable has an invalid value."""


class EndpointError(BpError):
    """Kafka or Elasticsearch is unreachable or refused the connection."""


class ModelError(BpError):
    """The model artifact is missing, corrupt, or was trained for different features or libraries."""


class SinkError(BpError):
    """A sink failed to write a batch durably; offsets must not be committed."""


class StateError(BpError):
    """The per-patient state (local store or changelog) cannot be read, written or restored consistently."""


class WaitTimeout(BpError):
    """A condition polled with a deadline did not hold in time; ``last`` is its last answer."""

    def __init__(self, message: str, last: object = None) -> None:
        super().__init__(message)
        self.last = last


class StandInError(BpError):
    """The local stand-in for Kafka and Elasticsearch could not be started, reached or stopped."""


class KafkaBrokerError(BpError):
    """The local Apache Kafka broker could not be fetched, formatted, started, reached or stopped."""


class BenchError(BpError):
    """A benchmark step failed: a child exited early, a deadline passed, a result is missing."""
