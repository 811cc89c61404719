"""Prompt text and its accounting: the words a reply depends on, input tokens, prompt-cache writes and reads."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "NO_CACHE",
    "WORD_RE",
    "CacheUsage",
    "PromptCache",
    "estimate_tokens",
    "input_token_count",
    "last_user_text",
    "system_text",
]

WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9'_-]*")


def estimate_tokens(chars: int) -> int:
    """The usual chars/4 rule of thumb, never below 1 (the API never reports 0 tokens)."""
    return max(1, math.ceil(chars / 4))


def _block_text(block: Any) -> str:
    """The text a content block contributes to the prompt (for token counts and echoes)."""
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "tool_result":
        return _content_text(block.get("content", ""))
    if kind == "tool_use":
        return json.dumps(block.get("input", {}))
    if kind in ("image", "document"):
        source = block.get("source") or {}
        return str(source.get("data", ""))[:4000] if source.get("type") == "text" else "x" * 4000
    return json.dumps(block)


def _content_text(content: Any) -> str:
    """Text of a ``content`` field, which is either a string or a list of blocks."""
    if isinstance(content, list):
        return "\n".join(_block_text(b) for b in content)
    return _block_text(content)


def system_text(params: dict[str, Any]) -> str:
    """The system prompt's text (a string or text blocks), "" without one."""
    system = params.get("system")
    return _content_text(system) if system else ""


def last_user_text(params: dict[str, Any]) -> str:
    """The last user turn: what a reply should visibly depend on."""
    for message in reversed(params["messages"]):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content", ""))
    return ""


def _prompt_units(params: dict[str, Any]) -> Iterator[tuple[str, bool, str]]:
    """(text, has_cache_control, ttl) per prompt unit, in cache-prefix order: tools, system, messages."""
    for tool in params.get("tools") or []:
        if isinstance(tool, dict):
            cc = tool.get("cache_control")
            yield json.dumps(tool, sort_keys=True, default=str), isinstance(cc, dict), _ttl(cc)
    system = params.get("system")
    blocks: list[Any] = system if isinstance(system, list) else ([system] if system else [])
    for block in blocks:
        cc = block.get("cache_control") if isinstance(block, dict) else None
        yield _block_text(block), isinstance(cc, dict), _ttl(cc)
    for message in params["messages"]:
        content = message.get("content", "") if isinstance(message, dict) else ""
        parts: list[Any] = content if isinstance(content, list) else [content]
        for block in parts:
            cc = block.get("cache_control") if isinstance(block, dict) else None
            yield _block_text(block), isinstance(cc, dict), _ttl(cc)


def _ttl(cache_control: Any) -> str:
    """Normalised cache TTL (``5m`` unless the block asks for ``1h``)."""
    if isinstance(cache_control, dict) and cache_control.get("ttl") == "1h":
        return "1h"
    return "5m"


@dataclass(frozen=True)
class CacheUsage:
    """Cache tokens of one request: written now, or read from an earlier identical prefix."""

    write_tokens: int = 0
    read_tokens: int = 0
    ttl: str = "5m"


NO_CACHE = CacheUsage()


class PromptCache:
    """The set of cached prompt prefixes the emulator has seen, for cache write/read accounting.

    A request's cache breakpoints are the blocks carrying ``cache_control``; the first time a
    prefix (everything up to and including such a block) is seen it is a cache write, afterwards
    a read, which is how the real prompt cache bills repeated system prompts in a batch.
    """

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def clear(self) -> None:
        """Forget all prefixes (emulator reset)."""
        self._seen.clear()

    def account(self, params: dict[str, Any]) -> CacheUsage:
        """Record the request's prefixes and return its cache usage."""
        if _simple_prompt_chars(params) is not None:
            return NO_CACHE  # plain strings cannot carry cache_control
        hasher = hashlib.blake2b(digest_size=16)
        chars = 0
        breakpoints: list[tuple[bytes, int, str]] = []
        for text, cached, ttl in _prompt_units(params):
            hasher.update(text.encode())
            hasher.update(b"\x1e")
            chars += len(text)
            if cached:
                breakpoints.append((hasher.copy().digest(), estimate_tokens(chars), ttl))
        if not breakpoints:
            return NO_CACHE
        read = max((tokens for key, tokens, _ in breakpoints if key in self._seen), default=0)
        _, last_tokens, ttl = breakpoints[-1]
        self._seen.update(key for key, _, _ in breakpoints)
        return CacheUsage(write_tokens=max(0, last_tokens - read), read_tokens=read, ttl=ttl)


def input_token_count(params: dict[str, Any]) -> int:
    """Total prompt tokens: chars/4 of tools, system and every message block."""
    return estimate_tokens(_simple_prompt_chars(params) or sum(len(text) for text, _, _ in _prompt_units(params)))


def _simple_prompt_chars(params: dict[str, Any]) -> int | None:
    """Fast path for the common all-strings prompt (keeps 100k-line result streams quick)."""
    system = params.get("system") or ""
    if params.get("tools") or not isinstance(system, str):
        return None
    total = len(system)
    for message in params["messages"]:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            return None
        total += len(content)
    return total
