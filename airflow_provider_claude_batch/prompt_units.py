"""A Messages API prompt as the prompt cache sees it: units in cache order, their sizes, their breakpoints.

The prompt cache reads a request's prompt in one order, tools, then system, then messages, and a
``cache_control`` on a unit (a tool, a system block, a message's content block) caches everything
up to and including it. A string system prompt or string message content is one text block to the
cache. :func:`prompt_units` walks a request's params in that order; the shared-prefix planner, the
cost quote, the request rules and the emulator's cache all read prompts through it, so they agree
on what a prefix is.

Token counts here are offline estimates (:func:`estimate_tokens`: four characters a token, the usual
rule of thumb for English; an image or a binary document counts :data:`MEDIA_TOKENS`). The exact
count needs the API (``POST /v1/messages/count_tokens``).

This module imports nothing from Airflow.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = [
    "MAX_CACHE_BREAKPOINTS",
    "MEDIA_TOKENS",
    "PromptUnit",
    "block_text",
    "breakpoints",
    "cache_control_problems",
    "estimate_tokens",
    "prompt_units",
    "ttl_of",
]

MAX_CACHE_BREAKPOINTS = 4
# An image of up to ~1.15 megapixels is about 1,600 tokens (tokens = width * height / 750, per the
# vision guide); used for every image and binary document, whose size the bytes do not tell.
MEDIA_TOKENS = 1_600
_CHARS_PER_TOKEN = 4
# Content blocks that cannot carry cache_control (the prompt-caching guide: thinking blocks are
# cached only as part of a later turn's prefix).
_UNCACHEABLE_TYPES = frozenset({"thinking", "redacted_thinking"})
_encode = msgspec.json.Encoder().encode


def estimate_tokens(chars: int) -> int:
    """Tokens of ``chars`` characters by the four-characters-a-token rule, never below 1."""
    return max(1, math.ceil(chars / _CHARS_PER_TOKEN))


def ttl_of(cache_control: Any) -> str:
    """A breakpoint's lifetime: ``1h`` when it asks for it, else the API's default ``5m``."""
    return "1h" if isinstance(cache_control, Mapping) and cache_control.get("ttl") == "1h" else "5m"


def block_text(block: Any) -> str:
    """The text a content block contributes to a prompt (tool inputs and results included)."""
    if isinstance(block, str):
        return block
    if not isinstance(block, Mapping):
        return ""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "tool_result":
        content = block.get("content", "")
        return "\n".join(map(block_text, content)) if isinstance(content, list) else block_text(content)
    if kind == "tool_use":
        return json.dumps(block.get("input", {}))
    if kind == "document" and isinstance(block.get("source"), Mapping) and block["source"].get("type") == "text":
        return str(block["source"].get("data", ""))
    return json.dumps(block, default=str)


def _is_media(block: Any) -> bool:
    if not isinstance(block, Mapping):
        return False
    source = block.get("source")
    text_document = isinstance(source, Mapping) and source.get("type") == "text"
    return block.get("type") == "image" or (block.get("type") == "document" and not text_document)


@dataclass(frozen=True)
class PromptUnit:
    """One tool, system block or message content block, where the cache can end a prefix.

    :param section: ``tools``, ``system`` or ``messages``.
    :param location: the tool's index, the system block's index, or (message index, block index);
        a string system prompt or string content is block 0.
    :param block: the tool or block as written (a string for string content).
    :param role: the message's role (``None`` outside messages).
    """

    section: str
    location: tuple[int, ...]
    block: Any
    role: str | None = None

    @property
    def cache_control(self) -> Any:
        return self.block.get("cache_control") if isinstance(self.block, Mapping) else None

    @property
    def cacheable(self) -> bool:
        """Whether a ``cache_control`` may be put on this unit (not a thinking block, not empty text)."""
        if isinstance(self.block, str):
            return bool(self.block)
        if not isinstance(self.block, Mapping) or self.block.get("type") in _UNCACHEABLE_TYPES:
            return False
        return self.block.get("type") != "text" or bool(self.block.get("text"))

    @property
    def chars(self) -> int:
        """Characters for :func:`estimate_tokens` (media count :data:`MEDIA_TOKENS` worth)."""
        if self.section == "tools":
            return len(_encode(_without_cache_control(self.block)))
        if _is_media(self.block):
            return MEDIA_TOKENS * _CHARS_PER_TOKEN
        return len(block_text(self.block))

    def key(self) -> bytes:
        """What the cache compares: the unit's exact JSON without its ``cache_control``, and where it sits."""
        block = {"type": "text", "text": self.block} if isinstance(self.block, str) else self.block
        return _encode((self.section, self.location, self.role, _without_cache_control(block)))


def _without_cache_control(block: Any) -> Any:
    if isinstance(block, Mapping) and "cache_control" in block:
        return {key: value for key, value in block.items() if key != "cache_control"}
    return block


def prompt_units(params: Mapping[str, Any]) -> Iterator[PromptUnit]:
    """The request's units in cache order: every tool, every system block, every message's blocks."""
    tools = params.get("tools")
    for index, tool in enumerate(tools if isinstance(tools, list) else []):
        yield PromptUnit("tools", (index,), tool)
    system = params.get("system")
    blocks = system if isinstance(system, list) else ([system] if system else [])
    for index, block in enumerate(blocks):
        yield PromptUnit("system", (index,), block)
    messages = params.get("messages")
    for position, message in enumerate(messages if isinstance(messages, list) else []):
        if not isinstance(message, Mapping):
            continue
        content = message.get("content", "")
        parts = content if isinstance(content, list) else [content]
        role = message.get("role") if isinstance(message.get("role"), str) else None
        for index, block in enumerate(parts):
            yield PromptUnit("messages", (position, index), block, role)


def breakpoints(params: Mapping[str, Any], units: list[PromptUnit] | None = None) -> list[tuple[int, str]]:
    """``(unit index, ttl)`` of every cache breakpoint, in cache order.

    The top-level ``cache_control`` (automatic caching) is a breakpoint on the last cacheable unit,
    unless that unit already has its own.
    """
    units = list(prompt_units(params)) if units is None else units
    found = [(index, ttl_of(unit.cache_control)) for index, unit in enumerate(units) if unit.cache_control]
    automatic = params.get("cache_control")
    if isinstance(automatic, Mapping):
        last = next((index for index in range(len(units) - 1, -1, -1) if units[index].cacheable), None)
        if last is not None and not any(index == last for index, _ in found):
            found.append((last, ttl_of(automatic)))
    return found


def cache_control_problems(params: Mapping[str, Any]) -> list[str]:
    """What the API rejects in a request's cache breakpoints: more than four, or a 1-hour one after a 5-minute one."""
    found = breakpoints(params)
    problems = []
    if len(found) > MAX_CACHE_BREAKPOINTS:
        problems.append(
            f"a request may have at most {MAX_CACHE_BREAKPOINTS} cache_control breakpoints (the top-level "
            f"cache_control counts as one); this one has {len(found)}"
        )
    seen_short = False
    for _, ttl in found:
        if ttl == "5m":
            seen_short = True
        elif seen_short:
            problems.append(
                "a cache_control with ttl '1h' comes after one with ttl '5m' (the default); longer lifetimes "
                "must come first, in the order tools, system, messages"
            )
            break
    return problems
