"""What to say when a Claude connection cannot be used: one wording for every place it shows.

The hook, the trigger, the sensor, ``test_connection`` and the UI all describe a connection problem
with these functions, so a user sees the same sentence wherever it surfaces: which connection, which
base URL, what went wrong and what to change. The API key never appears in any of them.

This module imports nothing from Airflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import anthropic

DEFAULT_BASE_URL = "https://api.anthropic.com"
_HOST_FIX = "set the connection's Host to the API's base URL (leave it empty for https://api.anthropic.com)"


class ClaudeConnectionError(anthropic.AnthropicError):
    """The connection cannot be used as it is configured; the message says what to change."""


@dataclass(frozen=True)
class ConnectionTarget:
    """The connection an error is about: its id and the base URL it points at."""

    conn_id: str
    base_url: str | None = None

    @property
    def url(self) -> str:
        return self.base_url or DEFAULT_BASE_URL

    def __str__(self) -> str:
        return f"Claude connection {self.conn_id!r} ({self.url})"


def missing_key_message(target: ConnectionTarget) -> str:
    return (
        f"{target}: no API key. Put the key in the connection's Password field, or set ANTHROPIC_API_KEY "
        "in the environment of the workers and the triggerer."
    )


def settings_problem(target: ConnectionTarget, *, has_key: bool) -> str | None:
    """What makes the connection unusable before anything is sent: no key, or a wrong base URL."""
    return base_url_problem(target) if has_key else missing_key_message(target)


def stops_every_call(error: BaseException) -> bool:
    """A rejected key or an unreachable host: every other call would fail the same way."""
    if isinstance(error, anthropic.APIStatusError):
        return isinstance(error, anthropic.AuthenticationError) and _speaks_anthropic(error)
    return isinstance(error, anthropic.APIConnectionError) and not isinstance(error, anthropic.APITimeoutError)


def base_url_problem(target: ConnectionTarget) -> str | None:
    """What is wrong with the base URL itself, before anything is sent; ``None`` when it looks right."""
    if target.base_url is None:
        return None
    parts = urlsplit(target.base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{target}: the base URL is not an http(s) URL; {_HOST_FIX}."
    if parts.path.rstrip("/").endswith("/v1"):
        return (
            f"{target}: the base URL ends in /v1, but the client adds /v1 itself; drop it "
            f"({parts.scheme}://{parts.netloc}{parts.path.rstrip('/')[:-3]})."
        )
    return None


def api_message(error: anthropic.APIStatusError) -> str:
    """The message of the API's error envelope, else the SDK's."""
    body = error.body
    inner = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(inner, Mapping) and inner.get("message"):
        return str(inner["message"])
    return error.message


def _api_message(error: anthropic.APIStatusError) -> str:
    body = error.body
    inner = body.get("error") if isinstance(body, Mapping) else None
    kind = inner.get("type") if isinstance(inner, Mapping) else None
    return f"{kind}: {api_message(error)}" if kind else api_message(error)


def _speaks_anthropic(error: anthropic.APIStatusError) -> bool:
    """Whether the answer came from an Anthropic API: its request-id header or its error envelope."""
    body = error.body
    envelope = isinstance(body, Mapping) and body.get("type") == "error" and isinstance(body.get("error"), Mapping)
    return envelope or "request-id" in error.response.headers


def explain(error: BaseException, target: ConnectionTarget) -> str | None:
    """The connection-level meaning of an SDK error, or ``None`` when it is about something else.

    Connection-level: the key was rejected (401) or may not do this (403), the host could not be
    reached or did not answer in time, or what answered is not an Anthropic API.
    """
    if isinstance(error, ClaudeConnectionError):
        return str(error)
    if isinstance(error, anthropic.APIStatusError):
        if not _speaks_anthropic(error):
            kind = error.response.headers.get("content-type", "no content type").split(";")[0]
            return (
                f"{target}: what answers there is not an Anthropic API (HTTP {error.status_code}, {kind}); {_HOST_FIX}."
            )
        if isinstance(error, anthropic.AuthenticationError):
            return (
                f"{target}: the API key was rejected (401 {_api_message(error)}). Put a valid key in the "
                "connection's Password field (or ANTHROPIC_API_KEY); keys are made in the Claude Console."
            )
        if isinstance(error, anthropic.PermissionDeniedError):
            return (
                f"{target}: the API key may not do this (403 {_api_message(error)}). Use a key whose "
                "workspace may use the Message Batches and Models APIs, or set the connection's workspace_id."
            )
        return None
    if isinstance(error, anthropic.APITimeoutError):
        return (
            f"{target}: no answer within the timeout. Check that this machine reaches the host, or raise "
            "the connection's timeout extra."
        )
    if isinstance(error, anthropic.APIConnectionError):
        cause = error.__cause__ or error.__context__
        why = f"{type(cause).__name__}: {cause}" if cause is not None else "connection error"
        return (
            f"{target}: could not reach the host ({why}). Check the connection's Host (empty for "
            f"{DEFAULT_BASE_URL}) and that this machine can reach it (network, proxy, firewall)."
        )
    return None


def explain_in_place(error: BaseException, target: ConnectionTarget) -> None:
    """Give a connection-level SDK error the shared wording; its class (and so retries) is unchanged."""
    message = explain(error, target)
    if message is not None and not isinstance(error, ClaudeConnectionError):
        if isinstance(error, anthropic.APIError):
            error.message = message
        error.args = (message,)
        error.connection_problem = True  # type: ignore[attr-defined]
