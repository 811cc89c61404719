"""Configurable misbehaviour of the emulator: per-request outcomes and HTTP-level faults.

Two separate mechanisms, because they model different failures:

* **outcomes** decide what a *batch request* ends as (``errored``, ``expired``, ...), the way the
  real service reports per-request failures inside an otherwise healthy batch;
* **faults** break the *HTTP call* itself (429/5xx answers, lost responses, cut result streams),
  the way a network or an overloaded front end does.

Both are deterministic: outcomes hash the ``custom_id`` and how often it was seen, faults draw
from an RNG seeded by the config's ``seed``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .responder.hashing import hash_int

__all__ = [
    "ERROR_TYPE_BY_STATUS",
    "FaultInjector",
    "FaultRule",
    "OutcomeDecision",
    "OutcomeRule",
    "decide_outcome",
]

ResultKind = Literal["errored", "expired", "canceled", "invalid_output"]
ErrorType = Literal["invalid_request_error", "overloaded_error", "api_error", "rate_limit_error"]

ERROR_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_ERROR_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request (emulated outcome)",
    "overloaded_error": "Overloaded",
    "api_error": "Internal server error",
    "rate_limit_error": "Rate limit exceeded (emulated outcome)",
}


def _compiles(pattern: str) -> str:
    """Fail config validation on a bad regex instead of at the first matching request."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return pattern


class OutcomeRule(BaseModel):
    """Force the result of batch requests whose ``custom_id`` matches ``match`` (``re.search``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: str = Field(description="Regular expression searched in the custom_id.")
    result: ResultKind
    error_type: ErrorType = "api_error"
    message: str | None = None
    times: int | None = Field(
        default=None,
        ge=1,
        description="Apply only the first N times a custom_id is processed (across batches).",
    )

    @field_validator("match")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        return _compiles(value)

    def applies(self, custom_id: str, occurrence: int) -> bool:
        """Whether this rule fires for the ``occurrence``-th (0-based) sighting of ``custom_id``."""
        if self.times is not None and occurrence >= self.times:
            return False
        return re.search(self.match, custom_id) is not None


class FaultRule(BaseModel):
    """Break matching HTTP calls: answer with an error, lose the response, or cut a stream."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["GET", "POST", "DELETE"] | None = None
    path: str | None = Field(default=None, description="Regular expression, must match the whole path.")
    query: str | None = Field(
        default=None, description="Regular expression searched in the query string (e.g. 'limit=1000')."
    )
    status: int | None = Field(default=None, ge=400, le=599)
    rate: float | None = Field(default=None, ge=0, le=1)
    count: int | None = Field(default=None, ge=1)
    retry_after: float | None = Field(default=None, ge=0)
    store: bool = False
    cut_after_rows: int | None = Field(default=None, ge=0)
    error_type: str | None = None
    message: str | None = None
    delay_seconds: float = Field(default=0.0, ge=0)

    @field_validator("path", "query")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        return None if value is None else _compiles(value)

    @model_validator(mode="after")
    def _needs_effect(self) -> FaultRule:
        if self.status is None and self.cut_after_rows is None:
            raise ValueError("a fault rule needs 'status' or 'cut_after_rows'")
        if self.rate is not None and self.count is not None:
            raise ValueError("give either 'rate' or 'count', not both")
        return self

    def matches(self, method: str, path: str, query: str = "") -> bool:
        """Method, full path (``re.fullmatch``, so ``/v1/messages/batches`` is create/list only) and query.

        The query is searched (``re.search``): its parameters come in any order, and the poller's
        ``limit=1000`` must be told apart from the ``limit=1`` marker call without spelling out the rest.
        """
        if self.method is not None and self.method != method:
            return False
        if self.query is not None and re.search(self.query, query) is None:
            return False
        return self.path is None or re.fullmatch(self.path, path) is not None

    def error_body(self) -> tuple[int, str, str]:
        """(status, error type, message) to answer with."""
        status = self.status or 500
        kind = self.error_type or ERROR_TYPE_BY_STATUS.get(status, "api_error")
        return status, kind, self.message or f"Emulated fault: HTTP {status} ({kind})"

    def headers(self) -> dict[str, str]:
        """``retry-after`` when configured (the SDK honours it for its retry delay)."""
        if self.retry_after is None:
            return {}
        value = self.retry_after
        return {"retry-after": str(int(value)) if float(value).is_integer() else str(value)}


class FaultInjector:
    """Chooses which fault (if any) hits a call; keeps ``count`` budgets and the seeded RNG."""

    def __init__(self, rules: list[FaultRule], seed: int | None) -> None:
        self._rules = rules
        self._remaining = {i: r.count for i, r in enumerate(rules) if r.count is not None}
        self._rng = random.Random(seed)
        self.injected = 0

    def pick(self, method: str, path: str, query: str = "", *, streams_rows: bool) -> FaultRule | None:
        """The first rule that fires for this call, consuming its budget; None if none fires.

        Cut rules only make sense where rows are streamed, so they are skipped elsewhere.
        """
        for index, rule in enumerate(self._rules):
            if rule.cut_after_rows is not None and not streams_rows:
                continue
            if not rule.matches(method, path, query) or not self._fires(index, rule):
                continue
            self.injected += 1
            return rule
        return None

    def _fires(self, index: int, rule: FaultRule) -> bool:
        if index in self._remaining:
            if self._remaining[index] <= 0:
                return False
            self._remaining[index] -= 1
            return True
        if rule.rate is not None:
            return self._rng.random() < rule.rate
        return True


@dataclass(frozen=True)
class OutcomeDecision:
    """What a completed request turns into: ``succeeded`` (maybe invalid output) or another kind."""

    kind: str
    error_type: str | None = None
    message: str | None = None
    invalid_output: bool = False


SUCCEEDED = OutcomeDecision("succeeded")


def _unit(seed: int | None, *parts: str) -> float:
    """A deterministic number in [0, 1) from ``parts``."""
    return hash_int(str(seed), *parts) / 2**64


def decide_outcome(
    custom_id: str,
    occurrence: int,
    rules: list[OutcomeRule],
    *,
    error_rate: float,
    expire_rate: float,
    seed: int | None,
) -> OutcomeDecision:
    """Outcome of a request that was processed: first matching rule, then the random rates."""
    for rule in rules:
        if rule.applies(custom_id, occurrence):
            if rule.result == "invalid_output":
                return OutcomeDecision("succeeded", invalid_output=True)
            if rule.result == "errored":
                message = rule.message or _ERROR_MESSAGES[rule.error_type]
                return OutcomeDecision("errored", rule.error_type, message)
            return OutcomeDecision(rule.result)
    if error_rate and _unit(seed, custom_id, str(occurrence), "error") < error_rate:
        return OutcomeDecision("errored", "api_error", _ERROR_MESSAGES["api_error"])
    if expire_rate and _unit(seed, custom_id, str(occurrence), "expire") < expire_rate:
        return OutcomeDecision("expired")
    return SUCCEEDED


def cache_found(custom_id: str, occurrence: int, hit_rate: float, seed: int | None) -> bool:
    """Whether a batch request finds a cached prefix that is there (hits in a batch are best effort)."""
    return hit_rate >= 1 or _unit(seed, "cache", custom_id, str(occurrence)) < hit_rate


def completion_fraction(custom_id: str) -> float:
    """``u`` in (0, 1]: when, as a fraction of the processing time, a request completes."""
    return (hash_int("completion", custom_id) + 1) / 2**64
