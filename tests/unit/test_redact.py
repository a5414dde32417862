"""Secrets never printed: URL passwords and known secret values are masked wherever they appear in text."""

from __future__ import annotations

import pytest

from bp.redact import mask, mask_urls
from bp.settings import load_settings


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("http://user:SECRET@host:9200", "http://user:***@host:9200"),
        ("cannot reach https://elastic:p%40ss@es.local/ now", "cannot reach https://elastic:***@es.local/ now"),
        ("'http://u:SECRET@host:notaport'", "'http://u:***@host:notaport'"),  # malformed URLs too
        ("http://user@host:9200 and http://host:9200", "http://user@host:9200 and http://host:9200"),  # no password
        ("a http://a:1@x b sasl://b:2@y", "a http://a:***@x b sasl://b:***@y"),
    ],
)
def test_url_passwords_are_masked(text: str, masked: str) -> None:
    assert mask_urls(text) == masked


def test_known_secrets_are_masked_anywhere() -> None:
    assert mask("auth failed for SECRETPW (user u)", ["SECRETPW", None, ""]) == "auth failed for *** (user u)"


def test_settings_never_show_the_kafka_password_and_list_every_secret() -> None:
    settings = load_settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="bp",
        kafka_sasl_password="KPASS",
        es_password="EPASS",
    )
    assert "KPASS" not in repr(settings) and "KPASS" not in str(settings)
    assert sorted(settings.secrets()) == ["EPASS", "KPASS"]
