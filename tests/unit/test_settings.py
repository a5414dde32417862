"""Settings: env vars with the BP_ prefix, flags override them, one readable error line."""

from __future__ import annotations

import pytest

from bp.errors import ConfigError
from bp.settings import load_settings


def test_defaults_match_the_documented_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BP_KAFKA_BOOTSTRAP", "BP_ES_URL", "BP_TOPIC", "BP_GROUP", "BP_INDEX"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.kafka_bootstrap == "localhost:9092"
    assert settings.es_url == "http://localhost:9200"
    assert (settings.topic, settings.dlq_topic, settings.group) == (
        "blood-pressure",
        "blood-pressure.dlq",
        "bp-analyzer",
    )
    assert (settings.index, settings.stats_index) == ("bp-anomalies", "bp-stats")


def test_env_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BP_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("BP_BATCH_SIZE", "250")
    settings = load_settings(batch_size=None)
    assert settings.bootstrap_servers == ["k1:9092", "k2:9092"] and settings.batch_size == 250
    assert load_settings(batch_size=10).batch_size == 10


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.batch_size = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "overrides", "needle"),
    [
        ({"BP_BATCH_SIZE": "lots"}, {}, "BP_BATCH_SIZE"),
        ({}, {"session_timeout_ms": 1000}, "session_timeout_ms (flag)"),
        ({"BP_COMPRESSION": "rar"}, {}, "BP_COMPRESSION"),
        ({}, {"topic": "  "}, "topic (flag)"),
    ],
)
def test_invalid_values_are_one_readable_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], overrides: dict[str, object], needle: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert needle in message and "\n" not in message


def test_compression_none_means_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BP_COMPRESSION", "none")
    assert load_settings().compression is None


def test_parser_limits_from_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import date

    limits = load_settings().parse_limits
    assert (limits.max_bytes, limits.future_tolerance_s, limits.floor) == (8 * 1024 * 1024, 86_400.0, date(1900, 1, 1))
    monkeypatch.setenv("BP_MAX_MESSAGE_BYTES", "65536")
    monkeypatch.setenv("BP_FUTURE_TOLERANCE_HOURS", "2")
    monkeypatch.setenv("BP_TIME_FLOOR", "2000-01-01")
    limits = load_settings().parse_limits
    assert (limits.max_bytes, limits.future_tolerance_s, limits.floor) == (65_536, 7_200.0, date(2000, 1, 1))
    assert load_settings(time_floor="1950-06-01").parse_limits.floor == date(1950, 6, 1)
    for key, bad in (
        ("BP_TIME_FLOOR", "yesterday"),
        ("BP_MAX_MESSAGE_BYTES", "10"),
        ("BP_FUTURE_TOLERANCE_HOURS", "-1"),
    ):
        monkeypatch.setenv(key, bad)
        with pytest.raises(ConfigError, match=key):
            load_settings()
        monkeypatch.delenv(key)
