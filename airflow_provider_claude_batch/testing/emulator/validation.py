"""What the API refuses at once: a batch's create-time schema (``requests.<i>.<field>: ...``), list queries, betas."""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any

from anthropic.types.anthropic_beta_param import AnthropicBetaParam

from ..responder.params import shallow_params_error
from .wire import invalid

__all__ = ["literal_strings", "parse_limit", "request_betas", "validate_create"]

_CUSTOM_ID_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"


def validate_create(payload: Any, max_requests: int) -> list[dict[str, Any]]:
    """Create-time (schema) validation with the API's ``requests.<i>.<field>: ...`` messages."""
    if not isinstance(payload, dict):
        raise invalid("Input should be a valid dictionary")
    if "requests" not in payload:
        raise invalid("requests: Field required")
    requests = payload["requests"]
    if not isinstance(requests, list):
        raise invalid("requests: Input should be a valid list")
    if not requests:
        raise invalid("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > max_requests:
        raise invalid(f"requests: List should have at most {max_requests} items after validation, not {len(requests)}")
    seen: set[str] = set()
    for i, request in enumerate(requests):
        problem = _request_error(i, request, seen)
        if problem is not None:
            raise invalid(problem)
    return requests


def _request_error(index: int, request: Any, seen: set[str]) -> str | None:
    """The first schema problem of ``requests[index]`` (custom_id rules, then shallow params)."""
    where = f"requests.{index}"
    if not isinstance(request, dict):
        return f"{where}: Input should be a valid dictionary"
    if "custom_id" not in request:
        return f"{where}.custom_id: Field required"
    custom_id = request["custom_id"]
    if not isinstance(custom_id, str):
        return f"{where}.custom_id: Input should be a valid string"
    if not custom_id:
        return f"{where}.custom_id: String should have at least 1 character"
    if len(custom_id) > 64:
        return f"{where}.custom_id: String should have at most 64 characters"
    if not _CUSTOM_ID_RE.fullmatch(custom_id):
        return f"{where}.custom_id: String should match pattern '{_CUSTOM_ID_PATTERN}'"
    if custom_id in seen:
        return f"{where}.custom_id: Duplicate custom_id {custom_id!r}: custom_id must be unique within a batch"
    seen.add(custom_id)
    if "params" not in request:
        return f"{where}.params: Field required"
    return shallow_params_error(request["params"], f"{where}.params.", batch=True)


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return 20
    try:
        limit = int(raw)
    except ValueError:
        raise invalid("limit: Input should be a valid integer") from None
    if limit < 1:
        raise invalid("limit: Input should be greater than or equal to 1")
    if limit > 1000:
        raise invalid("limit: Input should be less than or equal to 1000")
    return limit


def literal_strings(alias: Any) -> frozenset[str]:
    """The string values of an SDK type alias such as ``Union[str, Literal["a", "b"]]``."""
    found: set[str] = set()
    for arg in typing.get_args(alias):
        found.update(value for value in typing.get_args(arg) if isinstance(value, str))
    return frozenset(found)


@cache
def _known_betas() -> frozenset[str]:
    return literal_strings(AnthropicBetaParam)


def request_betas(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The ``anthropic-beta`` values of a call; 400 for a value the API does not know.

    The known values are the installed SDK's ``AnthropicBetaParam``, so the check follows the SDK.
    """
    betas = tuple(b.strip() for b in headers.get("anthropic-beta", "").split(",") if b.strip())
    unknown = [b for b in betas if b not in _known_betas()]
    if unknown:
        listed = ", ".join(f"`{b}`" for b in unknown)
        raise invalid(
            f"Unexpected value(s) {listed} for the `anthropic-beta` header. Please consult our documentation "
            "at docs.claude.com or try again without the header."
        )
    return betas
