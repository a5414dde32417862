"""Real Apache Kafka on loopback: one KRaft node (broker + controller) run from the jars `make kafka` fetched.

    make kafka                   # once: Maven copies the broker jars into .cache/kafka-<version>/lib
    python -m infra.kafka up     # start on 127.0.0.1:9092 (data in .infra/kafka) and wait until it answers
    python -m infra.kafka down   # SIGTERM (controlled shutdown), SIGKILL after a deadline
    python -m infra.kafka status

The version is the one ``infra/kafka-pom.xml`` names (the same as the image in docker/docker-compose.yml). A new
data directory is formatted with a fresh cluster id (``kafka.tools.StorageTool format``, what
``kafka-storage.sh format`` runs); the generated ``server.properties`` puts the client listener and the
controller listener on loopback ports and sizes the broker for a shared 2-core machine and for tests (no initial
rebalance delay, replication factor 1 for the internal topics, a log cleaner that looks every second). Starting
again on the same data directory keeps topics, offsets and groups: that is a broker restart.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bp.errors import KafkaBrokerError, WaitTimeout
from infra.cli import ServerCli
from infra.standin import free_port, kafka_answers, pid_alive, port_open
from runtime.waits import wait_until

log = logging.getLogger("bp.kafka")

ROOT = Path(__file__).resolve().parent.parent
POM = ROOT / "infra" / "kafka-pom.xml"
CACHE = ROOT / ".cache"
DEFAULT_DIR = Path(".infra/kafka")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
FORMAT_TIMEOUT_S = 60.0
HEAP = "512m"
COMPLETE = ".complete"  # written by `make kafka` once every jar is copied

# Broker settings for a single node on a shared 2-core machine; `config=` overrides any of them.
BROKER_CONFIG: dict[str, str] = {
    "num.partitions": "1",
    "auto.create.topics.enable": "true",  # as a default broker (and the stand-in): the DLQ may be created on use
    "message.max.bytes": "1048588",  # Kafka's default, stated: the largest record batch, after compression
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "5",  # 50 by default: the first group would wait for 50 partitions
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "5",
    "group.initial.rebalance.delay.ms": "0",  # 3 s by default: every new group would wait for it
    "group.min.session.timeout.ms": "6000",  # the default, stated: the consumer's lower bound matches it
    "log.cleaner.backoff.ms": "1000",  # the cleaner looks for dirty compacted logs every second (default 15 s)
    "log.cleaner.dedupe.buffer.size": "16777216",  # 128 MiB by default, a quarter of the heap
    "log.cleaner.threads": "1",
    "num.network.threads": "2",
    "num.io.threads": "2",
    "background.threads": "2",
    "num.recovery.threads.per.data.dir": "1",
    "log.flush.interval.messages": "9223372036854775807",  # the default: durability by replication, not fsync
}

LOG4J = """log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.storage.internals.log.LogLoader=WARN
"""

JVM_OPTIONS = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]


def kafka_version() -> str:
    """The Kafka version infra/kafka-pom.xml pins (property ``kafka.version``)."""
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", namespace)  # noqa: S314 (our own file)
    if node is None or not (node.text or "").strip():
        raise KafkaBrokerError(f"no <kafka.version> in {POM}")
    return (node.text or "").strip()


def lib_dir() -> Path:
    return CACHE / f"kafka-{kafka_version()}" / "lib"


def java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def unavailable() -> str | None:
    """Why real Kafka cannot run here (no Java, jars not fetched), or None when it can."""
    if java() is None:
        return "no java on PATH (OpenJDK 17 runs the broker)"
    if not (lib_dir() / COMPLETE).is_file():
        return f"Kafka {kafka_version()} jars not fetched (`make kafka` puts them into {lib_dir()})"
    return None


def cluster_id() -> str:
    """A fresh cluster id in Kafka's format: a random UUID, URL-safe base64 without padding, not starting '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


@dataclass
class KafkaBroker:
    """One single-node KRaft Kafka (broker and controller in one JVM) with its own data directory."""

    data_dir: Path
    port: int
    controller_port: int
    heap: str = HEAP
    config: Mapping[str, str] = field(default_factory=dict)
    pid: int | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def where(self) -> str:
        return self.bootstrap

    @property
    def alive(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)

    @property
    def log_file(self) -> Path:
        return self.data_dir / "kafka.out"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "broker.json"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    def properties(self) -> dict[str, str]:
        listeners = f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": listeners,
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str((self.data_dir / "logs").resolve()),
            **BROKER_CONFIG,
            **self.config,
        }

    def _java_command(self, main: str, *args: str, heap: str | None = None) -> list[str]:
        binary = java()
        if binary is None:
            raise KafkaBrokerError("no java on PATH (OpenJDK 17 runs the broker)")
        log4j = (self.data_dir / "log4j.properties").resolve()
        return [
            binary, f"-Xmx{heap or self.heap}", *JVM_OPTIONS, f"-Dlog4j.configuration=file:{log4j}",
            "-cp", str(lib_dir() / "*"), main, *args,
        ]  # fmt: skip

    def formatted(self) -> bool:
        return (self.data_dir / "logs" / "meta.properties").is_file()

    def format(self) -> None:
        """Write server.properties and format the storage with a fresh cluster id."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text("".join(f"{key}={value}\n" for key, value in self.properties().items()))
        (self.data_dir / "log4j.properties").write_text(LOG4J.replace("INFO, stdout", "WARN, stdout", 1))
        command = self._java_command(
            "kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(self.properties_file), heap="256m"
        )
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise KafkaBrokerError(f"formatting {self.data_dir} took over {FORMAT_TIMEOUT_S:.0f} s") from exc
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()[-500:]
            raise KafkaBrokerError(f"formatting {self.data_dir} failed (exit {result.returncode}): {detail}")
        (self.data_dir / "log4j.properties").write_text(LOG4J)

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start the broker (formatting a new data directory first) and wait until it answers metadata."""
        reason = unavailable()
        if reason is not None:
            raise KafkaBrokerError(reason)
        for port in (self.port, self.controller_port):
            if port_open(port):
                raise KafkaBrokerError(f"port 127.0.0.1:{port} is already in use; stop what uses it or pick another")
        if not self.formatted():
            self.format()
        command = self._java_command("kafka.Kafka", str(self.properties_file))
        with self.log_file.open("ab") as handle:
            self._process = subprocess.Popen(
                command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.pid = self._process.pid
        self._write_state()
        try:
            self.wait_ready(timeout_s)
        except KafkaBrokerError:
            self.stop()
            raise

    def _write_state(self) -> None:
        """PID (None once stopped) and ports, so that `down` finds the broker and `up` restarts it on its ports."""
        self.state_file.write_text(
            json.dumps({"pid": self.pid, "port": self.port, "controller_port": self.controller_port})
        )

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll a metadata request until the broker answers, or raise after the deadline."""
        last = ""

        def ready() -> bool:
            nonlocal last
            if self.pid is not None and not pid_alive(self.pid):
                raise KafkaBrokerError(f"Kafka exited during start-up; see {self.log_file}")
            # A client that bootstraps before the port listens waits out its own timeouts (30 s in
            # kafka-python 3.0.12): ask only once the listener accepts connections.
            if not port_open(self.port):
                last = f"nothing listens on {self.bootstrap} yet"
                return False
            ok, last = kafka_answers(self.bootstrap)
            return ok

        try:
            wait_until(ready, timeout_s, "Kafka ready")
        except WaitTimeout:
            raise KafkaBrokerError(f"Kafka not ready after {timeout_s:.0f} s ({last}); see {self.log_file}") from None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a controlled shutdown that keeps the data), SIGKILL if the PID outlives ``timeout_s``."""
        self._signal(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL: a broker crash. The data directory stays; `start()` recovers from it."""
        self._signal(signal.SIGKILL, 10.0)

    def restart(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Stop, then start again on the same data directory and ports (topics, offsets and groups are kept)."""
        self.stop()
        self.start(timeout_s)

    def _signal(self, first: signal.Signals, timeout_s: float) -> None:
        pid = self.pid
        if pid is None and self.state_file.exists():
            pid = int(json.loads(self.state_file.read_text())["pid"])
        if pid is None:
            return
        for sig, wait_s in ((first, timeout_s), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            with contextlib.suppress(WaitTimeout):
                wait_until(lambda: not pid_alive(pid), wait_s, "Kafka exit", 0.05)
            if not pid_alive(pid):
                break
        else:
            raise KafkaBrokerError(f"Kafka (pid {pid}) still runs after SIGKILL")
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=1)
            self._process = None
        self.pid = None
        self._write_state()

    @classmethod
    def from_state_file(cls, data_dir: Path) -> KafkaBroker | None:
        path = data_dir / "broker.json"
        if not path.exists():
            return None
        info = json.loads(path.read_text())
        pid = None if info["pid"] is None else int(info["pid"])
        return cls(data_dir, int(info["port"]), int(info["controller_port"]), pid=pid)


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=int(os.environ.get("BP_LOCAL_KAFKA_PORT", "9092")))
    parser.add_argument("--heap", default=HEAP, help=f"JVM heap (default {HEAP})")


def _start(args: argparse.Namespace, recorded: KafkaBroker | None) -> str:
    if recorded is not None and recorded.formatted():  # a restart: keep the ports server.properties names
        broker = KafkaBroker(args.data_dir, recorded.port, recorded.controller_port, heap=args.heap)
    else:
        broker = KafkaBroker(args.data_dir, args.port, free_port(), heap=args.heap)
    started = time.monotonic()
    broker.start()
    assert broker.pid is not None
    return (
        f"Apache Kafka {kafka_version()} up (pid {broker.pid}) on {broker.bootstrap} after "
        f"{time.monotonic() - started:.1f} s, {rss_mib(broker.pid):.0f} MiB RSS; data in {args.data_dir}"
    )


CLI = ServerCli(
    name="kafka",
    prog="python -m infra.kafka",
    description="Start/stop a real single-node Apache Kafka (KRaft) on loopback from the jars `make kafka` fetched.",
    default_dir=DEFAULT_DIR,
    find=KafkaBroker.from_state_file,
    start=_start,
    add_flags=_flags,
    client_log_level=logging.CRITICAL,
)
main = CLI.main


if __name__ == "__main__":
    raise SystemExit(main())
