"""What is known about models before a request is sent: ids, output limits, and what they accept.

Two sources. Offline, a small table of documented facts (output limits, which models take the
batch-only 300k output beta, which accept mid-conversation ``system`` messages) and the ids the
installed SDK and the price table name. Online, the Models API (``GET /v1/models``): the ids this
API key can use, each with its ``max_tokens`` when the API reports it, which then wins over the table.

This module imports nothing from Airflow.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache

from airflow_provider_claude_batch.pricing import known_models
from airflow_provider_claude_batch.validation.suggest import closest

OUTPUT_300K_BETA = "output-300k-2026-03-24"
OUTPUT_300K_TOKENS = 300_000
INTERLEAVED_THINKING_BETA = "interleaved-thinking-2025-05-14"

_SNAPSHOT = re.compile(r"[-@]\d{8}$")


@dataclass(frozen=True)
class ModelFacts:
    """Documented limits of one model (see the notes on each row of :data:`MODEL_FACTS`).

    :param max_output: the largest ``max_tokens`` on the Messages API and in a plain batch.
    :param output_300k: accepts ``max_tokens`` up to 300,000 in a batch with the output-300k beta.
    :param mid_conversation_system: accepts ``role: "system"`` messages after a user turn
        (``None``: not documented either way, so not checked).
    """

    max_output: int | None
    output_300k: bool = False
    mid_conversation_system: bool | None = None


# Sources: the models overview and per-model pages (platform.claude.com/docs, late 2026), the
# batch-processing guide for the output-300k beta, the mid-conversation system messages page
# ("available on Claude Opus 4.8 only"; models released before it reject the role).
_OLDER = False  # released before Opus 4.8: no mid-conversation system messages
# fmt: off
MODEL_FACTS: Mapping[str, ModelFacts] = {
    "claude-opus-4-0":   ModelFacts(32_000, mid_conversation_system=_OLDER),
    "claude-opus-4-1":   ModelFacts(32_000, mid_conversation_system=_OLDER),
    "claude-sonnet-4-0": ModelFacts(64_000, mid_conversation_system=_OLDER),
    "claude-opus-4-5":   ModelFacts(64_000, mid_conversation_system=_OLDER),
    "claude-sonnet-4-5": ModelFacts(64_000, mid_conversation_system=_OLDER),
    "claude-haiku-4-5":  ModelFacts(64_000, mid_conversation_system=_OLDER),
    "claude-opus-4-6":   ModelFacts(128_000, output_300k=True, mid_conversation_system=_OLDER),
    "claude-sonnet-4-6": ModelFacts(128_000, output_300k=True, mid_conversation_system=_OLDER),
    "claude-opus-4-7":   ModelFacts(128_000, output_300k=True, mid_conversation_system=_OLDER),
    "claude-opus-4-8":   ModelFacts(128_000, output_300k=True, mid_conversation_system=True),
    "claude-opus-5":     ModelFacts(128_000, output_300k=True),
    "claude-sonnet-5":   ModelFacts(128_000, output_300k=True),
    "claude-opus-5-5":   ModelFacts(128_000, output_300k=True),
    "claude-sonnet-5-5": ModelFacts(128_000, output_300k=True),
    "claude-fable-5-1":  ModelFacts(128_000),
    "claude-mythos-5-1": ModelFacts(128_000),
}
# fmt: on
_ALIASES = {"claude-opus-4-20250514": "claude-opus-4-0", "claude-sonnet-4-20250514": "claude-sonnet-4-0"}

# The shortest prefix the prompt cache stores, in tokens: below it a breakpoint is silently ignored
# (nothing written, nothing read, no surcharge). From late-2026 copies of the prompt-caching guide's
# "Cache limitations" and the model pages (notes section 3b: 512 to 4,096 by model). Sonnet 4.6 is
# given as 1,024 by most copies (one says 2,048). A model not listed gets DEFAULT_MIN_CACHEABLE_TOKENS:
# erring low costs nothing, since a breakpoint under the real minimum is simply not used.
# fmt: off
MIN_CACHEABLE_TOKENS: Mapping[str, int] = {
    "claude-opus-4-0": 1_024, "claude-opus-4-1": 1_024, "claude-sonnet-4-0": 1_024, "claude-sonnet-4-5": 1_024,
    "claude-sonnet-4-6": 1_024, "claude-opus-4-8": 1_024, "claude-sonnet-5": 1_024,
    "claude-opus-4-5": 4_096, "claude-opus-4-6": 4_096, "claude-opus-4-7": 4_096, "claude-haiku-4-5": 4_096,
    "claude-opus-5": 512, "claude-fable-5-1": 512, "claude-mythos-5-1": 512,
}
# fmt: on
DEFAULT_MIN_CACHEABLE_TOKENS = 1_024


def facts_for(model: str) -> ModelFacts | None:
    """The documented facts of ``model`` (an id, an alias or a dated snapshot id), if any."""
    model = _ALIASES.get(model, model)
    return MODEL_FACTS.get(model) or MODEL_FACTS.get(_SNAPSHOT.sub("", model))


def min_cacheable_tokens(model: str) -> int:
    """The shortest prefix, in tokens, ``model``'s prompt cache stores (see :data:`MIN_CACHEABLE_TOKENS`)."""
    model = _ALIASES.get(model, model)
    found = MIN_CACHEABLE_TOKENS.get(model) or MIN_CACHEABLE_TOKENS.get(_SNAPSHOT.sub("", model))
    return found or DEFAULT_MIN_CACHEABLE_TOKENS


@cache
def offline_model_ids() -> frozenset[str]:
    """Every model id known without asking the API: the SDK's ``ModelParam``, the price and fact tables."""
    from anthropic.types.model_param import ModelParam

    ids: set[str] = set(known_models()) | set(MODEL_FACTS) | set(_ALIASES)
    for arg in typing.get_args(ModelParam):
        ids.update(value for value in typing.get_args(arg) if isinstance(value, str))
    return frozenset(ids)


@dataclass(frozen=True)
class ModelCatalog:
    """The models the Models API lists for this API key, with their ``max_tokens`` where reported."""

    max_tokens: Mapping[str, int | None] = field(default_factory=dict)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self.max_tokens)

    @classmethod
    def from_api(cls, models: Iterable[object]) -> ModelCatalog:
        """From the SDK's ``ModelInfo`` objects (or dicts with ``id`` and ``max_tokens``)."""
        limits: dict[str, int | None] = {}
        for model in models:
            model_id = model.get("id") if isinstance(model, Mapping) else getattr(model, "id", None)
            limit = model.get("max_tokens") if isinstance(model, Mapping) else getattr(model, "max_tokens", None)
            if isinstance(model_id, str):
                limits[model_id] = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
        return cls(limits)

    def knows(self, model: str) -> bool:
        """Listed, as itself or as the alias of a dated id (``claude-sonnet-4-5`` for ``...-20250929``).

        An id the installed SDK names counts as known too: the list may give only dated ids, and a
        false alarm would stop a run the API would accept.
        """
        undated = {_SNAPSHOT.sub("", model_id) for model_id in self.max_tokens}
        return model in self.max_tokens or _SNAPSHOT.sub("", model) in undated or model in offline_model_ids()


def output_limit(model: str, catalog: ModelCatalog | None) -> int | None:
    """The most ``max_tokens`` ``model`` takes without a beta: the Models API's figure, else the table's."""
    if catalog is not None:
        limit = catalog.max_tokens.get(model) or catalog.max_tokens.get(_SNAPSHOT.sub("", model))
        if limit:
            return limit
    facts = facts_for(model)
    return facts.max_output if facts is not None else None


def unknown_model_problem(model: str, catalog: ModelCatalog) -> str | None:
    """Why ``model`` cannot be used with this API key (per the Models API), with the nearest id; or None."""
    if catalog.knows(model):
        return None
    match = closest(model, catalog.ids)
    hint = f"did you mean {match!r}? " if match else ""
    listed = ", ".join(sorted(catalog.ids)[:12])
    return (
        f"model {model!r} is not offered to this API key (the Models API lists {len(catalog.ids)}: {listed}); "
        f"{hint}fix the model id on the operator or in the request"
    )


def offline_model_problem(model: str) -> str | None:
    """A model id that differs from a known one only in case or separators (``claude-sonnet-4.6``).

    Checked without the API, so only such certain misses: an id merely unheard of may be newer than
    the installed SDK, and the Models API decides when the task runs.
    """
    known = offline_model_ids()
    if model in known or _SNAPSHOT.sub("", model) in known:
        return None
    match = closest(model, known, fuzzy=False)
    if match is None:
        return None
    return f"model {model!r} is not a known model id; did you mean {match!r}?"


@dataclass(frozen=True)
class RuleContext:
    """Where requests go.

    :param batch: the Message Batches API (else the Messages API).
    :param betas: the ``anthropic-beta`` values the task sends.
    :param catalog: the Models API's list for this key, once fetched.
    """

    batch: bool = True
    betas: frozenset[str] = frozenset()
    catalog: ModelCatalog | None = None


def output_limit_problem(model: str, max_tokens: int, context: RuleContext) -> str | None:
    """Why ``max_tokens`` is more than ``model`` can produce where the request goes, with the fix."""
    limit = output_limit(model, context.catalog)
    if limit is None or max_tokens <= limit:
        return None
    facts = facts_for(model)
    beta_ok = facts is not None and facts.output_300k and max_tokens <= OUTPUT_300K_TOKENS
    if beta_ok and context.batch and OUTPUT_300K_BETA in context.betas:
        return None
    if beta_ok and context.batch:
        fix = f"lower it, or send the batch beta: betas=[{OUTPUT_300K_BETA!r}] (up to {OUTPUT_300K_TOKENS:,})"
    elif beta_ok:
        fix = (
            f"lower it, or use ClaudeBatchOperator with betas=[{OUTPUT_300K_BETA!r}] "
            f"(batch-only, up to {OUTPUT_300K_TOKENS:,})"
        )
    else:
        fix = "lower it"
    return f"{max_tokens:,} is over {model}'s output limit of {limit:,}; {fix}"


@dataclass
class ModelUse:
    """Where requests name a model: the first (index, custom id), how many, their largest max_tokens and bytes."""

    index: int
    custom_id: str
    count: int = 1
    max_tokens: int = 0
    input_bytes: int = 0


def catalog_problems(uses: Mapping[str, ModelUse], context: RuleContext) -> list[tuple[ModelUse, str]]:
    """What the Models API's list says is wrong with the models the requests use (by first use)."""
    assert context.catalog is not None
    problems = []
    for model, use in uses.items():
        problem = unknown_model_problem(model, context.catalog)
        if problem is None and use.max_tokens:
            problem = output_limit_problem(model, use.max_tokens, context)
            if problem:
                problem = f"max_tokens {problem}"
        if problem:
            others = f" ({use.count:,} requests use {model!r})" if use.count > 1 else ""
            problems.append((use, problem + others))
    return problems
