"""The ceilings: a bare kafka-python consumer and producer, run as their own processes by ``bench.run``.

    python -m bench.bare consume --bootstrap B --topic T --group G --expect N
    python -m bench.bare produce --bootstrap B --topic T --input FILE [--compression lz4]

Both print one JSON line on stdout with ``time.monotonic()`` stamps (CLOCK_MONOTONIC is system-wide on Linux, so
the parent can compare them with its own spawn time) and the process's CPU seconds when the work was done.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

_LEN = struct.Struct(">I")


def write_records(path: Path, records: Iterator[tuple[bytes, bytes]]) -> int:
    """Store (key, value) pairs length-prefixed; returns how many."""
    count = 0
    with path.open("wb") as out:
        for key, value in records:
            out.write(_LEN.pack(len(key)) + key + _LEN.pack(len(value)) + value)
            count += 1
    return count


def read_records(path: Path) -> list[tuple[bytes, bytes]]:
    data = path.read_bytes()
    records = []
    pos = 0
    while pos < len(data):
        (klen,) = _LEN.unpack_from(data, pos)
        key = data[pos + 4 : pos + 4 + klen]
        pos += 4 + klen
        (vlen,) = _LEN.unpack_from(data, pos)
        value = data[pos + 4 : pos + 4 + vlen]
        pos += 4 + vlen
        records.append((key, value))
    return records


def consume(args: argparse.Namespace) -> dict[str, object]:
    from kafka import KafkaConsumer

    t_start = time.monotonic()
    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    t_constructed = time.monotonic()
    count = decoded = failed = size = 0
    t_first = t_last = cpu_last = None
    deadline = time.monotonic() + args.timeout
    try:
        while count < args.expect and time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=500, max_records=1000)
            for batch in polled.values():
                for record in batch:
                    size += len(record.value)
                    try:
                        orjson.loads(record.value)
                        decoded += 1
                    except orjson.JSONDecodeError:
                        failed += 1
                    count += 1
            if polled:
                t_last = time.monotonic()
                cpu_last = time.process_time()  # the whole process (all threads), as the parent reads the consumer's
                if t_first is None:
                    t_first = t_last
    finally:
        consumer.close(autocommit=False)
    return {
        "count": count, "decoded": decoded, "decode_failed": failed, "bytes": size,
        "t_start": t_start, "t_constructed": t_constructed, "t_first": t_first, "t_last": t_last,
        "cpu_s": cpu_last,
    }  # fmt: skip


def make_producer(bootstrap: str, compression: str, client_id: str = "bench-bare") -> Any:
    """A plain kafka-python producer with the producer CLI's settings (acks=all, idempotent, linger 10 ms,
    128 KiB batches), written out here: the ceiling must not depend on the code it is compared with."""
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=10,
        batch_size=128 * 1024,
        compression_type=None if compression == "none" else compression,
        client_id=client_id,
    )


def produce(args: argparse.Namespace) -> dict[str, object]:
    records = read_records(args.input)
    headers = [("content-type", b"application/fhir+json")]
    t_start = time.monotonic()
    producer = make_producer(args.bootstrap, args.compression)
    acked = failed = 0

    def ok(_: object) -> None:
        nonlocal acked
        acked += 1

    def err(_: object) -> None:
        nonlocal failed
        failed += 1

    t_first = time.monotonic()
    for key, value in records:
        producer.send(args.topic, value=value, key=key, headers=headers).add_callback(ok).add_errback(err)
    producer.flush(timeout=args.timeout)
    t_flushed = time.monotonic()
    cpu_s = time.process_time()
    producer.close(timeout=10)
    return {
        "sent": len(records), "acked": acked, "failed": failed,
        "t_start": t_start, "t_first_send": t_first, "t_flushed": t_flushed,
        "seconds": t_flushed - t_first, "rate": len(records) / (t_flushed - t_first), "cpu_s": cpu_s,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument("mode", choices=["consume", "produce"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group")
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--input", type=Path)
    parser.add_argument("--compression", default="lz4")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    result = consume(args) if args.mode == "consume" else produce(args)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
