"""Consumer throughput: the consumer CLI against a bare kafka-python consumer on the same topic, in the same run.

The consumer is timed from its spawn until the group's committed offsets equal the end offsets; the bare consumer
(+ ``orjson.loads``) from its spawn to its last record. Both report their process's CPU seconds at that moment, so
the result shows CPU microseconds per reading beside the wall-clock ratio, and the consumer's time to first commit.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench import report
from bench.context import PARTITIONS, POLL_S, Bench, cleanup_consumer, consumer_summary
from bench.presets import Preset
from bench.processes import Child, cpu_seconds, rss_mib
from bench.workload import build
from bp.errors import BenchError, WaitTimeout
from runtime.waits import wait_until

log = logging.getLogger("bench")


def per_reading_us(cpu_s: float | None, readings: int) -> float | None:
    return None if cpu_s is None or not readings else round(cpu_s / readings * 1e6, 1)


@dataclass
class _Progress:
    """What one poll of a running consumer saw: committed counts, RSS samples, checkpoints, first commit."""

    child: Child
    bench: Bench
    group: str
    topic: str
    total: int
    checkpoints: Sequence[int]
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (s since spawn, MiB, committed)
    marks: dict[int, dict[str, float | None]] = field(default_factory=dict)
    committed: int = 0
    first_commit: tuple[float, int] | None = None  # (monotonic time, committed then)
    rss_before_first_commit: float | None = None
    done_at: float | None = None
    cpu_s: float | None = None

    def poll(self) -> bool:
        """One look at the group; True once everything is committed (CPU is read at that moment)."""
        if not self.child.alive():
            raise BenchError(f"consumer exited early (rc {self.child.process.returncode}): {self.child.tail()}")
        self.committed = done = sum(self.bench.committed(self.group, self.topic).values())
        now = time.monotonic()
        rss = rss_mib(self.child.pid)
        if rss is not None:
            self.samples.append((round(now - self.child.started, 3), round(rss, 1), done))
        if done == 0:
            self.rss_before_first_commit = rss
        elif self.first_commit is None:
            self.first_commit = (now, done)
        for mark in self.checkpoints:
            if mark not in self.marks and done >= mark:
                self.marks[mark] = {"committed": done, "seconds": round(now - self.child.started, 2), "rss_mib": rss}
        if done < self.total:
            return False
        self.done_at, self.cpu_s = now, cpu_seconds(self.child.pid)
        return True


def time_consumer(
    bench: Bench,
    label: str,
    topic: str,
    ends: dict[int, int],
    deadline_s: float,
    checkpoints: Sequence[int] = (),
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """Spawn the consumer CLI, poll the group's committed offsets until they reach ``ends``, then SIGTERM it."""
    group = bench.name(label, uuid.uuid4().hex[:6])
    index = bench.name(label, "anom")
    archive = bench.work / f"{label}-archive"
    total = sum(ends.values())
    cpu_server0 = bench.server_cpu()
    child = bench.start_consumer(label, topic, group, index, archive, extra)
    progress = _Progress(child, bench, group, topic, total, checkpoints)
    try:
        wait_until(progress.poll, deadline_s - (time.monotonic() - child.started), f"consumer {label}", POLL_S)
    except WaitTimeout:
        raise BenchError(
            f"consumer {label}: committed {progress.committed} of {total} within {deadline_s:.0f} s"
        ) from None
    finally:
        rc = child.stop()
        cleanup_consumer(bench, topic, index, archive, group)
    cpu_server1 = bench.server_cpu()
    assert progress.done_at is not None
    t0, seconds = child.started, progress.done_at - child.started
    steady = None
    if progress.first_commit is not None and progress.done_at > progress.first_commit[0]:
        first_at, committed_first = progress.first_commit
        steady = (total - committed_first) / (progress.done_at - first_at)
    samples = progress.samples
    return {
        "messages": total,
        "seconds": round(seconds, 3),
        "rate": round(total / seconds, 1),
        "first_commit_after_s": None if progress.first_commit is None else round(progress.first_commit[0] - t0, 3),
        "steady_rate": None if steady is None else round(steady, 1),
        "consumer_cpu_s": progress.cpu_s,
        "cpu_us_per_reading": per_reading_us(progress.cpu_s, total),
        "server_cpu_s": None if cpu_server0 is None or cpu_server1 is None else round(cpu_server1 - cpu_server0, 2),
        "rss_mib_before_first_commit": progress.rss_before_first_commit,
        "rss_mib_peak": max((s[1] for s in samples), default=None),
        "checkpoints": {str(k): v for k, v in sorted(progress.marks.items())},
        "rss_samples_every_s": POLL_S,
        "rss_samples": samples[:: max(1, len(samples) // 200)],
        "exit_code": rc,
        "summary": consumer_summary(bench, label),
    }


def time_ceiling(bench: Bench, label: str, topic: str, total: int, deadline_s: float) -> dict[str, Any]:
    """The bare kafka-python consumer (+ orjson.loads) over the same topic, in a new group."""
    group = bench.name(label, uuid.uuid4().hex[:6])
    cpu_server0 = bench.server_cpu()
    child = bench.children.start(
        label,
        "bench.bare",
        ["consume", "--bootstrap", bench.bootstrap, "--topic", topic, "--group", group, "--expect", str(total),
         "--timeout", str(deadline_s)],
    )  # fmt: skip
    try:
        rc = child.wait(deadline_s + 30)
    finally:
        child.stop()
    if rc != 0:
        raise BenchError(f"bare consumer failed (rc {rc}): {child.tail()}")
    out = orjson.loads(child.stdout_path.read_bytes().strip().splitlines()[-1])
    if out["count"] < total or out["t_last"] is None:
        raise BenchError(f"bare consumer read {out['count']} of {total}")
    seconds = out["t_last"] - child.started
    steady = (out["count"] - 1) / (out["t_last"] - out["t_first"]) if out["t_last"] > out["t_first"] else None
    cpu_server1 = bench.server_cpu()
    cpu_s = None if out.get("cpu_s") is None else round(out["cpu_s"], 3)
    return {
        "messages": out["count"],
        "decoded": out["decoded"],
        "decode_failed": out["decode_failed"],
        "seconds": round(seconds, 3),
        "rate": round(out["count"] / seconds, 1),
        "first_record_after_s": round(out["t_first"] - child.started, 3),
        "steady_rate": None if steady is None else round(steady, 1),
        "cpu_s": cpu_s,
        "cpu_us_per_reading": per_reading_us(cpu_s, out["count"]),
        "server_cpu_s": None if cpu_server0 is None or cpu_server1 is None else round(cpu_server1 - cpu_server0, 2),
    }


def bench_consumer(bench: Bench, preset: Preset) -> dict[str, Any]:
    log.info("consumer throughput: building %d readings (%d patients)", preset.messages, preset.patients)
    records = build(preset.messages, preset.patients, preset.seed)
    kinds = {k: sum(1 for r in records if r.kind == k) for k in ("normal", "anomaly", "reject")}
    topic = bench.name("consume")
    bench.create_topic(topic)
    try:
        produce_s = bench.produce(topic, records)
        del records
        ends = bench.end_offsets(topic)
        total = sum(ends.values())
        log.info("pre-produced %d messages in %.1f s", total, produce_s)
        deadline = max(120.0, total / 200.0)
        runs = []
        for rep in range(preset.repeat):
            order = ("ceiling", "consumer", "memory_state")
            if rep % 2:
                order = order[::-1]
            run: dict[str, Any] = {"order": list(order)}
            for what in order:
                if what == "ceiling":
                    run["ceiling"] = time_ceiling(bench, f"ceiling{rep}", topic, total, deadline)
                elif what == "consumer":
                    run["consumer"] = time_consumer(bench, f"consumer{rep}", topic, ends, deadline)
                else:  # the same consumer with its per-patient state in memory only (no store, no changelog)
                    run[what] = time_consumer(
                        bench, f"memstate{rep}", topic, ends, deadline, extra=("--state-store", "memory")
                    )
                log.info("  run %d %s: %.0f msg/s", rep + 1, what, run[what]["rate"])
            run["ratio"] = round(run["consumer"]["rate"] / run["ceiling"]["rate"], 3)
            run["state_store_cost"] = round(1.0 - run["consumer"]["rate"] / run["memory_state"]["rate"], 3)
            c_steady, b_steady = run["consumer"]["steady_rate"], run["ceiling"]["steady_rate"]
            run["steady_ratio"] = round(c_steady / b_steady, 3) if c_steady and b_steady else None
            cpu_ratio = report.ratio(run["ceiling"]["cpu_us_per_reading"], run["consumer"]["cpu_us_per_reading"])
            run["cpu_ratio"] = None if cpu_ratio is None else round(cpu_ratio, 3)
            runs.append(run)
    finally:
        bench.delete_topics(topic)
    consumers, ceilings = [r["consumer"] for r in runs], [r["ceiling"] for r in runs]
    return {
        "messages": total,
        "mix": kinds,
        "partitions": PARTITIONS,
        "compression": "lz4",
        "preproduce_s": round(produce_s, 2),
        "timing": "consumer: from spawn to committed offsets == end offsets (polled every "
        f"{POLL_S} s); ceiling: from spawn to its last record (orjson.loads of each); CPU: the whole process "
        "(user + system, all threads) at that moment, start-up included",
        "runs": runs,
        "median": {
            "consumer_rate": report.median_of(consumers, "rate"),
            "ceiling_rate": report.median_of(ceilings, "rate"),
            "ratio": report.median_of(runs, "ratio"),
            "memory_state_rate": report.median_of([r["memory_state"] for r in runs], "rate"),
            "state_store_cost": report.median_of(runs, "state_store_cost"),
            "steady_ratio": report.median_of(runs, "steady_ratio"),
            "consumer_cpu_us_per_reading": report.median_of(consumers, "cpu_us_per_reading"),
            "ceiling_cpu_us_per_reading": report.median_of(ceilings, "cpu_us_per_reading"),
            "cpu_ratio": report.median_of(runs, "cpu_ratio"),
            "first_commit_after_s": report.median_of(consumers, "first_commit_after_s"),
        },
    }
