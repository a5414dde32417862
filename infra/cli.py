"""The ``up | down | status`` command line the local servers share (:mod:`infra.standin`, :mod:`infra.kafka`).

One body; each server says how to find the one a data directory records, how to start one and where it listens.
Every outcome is one line on stdout (errors on stderr) and an exit code: 0 done, 1 ``status`` found nothing
running, 2 error.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from bp.errors import BpError


class Server(Protocol):
    """A local server as the command line sees it (:class:`infra.standin.StandIn`, :class:`infra.kafka.KafkaBroker`)."""

    @property
    def pid(self) -> int | None: ...
    @property
    def alive(self) -> bool: ...
    @property
    def where(self) -> str: ...
    def wait_ready(self) -> None: ...
    def stop(self) -> None: ...


S = TypeVar("S", bound=Server)


def _start_anyway() -> str | None:
    return None


@dataclass(frozen=True)
class ServerCli(Generic[S]):
    """What differs between the servers' command lines; :meth:`main` is the shared body."""

    name: str  # the first word of every line, e.g. "kafka"
    prog: str
    description: str
    default_dir: Path
    find: Callable[[Path], S | None]  # the server a data directory records (running or not), or None
    start: Callable[[argparse.Namespace, S | None], str]  # start one (given the recorded one); returns its "up" line
    add_flags: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    client_log_level: int = logging.WARNING  # for kafka-python's logger
    skip_up: Callable[[], str | None] = field(default=_start_anyway)  # why `up` starts nothing, if it should not

    def main(self, argv: Sequence[str] | None = None) -> int:
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description)
        parser.add_argument("command", choices=["up", "down", "status"])
        parser.add_argument(
            "--data-dir", type=Path, default=self.default_dir, help=f"data directory (default {self.default_dir})"
        )
        parser.add_argument("--fresh", action="store_true", help="delete the data directory before starting")
        self.add_flags(parser)
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("kafka").setLevel(self.client_log_level)
        try:
            return self._run(args)
        except BpError as exc:
            print(f"{self.name}: error: {exc}", file=sys.stderr)
            return 2

    def _run(self, args: argparse.Namespace) -> int:
        running = self.find(args.data_dir)
        if args.command == "up":
            reason = self.skip_up()
            if reason is not None:
                self._say(reason)
            elif running is not None and running.alive:
                running.wait_ready()
                self._say(f"already running (pid {running.pid}) on {running.where}")
            else:
                if args.fresh and args.data_dir.exists():
                    shutil.rmtree(args.data_dir)
                    running = None
                self._say(self.start(args, running))
            return 0
        if args.command == "down":
            if running is None or running.pid is None:
                self._say("not running, nothing to stop")
                return 0
            pid = running.pid
            running.stop()
            self._say(f"stopped (pid {pid})")
            return 0
        if running is None or not running.alive:
            self._say("not running")
            return 1
        self._say(f"running (pid {running.pid}) on {running.where}")
        return 0

    def _say(self, line: str) -> None:
        print(f"{self.name}: {line}")
