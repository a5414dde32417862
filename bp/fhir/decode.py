"""From bytes to a JSON document: why undecodable bytes are rejected, and the repeated-key check."""

from __future__ import annotations

import json
from typing import Any

import orjson

from bp.fhir.reasons import RejectReason, _reject, _show
from bp.reading import Rejected


def _undecodable(raw: bytes, exc: orjson.JSONDecodeError) -> Rejected:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return _reject(RejectReason.NOT_UTF8, f"invalid UTF-8 at byte {bad.start}")
    message = str(exc)
    if "depth limit" in message:  # orjson refuses nesting beyond 1024 levels
        return _reject(RejectReason.TOO_DEEP, "JSON nested deeper than 1024 levels")
    return _reject(RejectReason.NOT_JSON, message)


# --- duplicate keys ----------------------------------------------------------------------------------------
# orjson keeps the last of repeated keys silently. Three steps, cheapest first, all exact:
# 1. re-serialise the parsed document (compact, as orjson writes it): if that gives back the very bytes (the
#    producer's messages), every key of the text is in the document, so none repeats (~1 us per message);
# 2. count keys: in the compact re-serialisation every key ends with `":` and nothing else does (string
#    contents escape `"`; when a `\":` shows up the parsed document is walked instead); in the text, after
#    deleting whitespace, every key ends with `":` too, and string contents can only add matches. Equal
#    counts mean no key was lost (pretty-printed senders end here; linear, in C);
# 3. more matches than keys (a repeated key, or a string containing `":`): ask the standard library, whose
#    object_pairs_hook sees every pair.


class _RepeatedKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _RepeatedKeyError(key)
        seen.add(key)
    return {}  # the values are not needed


def _duplicate_key(raw: bytes, document: dict[str, Any]) -> Rejected | None:
    try:
        compact: bytes | None = orjson.dumps(document)
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits: count by walking
        compact = None
    if compact == raw:
        return None
    keys = compact.count(b'":') if compact is not None and b'\\":' not in compact else _count_keys(document)
    if raw.translate(None, b" \t\n\r").count(b'":') == keys:
        return None
    try:
        json.loads(raw, object_pairs_hook=_no_repeats)
    except _RepeatedKeyError as repeated:
        return _reject(RejectReason.DUPLICATE_KEY, f"key {_show(repeated.key)} repeated in one object")
    except RecursionError:
        return _reject(RejectReason.TOO_DEEP, "JSON nested too deep to check for repeated keys")
    except ValueError:  # orjson accepted it; the standard library should too
        return None
    return None


def _count_keys(document: object) -> int:
    """Keys of every object in a parsed JSON document (iterative: no recursion limit)."""
    count = 0
    stack = [document]
    pop = stack.pop
    extend = stack.extend
    while stack:
        node = pop()
        if type(node) is dict:
            count += len(node)
            extend(node.values())
        elif type(node) is list:
            extend(node)
    return count
