"""The models the emulator serves: which ids a request may name, their limits, and the Models API's entries.

The ids are those of the price table (:mod:`airflow_provider_claude_batch.pricing`) and of the
installed SDK's ``ModelParam`` literal, so a user's real model ids pass and a typo does not: a
request naming another id answers as the API does, 404 ``not_found_error`` ``model: <id>``. The
limits are the documented ones, and ``GET /v1/models`` serves them in the SDK's ``ModelInfo`` shape,
keeping only the fields the installed SDK declares.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import cache
from typing import Any

from anthropic.types.model_info import ModelInfo
from anthropic.types.model_line import ModelLine
from anthropic.types.model_param import ModelParam
from pydantic import BaseModel

from ...pricing import known_models
from .validation import literal_strings, parse_limit
from .wire import ApiError, invalid

__all__ = [
    "OUTPUT_300K_BETA",
    "ModelFacts",
    "facts_for",
    "model_entry",
    "model_page",
    "request_model_error",
    "retrieve_model",
    "served_models",
]

OUTPUT_300K_BETA = "output-300k-2026-03-24"
_OUTPUT_300K_TOKENS = 300_000
_SNAPSHOT = re.compile(r"-(\d{4})(\d{2})(\d{2})$")
_EPOCH = "1970-01-01T00:00:00Z"  # the API's created_at when a release date is unknown


@dataclass(frozen=True)
class ModelFacts:
    """What is documented about one model.

    :param context_window: ``max_input_tokens``; None where not documented.
    :param max_output: ``max_tokens``, the most a request may ask for without a beta.
    :param output_300k: takes ``max_tokens`` up to 300,000 in a batch created with the output-300k beta.
    :param lifecycle: ``active``, ``deprecated`` or ``retired`` as documented; see :meth:`lifecycle_on`.
    :param released: release date (YYYY-MM-DD); None serves the epoch, as the API does when unknown.
    :param retires: the documented retirement date (YYYY-MM-DD) of a deprecated model.
    """

    context_window: int | None
    max_output: int | None
    output_300k: bool = False
    lifecycle: str = "active"
    released: str | None = None
    retires: str | None = None

    def lifecycle_on(self, day: date) -> str:
        """The lifecycle on ``day``: a deprecated model is retired from its retirement date on."""
        if self.retires is not None and day >= date.fromisoformat(self.retires):
            return "retired"
        return self.lifecycle


def _lifecycle(facts: ModelFacts) -> str:
    # The wall clock's date, not the emulated clock: retirements are calendar facts, as on the API.
    return facts.lifecycle_on(datetime.now(timezone.utc).date())


_NO_FACTS = ModelFacts(None, None)

# Sources: the models overview and per-model pages (platform.claude.com/docs, late 2026): every 5.x
# page lists a 1M context and 128K output; the batch-processing guide for the output-300k beta; the
# pricing page for Opus 4.1 and Opus 4 ("retired") and Sonnet 4.5 ("deprecated, retires 2026-11-30";
# the SDK dropped its ids from ``ModelParam`` in anthropic 2.15.0).
_1M, _200K = 1_000_000, 200_000
# fmt: off
_FACTS: Mapping[str, ModelFacts] = {
    "claude-opus-4-0":   ModelFacts(_200K, 32_000, lifecycle="retired", released="2025-05-22"),
    "claude-opus-4-1":   ModelFacts(_200K, 32_000, lifecycle="retired", released="2025-08-05"),
    "claude-sonnet-4-5": ModelFacts(_200K, 64_000, lifecycle="deprecated", released="2025-09-29", retires="2026-11-30"),
    "claude-haiku-4-5":  ModelFacts(_200K, 64_000, released="2025-10-15"),
    "claude-opus-4-5":   ModelFacts(_200K, 64_000, released="2025-11-24"),
    "claude-opus-4-6":   ModelFacts(_1M, 128_000, output_300k=True, released="2026-02-05"),
    "claude-sonnet-4-6": ModelFacts(_1M, 128_000, output_300k=True, released="2026-02-17"),
    "claude-opus-4-7":   ModelFacts(_1M, 128_000, output_300k=True),
    "claude-opus-4-8":   ModelFacts(_1M, 128_000, output_300k=True, released="2026-05-28"),
    "claude-sonnet-5":   ModelFacts(_1M, 128_000, output_300k=True, released="2026-06-30"),
    "claude-opus-5":     ModelFacts(_1M, 128_000, output_300k=True, released="2026-07-24"),
    "claude-sonnet-5-5": ModelFacts(_1M, 128_000, output_300k=True),
    "claude-opus-5-5":   ModelFacts(_1M, 128_000, output_300k=True),
    "claude-haiku-5-5":  ModelFacts(_1M, 128_000, released="2026-10-07"),
    **{
        f"claude-{line}-{version}": ModelFacts(_1M, 128_000)
        for line in ("fable", "mythos")
        for version in ("5", "5-1", "5-2")
    },
}
# fmt: on


@cache
def _known_ids() -> frozenset[str]:
    return frozenset(known_models()) | literal_strings(ModelParam)


def served_models(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Every id the emulator serves, newest release first (as ``GET /v1/models`` lists them)."""
    ids = _known_ids() | set(extra)
    return tuple(sorted(sorted(ids), key=lambda model: _created_at(model, facts_for(model)), reverse=True))


def facts_for(model: str) -> ModelFacts:
    """The facts of a model id or of its dated snapshot id (``claude-haiku-4-5-20251001``)."""
    return _FACTS.get(model) or _FACTS.get(_SNAPSHOT.sub("", model)) or _NO_FACTS


def _created_at(model: str, facts: ModelFacts) -> str:
    if facts.released is not None:
        return f"{facts.released}T00:00:00Z"
    snapshot = _SNAPSHOT.search(model)
    return f"{'-'.join(snapshot.groups())}T00:00:00Z" if snapshot else _EPOCH


def _display_name(model: str) -> str:
    """``claude-opus-4-5-20251101`` -> ``Claude Opus 4.5``; ``claude-opus-4-0`` -> ``Claude Opus 4``."""
    words = _SNAPSHOT.sub("", model).split("-")
    numbers = [w for w in words[2:] if w.isdigit()]
    version = ".".join(numbers).removesuffix(".0")
    names = [w.title() for w in words[:2]] + [w.title() for w in words[2:] if not w.isdigit()]
    return " ".join([*names, version] if version else names)


@cache
def _capabilities_type() -> type[BaseModel] | None:
    """The SDK's ``ModelCapabilities``, if the installed SDK's ``ModelInfo`` has ``capabilities``."""
    field = ModelInfo.model_fields.get("capabilities")
    return _model_type(field.annotation) if field is not None else None


def _model_type(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model in ``X`` or ``Optional[X]``, else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _all_supported(model: type[BaseModel]) -> dict[str, Any]:
    """Every capability key the SDK declares, each reported as supported (nested objects included)."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        nested = _model_type(field.annotation)
        if nested is not None:
            out[name] = _all_supported(nested)
        elif field.annotation is bool:
            out[name] = True
    return out


def model_entry(model: str) -> dict[str, Any]:
    """``model``'s Models API entry, with the fields of the installed SDK's ``ModelInfo``."""
    facts = facts_for(model)
    line = model.split("-")[1] if "-" in model else None
    capabilities = _capabilities_type()
    entry = {
        "type": "model",
        "id": model,
        "display_name": _display_name(model),
        "created_at": _created_at(model, facts),
        "lifecycle": _lifecycle(facts),
        "deprecated_at": None,
        "retires_at": f"{facts.retires}T00:00:00Z" if facts.retires else None,
        "line": line if line in typing.get_args(ModelLine) else None,
        "max_input_tokens": facts.context_window,
        "max_tokens": facts.max_output,
        "capabilities": _all_supported(capabilities) if capabilities is not None else None,
    }
    return {key: value for key, value in entry.items() if key in ModelInfo.model_fields}


def model_page(query: Mapping[str, str], lifecycles: list[str], extra: Iterable[str]) -> dict[str, Any]:
    """One page of ``GET /v1/models``: newest first, ``limit``/``after_id``/``before_id`` like the API.

    Without a ``lifecycle`` filter the list holds the active and deprecated models; retired ones
    appear only when asked for, as the SDK documents.
    """
    wanted = set(lifecycles or ("active", "deprecated"))
    if not wanted <= {"active", "deprecated", "retired"}:
        raise invalid(f"lifecycle: Input should be 'active', 'deprecated' or 'retired', not {sorted(wanted)}")
    ids = [m for m in served_models(extra) if _lifecycle(facts_for(m)) in wanted]
    limit = parse_limit(query.get("limit"))
    after_id, before_id = query.get("after_id"), query.get("before_id")
    for name, cursor in (("after_id", after_id), ("before_id", before_id)):
        if cursor and cursor not in ids:
            raise invalid(f"{name}: {cursor!r} is not a model id in this list")
    if before_id:
        end = ids.index(before_id)
        begin = max(0, end - limit)
        chunk, has_more = ids[begin:end], begin > 0
    else:
        start = ids.index(after_id) + 1 if after_id else 0
        chunk, has_more = ids[start : start + limit], start + limit < len(ids)
    return {
        "data": [model_entry(m) for m in chunk],
        "has_more": has_more,
        "first_id": chunk[0] if chunk else None,
        "last_id": chunk[-1] if chunk else None,
    }


def retrieve_model(model: str, extra: Iterable[str]) -> dict[str, Any]:
    """``GET /v1/models/{id}``: any served id, retired ones included; else 404."""
    if model not in _known_ids() and model not in set(extra):
        raise ApiError(404, "not_found_error", f"model: {model}")
    return model_entry(model)


def request_model_error(params: Mapping[str, Any], extra: Iterable[str], betas: Iterable[str] = ()) -> ApiError | None:
    """What the API answers a request whose ``model`` or ``max_tokens`` it cannot serve, or None.

    An unknown or retired model: 404 ``not_found_error`` ``model: <id>``. ``max_tokens`` above the
    model's output limit: 400, where a batch created with the output-300k beta raises the limit
    to 300,000 on the models that take it (``betas`` is empty on the Messages API: the beta is batch-only).
    """
    model = params["model"]
    facts = facts_for(model)
    if (model not in _known_ids() and model not in set(extra)) or _lifecycle(facts) == "retired":
        return ApiError(404, "not_found_error", f"model: {model}")
    limit = facts.max_output
    if limit is not None and facts.output_300k and OUTPUT_300K_BETA in betas:
        limit = _OUTPUT_300K_TOKENS
    if limit is not None and params["max_tokens"] > limit:
        return invalid(
            f"max_tokens: {params['max_tokens']} > {limit}, which is the maximum allowed number of output "
            f"tokens for {model}"
        )
    return None
