"""Local stand-in infrastructure: the PyPI ``noida-db`` test double for Kafka and Elasticsearch on loopback.

    python -m infra.standin up      # start (unless BP_KAFKA_BOOTSTRAP / BP_ES_URL name real servers), wait ready
    python -m infra.standin down    # stop what `up` started
    python -m infra.standin status

noida-db emulates the Kafka wire protocol and the Elasticsearch 8 REST API. It is a test double, not the
product: the code talks to it exactly as to real Kafka/Elasticsearch. We run its server binary directly (the
``noida-db`` command is a wrapper that spawns it, so the wrapper's PID would be the wrong one to stop), record
the binary's PID in ``<data-dir>/standin.pid``, and stop it with ``noida-db down`` (then SIGTERM, then SIGKILL,
each with a deadline).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bp.errors import StandInError, WaitTimeout
from infra.cli import ServerCli
from runtime.waits import wait_until

__all__ = ["StandIn", "StandInError", "free_port", "real_endpoints_configured"]

log = logging.getLogger("bp.standin")

DEFAULT_DIR = Path(".infra/standin")
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _binary() -> Path:
    spec = importlib.util.find_spec("noida_db")
    if spec is None or spec.origin is None:
        raise StandInError("noida-db is not installed: run `make venv` (it is pinned in requirements-dev.txt)")
    path = Path(spec.origin).parent / "noida-db"
    if not path.is_file():
        raise StandInError(f"noida-db binary missing at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


@dataclass
class StandIn:
    """One noida-db server with Kafka and Elasticsearch on loopback ports and its own data directory.

    ``kafka_port=None`` serves Elasticsearch only (``--only elasticsearch``): the tests pair that with a real
    Apache Kafka broker (infra/kafka.py).
    """

    data_dir: Path
    kafka_port: int | None
    es_port: int
    pid: int | None = None

    @property
    def services(self) -> list[str]:
        return ["elasticsearch"] if self.kafka_port is None else ["kafka", "elasticsearch"]

    @property
    def bootstrap(self) -> str:
        if self.kafka_port is None:
            raise StandInError("this stand-in serves Elasticsearch only")
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def es_url(self) -> str:
        return f"http://127.0.0.1:{self.es_port}"

    @property
    def where(self) -> str:
        return f"Kafka {self.bootstrap if self.kafka_port is not None else '-'}, ES {self.es_url}"

    @property
    def alive(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "standin.pid"

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start the server in the background and wait until both services answer."""
        for port in (self.kafka_port, self.es_port):
            if port is not None and port_open(port):
                raise StandInError(f"port 127.0.0.1:{port} is already in use; stop what uses it or pick another")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_file = (self.data_dir / "noida.out").open("ab")
        command = [
            str(_binary()),
            "start",
            "--only",
            ",".join(self.services),
            "--host",
            "127.0.0.1",
            *([] if self.kafka_port is None else ["--kafka-port", str(self.kafka_port)]),
            "--elasticsearch-port",
            str(self.es_port),
            "--data-dir",
            str(self.data_dir),
        ]
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log_file.close()
        self.pid = process.pid
        self.pid_file.write_text(
            json.dumps({"pid": process.pid, "kafka_port": self.kafka_port, "es_port": self.es_port})
        )
        try:
            self.wait_ready(timeout_s)
        except StandInError:
            self.stop()
            raise

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll Elasticsearch's health and Kafka's metadata until both answer, or raise after the deadline."""
        es_ok, kafka_ok = False, self.kafka_port is None
        last = ""

        def ready() -> bool:
            nonlocal es_ok, kafka_ok, last
            if self.pid is not None and not pid_alive(self.pid):
                raise StandInError(f"noida-db exited during start-up; see {self.data_dir / 'noida.out'}")
            if not es_ok:
                try:
                    url = f"{self.es_url}/_cluster/health?wait_for_status=yellow&timeout=1s"
                    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (http URL we built)
                        es_ok = response.status == 200
                except (OSError, urllib.error.URLError) as exc:
                    last = f"Elasticsearch: {exc}"
            if es_ok and not kafka_ok:
                kafka_ok, last = kafka_answers(self.bootstrap)
            return es_ok and kafka_ok

        try:
            wait_until(ready, timeout_s, "stand-in ready", interval_s=0.05)
        except WaitTimeout:
            raise StandInError(
                f"stand-in not ready after {timeout_s:.0f} s ({last}); see {self.data_dir / 'noida.out'}"
            ) from None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the server: `noida-db down`, then SIGTERM, then SIGKILL, waiting for the PID to go each time."""
        pid = self.pid
        if pid is None and self.pid_file.exists():
            pid = int(json.loads(self.pid_file.read_text())["pid"])
        if pid is None:
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [str(_binary()), "down", "--data-dir", str(self.data_dir)],
                capture_output=True,
                timeout=10,
                check=False,
            )
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            with contextlib.suppress(WaitTimeout):
                wait_until(lambda: not pid_alive(pid), timeout_s if sig is None else 5.0, "stand-in exit", 0.05)
                break
        self.pid = None
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def stop_service(self, service: str) -> None:
        """Take one service (kafka or elasticsearch) down on the running server; its data is kept."""
        self._control("stop", service)

    def start_service(self, service: str) -> None:
        """Bring one service back up on the running server."""
        self._control("start", service)

    def _control(self, verb: str, service: str) -> None:
        result = subprocess.run(
            [str(_binary()), verb, service, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise StandInError(f"noida-db {verb} {service} failed: {result.stderr.strip()[-300:]}")

    @classmethod
    def from_pid_file(cls, data_dir: Path) -> StandIn | None:
        path = data_dir / "standin.pid"
        if not path.exists():
            return None
        info = json.loads(path.read_text())
        kafka_port = info["kafka_port"]
        return cls(data_dir, None if kafka_port is None else int(kafka_port), int(info["es_port"]), int(info["pid"]))


def kafka_answers(bootstrap: str) -> tuple[bool, str]:
    from kafka import KafkaAdminClient  # imported lazily: `status` and `down` need no client
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    except (KafkaError, OSError, ValueError) as exc:
        return False, f"Kafka: {exc}"
    try:
        admin.list_topics()
        return True, ""
    except (KafkaError, OSError) as exc:
        return False, f"Kafka: {exc}"
    finally:
        admin.close()


def real_endpoints_configured() -> bool:
    """True when the environment names Kafka or Elasticsearch endpoints: then nothing is started."""
    return bool(os.environ.get("BP_KAFKA_BOOTSTRAP") or os.environ.get("BP_ES_URL"))


def _flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kafka-port", type=int, default=int(os.environ.get("BP_STANDIN_KAFKA_PORT", "9092")))
    parser.add_argument("--es-port", type=int, default=int(os.environ.get("BP_STANDIN_ES_PORT", "9200")))


def _start(args: argparse.Namespace, recorded: StandIn | None) -> str:
    standin = StandIn(args.data_dir, args.kafka_port, args.es_port)
    standin.start()
    return f"up (pid {standin.pid}): Kafka {standin.bootstrap}, Elasticsearch {standin.es_url}, data in {args.data_dir}"


def _real_endpoints() -> str | None:
    if real_endpoints_configured():
        return "BP_KAFKA_BOOTSTRAP/BP_ES_URL are set: using those endpoints, nothing started"
    return None


CLI = ServerCli(
    name="standin",
    prog="python -m infra.standin",
    description="Start/stop the local Kafka + Elasticsearch stand-in (noida-db) on loopback.",
    default_dir=DEFAULT_DIR,
    find=StandIn.from_pid_file,
    start=_start,
    add_flags=_flags,
    skip_up=_real_endpoints,
)
main = CLI.main


if __name__ == "__main__":
    raise SystemExit(main())
