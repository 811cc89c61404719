"""What Claude usage costs on the Messages API ("sync") and on the Message Batches API ("batch").

Prices are kept in ONE table, with the date they were taken and where from, because they change and
a cost figure is only as good as the date behind it. Everything is Decimal: these numbers are money.

Pricing is reported, never used to route work (see routing.py): the batch discount is what
latency-tolerant work earns, not a reason to make anyone wait.

This module imports nothing from Airflow so it can be used and tested as plain Python.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "BATCH_DISCOUNT",
    "PRICES",
    "PRICES_AS_OF",
    "PRICES_SOURCE",
    "CacheWriteTTL",
    "CostReport",
    "ModelPrice",
    "TokenUsage",
    "UnknownModelError",
    "cost_of",
    "known_models",
    "monthly_cost",
    "price_for",
    "round_usd",
]

# When and where the table below was read (research notes in shared/reference/anthropic-batches.md,
# section 6, compiled on this date from the pricing page and the per-model pages it links to).
PRICES_AS_OF = date(2026, 11, 24)
PRICES_SOURCE = "https://platform.claude.com/docs/en/about-claude/pricing"

# Documented rule: "All usage is charged at 50% of the standard API prices ... This applies to input
# tokens, output tokens, and any special tokens", and the caching and batch discounts "can stack".
# Anthropic does not tabulate batch cache-write/read prices; we derive them as half the standard cache
# prices from that rule, so every batch price below is exactly half its sync price.
BATCH_DISCOUNT = Decimal("0.5")

CacheWriteTTL = Literal["5m", "1h"]
_CACHE_WRITE_TTLS: tuple[str, ...] = ("5m", "1h")

_TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)  # prices are USD per million tokens
_SIX_PLACES = Decimal("0.000001")

# fmt: off
# Standard (sync) prices in USD per million tokens. One row per model:
#   canonical id, other ids that mean the same model, input, output, 5m cache write, 1h cache write,
#   cache read.
# Dated snapshot ids not listed here still resolve by dropping their -YYYYMMDD suffix (see price_for).
_PRICE_TABLE: tuple[tuple[str, tuple[str, ...], str, str, str, str, str], ...] = (
    # Claude 4.x (notes table 6.1)
    ("claude-opus-4-8",   (),                              "5",  "25", "6.25",  "10", "0.50"),
    ("claude-opus-4-7",   (),                              "5",  "25", "6.25",  "10", "0.50"),
    ("claude-opus-4-6",   (),                              "5",  "25", "6.25",  "10", "0.50"),
    ("claude-opus-4-5",   ("claude-opus-4-5-20251101",),   "5",  "25", "6.25",  "10", "0.50"),
    # Opus 4.1 and Opus 4 are retired on the first-party API but still priced (Bedrock, Google Cloud).
    ("claude-opus-4-1",   ("claude-opus-4-1-20250805",),   "15", "75", "18.75", "30", "1.50"),
    ("claude-opus-4-0",   ("claude-opus-4-20250514",),     "15", "75", "18.75", "30", "1.50"),
    ("claude-sonnet-4-6", (),                              "3",  "15", "3.75",  "6",  "0.30"),
    ("claude-sonnet-4-5", ("claude-sonnet-4-5-20250929",), "3",  "15", "3.75",  "6",  "0.30"),
    ("claude-haiku-4-5",  ("claude-haiku-4-5-20251001",),  "1",  "5",  "1.25",  "2",  "0.10"),
    # Claude 5.x (notes table 6.2). Opus 5.5 reads are 0.05x input, not the usual 0.1x, per its
    # model page. Sonnet 5.5 keeps the documented 0.20 read price; a third-party report of a cut to
    # 0.10 on 2026-10-07 is unconfirmed.
    ("claude-opus-5-5",   (),                              "4",  "20", "5",     "8",  "0.20"),
    ("claude-opus-5",     (),                              "5",  "25", "6.25",  "10", "0.50"),
    ("claude-sonnet-5-5", (),                              "2",  "10", "2.50",  "4",  "0.20"),
    ("claude-sonnet-5",   (),                              "2",  "10", "2.50",  "4",  "0.20"),
    ("claude-fable-5-1",  (),                              "10", "50", "12.50", "20", "0.25"),
    ("claude-mythos-5-1", (),                              "10", "50", "12.50", "20", "0.25"),
)
# fmt: on

# Models we know exist but deliberately leave unpriced, with why; quoted in UnknownModelError.
_UNPRICED_NOTES: Mapping[str, str] = MappingProxyType(
    {
        "claude-haiku-5-5": (
            'only published as "from $0.10 / $0.50" with two prompt-length bands, so there is no firm price'
        ),
    }
)

# Snapshot suffixes: "-20250929" (Anthropic API, Bedrock) and "@20250929" (Google Cloud Vertex AI).
_SNAPSHOT_SUFFIX = re.compile(r"[-@]\d{8}$")


# --------------------------------------------------------------------------------------------------
# Usage
# --------------------------------------------------------------------------------------------------


def _check_token_count(name: str, value: object) -> None:
    # bool is an int subclass; True tokens is a bug, not a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int token count; got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must not be negative; got {value}")


@dataclass(frozen=True)
class TokenUsage:
    """Token counts as the API reports them in a message's ``usage``.

    ``input_tokens`` excludes the cached tokens: cache writes and cache reads are counted (and
    priced) separately, so the first four fields add up to everything that was billed.
    ``cache_creation_1h_input_tokens`` is the part of ``cache_creation_input_tokens`` written with
    the 1-hour lifetime (the API's ``usage.cache_creation.ephemeral_1h_input_tokens``), which costs
    more than a 5-minute write.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0

    def __post_init__(self) -> None:
        for field in fields(self):
            _check_token_count(field.name, getattr(self, field.name))
        if self.cache_creation_1h_input_tokens > self.cache_creation_input_tokens:
            raise ValueError(
                f"cache_creation_1h_input_tokens ({self.cache_creation_1h_input_tokens}) is part of "
                f"cache_creation_input_tokens ({self.cache_creation_input_tokens}) and cannot exceed it"
            )

    def __add__(self, other: object) -> TokenUsage:
        if not isinstance(other, TokenUsage):
            return NotImplemented
        return TokenUsage(
            **{field.name: getattr(self, field.name) + getattr(other, field.name) for field in fields(self)}
        )

    def __radd__(self, other: object) -> TokenUsage:
        # Lets sum(usages) work: sum() starts from the int 0.
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    def as_dict(self) -> dict[str, int]:
        """The counts under the API's own field names, ready for JSON or XCom."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @classmethod
    def from_api(cls, usage: Mapping[str, Any] | object | None) -> TokenUsage:
        """Build from the API's usage object: a dict from JSON, or the SDK's ``Usage`` model.

        The API sends cache fields as null when caching was not involved and older results omit them,
        so missing and None both count as zero. The 1-hour share of the cache writes is read from
        ``cache_creation.ephemeral_1h_input_tokens`` (or this class's own field name, as manifests
        write it). Unrelated fields (service_tier, server_tool_use, ...) are ignored.
        """
        if usage is None:
            return cls()

        def read(source: object, name: str) -> object:
            if isinstance(source, Mapping):
                return source.get(name)
            return getattr(source, name, None)

        counts = {field.name: read(usage, field.name) for field in fields(cls)}
        if counts["cache_creation_1h_input_tokens"] is None:
            breakdown = read(usage, "cache_creation")
            counts["cache_creation_1h_input_tokens"] = read(breakdown, "ephemeral_1h_input_tokens") if breakdown else 0
        return cls(**{name: 0 if value is None else value for name, value in counts.items()})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Prices
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPrice:
    """Standard (sync) prices of one model in USD per million tokens."""

    model: str
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal

    def __post_init__(self) -> None:
        for field in fields(self):
            if field.name == "model":
                continue
            value = getattr(self, field.name)
            # Decimal only: a float price would reintroduce binary rounding into money.
            if not isinstance(value, Decimal):
                raise TypeError(f"{field.name} must be a Decimal; got {type(value).__name__} {value!r}")
            if not value.is_finite() or value < 0:
                raise ValueError(f"{field.name} must be a non-negative finite price; got {value}")

    def at_batch_rate(self) -> ModelPrice:
        """The same model on the Message Batches API: every price at 50%."""
        return ModelPrice(
            model=self.model,
            input=self.input * BATCH_DISCOUNT,
            output=self.output * BATCH_DISCOUNT,
            cache_write_5m=self.cache_write_5m * BATCH_DISCOUNT,
            cache_write_1h=self.cache_write_1h * BATCH_DISCOUNT,
            cache_read=self.cache_read * BATCH_DISCOUNT,
        )

    def cost(self, usage: TokenUsage, cache_write_ttl: CacheWriteTTL = "5m") -> Decimal:
        """USD for ``usage`` at these prices.

        Cache writes the usage attributes to the 1-hour lifetime are priced as such; the others at
        ``cache_write_ttl``'s price (5 minutes, the API's default lifetime, unless the caller knows better).
        """
        plain = usage.input_tokens * self.input + usage.output_tokens * self.output
        return (plain + self._cache_cost(usage, cache_write_ttl)) / _TOKENS_PER_PRICE_UNIT

    def cache_saving(self, usage: TokenUsage, cache_write_ttl: CacheWriteTTL = "5m") -> Decimal:
        """USD the prompt cache saved on ``usage``: its cached tokens at the input price, less what they cost.

        Negative when writes outweighed reads (a cache that was written more often than it was read).
        """
        cached = usage.cache_creation_input_tokens + usage.cache_read_input_tokens
        return (cached * self.input - self._cache_cost(usage, cache_write_ttl)) / _TOKENS_PER_PRICE_UNIT

    def _cache_cost(self, usage: TokenUsage, cache_write_ttl: CacheWriteTTL) -> Decimal:
        """Cache writes and reads, in USD per million tokens (not yet divided)."""
        _check_cache_write_ttl(cache_write_ttl)
        other_writes = usage.cache_creation_input_tokens - usage.cache_creation_1h_input_tokens
        other_price = self.cache_write_5m if cache_write_ttl == "5m" else self.cache_write_1h
        return (
            usage.cache_creation_1h_input_tokens * self.cache_write_1h
            + other_writes * other_price
            + usage.cache_read_input_tokens * self.cache_read
        )


def _check_cache_write_ttl(cache_write_ttl: object) -> None:
    if cache_write_ttl not in _CACHE_WRITE_TTLS:
        raise ValueError(f"cache_write_ttl must be '5m' or '1h'; got {cache_write_ttl!r}")


def _build_prices() -> tuple[Mapping[str, ModelPrice], Mapping[str, str]]:
    prices: dict[str, ModelPrice] = {}
    aliases: dict[str, str] = {}
    for model, other_ids, *amounts in _PRICE_TABLE:
        input_, output, cache_write_5m, cache_write_1h, cache_read = (Decimal(amount) for amount in amounts)
        prices[model] = ModelPrice(model, input_, output, cache_write_5m, cache_write_1h, cache_read)
        for other_id in (model, *other_ids):
            if other_id in aliases:
                raise ValueError(f"price table lists {other_id!r} twice")  # a typo in the table above
            aliases[other_id] = model
    return MappingProxyType(prices), MappingProxyType(aliases)


PRICES, _CANONICAL_ID = _build_prices()
"""Read-only: canonical model id -> standard prices, as of PRICES_AS_OF."""


def known_models() -> tuple[str, ...]:
    """Canonical ids of every priced model, sorted."""
    return tuple(sorted(PRICES))


class UnknownModelError(ValueError):
    """No price is recorded for a model; the message lists the ids that are priced."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.known_models = known_models()
        note = _UNPRICED_NOTES.get(_SNAPSHOT_SUFFIX.sub("", model))
        why = f": it is {note}" if note else ""
        super().__init__(
            f"no price recorded for model {model!r}{why} (prices as of {PRICES_AS_OF.isoformat()} from "
            f"{PRICES_SOURCE}). Known model ids: {', '.join(self.known_models)}. Dated snapshot ids "
            "such as claude-sonnet-4-5-20250929 resolve to their model."
        )

    def __reduce__(self) -> tuple[type[UnknownModelError], tuple[str]]:
        # Keep the exception picklable (e.g. across worker processes) despite the custom __init__.
        return (type(self), (self.model,))


def price_for(model: str) -> ModelPrice:
    """Standard prices for a model id, an alias, or a dated snapshot id of a priced model."""
    if not isinstance(model, str):
        raise TypeError(f"model must be a model id string; got {type(model).__name__} {model!r}")
    model_id = model.strip()
    canonical = _CANONICAL_ID.get(model_id) or _CANONICAL_ID.get(_SNAPSHOT_SUFFIX.sub("", model_id))
    if canonical is None:
        raise UnknownModelError(model)
    return PRICES[canonical]


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


def round_usd(amount: Decimal) -> float:
    """Dollars for JSON (XCom, logs, metrics): a float rounded half-even to 6 places."""
    return float(amount.quantize(_SIX_PLACES, rounding=ROUND_HALF_EVEN))


@dataclass(frozen=True)
class CostReport:
    """The same usage priced both ways, and the date of the prices used."""

    batch_usd: Decimal
    sync_usd: Decimal
    saving_usd: Decimal
    prices_as_of: date
    unpriced_models: tuple[str, ...]
    """Models with no recorded price: their tokens are left out of the totals, not guessed."""
    cache_saving_batch_usd: Decimal = Decimal(0)
    """What the prompt cache saved at batch prices (see :meth:`ModelPrice.cache_saving`)."""
    cache_saving_sync_usd: Decimal = Decimal(0)

    def cache_saving_on(self, route: str) -> Decimal:
        """What the prompt cache saved on ``route`` (``batch`` or ``sync``)."""
        return self.cache_saving_batch_usd if route == "batch" else self.cache_saving_sync_usd

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form (for XCom, logs, metrics): dollars as floats rounded to 6 places."""
        return {
            "batch_usd": round_usd(self.batch_usd),
            "sync_usd": round_usd(self.sync_usd),
            "saving_usd": round_usd(self.saving_usd),
            "cache_saving_batch_usd": round_usd(self.cache_saving_batch_usd),
            "cache_saving_sync_usd": round_usd(self.cache_saving_sync_usd),
            "prices_as_of": self.prices_as_of.isoformat(),
            "prices_source": PRICES_SOURCE,
            "unpriced_models": list(self.unpriced_models),
        }


def cost_of(usage_by_model: Mapping[str, TokenUsage], *, cache_write_ttl: CacheWriteTTL = "5m") -> CostReport:
    """Price token usage per model at batch and at sync rates.

    Unknown models are listed in ``unpriced_models`` instead of failing, because a cost report must
    never break the run it reports on. Cache writes the usage attributes to the 1-hour lifetime use
    the 1-hour rate; the others the 5-minute rate unless ``cache_write_ttl`` says "1h". The report
    also says what the prompt cache saved on each route. Not modelled: long-context premiums,
    server-tool fees, data-residency multipliers.
    """
    _check_cache_write_ttl(cache_write_ttl)
    batch = sync = cache_batch = cache_sync = Decimal(0)
    unpriced: set[str] = set()
    for model, usage in usage_by_model.items():
        if not isinstance(usage, TokenUsage):
            raise TypeError(
                f"usage for {model!r} must be a TokenUsage (see TokenUsage.from_api); got {type(usage).__name__}"
            )
        try:
            price = price_for(model)
        except UnknownModelError:
            unpriced.add(model)
            continue
        batch_price = price.at_batch_rate()
        sync += price.cost(usage, cache_write_ttl)
        batch += batch_price.cost(usage, cache_write_ttl)
        cache_sync += price.cache_saving(usage, cache_write_ttl)
        cache_batch += batch_price.cache_saving(usage, cache_write_ttl)
    return CostReport(
        batch_usd=batch,
        sync_usd=sync,
        saving_usd=sync - batch,
        prices_as_of=PRICES_AS_OF,
        unpriced_models=tuple(sorted(unpriced)),
        cache_saving_batch_usd=cache_batch,
        cache_saving_sync_usd=cache_sync,
    )


def monthly_cost(
    per_run: Mapping[str, TokenUsage], runs_per_month: float, *, cache_write_ttl: CacheWriteTTL = "5m"
) -> CostReport:
    """Cost of ``runs_per_month`` runs, each using ``per_run`` (e.g. 30 daily runs, 4.35 weekly ones)."""
    if isinstance(runs_per_month, bool) or not isinstance(runs_per_month, (int, float)):
        raise TypeError(f"runs_per_month must be a number; got {type(runs_per_month).__name__}")
    if not math.isfinite(runs_per_month) or runs_per_month < 0:
        raise ValueError(f"runs_per_month must be a finite number >= 0; got {runs_per_month}")
    # Via str so 4.35 scales by exactly 4.35, not by its binary approximation.
    runs = Decimal(str(runs_per_month))
    one_run = cost_of(per_run, cache_write_ttl=cache_write_ttl)
    return CostReport(
        batch_usd=one_run.batch_usd * runs,
        sync_usd=one_run.sync_usd * runs,
        saving_usd=one_run.saving_usd * runs,
        prices_as_of=one_run.prices_as_of,
        unpriced_models=one_run.unpriced_models,
        cache_saving_batch_usd=one_run.cache_saving_batch_usd * runs,
        cache_saving_sync_usd=one_run.cache_saving_sync_usd * runs,
    )
