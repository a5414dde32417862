"""Wait until a condition holds, polling with a deadline (tenacity): the one poll loop of the code base."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_delay, wait_fixed

from bp.errors import WaitTimeout

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.1) -> T:
    """Call ``check`` every ``interval_s`` until it returns something truthy, and return that.

    Raises :class:`WaitTimeout` (naming ``what``) when ``timeout_s`` passes first; an exception raised by ``check``
    propagates at once (a check that can fail transiently catches that itself and returns a falsy value).
    """

    def timed_out(state: RetryCallState) -> T:
        last = state.outcome.result() if state.outcome is not None else None
        raise WaitTimeout(f"{what}: not within {timeout_s:g} s", last)

    retrying = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(interval_s),
        retry=retry_if_result(lambda answer: not answer),
        retry_error_callback=timed_out,
    )
    return retrying(check)
