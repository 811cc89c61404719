"""The most a set of requests can cost, before anything is submitted: what ``max_cost_usd`` holds to.

Output is bounded exactly: no request produces more than its ``max_tokens``. Input is counted with
the token-counting endpoint (``POST /v1/messages/count_tokens``), once per distinct request *shape*
(the params with their free text left out, see :mod:`~.validation.checker`): a shape's first request
is counted, and every other request of that shape is quoted at that count scaled up by its prompt's
length when its prompt is longer (never down). Where counting is unavailable (the endpoint refuses,
fails, or there are more than :data:`MAX_COUNTED_SHAPES` shapes), a request's input is bounded by
its JSON bytes, since a token is never shorter than a byte: a true bound, about four times the
real count for English text.

Prompt caching is bounded honestly: hits are best effort, so every token up to a request's last
cache breakpoint is quoted at the write price of that breakpoint's lifetime (2x the input price for
1 hour), as if no request read the cache. Everything is priced at the route's prices (batch: half).

This module imports nothing from Airflow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from airflow_provider_claude_batch.pricing import PRICES_AS_OF, ModelPrice, UnknownModelError, price_for
from airflow_provider_claude_batch.prompt_units import breakpoints, prompt_units
from airflow_provider_claude_batch.validation.checker import request_shape

__all__ = ["MAX_COUNTED_SHAPES", "CostQuote", "ModelQuote", "RequestShape", "build_quote", "cap_refusal", "shapes_of"]

MAX_COUNTED_SHAPES = 64
# Distinct shapes remembered; requests of further shapes are bounded by their bytes.
MAX_TRACKED_SHAPES = 2048
_MILLION = Decimal(1_000_000)
_decode = msgspec.json.Decoder().decode


@dataclass
class RequestShape:
    """The requests of one shape (for one model): what the quote needs of them.

    :param params: the first request's params, which the token-counting endpoint is asked about;
        ``None`` for the requests past :data:`MAX_TRACKED_SHAPES` shapes, which are never counted.
    :param scaled: the sum, over the shape's requests, of ``max(1, prompt length / first's length)``.
    :param scaled_cache: per cache lifetime, the same sum weighted by each request's share of
        prompt up to its breakpoints of that lifetime.
    :param byte_bound: the requests' JSON bytes (the bound when counting is unavailable).
    :param byte_cache: per lifetime, those bytes weighted by the same shares.
    :param output_tokens: the sum of their ``max_tokens``.
    """

    params: dict[str, Any] | None
    model: str
    first_chars: int = 1
    requests: int = 0
    scaled: float = 0.0
    scaled_cache: dict[str, float] = field(default_factory=dict)
    byte_bound: int = 0
    byte_cache: dict[str, float] = field(default_factory=dict)
    output_tokens: int = 0
    max_tokens: set[int] = field(default_factory=set)

    def add(self, params: dict[str, Any], encoded_size: int) -> None:
        units = list(prompt_units(params))
        chars = [unit.chars for unit in units]
        total = max(1, sum(chars))
        if self.requests == 0:
            self.first_chars = total
        scale = max(1.0, total / self.first_chars)
        self.requests += 1
        self.scaled += scale
        self.byte_bound += encoded_size
        for ttl, share in _cached_shares(params, units, chars, total).items():
            self.scaled_cache[ttl] = self.scaled_cache.get(ttl, 0.0) + scale * share
            self.byte_cache[ttl] = self.byte_cache.get(ttl, 0.0) + encoded_size * share
        max_tokens = params.get("max_tokens") if isinstance(params.get("max_tokens"), int) else 0
        self.output_tokens += max_tokens
        self.max_tokens.add(max_tokens)


def _cached_shares(params: dict[str, Any], units: list[Any], chars: list[int], total: int) -> dict[str, float]:
    """The share of the prompt a cache write may cover, per lifetime (1-hour breakpoints come first)."""
    marks = breakpoints(params, units)
    if not marks:
        return {}
    last_1h = max((index for index, ttl in marks if ttl == "1h"), default=-1)
    last = max(index for index, _ in marks)
    long_part = sum(chars[: last_1h + 1])
    shares = {"1h": long_part / total} if last_1h >= 0 else {}
    if last > last_1h:
        shares["5m"] = (sum(chars[: last + 1]) - long_part) / total
    return shares


def shapes_of(encoded_requests: Sequence[bytes]) -> list[RequestShape]:
    """Group serialised requests (``PreparedRequests.encoded``) by model and shape, in order of first use."""
    shapes: dict[Any, RequestShape] = {}
    overflow: dict[str, RequestShape] = {}
    for encoded in encoded_requests:
        params = _decode(encoded)["params"]
        model = str(params.get("model"))
        key = (model, request_shape(params))
        shape = shapes.get(key)
        if shape is None:
            if key[1] is not None and len(shapes) < MAX_TRACKED_SHAPES:
                shape = shapes[key] = RequestShape(params, model)
            else:
                shape = overflow.setdefault(model, RequestShape(None, model))
        shape.add(params, len(encoded))
    return [*shapes.values(), *overflow.values()]


@dataclass(frozen=True)
class ModelQuote:
    """The bound for one model's requests; ``usd`` is None when the model has no price."""

    model: str
    requests: int
    input_tokens: int
    cache_write_tokens: dict[str, int]
    output_tokens: int
    usd: Decimal | None
    input_usd: Decimal | None
    cache_write_extra_usd: Decimal | None
    """What pricing the cache writes at the write price adds over pricing them as plain input."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "cache_write_tokens": dict(self.cache_write_tokens),
            "output_tokens": self.output_tokens,
            "usd": _usd(self.usd),
        }


@dataclass(frozen=True)
class CostQuote:
    """The upper bound of what the requests can cost on ``route``, and how it was reached.

    :param counted: requests whose input was counted (or scaled from a count), against ``requests``.
    """

    route: str
    models: tuple[ModelQuote, ...]
    shapes: int
    counted_shapes: int
    requests: int
    counted: int
    max_tokens: frozenset[int]

    @property
    def usd(self) -> Decimal:
        return sum((m.usd for m in self.models if m.usd is not None), Decimal(0))

    @property
    def unpriced(self) -> tuple[str, ...]:
        return tuple(m.model for m in self.models if m.usd is None)

    @property
    def method(self) -> str:
        if self.counted == self.requests:
            return "count_tokens"
        return "byte bound" if self.counted == 0 else "count_tokens and byte bound"

    def describe(self) -> str:
        """The bound and how it was reached, in one sentence."""
        tokens_in = sum(m.input_tokens + sum(m.cache_write_tokens.values()) for m in self.models)
        cached = sum(sum(m.cache_write_tokens.values()) for m in self.models)
        output = sum(m.output_tokens for m in self.models)
        how = {
            "count_tokens": f"counted with count_tokens ({self.counted_shapes} request shape(s))",
            "byte bound": "bounded by the requests' bytes (count_tokens was unavailable)",
        }.get(
            self.method,
            f"counted with count_tokens for {self.counted:,} request(s), bounded by bytes for the other "
            f"{self.requests - self.counted:,}",
        )
        cache = f", {cached:,} of them priced as cache writes" if cached else ""
        return (
            f"up to ${self.usd:,.4f} at {self.route} prices (as of {PRICES_AS_OF.isoformat()}): {tokens_in:,} input "
            f"tokens, {how}{cache}; at most {output:,} output tokens (max_tokens of {self.requests:,} request(s))"
        )

    def as_dict(self, max_cost_usd: float | None = None) -> dict[str, Any]:
        return {
            "max_cost_usd": max_cost_usd,
            "quote_usd": _usd(self.usd),
            "route": self.route,
            "method": self.method,
            "request_shapes": self.shapes,
            "counted_shapes": self.counted_shapes,
            "by_model": {m.model: m.as_dict() for m in self.models},
            "unpriced_models": list(self.unpriced),
            "prices_as_of": PRICES_AS_OF.isoformat(),
        }


def build_quote(shapes: Sequence[RequestShape], counts: Sequence[int | None], route: str = "batch") -> CostQuote:
    """The bound, from the shapes and the token counts of their first requests (``counts[i]`` for ``shapes[i]``;
    ``None`` or a missing entry: bounded by bytes)."""
    per_model: dict[str, dict[str, Any]] = {}
    counted = counted_shapes = 0
    for index, shape in enumerate(shapes):
        count = counts[index] if index < len(counts) and shape.params is not None else None
        entry = per_model.setdefault(shape.model, {"requests": 0, "input": 0.0, "cache": {}, "output": 0})
        if count is not None:
            counted += shape.requests
            counted_shapes += 1
            total, cache = count * shape.scaled, {ttl: count * s for ttl, s in shape.scaled_cache.items()}
        else:
            total, cache = float(shape.byte_bound), dict(shape.byte_cache)
        entry["requests"] += shape.requests
        entry["input"] += total - sum(cache.values())
        for ttl, tokens in cache.items():
            entry["cache"][ttl] = entry["cache"].get(ttl, 0.0) + tokens
        entry["output"] += shape.output_tokens
    models = tuple(_model_quote(model, entry, route) for model, entry in per_model.items())
    return CostQuote(
        route=route,
        models=models,
        shapes=sum(1 for shape in shapes if shape.params is not None),
        counted_shapes=counted_shapes,
        requests=sum(shape.requests for shape in shapes),
        counted=counted,
        max_tokens=frozenset(value for shape in shapes for value in shape.max_tokens),
    )


def _model_quote(model: str, entry: dict[str, Any], route: str) -> ModelQuote:
    input_tokens = math.ceil(entry["input"])
    cache = {ttl: math.ceil(tokens) for ttl, tokens in sorted(entry["cache"].items()) if tokens > 0}
    usd = input_usd = extra = None
    try:
        price: ModelPrice = price_for(model)
    except UnknownModelError:
        pass
    else:
        if route == "batch":
            price = price.at_batch_rate()
        writes = {"1h": price.cache_write_1h, "5m": price.cache_write_5m}
        cache_usd = sum((tokens * writes[ttl] for ttl, tokens in cache.items()), Decimal(0))
        input_usd = (input_tokens * price.input + cache_usd) / _MILLION
        extra = (cache_usd - sum(cache.values()) * price.input) / _MILLION
        usd = input_usd + entry["output"] * price.output / _MILLION
    return ModelQuote(model, entry["requests"], input_tokens, cache, entry["output"], usd, input_usd, extra)


def cap_refusal(quote: CostQuote, max_cost_usd: float) -> str | None:
    """Why ``quote`` does not fit under ``max_cost_usd`` (by how much, and what to change), or None."""
    if quote.unpriced:
        return (
            f"max_cost_usd={max_cost_usd:g} cannot bound the cost of {', '.join(quote.unpriced)}: the price table "
            f"(as of {PRICES_AS_OF.isoformat()}) has no price for it. Use a priced model, or remove max_cost_usd."
        )
    cap = Decimal(str(max_cost_usd))
    total = quote.usd
    if total <= cap:
        return None
    over = total - cap
    input_usd = sum((m.input_usd or Decimal(0) for m in quote.models), Decimal(0))
    output_usd = total - input_usd
    fixes = []
    if output_usd > over and len(quote.max_tokens) == 1:
        (max_tokens,) = quote.max_tokens
        fitting = math.floor(max_tokens * (output_usd - over) / output_usd)
        fixes.append(
            f"lower max_tokens to at most {fitting:,} (from {max_tokens:,}; output is ${output_usd:,.4f} of it)"
        )
    elif output_usd > over:
        fixes.append(f"lower max_tokens by {math.ceil(over / output_usd * 100)}% (output is ${output_usd:,.4f} of it)")
    else:
        fixes.append(f"the input alone may cost ${input_usd:,.4f}, so lowering max_tokens cannot fit")
    fitting_requests = math.floor(cap / (total / quote.requests)) if quote.requests else 0
    fixes.append(f"send at most about {fitting_requests:,} of the {quote.requests:,} requests per run")
    cache_extra = sum((m.cache_write_extra_usd or Decimal(0) for m in quote.models), Decimal(0))
    if cache_extra > 0:
        fixes.append(
            f"leave out cache breakpoints (the bound prices every cache write at the write price, ${cache_extra:,.4f} "
            "more than as plain input, because hits are best effort)"
        )
    if quote.method != "count_tokens":
        fixes.append("let count_tokens count the input (the byte bound is several times the real count)")
    fixes.append("choose a cheaper model")
    fixes.append(f"or raise max_cost_usd to at least {math.ceil(total * 100) / 100:,.2f}")
    return (
        f"max_cost_usd={max_cost_usd:g} refuses these requests: they may cost {quote.describe()}, "
        f"${over:,.4f} over the cap. To fit: " + "; ".join(fixes) + "."
    )


def _usd(amount: Decimal | None) -> float | None:
    return None if amount is None else round(float(amount), 6)
