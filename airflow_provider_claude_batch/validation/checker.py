"""Check each request's params once per distinct *shape*, not once per request.

A batch of 100,000 requests is usually one shape written 100,000 times: the same model, limits,
tools and message layout, with different prompt text. The shape of a request is its params with
free text (message content, text blocks, the system prompt, descriptions, base64 data) replaced by a
marker that keeps what the rules look at (blank or not, trailing whitespace or not) and with every
other value kept exactly. Requests of one shape get one verdict: the strict schema (``schema.py``)
and the documented rules (``rules.py``) run on the first of them only.

The walk that computes the shape also tells whether the params are plain JSON (dicts, lists,
strings, ints, booleans, ``None``, and floats that print the same either way); those are encoded
with ``msgspec``, which writes exactly the bytes the SDK's encoder writes for such values, four
times faster. Anything else (tuples, subclasses, NaN, ...) is checked alone and encoded by the SDK's
own rules, as before.

This module imports nothing from Airflow.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from airflow_provider_claude_batch.validation.models import ModelCatalog, RuleContext
from airflow_provider_claude_batch.validation.rules import check_rules
from airflow_provider_claude_batch.validation.schema import message_params_view, validate

# Keys whose string values are free text: their content never changes a verdict.
TEXT_KEYS = frozenset({"content", "text", "system", "data", "description", "thinking", "signature", "title", "context"})
# Distinct shapes remembered; past this, further new shapes are still checked, one by one.
MAX_SHAPES = 2048
_TEXT = "\x00text"  # non-blank, ends in non-whitespace
_TEXT_PADDED = "\x00text+ws"  # non-blank, ends in whitespace
_ENCODER = msgspec.json.Encoder()
_encode_native = _ENCODER.encode
# encode() hands back bytes with its growth headroom still allocated (about half a request each,
# 10 MB over 100,000 requests, measured in benchmarks/); encoding into a buffer and copying out
# the exact bytes does not. One buffer per thread: prepare_requests may run in several.
_buffers = threading.local()


class _NotPlainJSON(Exception):
    """The params hold something other than plain JSON values: no shape, no msgspec."""


def _shape(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return value
    if kind is dict:
        return tuple(
            [
                (key, _text(item) if key in TEXT_KEYS and type(item) is str else _shape(item))
                for key, item in value.items()
            ]
        )
    if kind is list:
        return (list, *[_shape(item) for item in value])
    if kind is int or kind is bool or value is None:
        return (kind, value)
    if kind is float:
        # The SDK's encoder writes repr(); msgspec writes the same digits except in exponent form.
        if repr(value).encode() != _encode_native(value):
            raise _NotPlainJSON
        return (kind, value)
    raise _NotPlainJSON


def request_shape(params: Mapping[str, Any]) -> Any:
    """The shape of ``params`` (free text replaced by markers, see above); ``None`` when not plain JSON."""
    try:
        return _shape(params)
    except _NotPlainJSON:
        return None


def _text(value: str) -> str:
    if value and not value[-1].isspace():
        return _TEXT
    return _TEXT_PADDED if value.strip() else value


@dataclass(frozen=True)
class Verdict:
    """What checking one request's params found.

    :param problems: what to fix, one line each (empty when the request can be sent).
    :param native: plain JSON, so :func:`encode` may use msgspec.
    :param model: the model the request names, when it names one.
    :param fast: the request asks for fast mode (a routing question, see ``policy.py``).
    :param max_tokens: the request's ``max_tokens`` (0 when it has none that is valid).
    """

    problems: tuple[str, ...]
    native: bool
    model: str | None
    fast: bool
    max_tokens: int = 0


class RequestChecker:
    """Checks the params of requests bound for one API (batch or Messages), remembering shapes.

    :param batch: the Message Batches API (else the Messages API, which also streams).
    :param betas: the ``anthropic-beta`` values the task sends (the output-300k beta raises ``max_tokens``).
    :param catalog: the Models API's list for this API key, once fetched (``max_tokens`` per model).
    """

    def __init__(
        self, *, batch: bool = True, betas: frozenset[str] = frozenset(), catalog: ModelCatalog | None = None
    ) -> None:
        self.context = RuleContext(batch=batch, betas=frozenset(betas), catalog=catalog)
        self._view = message_params_view(allow_stream=not batch)
        self._verdicts: dict[Any, Verdict] = {}

    def check(self, params: Mapping[str, Any]) -> Verdict:
        """The verdict on ``params``: from a request of the same shape checked before, or checked now."""
        try:
            shape = _shape(params)
        except _NotPlainJSON:
            return self._judge(params, native=False)
        verdict = self._verdicts.get(shape)
        if verdict is None:
            verdict = self._judge(params, native=True)
            if len(self._verdicts) < MAX_SHAPES:
                self._verdicts[shape] = verdict
        return verdict

    @property
    def shapes_seen(self) -> int:
        return len(self._verdicts)

    def _judge(self, params: Mapping[str, Any], *, native: bool) -> Verdict:
        issues, explained = check_rules(params, self.context)
        schema_issues = [issue for issue in validate(self._view, params) if issue.path not in explained]
        problems = tuple(dict.fromkeys(str(issue) for issue in [*issues, *schema_issues]))
        model, max_tokens = params.get("model"), params.get("max_tokens")
        return Verdict(
            problems,
            native,
            model if isinstance(model, str) else None,
            params.get("speed") == "fast",
            max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else 0,
        )


def encode(request: dict[str, Any], verdict: Verdict, fallback: Any) -> bytes:
    """``request`` as the SDK would serialise it: msgspec for plain JSON, else ``fallback``."""
    if verdict.native and type(request.get("custom_id")) is str:
        buffer = getattr(_buffers, "buffer", None)
        if buffer is None:
            buffer = _buffers.buffer = bytearray()
        try:
            _ENCODER.encode_into(request, buffer)
        except (TypeError, ValueError, OverflowError):  # e.g. a dict key that is not a string
            return fallback(request)
        return bytes(buffer)
    return fallback(request)
