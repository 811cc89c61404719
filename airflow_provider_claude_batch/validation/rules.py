"""The rules the API documents that the SDK's types cannot say, checked on one request's params.

Types say "a list of messages"; the API also wants the first to be a user turn, tool results right
after the tool calls they answer, a thinking budget under ``max_tokens``, ``temperature`` between 0
and 1, a ``max_tokens`` the model can produce, at most four cache breakpoints (1-hour ones first),
and no ``stream`` in a batch. Each rule returns
:class:`~.schema.Issue` objects phrased as the fix. Every rule tolerates params the schema already
rejected (wrong types are skipped here, reported there).

Fast mode (``speed: "fast"``) is not refused here: it makes the task's route synchronous, which the
routing policy (``policy.py``) decides and explains.

This module imports nothing from Airflow.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_claude_batch.prompt_units import cache_control_problems
from airflow_provider_claude_batch.validation.models import (
    INTERLEAVED_THINKING_BETA,
    RuleContext,
    facts_for,
    offline_model_problem,
    output_limit_problem,
)
from airflow_provider_claude_batch.validation.schema import Issue
from airflow_provider_claude_batch.validation.suggest import did_you_mean

MIN_THINKING_BUDGET = 1024
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_FORCED_TOOL_CHOICES = ("any", "tool")


def check_rules(params: Mapping[str, Any], context: RuleContext) -> tuple[list[Issue], set[str]]:
    """Issues of ``params``, and the top-level keys whose schema issues they already explain."""
    issues, explained = _required(params, context)
    messages = params.get("messages")
    if isinstance(messages, list) and messages:
        issues += _message_order(messages, params.get("model"))
        issues += _tool_results(messages)
    issues += _tools(params)
    issues += _sampling(params)
    issues += _output(params, context)
    issues += [Issue("", problem) for problem in cache_control_problems(params)]
    if context.batch and params.get("stream") is True:
        issues.append(
            Issue(
                "",
                "'stream' is set, but a batch hands back only finished results; remove it, or use "
                "ClaudeMessageOperator if the output must stream",
            )
        )
        explained.add("stream")
    return issues, explained


def _required(params: Mapping[str, Any], context: RuleContext) -> tuple[list[Issue], set[str]]:
    issues: list[Issue] = []
    model = params.get("model")
    if not isinstance(model, str) or not model:
        issues.append(Issue("", "'model' is missing: set model= on the operator or 'model' in the request"))
    elif problem := offline_model_problem(model):
        issues.append(Issue("model", f"{problem} (set on the operator or in the request)"))
    max_tokens = params.get("max_tokens")
    least = 1 if context.batch else 0
    if max_tokens is None:
        issues.append(Issue("", "'max_tokens' is missing: set max_tokens= on the operator or in the request"))
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < least:
        why = ""
        if max_tokens == 0 and context.batch:
            why = " (max_tokens=0 pre-warms the prompt cache, which a batch cannot: the entry would expire first)"
        issues.append(Issue("", f"'max_tokens' must be an integer of at least {least}, got {max_tokens!r}{why}"))
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        issues.append(Issue("", "'messages' must be a non-empty list of {'role': ..., 'content': ...} turns"))
    return issues, {"model", "max_tokens", "messages"}


def _text_of(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [b["text"] for b in content if isinstance(b, Mapping) and isinstance(b.get("text"), str)]
    return []


def _message_order(messages: Sequence[Any], model: Any) -> list[Issue]:
    issues: list[Issue] = []
    roles = [m.get("role") if isinstance(m, Mapping) else None for m in messages]
    if roles[0] == "system":
        issues.append(
            Issue(
                "messages[0]",
                "a conversation starts with a user turn, not a system message; move its text to the "
                "top-level system parameter (system= on the operator, or 'system' in the request)",
            )
        )
    elif roles[0] == "assistant":
        issues.append(Issue("messages[0]", "a conversation starts with a user turn; add the user message first"))
    facts = facts_for(model) if isinstance(model, str) else None
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            continue
        where = f"messages[{index}]"
        role, content = roles[index], message.get("content")
        if role == "system" and index:
            if roles[index - 1] != "user":
                issues.append(Issue(where, "a mid-conversation system message must come right after a user turn"))
            if facts is not None and facts.mid_conversation_system is False:
                issues.append(
                    Issue(
                        where,
                        f"{model} does not accept mid-conversation system messages (Claude Opus 4.8 does); "
                        "use the top-level system parameter or put the instruction in the user turn",
                    )
                )
        last = index == len(messages) - 1
        if (isinstance(content, str) and not content.strip() and not (last and role == "assistant")) or (
            isinstance(content, list) and not content
        ):
            issues.append(
                Issue(f"{where}.content", "is empty; every turn needs content (except a final assistant prefill)")
            )
        if isinstance(content, list):
            for position, block in enumerate(content):
                text = block.get("text") if isinstance(block, Mapping) and block.get("type") == "text" else None
                if isinstance(text, str) and not text.strip():
                    issues.append(
                        Issue(f"{where}.content[{position}].text", "text blocks must contain non-whitespace text")
                    )
        if last and role == "assistant":
            texts = _text_of(content)
            if texts and texts[-1] != texts[-1].rstrip():
                issues.append(
                    Issue(
                        f"{where}.content", "a final assistant message (a prefill) cannot end with whitespace; strip it"
                    )
                )
    return issues


def _blocks(message: Any, kind: str) -> list[tuple[int, Mapping[str, Any]]]:
    content = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(content, list):
        return []
    return [(i, b) for i, b in enumerate(content) if isinstance(b, Mapping) and b.get("type") == kind]


def _tool_results(messages: Sequence[Any]) -> list[Issue]:
    """``tool_result`` blocks answer the ``tool_use`` blocks of the assistant turn right before them."""
    issues: list[Issue] = []
    for index, message in enumerate(messages):
        results = _blocks(message, "tool_result")
        if not results:
            continue
        where = f"messages[{index}]"
        if message.get("role") != "user":
            issues.append(Issue(where, "tool_result blocks belong in a user turn"))
            continue
        previous = messages[index - 1] if index else None
        asked = {b.get("id") for _, b in _blocks(previous, "tool_use")}
        for position, block in results:
            tool_use_id = block.get("tool_use_id")
            if tool_use_id not in asked:
                hint = (
                    did_you_mean(tool_use_id, [a for a in asked if isinstance(a, str)])
                    if isinstance(tool_use_id, str)
                    else ""
                )
                issues.append(
                    Issue(
                        f"{where}.content[{position}].tool_use_id",
                        f"{tool_use_id!r} answers no tool_use block of the assistant turn right before it{hint}",
                    )
                )
        content = message.get("content")
        first_other = next(
            (i for i, b in enumerate(content) if not (isinstance(b, Mapping) and b.get("type") == "tool_result")), None
        )
        if first_other is not None and any(position > first_other for position, _ in results):
            issues.append(Issue(f"{where}.content", "tool_result blocks must come first in the turn, before any text"))
    for index, message in enumerate(messages[:-1]):
        asked_ids = [b.get("id") for _, b in _blocks(message, "tool_use")]
        answered = {b.get("tool_use_id") for _, b in _blocks(messages[index + 1], "tool_result")}
        missing = [tool_id for tool_id in asked_ids if tool_id not in answered]
        if missing:
            issues.append(
                Issue(
                    f"messages[{index + 1}]",
                    f"answer every tool_use of the turn before with a tool_result: missing {missing}",
                )
            )
    return issues


def _tools(params: Mapping[str, Any]) -> list[Issue]:
    issues: list[Issue] = []
    tools = params.get("tools")
    names: list[str] = []
    for index, tool in enumerate(tools if isinstance(tools, list) else []):
        if not isinstance(tool, Mapping):
            continue
        name = tool.get("name")
        if isinstance(name, str):
            if name in names:
                issues.append(Issue(f"tools[{index}].name", f"{name!r} is defined twice; tool names must be unique"))
            names.append(name)
        if tool.get("type") not in (None, "custom"):
            continue  # a server or client tool of the API's own: no schema to give
        if isinstance(name, str) and not TOOL_NAME.match(name):
            issues.append(Issue(f"tools[{index}].name", f"{name!r} must be 1-64 letters, digits, '_' or '-'"))
        schema = tool.get("input_schema")
        if isinstance(schema, Mapping) and schema.get("type") != "object":
            issues.append(
                Issue(
                    f"tools[{index}].input_schema",
                    "must be a JSON schema of an object: {'type': 'object', 'properties': {...}}",
                )
            )
    choice = params.get("tool_choice")
    if isinstance(choice, Mapping):
        kind = choice.get("type")
        if kind in _FORCED_TOOL_CHOICES and not names:
            issues.append(Issue("tool_choice", f"{{'type': {kind!r}}} forces a tool, but the request defines no tools"))
        elif kind == "tool" and isinstance(choice.get("name"), str) and choice["name"] not in names:
            hint = did_you_mean(choice["name"], names)
            issues.append(
                Issue("tool_choice.name", f"{choice['name']!r} is not one of the request's tools {names}{hint}")
            )
        thinking = params.get("thinking")
        if (
            kind in _FORCED_TOOL_CHOICES
            and isinstance(thinking, Mapping)
            and thinking.get("type") in ("enabled", "adaptive")
        ):
            issues.append(
                Issue(
                    "tool_choice",
                    "thinking cannot be combined with a forced tool; use {'type': 'auto'} or drop thinking",
                )
            )
    return issues


def _number(params: Mapping[str, Any], key: str) -> float | None:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _sampling(params: Mapping[str, Any]) -> list[Issue]:
    issues: list[Issue] = []
    for key in ("temperature", "top_p"):
        value = _number(params, key)
        if value is not None and not 0 <= value <= 1:
            issues.append(Issue(key, f"must be from 0 to 1, got {params[key]!r}"))
    top_k = params.get("top_k")
    if isinstance(top_k, int) and not isinstance(top_k, bool) and top_k < 0:
        issues.append(Issue("top_k", f"must be 0 or more, got {top_k}"))
    thinking = params.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive"):
        temperature, top_p = _number(params, "temperature"), _number(params, "top_p")
        if temperature is not None and temperature != 1:
            issues.append(Issue("temperature", "thinking needs the default temperature (1); remove 'temperature'"))
        if top_p is not None and not 0.95 <= top_p <= 1:
            issues.append(Issue("top_p", "with thinking, top_p must be from 0.95 to 1"))
        if "top_k" in params:
            issues.append(Issue("top_k", "thinking cannot be combined with top_k; remove it"))
    for index, stop in enumerate(params.get("stop_sequences") or []):
        if isinstance(stop, str) and not stop.strip():
            issues.append(Issue(f"stop_sequences[{index}]", "a stop sequence must contain non-whitespace text"))
    return issues


def _output(params: Mapping[str, Any], context: RuleContext) -> list[Issue]:
    """``max_tokens`` within the model's limit, and a thinking budget under it."""
    issues: list[Issue] = []
    model, max_tokens = params.get("model"), params.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not isinstance(model, str):
        return issues
    thinking = params.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and not isinstance(budget, bool):
            if budget < MIN_THINKING_BUDGET:
                issues.append(
                    Issue("thinking.budget_tokens", f"must be at least {MIN_THINKING_BUDGET:,}, got {budget:,}")
                )
            elif budget >= max_tokens and INTERLEAVED_THINKING_BETA not in context.betas:
                issues.append(
                    Issue(
                        "thinking.budget_tokens",
                        f"{budget:,} must be less than max_tokens ({max_tokens:,}): thinking counts toward "
                        "max_tokens; raise max_tokens or lower the budget",
                    )
                )
    problem = output_limit_problem(model, max_tokens, context)
    if problem:
        issues.append(Issue("max_tokens", problem))
    return issues
