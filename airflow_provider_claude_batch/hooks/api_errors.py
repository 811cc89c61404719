"""Reading the SDK's errors: which ones pass, what the server hinted, and a short description.

Shared by the hook, the status poller, the trigger and the UI, so every place says the same thing.
"""

from __future__ import annotations

import anthropic

from airflow_provider_claude_batch.budget import parse_retry_after
from airflow_provider_claude_batch.connection_errors import ClaudeConnectionError, api_message

# Answers that say "not now" rather than "never": waiting goes on through them.
TRANSIENT_API_ERRORS = (
    anthropic.APIConnectionError,
    anthropic.RateLimitError,
    anthropic.InternalServerError,
    anthropic.RequestTimeoutError,
    anthropic.ConflictError,
)


def describe_api_error(error: Exception | None) -> str:
    if isinstance(error, anthropic.APIStatusError):
        return f"HTTP {error.status_code}: {api_message(error)}"
    return type(error).__name__ if error is not None else "unknown error"


def api_error_summary(error: BaseException) -> str:
    """``HTTP 529 OverloadedError`` or the exception's name: short, and never carrying request data.

    A connection problem already put in the shared wording (:mod:`~.connection_errors`) is that wording.
    """
    if isinstance(error, ClaudeConnectionError) or getattr(error, "connection_problem", False):
        return str(error)
    if isinstance(error, anthropic.APIStatusError):
        return f"HTTP {error.status_code} {type(error).__name__}"
    return type(error).__name__


def retry_after_seconds(error: BaseException | None) -> float | None:
    """The server's ``retry-after`` hint of an API error, in seconds, when it gives a usable one."""
    if isinstance(error, anthropic.APIStatusError):
        headers = error.response.headers
        return parse_retry_after(headers.get("retry-after"), headers.get("retry-after-ms"))
    return None


def retry_delay(error: Exception | None, attempt: int) -> float:
    """The server's ``retry-after`` when it gives one (bounded), else exponential backoff."""
    hint = retry_after_seconds(error)
    if hint is not None:
        return min(max(hint, 0.0), 60.0)
    return min(0.5 * 2 ** (attempt - 1), 8.0)
