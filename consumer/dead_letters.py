"""The dead-letter sink: rejected messages, with their original key, bytes and headers, plus why and where.

Each letter carries ``reason``, ``detail``, ``stage`` and ``source-topic/partition/offset`` headers; the original
headers follow as ``original-*``. A letter too large for the dead-letter topic is cut to fit, never refused
forever (see :meth:`DeadLetters.fit`). Like every sink, a batch of letters is either acknowledged whole or raises
:class:`bp.errors.SinkError`, and the loop does not commit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bp.errors import SinkError
from bp.reading import Rejected
from consumer.pipeline import Message
from consumer.ports import Acknowledgement, DeadLetterProducer

log = logging.getLogger("bp.consumer.sinks")


def _header_bytes(headers: Sequence[tuple[str, bytes]]) -> int:
    return sum(len(name.encode()) + len(value) + 10 for name, value in headers)


def dead_letter_headers(message: Message, reason: str, detail: str, stage: str) -> list[tuple[str, bytes]]:
    return [
        ("reason", reason.encode()),
        ("detail", detail.encode("utf-8", "replace")[:1000]),
        ("stage", stage.encode()),
        ("source-topic", message.topic.encode()),
        ("source-partition", str(message.partition).encode()),
        ("source-offset", str(message.offset).encode()),
        *((f"original-{name}", value or b"") for name, value in message.headers if not name.startswith("original-")),
    ]


RECORD_OVERHEAD = 512  # Kafka record batch header + record framing, generously (kafka-python counts 61 + varints)
KEY_LIMIT = 1024


class DeadLetters:
    """Sends rejected messages (original key and bytes) to the dead-letter topic and waits for every ack.

    A letter larger than ``max_request_size`` (the producer's limit, set to what the broker accepts) is cut to
    fit instead of being refused forever: the reason/stage/source headers stay, the original headers stay unless
    they alone are too large, the value is truncated, and a ``truncated`` header says what was cut.
    """

    def __init__(
        self, producer: DeadLetterProducer, topic: str, timeout_s: float = 30.0, max_request_size: int = 1_048_576
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s
        self.max_request_size = max_request_size
        self.truncated = 0

    def send(self, letters: Sequence[tuple[Message, Rejected]]) -> int:
        """Send and wait for every acknowledgement."""
        return self.confirm(self.start(letters))

    def start(self, letters: Sequence[tuple[Message, Rejected]]) -> list[Acknowledgement]:
        """Hand the letters to the producer without waiting (so the wait can overlap other work)."""
        from kafka.errors import MessageSizeTooLargeError

        futures = []
        try:
            for message, rejected in letters:
                headers = dead_letter_headers(message, rejected.reason, rejected.detail, rejected.stage)
                key, value, headers = self.fit(message.key, message.value, headers)
                if headers and headers[-1][0] == "truncated":
                    log.warning("dead letter of offset %d cut to fit: %s", message.offset, headers[-1][1].decode())
                if key is None and value is None:  # Kafka wants one of them (a record read without either)
                    value = b""
                try:
                    futures.append(self.producer.send(self.topic, value=value, key=key, headers=headers))
                except (
                    ValueError,
                    TypeError,
                    MessageSizeTooLargeError,
                ) as exc:  # this letter's fault, not the producer's
                    log.warning("dead letter of offset %d refused (%s); sent without its payload", message.offset, exc)
                    note = ("truncated", f"payload dropped: {type(exc).__name__}: {exc}"[:300].encode())
                    minimal = [header for header in headers if not header[0].startswith("original-")]
                    futures.append(self.producer.send(self.topic, value=b"", key=None, headers=[*minimal, note]))
        except Exception as exc:  # buffer full, metadata timeout, closed producer...: do not commit
            raise SinkError(f"dead letters not sent: {type(exc).__name__}: {exc}") from exc
        return futures

    def fit(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
        """Key, value and headers cut to fit ``max_request_size`` (unchanged when they fit)."""
        size = RECORD_OVERHEAD + len(key or b"") + len(value or b"") + _header_bytes(headers)
        if size <= self.max_request_size:
            return key, value, headers
        self.truncated += 1
        notes = []
        if key is not None and len(key) > KEY_LIMIT:
            notes.append(f"key {len(key)} bytes cut to {KEY_LIMIT}")
            key = key[:KEY_LIMIT]
        own = [header for header in headers if not header[0].startswith("original-")]
        originals = [header for header in headers if header[0].startswith("original-")]
        budget = self.max_request_size - RECORD_OVERHEAD - len(key or b"") - _header_bytes(own) - 256
        if _header_bytes(originals) > budget // 2:
            notes.append(f"{len(originals)} original headers ({_header_bytes(originals)} bytes) dropped")
            originals = []
        budget -= _header_bytes(originals)
        if value is not None and len(value) > budget:
            notes.append(f"value {len(value)} bytes cut to {max(0, budget)}")
            value = value[: max(0, budget)]
        return key, value, [*own, *originals, ("truncated", "; ".join(notes).encode())]

    def confirm(self, futures: Sequence[Acknowledgement]) -> int:
        """Flush and check every acknowledgement; SinkError if any letter was not delivered."""
        if not futures:
            return 0
        try:
            self.producer.flush(timeout=self.timeout_s)
        except Exception as exc:
            raise SinkError(f"dead letters not sent: {type(exc).__name__}: {exc}") from exc
        failures = []
        for future in futures:
            try:
                future.get(timeout=self.timeout_s)
            except Exception as exc:  # any delivery failure means: do not commit
                failures.append(exc)
        if failures:
            raise SinkError(f"{len(failures)} dead letters not acknowledged: {failures[0]}")
        return len(futures)
