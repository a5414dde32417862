"""Session header: which Kafka and Elasticsearch the integration tests run against (tests/integration/backend.py)."""

from __future__ import annotations

import pytest

from tests.integration.backend import choose


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"bp-stream integration tests: {choose().why}"]
