"""Fault injection for the crash tests (tests/integration/test_state_faults.py): a named point where the process
kills itself when the environment asks for it. Without ``BPSTREAM_TEST_FAILPOINT`` every call does nothing."""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("bp.consumer.state")

FAILPOINT_ENV = "BPSTREAM_TEST_FAILPOINT"
_failpoint_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Fault injection for the crash tests: with ``BPSTREAM_TEST_FAILPOINT=name:n`` in the environment, the
    process SIGKILLs itself the n-th time it reaches ``name``. Without the variable this does nothing."""
    wanted = os.environ.get(FAILPOINT_ENV)
    if not wanted or not wanted.startswith(name + ":"):
        return
    _failpoint_hits[name] = _failpoint_hits.get(name, 0) + 1
    if _failpoint_hits[name] == int(wanted.rsplit(":", 1)[1]):
        log.warning("failpoint %s reached: killing this process", name)
        os.kill(os.getpid(), signal.SIGKILL)

