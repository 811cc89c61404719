"""Batch results: from the API's JSONL lines to our result rows, counts and token usage.

A result line from the API looks like
``{"custom_id": "a", "result": {"type": "succeeded", "message": {...}}}``; the error type of an
``errored`` line is at ``result.error.error.type``. Only the fields needed to route, count and
report are decoded (with msgspec structs); everything else in the line is skipped, which keeps
landing fast and its memory flat whatever the number of results.

Every request becomes exactly one row:
``{"custom_id", "batch_id", "status", "model", "text", "stop_reason", "usage", "error", "tool_calls",
"output", "route"}``; ``route`` says which API produced it (``batch`` or ``sync``), so a batch task
whose rest was finished by a synchronous rescue bills each row at its own route's price.

This module imports nothing from Airflow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

ROUTES = ("batch", "sync")
# The API's four counts, then the 1-hour share of the cache writes (usage.cache_creation's breakdown).
USAGE_KINDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation_1h_input_tokens",
)
RESULT_STATUSES = ("succeeded", "errored", "expired", "canceled")
# A succeeded request whose structured output failed validation against the requested schema.
INVALID_OUTPUT = "invalid_output"
ROW_STATUSES = (*RESULT_STATUSES, INVALID_OUTPUT)
# Errors worth another try in a later batch; anything else (invalid_request_error, ...) is permanent.
TRANSIENT_ERROR_TYPES = frozenset(
    {"api_error", "overloaded_error", "rate_limit_error", "timeout_error", "internal_server_error"}
)


class _CacheCreation(msgspec.Struct):
    ephemeral_1h_input_tokens: int | None = 0


class _Usage(msgspec.Struct):
    input_tokens: int | None = 0
    output_tokens: int | None = 0
    cache_creation_input_tokens: int | None = 0
    cache_read_input_tokens: int | None = 0
    cache_creation: _CacheCreation | None = None


class _Block(msgspec.Struct):
    type: str
    text: str | None = None
    name: str | None = None
    # Kept as raw JSON: tool inputs pass through to the results file without being decoded.
    input: msgspec.Raw = msgspec.Raw()


class _Message(msgspec.Struct):
    model: str = ""
    content: list[_Block] = []
    stop_reason: str | None = None
    usage: _Usage | None = None


class _ErrorObject(msgspec.Struct):
    type: str = "api_error"
    message: str = ""


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorObject | None = None


class _Result(msgspec.Struct):
    type: str
    message: _Message | None = None
    error: _ErrorEnvelope | None = None


class _Line(msgspec.Struct):
    custom_id: str
    result: _Result


class ToolCall(msgspec.Struct):
    """A ``tool_use`` block: the tool's name and its input, passed through undecoded."""

    name: str
    input: msgspec.Raw


class RowError(msgspec.Struct):
    type: str
    message: str


class RowUsage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    # Of cache_creation_input_tokens, those written with the 1-hour lifetime (priced higher).
    cache_creation_1h_input_tokens: int = 0


class ResultRow(msgspec.Struct, omit_defaults=False):
    """One request's outcome, as written to the results file."""

    custom_id: str
    batch_id: str
    status: str
    model: str | None = None
    text: str | None = None
    stop_reason: str | None = None
    usage: RowUsage | None = None
    error: RowError | None = None
    tool_calls: list[ToolCall] | None = None
    output: Any = None
    route: str | None = None
    """Which API produced the row: "batch" or "sync" (None in files written before rows said so)."""

    @property
    def produced_by(self) -> str:
        """The row's route; for older rows, read from the batch id (the synchronous route has none)."""
        return self.route or ("batch" if self.batch_id else "sync")


class CustomIdDigest:
    """An order-independent fingerprint of a set of custom ids, in constant memory.

    Results come back in any order; summing a hash of each id (mod 2**64) gives the same digest for
    the ids submitted and for the ids landed exactly when they are the same multiset (barring a
    2**-64 accident), without keeping 100,000 ids in memory.
    """

    def __init__(self) -> None:
        self._total = 0

    def add(self, custom_id: str) -> None:
        digest = hashlib.blake2b(custom_id.encode(), digest_size=8).digest()
        self._total = (self._total + int.from_bytes(digest, "big")) % _DIGEST_MODULUS

    def hexdigest(self) -> str:
        return f"{self._total:016x}"

    @classmethod
    def of(cls, custom_ids: Iterable[str]) -> str:
        digest = cls()
        for custom_id in custom_ids:
            digest.add(custom_id)
        return digest.hexdigest()


_DIGEST_MODULUS = 2**64


class ResultParseError(ValueError):
    """A line of a results stream is not a valid batch result."""


_line_decoder = msgspec.json.Decoder(_Line)
_row_encoder = msgspec.json.Encoder()
_row_decoder = msgspec.json.Decoder(ResultRow)


def parse_result_line(line: bytes | str, batch_id: str, route: str = "batch") -> ResultRow:
    """Decode one API result line into a row produced by ``route`` (a Messages API answer is ``"sync"``)."""
    try:
        parsed = _line_decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        preview = bytes(line[:200]) if isinstance(line, (bytes, bytearray, memoryview)) else line[:200]
        raise ResultParseError(f"batch {batch_id}: unreadable result line ({error}): {preview!r}") from None
    result = parsed.result
    row = ResultRow(custom_id=parsed.custom_id, batch_id=batch_id, status=result.type, route=route)
    message = result.message
    if result.type == "succeeded" and message is not None:
        row.model = message.model or None
        row.stop_reason = message.stop_reason
        texts = [block.text for block in message.content if block.type == "text" and block.text is not None]
        row.text = "".join(texts) if texts else None
        calls = [
            ToolCall(name=block.name or "", input=block.input)
            for block in message.content
            if block.type == "tool_use" and len(block.input)
        ]
        row.tool_calls = calls or None
        usage = message.usage or _Usage()
        row.usage = RowUsage(
            usage.input_tokens or 0,
            usage.output_tokens or 0,
            usage.cache_creation_input_tokens or 0,
            usage.cache_read_input_tokens or 0,
            (usage.cache_creation.ephemeral_1h_input_tokens or 0) if usage.cache_creation is not None else 0,
        )
    elif result.type == "errored":
        error = result.error.error if result.error is not None else None
        row.error = RowError(error.type, error.message) if error else RowError("api_error", "")
    return row


def encode_row(row: ResultRow) -> bytes:
    """One results-file line (with its trailing newline)."""
    return _row_encoder.encode(row) + b"\n"


def decode_row(line: bytes | str) -> ResultRow:
    """Read back a results-file line."""
    return _row_decoder.decode(line)


def row_to_dict(row: ResultRow) -> dict[str, Any]:
    """A plain-JSON view of a row (tool inputs decoded), for downstream Python code."""
    return msgspec.json.decode(encode_row(row))


def iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Split a byte stream into complete lines (without newlines), skipping blank ones."""
    pending = b""
    for chunk in chunks:
        if not chunk:
            continue
        pieces = (pending + chunk).split(b"\n")
        pending = pieces.pop()
        for piece in pieces:
            if piece.strip():
                yield piece
    if pending.strip():
        yield pending


@dataclass
class ResultTally:
    """Counts and token usage of landed rows, accumulated one row at a time (in all, and per route)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROW_STATUSES, 0))
    usage_by_model: dict[str, list[int]] = field(default_factory=dict)
    error_types: dict[str, int] = field(default_factory=dict)
    rows_by_route: dict[str, int] = field(default_factory=dict)
    usage_by_route: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    """``route -> model -> totals in USAGE_KINDS order``: each route is billed at its own price."""

    def add(self, row: ResultRow) -> None:
        self.counts[row.status] = self.counts.get(row.status, 0) + 1
        route = row.produced_by
        self.rows_by_route[route] = self.rows_by_route.get(route, 0) + 1
        if row.usage is not None:
            model = row.model or "unknown"
            _add_usage(self.usage_by_model.setdefault(model, [0] * len(USAGE_KINDS)), row.usage)
            by_route = self.usage_by_route.setdefault(route, {})
            _add_usage(by_route.setdefault(model, [0] * len(USAGE_KINDS)), row.usage)
        if row.error is not None:
            self.error_types[row.error.type] = self.error_types.get(row.error.type, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return self.total - self.counts.get("succeeded", 0)

    def usage_totals(self) -> dict[str, int]:
        """Tokens by kind, summed over models."""
        totals = [0] * len(USAGE_KINDS)
        for per_model in self.usage_by_model.values():
            for kind, value in enumerate(per_model):
                totals[kind] += value
        return dict(zip(USAGE_KINDS, totals, strict=True))


def _add_usage(totals: list[int], usage: RowUsage) -> None:
    totals[0] += usage.input_tokens
    totals[1] += usage.output_tokens
    totals[2] += usage.cache_creation_input_tokens
    totals[3] += usage.cache_read_input_tokens
    totals[4] += usage.cache_creation_1h_input_tokens


def is_transient(row: ResultRow) -> bool:
    """Whether a failed row is worth resubmitting: expired, or errored for a transient reason."""
    if row.status == "expired":
        return True
    return row.status == "errored" and row.error is not None and row.error.type in TRANSIENT_ERROR_TYPES


def failure_verdict(counts: dict[str, int], max_failed_fraction: float) -> str | None:
    """Why a landed batch counts as failed under the partial-failure policy, or ``None`` if it passes.

    :param counts: rows per status (``succeeded``, ``errored``, ``expired``, ``canceled``, ...).
    :param max_failed_fraction: the largest share of requests allowed not to succeed (0 = none).
    """
    total = sum(counts.values())
    failed = total - counts.get("succeeded", 0)
    if total == 0:
        return "the batch has no results at all"
    if failed / total <= max_failed_fraction:
        return None
    detail = ", ".join(f"{status} {n}" for status, n in counts.items() if status != "succeeded" and n)
    return (
        f"{failed} of {total} requests did not succeed ({detail}), more than "
        f"max_failed_fraction={max_failed_fraction:g} allows"
    )
