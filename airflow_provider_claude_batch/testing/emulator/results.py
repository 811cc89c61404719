"""A batch's results file: one JSONL line per request in the API's shape, streamed in chunks, replayed once whole."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from ..responder.hashing import request_digest, stable_id
from ..responder.message import generate_message
from .lifecycle import Batch
from .wire import error_envelope

__all__ = ["RESULT_CHUNK_BYTES", "render_line", "result_chunks"]

RESULT_CHUNK_BYTES = 64 * 1024
_LINE_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def result_chunks(batch: Batch, lock: threading.RLock, cut_after_rows: int | None = None) -> Iterator[bytes]:
    """JSONL in ~64 KB chunks, rendered lazily; stops after ``cut_after_rows`` rows if given.

    A download that runs to the end keeps the rendered chunks, and later full downloads replay
    them: rendering ran at ~100,000 lines/s, slower than the clients the benchmarks measure.
    """
    if cut_after_rows is None and batch.rendered is not None:
        yield from batch.rendered
        return
    if cut_after_rows is None:
        rendered: list[bytes] = []
        for chunk in _render_chunks(batch, lock, None):
            rendered.append(chunk)
            yield chunk
        batch.rendered = rendered
        return
    yield from _render_chunks(batch, lock, cut_after_rows)


def _render_chunks(batch: Batch, lock: threading.RLock, cut_after_rows: int | None) -> Iterator[bytes]:
    total = len(batch.custom_ids)
    stop = total if cut_after_rows is None else min(total, cut_after_rows)
    index = 0
    while index < stop:
        lines: list[bytes] = []
        size = 0
        with lock:
            while index < stop and size < RESULT_CHUNK_BYTES:
                line = render_line(batch, index)
                lines.append(line)
                size += len(line)
                index += 1
        yield b"".join(lines)


def render_line(batch: Batch, index: int) -> bytes:
    """One JSONL result line in the API's shape (``errored`` carries the full error envelope)."""
    assert batch.outcomes is not None
    decision, cache = batch.outcomes[index]
    custom_id = batch.custom_ids[index]
    result: dict[str, Any]
    # Ids from the request (custom_id and params), not the batch: the same request answers the same
    # line in every batch it is sent in.
    if decision.kind == "succeeded":
        digest = request_digest(batch.params[index])
        message = generate_message(
            batch.params[index],
            message_id=stable_id("msg_", custom_id, digest),
            service_tier="batch",
            cache=cache,
            invalid_output=decision.invalid_output,
            digest=digest,
        )
        result = {"type": "succeeded", "message": message}
    elif decision.kind == "errored":
        request_id = stable_id("req_", custom_id, request_digest(batch.params[index]))
        envelope = error_envelope(decision.error_type or "api_error", decision.message or "", request_id)
        result = {"type": "errored", "error": envelope}
    else:
        result = {"type": decision.kind}
    return _LINE_ENCODER.encode({"custom_id": custom_id, "result": result}).encode() + b"\n"
