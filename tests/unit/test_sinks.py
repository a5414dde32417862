"""Sinks with in-memory fakes: the archive is replay-safe, ES retries what is retryable, dead letters are acked."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from bp.errors import SinkError
from bp.reading import Anomaly, Normal, Priority, Reading, Rejected
from consumer.archive import NormalArchive
from consumer.dead_letters import DeadLetters
from consumer.pipeline import Message, Outcome, Tally
from consumer.sinks import Document, ElasticsearchSink, Window, document_id

T0 = datetime(2026, 5, 4, 23, 50, tzinfo=UTC)


def normal(offset: int, partition: int = 0, minutes: int = 0, entry: int = 0) -> Outcome:
    reading = Reading("p1", T0 + timedelta(minutes=minutes), 118, 76, f"o{partition}-{offset}-{entry}")
    return Outcome(Message(b"x", b"p1", "bp", partition, offset), entry, Normal(reading, "normal", 0.1))


def write(archive: NormalArchive, outcomes: list[Outcome]) -> int:
    """Place each normal reading (as the loop does while sorting a batch), then append them."""
    return archive.write([archive.line_for(o, o.decision) for o in outcomes if isinstance(o.decision, Normal)])


def lines(root: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for path in sorted(root.rglob("*.jsonl")) for line in path.read_bytes().splitlines()]


# ------------------------------------------------------------------------------------------------ archive
def test_archive_splits_by_day_and_partition(tmp_path: Path) -> None:
    archive = NormalArchive(tmp_path)
    write(archive, [normal(0), normal(1, minutes=20), normal(5, partition=3)])
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.jsonl"))
    assert files == ["2026-05-04/bp.p0.jsonl", "2026-05-04/bp.p3.jsonl", "2026-05-05/bp.p0.jsonl"]
    first = lines(tmp_path)[0]
    assert first["source_partition"] == 0 and first["source_offset"] == 0 and first["systolic"] == 118


def test_archive_replay_writes_nothing_twice(tmp_path: Path) -> None:
    write(NormalArchive(tmp_path), [normal(0), normal(1), normal(2)])
    restarted = NormalArchive(tmp_path)  # a new process: positions come from the files
    written = write(restarted, [normal(1), normal(2), normal(3)])
    assert written == 1 and restarted.skipped == 2
    assert [line["source_offset"] for line in lines(tmp_path)] == [0, 1, 2, 3]


def test_archive_bundle_entries_resume_after_partial_write(tmp_path: Path) -> None:
    write(NormalArchive(tmp_path), [normal(4, entry=0)])
    write(NormalArchive(tmp_path), [normal(4, entry=0), normal(4, entry=1)])
    assert [(line["source_offset"], line["source_entry"]) for line in lines(tmp_path)] == [(4, 0), (4, 1)]


def test_archive_cuts_a_torn_last_line(tmp_path: Path) -> None:
    write(NormalArchive(tmp_path), [normal(0), normal(1)])
    (path,) = tmp_path.rglob("*.jsonl")
    with path.open("ab") as handle:
        handle.write(b'{"patient_id": "p1", "source_off')  # crash mid-write
    write(NormalArchive(tmp_path), [normal(2)])
    assert [line["source_offset"] for line in lines(tmp_path)] == [0, 1, 2]


def test_archive_forget_rereads_positions(tmp_path: Path) -> None:
    mine, other = NormalArchive(tmp_path), NormalArchive(tmp_path)
    write(mine, [normal(0)])
    write(other, [normal(1)])  # another consumer owned the partition meanwhile
    mine.forget()  # rebalance
    write(mine, [normal(1), normal(2)])
    assert [line["source_offset"] for line in lines(tmp_path)] == [0, 1, 2]


def test_archive_write_failure_is_a_sink_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SinkError):
        write(NormalArchive(blocker), [normal(0)])


# -------------------------------------------------------------------------------------------- elasticsearch
class FakeBulk:
    """Answers bulk requests from a script: a list of callables taking the operations."""

    def __init__(self, *script: Callable[[list[dict[str, Any]]], Any]) -> None:
        self.script = list(script)
        self.requests: list[list[dict[str, Any]]] = []
        self.stored: dict[str, dict[str, Any]] = {}

    def bulk(self, *, operations: list[dict[str, Any]], refresh: bool | str = False) -> Any:
        self.requests.append(operations)
        step = self.script.pop(0) if self.script else ok
        return step(operations) if not isinstance(step, Exception) else _raise(step)


def _raise(exc: Exception) -> Any:
    raise exc


def ok(operations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"errors": False, "items": [{"index": {"status": 201}} for _ in operations[::2]]}


def statuses(*codes: int) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    def answer(operations: list[dict[str, Any]]) -> dict[str, Any]:
        assert len(operations) // 2 == len(codes)
        items = []
        for code in codes:
            item: dict[str, Any] = {"status": code}
            if code >= 300:
                item["error"] = {"type": "document_parsing_exception" if code == 400 else "es_rejected", "reason": "x"}
            items.append({"index": item})
        return {"errors": True, "items": items}

    return answer


def docs(n: int) -> list[Document]:
    return [Document("bp-anomalies", f"id{i}", {"n": i}) for i in range(n)]


def test_bulk_retries_429_items_and_returns_400_items() -> None:
    waits: list[float] = []
    client = FakeBulk(statuses(201, 429, 400, 503), statuses(201, 201))
    batch = docs(4)
    result = ElasticsearchSink(client, on_wait=waits.append).index(batch)
    assert result.indexed == 3
    assert result.rejected == [(batch[2], "document_parsing_exception: x")]
    retried_ids = [op["index"]["_id"] for op in client.requests[1][::2]]
    assert retried_ids == ["id1", "id3"]
    assert len(waits) == 1


def test_bulk_retries_connection_errors_with_growing_backoff() -> None:
    waits: list[float] = []
    client = FakeBulk(ConnectionError("down"), ConnectionError("down"), ConnectionError("down"), ok)
    sink = ElasticsearchSink(client, on_wait=waits.append, backoff_initial_s=0.1, backoff_max_s=0.3)
    assert sink.index(docs(2)).indexed == 2
    assert waits == [0.1, 0.2, 0.3]
    assert sink.outage_since is None


def test_bulk_gives_up_only_when_told_to_stop() -> None:
    client = FakeBulk(*[ConnectionError("down")] * 5)
    calls = {"n": 0}

    def stop_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(SinkError):
        ElasticsearchSink(client, on_wait=lambda _: None, should_stop=stop_after_three).index(docs(1))
    assert len(client.requests) == 4


def test_bulk_chunks_large_batches() -> None:
    client = FakeBulk()
    assert ElasticsearchSink(client, chunk_size=3).index(docs(7)).indexed == 7
    assert [len(request) // 2 for request in client.requests] == [3, 3, 1]


def test_document_id_is_stable_and_prefers_the_observation_id() -> None:
    with_id = Reading("p", T0, 150, 95, "obs-1")
    assert document_id(with_id) == "obs-1"
    without = Reading("p", T0, 150, 95, None)
    assert document_id(without) == document_id(Reading("p", T0, 150, 95, None))
    assert document_id(without) != document_id(Reading("p", T0, 151, 95, None))


# --------------------------------------------------------------------------------------------- dead letters
class FakeFuture:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error:
            raise self.error


class FakeProducer:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = fail
        self.flushed = 0

    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]) -> FakeFuture:
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": dict(headers)})
        return FakeFuture(RuntimeError("broker said no") if self.fail else None)

    def flush(self, timeout: float) -> None:
        self.flushed += 1


def test_dead_letters_keep_bytes_key_and_carry_reason_headers() -> None:
    producer = FakeProducer()
    message = Message(b"\xff bad", b"k1", "bp", 2, 41, headers=(("content-type", b"application/fhir+json"),))
    assert DeadLetters(producer, "bp.dlq").send([(message, Rejected("not_utf8", "byte 0xff", "parse"))]) == 1
    (letter,) = producer.sent
    assert letter["topic"] == "bp.dlq" and letter["value"] == b"\xff bad" and letter["key"] == b"k1"
    headers = letter["headers"]
    assert headers["reason"] == b"not_utf8" and headers["stage"] == b"parse"
    assert (headers["source-topic"], headers["source-partition"], headers["source-offset"]) == (b"bp", b"2", b"41")
    assert headers["original-content-type"] == b"application/fhir+json"
    assert producer.flushed == 1


def test_unacknowledged_dead_letters_are_a_sink_error() -> None:
    with pytest.raises(SinkError):
        DeadLetters(FakeProducer(fail=True), "bp.dlq").send([(Message(b"x"), Rejected("not_json", "x"))])


# ------------------------------------------------------------------------------------------------ stats
def test_window_counts_and_merge_leaves_original_untouched() -> None:
    reading = Reading("p", T0, 190, 100, "x")
    crisis = Anomaly(
        reading, "hypertensive_crisis", ("hypertension", "hypertensive_crisis"), ("r",), Priority.CRITICAL, None
    )
    window = Window(T0)
    counts = Tally()
    counts.add([normal(0), Outcome(Message(b""), 0, crisis), Outcome(Message(b""), 0, Rejected("x", "y"))])
    merged = window.merged(counts)
    assert window.total == 0
    document = merged.document("c1", T0 + timedelta(seconds=5))
    assert (document["total"], document["normal"], document["anomalies"], document["rejected"]) == (3, 1, 1, 1)
    assert document["readings"] == 2
    assert document["anomaly_rate"] == 0.5 and document["priority_critical"] == 1
    assert document["anomalies_hypertensive_crisis"] == 1 and document["window_seconds"] == 5.0


def test_archive_and_index_keep_the_effective_precision(tmp_path: Path) -> None:
    from consumer.archive import archive_line
    from consumer.sinks import anomaly_document

    day = Reading("p-1", datetime(2012, 9, 17, tzinfo=UTC), 190.0, 95.0, "o-1", effective_precision="day")
    normal = Normal(day, "normal", None)
    outcome = Outcome(Message(b"", topic="t", partition=0, offset=1), 0, normal)
    assert archive_line(outcome, normal)["effective_precision"] == "day"
    anomaly = Anomaly(day, "crisis", ("hypertensive_crisis",), ("acc_aha_crisis",), Priority.CRITICAL, None)
    document = anomaly_document(Outcome(outcome.message, 0, anomaly), anomaly, "rules-only", "2026-01-01T00:00:00Z")
    assert document["effective_precision"] == "day"
    timed = Reading("p-1", datetime(2012, 9, 17, 8, tzinfo=UTC), 120.0, 80.0, "o-2")
    assert archive_line(outcome, Normal(timed, "normal", None))["effective_precision"] == "second"


def test_a_dead_letter_too_large_for_the_topic_is_truncated_with_its_headers_kept() -> None:
    producer = FakeProducer()
    limit = 1_048_576
    huge = Message(b"{" + b"x" * 5_000_000, b"k1", "bp", 0, 7, headers=(("content-type", b"application/fhir+json"),))
    small = Message(b"{}", b"k2", "bp", 0, 8)
    letters = DeadLetters(producer, "bp.dlq", max_request_size=limit)
    letters.send([(huge, Rejected("too_large", "5000001 bytes", "parse")), (small, Rejected("not_json", "x"))])
    big, fine = producer.sent
    size = len(big["value"]) + len(big["key"]) + sum(len(k) + len(v) for k, v in big["headers"].items())
    assert size < limit and big["value"] == huge.value[: len(big["value"])]
    headers = big["headers"]
    assert (headers["reason"], headers["stage"], headers["source-offset"]) == (b"too_large", b"parse", b"7")
    assert headers["original-content-type"] == b"application/fhir+json"
    assert b"value 5000001 bytes cut to" in headers["truncated"]
    assert "truncated" not in fine["headers"] and fine["value"] == b"{}"
    assert letters.truncated == 1


def test_huge_original_headers_are_dropped_before_the_letter_is_refused() -> None:
    producer = FakeProducer()
    noisy = Message(b"v", b"k", "bp", 1, 3, headers=tuple((f"h{i}", b"y" * 100_000) for i in range(20)))
    DeadLetters(producer, "bp.dlq", max_request_size=1_048_576).send([(noisy, Rejected("not_json", "x"))])
    (letter,) = producer.sent
    assert letter["value"] == b"v" and b"20 original headers" in letter["headers"]["truncated"]
    assert letter["headers"]["source-partition"] == b"1"


def test_a_letter_the_producer_refuses_is_sent_without_its_payload_not_retried_forever() -> None:
    class Picky(FakeProducer):
        def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
            if value is None and key is None:
                raise ValueError("Need at least one: key or value")
            if value and value.startswith(b"refuse"):
                raise TypeError("unsupported")
            return super().send(topic, value, key, headers)

    producer = Picky()
    unreadable = Message(None, None, "bp", 0, 5)
    refused = Message(b"refuse me", b"k", "bp", 0, 6, headers=(("h", b"v"),))
    DeadLetters(producer, "bp.dlq").send(
        [(unreadable, Rejected("bad_record", "x", "poll")), (refused, Rejected("x", "y"))]
    )
    first, second = producer.sent
    assert first["value"] == b"" and first["headers"]["source-offset"] == b"5"
    assert second["value"] == b"" and b"TypeError" in second["headers"]["truncated"]
    assert second["headers"]["source-offset"] == b"6" and "original-h" not in second["headers"]
