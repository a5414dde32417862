"""Child processes of the benchmark: started in their own session, stopped by PID (SIGTERM, then SIGKILL).

Every child is registered in a :class:`Children` set whose ``stop_all`` the runner calls in a ``finally`` block,
so nothing outlives the benchmark, also on failure or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 20.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    started: float  # time.monotonic() just before the spawn
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; returns the exit code."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=5)
        return self.process.poll()

    def wait(self, timeout_s: float) -> int | None:
        """Wait for a normal exit; on timeout stop it (SIGTERM, then SIGKILL) and return None."""
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            return None

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, chars: int = 1500) -> str:
        return self.stderr()[-chars:]


@dataclass
class Children:
    """The benchmark's child processes; ``stop_all`` in a finally block."""

    log_dir: Path
    env: dict[str, str]
    running: list[Child] = field(default_factory=list)
    counter: int = 0

    def start(self, name: str, module: str, args: list[str], stdout: Path | None = None) -> Child:
        self.counter += 1
        stem = self.log_dir / f"{self.counter:02d}-{name}"
        out_path = stdout or stem.with_suffix(".out")
        err_path = stem.with_suffix(".err")
        with out_path.open("wb") as out, err_path.open("wb") as err:
            started = time.monotonic()
            process = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
            )  # fmt: skip
        child = Child(name, process, started, out_path, err_path)
        self.running.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.running):
            child.stop()
        self.running.clear()


def rss_mib(pid: int) -> float | None:
    """Resident set size of a process in MiB (VmRSS in /proc/<pid>/status), None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (from /proc/<pid>/stat), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK
