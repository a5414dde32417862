"""Backoff and an upper bound for every retry of the consumer (infrastructure failures only).

What the consumer does when something fails, per stage:

========================================  ===========================================================================
stage                                     on failure
========================================  ===========================================================================
parse, decide, archive placement, ES      that message alone goes to the dead-letter topic with a reason (``bad_time``,
document, a record the Kafka client       ``bad_record``, …) and the loop moves on: no retry, nothing blocks
cannot decode                             the partition
ES per-item 4xx (e.g. mapping)            that anomaly is dead-lettered (``index_rejected``)
archive write (disk), ES outage or        the batch is not committed and is read again, after a backoff that grows
429/5xx, dead-letter producer, Kafka      from 0.5 s to 30 s; while it keeps failing for longer than
poll or commit errors (broker restart,    ``BP_RETRY_TIMEOUT_S`` (default 600 s) the consumer exits 1 with one line
rebalance)                                (a supervisor restarts it; nothing uncommitted is lost)
========================================  ===========================================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bp.errors import SinkError

log = logging.getLogger("bp.consumer")


class Retry:
    """Waits between attempts of a failing step (exponential backoff) and gives up after ``limit_s`` of failing.

    ``failed(why)`` is called by the loop after an attempt failed: it logs, waits, and raises SinkError once the
    failures have lasted ``limit_s``. ``note_failure()`` starts the clock without waiting (for a sink that retries
    inside one attempt, e.g. Elasticsearch); ``exhausted`` tells such a sink to give up. ``succeeded()`` resets.
    """

    def __init__(
        self,
        limit_s: float,
        *,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit_s = limit_s
        self.initial_s = initial_s
        self.max_s = max_s
        self.should_stop = should_stop
        self.clock = clock
        self.sleep = sleep
        self.failing_since: float | None = None
        self.delay = initial_s
        self.failures = 0

    @property
    def exhausted(self) -> bool:
        return self.failing_since is not None and self.clock() - self.failing_since >= self.limit_s

    def note_failure(self) -> None:
        if self.failing_since is None:
            self.failing_since = self.clock()

    def failed(self, why: str) -> None:
        """Back off after a failed attempt; SinkError when it has been failing for ``limit_s``."""
        self.note_failure()
        self.failures += 1
        assert self.failing_since is not None
        failing_for = self.clock() - self.failing_since
        if failing_for >= self.limit_s:
            raise SinkError(f"giving up after {failing_for:.0f} s of failures (BP_RETRY_TIMEOUT_S): {why}")
        log.warning("retrying in %.1f s (failing for %.0f s): %s", self.delay, failing_for, why)
        end = self.clock() + self.delay
        while not self.should_stop() and (left := end - self.clock()) > 0:
            self.sleep(min(0.1, left))
        self.delay = min(self.delay * 2, self.max_s)

    def succeeded(self) -> None:
        if self.failing_since is not None:
            log.warning("recovered after %.1f s and %d retries", self.clock() - self.failing_since, self.failures)
        self.failing_since = None
        self.delay = self.initial_s
        self.failures = 0
