"""Shared-prefix caching: one 1-hour cache breakpoint where the requests' prompts stop being the same.

Nightly batches often send one long system prompt, tool set or reference document with every
request. With a ``cache_control`` at the end of that shared prefix, the prefix is written to the
prompt cache once (a 1-hour write costs 2x the input price) and read at a tenth of the price by the
requests after it; the batch discount applies on top. :func:`plan_shared_prefix` finds, per model
(a cache never serves another model), the longest run of leading units (see :mod:`.prompt_units`:
tools, then system blocks, then message content blocks) that every request has byte for byte, and
where a breakpoint may end it. :func:`place_breakpoints` puts ``{"type": "ephemeral", "ttl": "1h"}``
on that unit in every request that can take it, and re-serialises those requests, deterministically,
so the submission fingerprint stays a function of the input.

A breakpoint is placed only when the prefix is at least the model's minimum cacheable length
(estimated offline at four characters a token; below the minimum the API silently caches nothing),
when at least two requests share it, never as a fifth breakpoint (the API allows four), never after
a user's own 5-minute breakpoint (1-hour ones must come first), and never moving or changing a
user's own ``cache_control``. Different ``tool_choice`` or ``thinking`` settings change the cache of
the messages (the prompt-caching guide's "what invalidates the cache"), so the shared prefix then
stops before them.

This module imports nothing from Airflow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from airflow_provider_claude_batch.pricing import UnknownModelError, price_for
from airflow_provider_claude_batch.prompt_units import (
    MAX_CACHE_BREAKPOINTS,
    PromptUnit,
    breakpoints,
    estimate_tokens,
    prompt_units,
)
from airflow_provider_claude_batch.validation.models import min_cacheable_tokens

__all__ = [
    "CACHE_CONTROL",
    "CachePlan",
    "PrefixPlan",
    "break_even_hit_rate",
    "caching_summary",
    "place_breakpoints",
    "plan_shared_prefix",
]

CACHE_CONTROL: Mapping[str, str] = {"type": "ephemeral", "ttl": "1h"}
_MESSAGE_CONTEXT_KEYS = ("tool_choice", "thinking")
_SKIPPED_FULL = "already has four breakpoints"
_SKIPPED_TTL = "has a 5-minute breakpoint before it (1-hour breakpoints must come first)"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True)
class _SharedUnit:
    digest: bytes
    chars: int
    cacheable: bool
    unit: PromptUnit


def _digest(unit: PromptUnit) -> bytes:
    return hashlib.blake2b(unit.key(), digest_size=16).digest()


def _shared(unit: PromptUnit) -> _SharedUnit:
    return _SharedUnit(_digest(unit), unit.chars, unit.cacheable, unit)


@dataclass
class PrefixPlan:
    """Where the breakpoint goes for one model's requests, or why it goes nowhere, and what placing did.

    :param position: index (in cache order) of the unit that gets the breakpoint; ``None``: none.
    :param where: that unit, as a path into the params (``system``, ``tools[2]``, ``messages[0].content[1]``).
    :param tokens: estimated tokens of the prefix through that unit.
    :param minimum: the model's minimum cacheable length.
    :param reason: why no breakpoint is placed (empty when one is).
    """

    model: str
    requests: int
    position: int | None = None
    where: str = ""
    tokens: int = 0
    minimum: int = 0
    reason: str = ""
    placed: int = 0
    already_marked: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """One sentence for the task log and ``claude-batch check``."""
        if self.position is None:
            return f"{self.model}: no breakpoint placed: {self.reason}"
        done = [f"placed in {self.placed:,} of {self.requests:,} request(s)"]
        if self.already_marked:
            done.append(f"{self.already_marked:,} already had one there")
        done += [f"{count:,} skipped: the request {why}" for why, count in sorted(self.skipped.items())]
        return (
            f"{self.model}: a 1-hour cache breakpoint after {self.where} (a prefix of about {self.tokens:,} "
            f"tokens shared by {self.requests:,} requests; the model caches from {self.minimum:,}): " + "; ".join(done)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "requests": self.requests,
            "breakpoint_after": self.where or None,
            "prefix_tokens_estimate": self.tokens,
            "min_cacheable_tokens": self.minimum,
            "placed": self.placed,
            "already_marked": self.already_marked,
            "skipped": dict(self.skipped),
            "reason": self.reason or None,
        }


@dataclass
class CachePlan:
    """The plan of every model the requests use."""

    groups: dict[str, PrefixPlan] = field(default_factory=dict)

    @property
    def placed(self) -> int:
        return sum(group.placed for group in self.groups.values())

    def describe(self) -> str:
        return " ".join(f"{group.describe()}." for group in self.groups.values())

    def as_dict(self) -> dict[str, Any]:
        return {"placed": self.placed, "models": [group.as_dict() for group in self.groups.values()]}


@dataclass
class _Group:
    requests: int
    common: list[_SharedUnit]
    context: bytes


def _context(params: Mapping[str, Any]) -> bytes:
    return _encode([params.get(key) for key in _MESSAGE_CONTEXT_KEYS])


def plan_shared_prefix(requests_params: Iterable[Mapping[str, Any]]) -> CachePlan:
    """Find, per model, the longest prefix every request shares and where its breakpoint would go."""
    groups: dict[str, _Group] = {}
    for params in requests_params:
        model = str(params.get("model"))
        group = groups.get(model)
        units = prompt_units(params)
        if group is None:
            groups[model] = _Group(1, [_shared(unit) for unit in units], _context(params))
            continue
        group.requests += 1
        if not group.common:
            continue
        matched = 0
        for unit in units:
            if matched == len(group.common) or _digest(unit) != group.common[matched].digest:
                break
            matched += 1
        del group.common[matched:]
        if _context(params) != group.context:
            first_message = next((i for i, s in enumerate(group.common) if s.unit.section == "messages"), None)
            if first_message is not None:
                del group.common[first_message:]
    return CachePlan({model: _decide(model, group) for model, group in groups.items()})


def _decide(model: str, group: _Group) -> PrefixPlan:
    minimum = min_cacheable_tokens(model)
    plan = PrefixPlan(model, group.requests, minimum=minimum)
    position = next((i for i in range(len(group.common) - 1, -1, -1) if group.common[i].cacheable), None)
    if group.requests < 2:
        plan.reason = f"only one request uses {model}, so a cached prefix would be written and never read"
    elif not group.common:
        plan.reason = "the requests share no leading tool, system block or message content"
    elif position is None:
        plan.reason = "what the requests share holds nothing a breakpoint can mark (thinking blocks, empty text)"
    else:
        tokens = estimate_tokens(sum(shared.chars for shared in group.common[: position + 1]))
        where = _where(group.common[position].unit)
        if tokens < minimum:
            plan.reason = (
                f"the prefix they share (through {where}) is about {tokens:,} tokens, under {model}'s minimum "
                f"cacheable length of {minimum:,}"
            )
        else:
            plan.position, plan.where, plan.tokens = position, where, tokens
    return plan


def _where(unit: PromptUnit) -> str:
    if unit.section == "tools":
        return f"tools[{unit.location[0]}]"
    if unit.section == "system":
        return "system" if isinstance(unit.block, str) else f"system[{unit.location[0]}]"
    message, block = unit.location
    return f"messages[{message}].content" + ("" if isinstance(unit.block, str) else f"[{block}]")


def place_breakpoints(prepared: Any) -> CachePlan:
    """Plan on ``prepared`` (a :class:`~.requests.PreparedRequests`), then mark its requests in place.

    Each marked request is decoded, given the breakpoint and encoded again; the others keep their
    bytes. The models' ``input_bytes`` follow the new sizes.
    """
    plan = plan_shared_prefix(_decode(encoded)["params"] for encoded in prepared.encoded)
    if not any(group.position is not None for group in plan.groups.values()):
        return plan
    for index, encoded in enumerate(prepared.encoded):
        request = _decode(encoded)
        params = request["params"]
        group = plan.groups[str(params.get("model"))]
        if group.position is None or not _mark(params, group):
            continue
        marked = _encode(request)
        prepared.models[params["model"]].input_bytes += len(marked) - len(encoded)
        prepared.encoded[index] = marked
    return plan


def _mark(params: dict[str, Any], group: PrefixPlan) -> bool:
    """Put the breakpoint on the group's unit of ``params`` if the request can take it; count why not."""
    assert group.position is not None
    units = list(prompt_units(params))
    marks = breakpoints(params, units)
    if any(index == group.position for index, _ in marks):
        group.already_marked += 1
        return False
    why = None
    if len(marks) >= MAX_CACHE_BREAKPOINTS:
        why = _SKIPPED_FULL
    elif any(ttl == "5m" and index < group.position for index, ttl in marks):
        why = _SKIPPED_TTL
    if why is not None:
        group.skipped[why] = group.skipped.get(why, 0) + 1
        return False
    unit = units[group.position]
    marked = {"type": "text", "text": unit.block} if isinstance(unit.block, str) else dict(unit.block)
    marked["cache_control"] = dict(CACHE_CONTROL)
    if unit.section == "tools":
        params["tools"][unit.location[0]] = marked
    elif unit.section == "system":
        if isinstance(params["system"], str):
            params["system"] = [marked]
        else:
            params["system"][unit.location[0]] = marked
    else:
        message = params["messages"][unit.location[0]]
        if isinstance(message["content"], str):
            message["content"] = [marked]
        else:
            message["content"][unit.location[1]] = marked
    group.placed += 1
    return True


def break_even_hit_rate(model: str) -> Decimal | None:
    """The share of requests that must read the cache for a 1-hour breakpoint to pay (None: no price).

    A miss writes the prefix at the 1-hour write price instead of the input price; a hit reads it at
    the read price. Caching pays once ``hits * (input - read) > misses * (write - input)``, whatever
    the route (the batch discount halves all three).
    """
    try:
        price = price_for(model)
    except UnknownModelError:
        return None
    return (price.cache_write_1h - price.input) / (price.cache_write_1h - price.cache_read)


def caching_summary(usage: Mapping[str, int], saving: Decimal, shared_prefix: bool) -> dict[str, Any]:
    """The manifest's ``caching`` entry: what the prompt cache wrote, read and saved on the task's route.

    :param usage: the task's token totals (``ResultTally.usage_totals``).
    :param saving: what the cache saved at the route's prices (negative: writes outweighed reads).
    :param shared_prefix: whether the task asked for ``cache_shared_prefix``.
    """
    writes, reads = usage["cache_creation_input_tokens"], usage["cache_read_input_tokens"]
    return {
        "cache_shared_prefix": shared_prefix,
        "cache_write_input_tokens": writes,
        "cache_write_1h_input_tokens": usage["cache_creation_1h_input_tokens"],
        "cache_read_input_tokens": reads,
        "read_share": round(reads / (writes + reads), 4) if writes + reads else None,
        "saving_usd": round(float(saving), 6),
    }
