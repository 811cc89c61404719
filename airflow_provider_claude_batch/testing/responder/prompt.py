"""Prompt text and its accounting: the words a reply depends on, input tokens, prompt-cache writes and reads.

Prompts are read through :mod:`airflow_provider_claude_batch.prompt_units` (tools, system, messages:
the cache's order), so the emulator and the provider agree on what a prefix is. Tokens are four
characters each (an image or binary document counts 1,600): the emulator's tokenizer.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from ...prompt_units import block_text, breakpoints, estimate_tokens, prompt_units
from ...validation.models import min_cacheable_tokens

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
_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


def _content_text(content: Any) -> str:
    """Text of a ``content`` field, which is either a string or a list of blocks."""
    if isinstance(content, list):
        return "\n".join(block_text(b) for b in content)
    return block_text(content)


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


@dataclass(frozen=True)
class CacheUsage:
    """Cache tokens of one request: written now (per lifetime), or read from an earlier identical prefix."""

    write_5m_tokens: int = 0
    write_1h_tokens: int = 0
    read_tokens: int = 0

    @property
    def write_tokens(self) -> int:
        return self.write_5m_tokens + self.write_1h_tokens


NO_CACHE = CacheUsage()


class PromptCache:
    """The cached prompt prefixes the emulator holds, for cache write/read accounting.

    A request's breakpoints are its blocks carrying ``cache_control`` (and the last block, under a
    top-level ``cache_control``). A prefix through a breakpoint is cached per model; one shorter than
    the model's minimum cacheable length is not cached at all, as the API silently skips it. The
    longest cached prefix still alive is read (and its lifetime renewed); the rest, up to the last
    breakpoint, is written, each stretch with the lifetime of the breakpoint that ends it. Lifetimes
    (5 minutes, or 1 hour) are divided by the emulator's ``time_scale``. Not modelled: the API's
    20-block lookback for hits between breakpoints.
    """

    def __init__(self) -> None:
        self._expiry: dict[bytes, float] = {}
        self.requests_writing = 0
        self.requests_reading = 0

    def clear(self) -> None:
        """Forget all prefixes (emulator reset)."""
        self._expiry.clear()
        self.requests_writing = self.requests_reading = 0

    def stats(self) -> dict[str, int]:
        """For the emulator's state: live entries, and how many requests wrote and read the cache."""
        return {
            "entries": len(self._expiry),
            "requests_writing": self.requests_writing,
            "requests_reading": self.requests_reading,
        }

    def account(self, params: dict[str, Any], *, now: float, time_scale: float = 1.0, found: bool = True) -> CacheUsage:
        """Record the request's prefixes at ``now`` and return its cache usage.

        :param found: whether a cached prefix may be found: False models a best-effort miss in a
            batch (the prefix is written again, as if it were not there).
        """
        if _simple_prompt_chars(params) is not None and not params.get("cache_control"):
            return NO_CACHE  # plain strings carry no cache_control
        units = list(prompt_units(params))
        marks = dict(breakpoints(params, units))
        if not marks:
            return NO_CACHE
        minimum = min_cacheable_tokens(str(params.get("model")))
        hasher = hashlib.blake2b(str(params.get("model")).encode(), digest_size=16)
        chars = 0
        prefixes: list[tuple[bytes, int, str]] = []  # (key, tokens through it, ttl) of each cacheable breakpoint
        for index, unit in enumerate(units[: max(marks) + 1]):
            hasher.update(unit.key())
            chars += unit.chars
            if index in marks and estimate_tokens(chars) >= minimum:
                prefixes.append((hasher.copy().digest(), estimate_tokens(chars), marks[index]))
        if not prefixes:
            return NO_CACHE
        read = 0
        if found:
            alive = [(tokens, key, ttl) for key, tokens, ttl in prefixes if self._expiry.get(key, -1.0) > now]
            if alive:
                read, key, ttl = max(alive)
                self._expiry[key] = now + _TTL_SECONDS[ttl] / time_scale
        written = {"5m": 0, "1h": 0}
        covered = read
        for key, tokens, ttl in prefixes:
            if tokens > covered:
                written[ttl] += tokens - covered
                covered = tokens
                self._expiry[key] = now + _TTL_SECONDS[ttl] / time_scale
        self.requests_reading += bool(read)
        self.requests_writing += bool(written["5m"] or written["1h"])
        return CacheUsage(write_5m_tokens=written["5m"], write_1h_tokens=written["1h"], read_tokens=read)


def input_token_count(params: dict[str, Any]) -> int:
    """Total prompt tokens: chars/4 of tools, system and every message block."""
    simple = _simple_prompt_chars(params)
    return estimate_tokens(simple if simple is not None else sum(unit.chars for unit in prompt_units(params)))


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
