"""Message assembly: the ``message`` object the API would return for a request, and its SSE stream events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from anthropic.types import Usage

from .hashing import request_digest, stable_id
from .params import output_format
from .prompt import NO_CACHE, WORD_RE, CacheUsage, estimate_tokens, input_token_count, last_user_text
from .pytest_answer import pytest_answer
from .schema_faker import schema_value

__all__ = ["generate_message", "message_stream_events"]

# The usage fields the installed SDK's Usage type has (cache_creation's breakdown came with later releases).
_USAGE_FIELDS = frozenset(Usage.model_fields)


def _plain_answer(prompt: str, params: dict[str, Any]) -> str:
    """A one-line reply that visibly depends on the prompt (its first words and word count)."""
    words = WORD_RE.findall(prompt)
    head = " ".join(words[:12]) + ("..." if len(words) > 12 else "")
    turns = len(params["messages"])
    return f'Emulated answer to "{head}" ({len(words)} words, {turns} message(s)).'


def _apply_stop_sequences(text: str, params: dict[str, Any]) -> tuple[str, str | None]:
    """Cut ``text`` at the earliest custom stop sequence, as the model would stop there."""
    best: tuple[int, str] | None = None
    for seq in params.get("stop_sequences") or []:
        if isinstance(seq, str) and seq and (pos := text.find(seq)) >= 0 and (best is None or pos < best[0]):
            best = (pos, seq)
    if best is None:
        return text, None
    return text[: best[0]], best[1]


def _text_content(params: dict[str, Any], salt: str, invalid: bool) -> tuple[str, str, str | None]:
    """(text, stop_reason, stop_sequence) for a text reply, honouring max_tokens."""
    fmt = output_format(params)
    if fmt is not None and isinstance(fmt.get("schema"), dict):
        text = json.dumps(schema_value(params, fmt["schema"], salt, invalid), ensure_ascii=False)
    else:
        prompt = last_user_text(params)
        text = pytest_answer(prompt) or _plain_answer(prompt, params)
    text, stop_sequence = _apply_stop_sequences(text, params)
    if stop_sequence is not None:
        return text, "stop_sequence", stop_sequence
    limit = params["max_tokens"] * 4
    if len(text) > limit:
        return text[:limit], "max_tokens", None
    return text, "end_turn", None


def _forced_tool(params: dict[str, Any]) -> dict[str, Any] | None:
    """The tool the request forces (``tool_choice`` ``tool`` by name, or ``any`` = first tool)."""
    choice = params.get("tool_choice")
    tools = [t for t in params.get("tools") or [] if isinstance(t, dict)]
    if not isinstance(choice, dict) or not tools:
        return None
    if choice.get("type") == "any":
        return tools[0]
    if choice.get("type") == "tool":
        return next((t for t in tools if t.get("name") == choice.get("name")), None)
    return None


def _usage(params: dict[str, Any], output_chars: int, cache: CacheUsage, tier: str) -> dict[str, Any]:
    """The ``usage`` object; cache tokens are carved out of the total input."""
    total = input_token_count(params)
    read = min(cache.read_tokens, total)
    write_1h = min(cache.write_1h_tokens, total - read)
    write_5m = min(cache.write_5m_tokens, total - read - write_1h)
    usage: dict[str, Any] = {
        "input_tokens": total - read - write_1h - write_5m,
        "output_tokens": min(estimate_tokens(output_chars), params["max_tokens"]),
        "cache_creation_input_tokens": write_1h + write_5m,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
        "server_tool_use": None,
        "service_tier": tier,
    }
    return {key: value for key, value in usage.items() if key in _USAGE_FIELDS}


def generate_message(
    params: dict[str, Any],
    *,
    message_id: str,
    service_tier: str = "standard",
    cache: CacheUsage = NO_CACHE,
    invalid_output: bool = False,
    digest: str | None = None,
) -> dict[str, Any]:
    """The full ``message`` object the API would return for ``params`` (already validated).

    Its content is a function of ``params`` alone (through their :func:`request_digest`, which a
    caller that has it passes as ``digest``): never of the message id, a batch or the time.
    ``invalid_output`` breaks structured output / forced-tool input on purpose by dropping a
    required field, to exercise a DAG's output validation path.
    """
    salt = digest or request_digest(params)
    tool = _forced_tool(params)
    if tool is not None:
        schema = tool.get("input_schema") if isinstance(tool.get("input_schema"), dict) else {}
        tool_input = schema_value(params, schema, salt, invalid_output)
        if not isinstance(tool_input, dict):
            tool_input = {}
        block = {
            "type": "tool_use",
            "id": stable_id("toolu_", message_id),
            "name": tool["name"],
            "input": tool_input,
        }
        content, stop_reason, stop_sequence = [block], "tool_use", None
        output_chars = len(json.dumps(tool_input))
    else:
        text, stop_reason, stop_sequence = _text_content(params, salt, invalid_output)
        content = [{"type": "text", "text": text}]
        output_chars = len(text)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": _usage(params, output_chars, cache, service_tier),
    }


def _chunks(text: str, size: int = 24) -> list[str]:
    """Split ``text`` into streaming deltas (at least one, possibly empty)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def message_stream_events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs of the SSE stream for ``message``, in the API's order."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**usage, "output_tokens": 1}
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            opening = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _chunks(json.dumps(block["input"]))]
        else:
            opening = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _chunks(block["text"])]
        yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": opening}
        for delta in deltas:
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    delta_usage = {
        "input_tokens": usage["input_tokens"],
        "output_tokens": usage["output_tokens"],
        "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
        "cache_read_input_tokens": usage["cache_read_input_tokens"],
    }
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
            "usage": delta_usage,
        },
    )
    yield "message_stop", {"type": "message_stop"}
