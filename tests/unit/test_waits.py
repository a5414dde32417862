"""runtime.waits.wait_until: the one poll-with-a-deadline helper."""

from __future__ import annotations

import time

import pytest

from bp.errors import BpError, WaitTimeout
from runtime.waits import wait_until


def test_returns_the_first_truthy_answer() -> None:
    answers = iter([0, None, "", 42, 43])
    assert wait_until(lambda: next(answers), 5, "answer", interval_s=0) == 42


def test_times_out_with_what_it_waited_for_and_the_last_answer() -> None:
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"the topic: not within 0.2 s") as caught:
        wait_until(lambda: [], 0.2, "the topic", interval_s=0.05)
    assert 0.2 <= time.monotonic() - started < 5
    assert caught.value.last == []
    assert isinstance(caught.value, BpError)


def test_an_error_in_the_check_propagates_at_once() -> None:
    calls = 0

    def broken() -> bool:
        nonlocal calls
        calls += 1
        raise ValueError("child exited")

    with pytest.raises(ValueError, match="child exited"):
        wait_until(broken, 10, "never")
    assert calls == 1
