"""What a ``claude`` connection says: the key, the base URL and the extras, read once into :class:`ClientSettings`."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from airflow_provider_claude_batch.budget import DEFAULT_REQUESTS_PER_MINUTE, RequestBudget, budget_for
from airflow_provider_claude_batch.connection_errors import DEFAULT_BASE_URL
from airflow_provider_claude_batch.status_book import DEFAULT_NOT_FOUND_GRACE_SECONDS

DEFAULT_MODEL = "claude-sonnet-4-6"
DEFAULT_TIMEOUT_SECONDS = 600.0
DEFAULT_MAX_RETRIES = 2


@dataclass(frozen=True)
class ClientSettings:
    """Everything needed to build an Anthropic client; ``api_key`` never leaves this object."""

    api_key: str | None
    base_url: str | None
    timeout: float
    max_retries: int
    default_model: str
    workspace_id: str | None = None
    batch_requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE
    max_queued_requests: int | None = None
    not_found_grace_seconds: float = DEFAULT_NOT_FOUND_GRACE_SECONDS
    betas: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never print the key, even in a debugger or a traceback
        return (
            f"ClientSettings(base_url={self.base_url!r}, timeout={self.timeout}, "
            f"max_retries={self.max_retries}, default_model={self.default_model!r}, "
            f"batch_requests_per_minute={self.batch_requests_per_minute}, api_key=***)"
        )

    @property
    def budget(self) -> RequestBudget:
        """This process's budget for the workspace these settings reach (shared by equal credentials)."""
        key_digest = hashlib.sha256((self.api_key or "").encode()).hexdigest()[:16]
        identity = (self.base_url or DEFAULT_BASE_URL, key_digest, self.workspace_id or "")
        return budget_for(identity, self.batch_requests_per_minute)

    def client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"timeout": self.timeout, "max_retries": self.max_retries}
        if self.api_key:
            kwargs["api_key"] = self.api_key
        if self.base_url:
            kwargs["base_url"] = self.base_url
        headers = {}
        if self.workspace_id:
            headers["anthropic-workspace-id"] = self.workspace_id
        if self.betas:
            headers["anthropic-beta"] = ",".join(self.betas)
        if headers:
            kwargs["default_headers"] = headers
        return kwargs


def settings_from_connection(
    conn: Any, *, timeout: float | None = None, max_retries: int | None = None, betas: tuple[str, ...] = ()
) -> ClientSettings:
    """Read an Airflow connection of type ``claude``; the key is registered with the log masker at once.

    :param conn: the connection (password: API key, host: base URL, extras: the rest).
    :param timeout: overrides the connection's request timeout, in seconds.
    :param max_retries: overrides the connection's SDK retry count.
    :param betas: ``anthropic-beta`` values sent with every call.
    """
    extras = conn.extra_dejson
    api_key = conn.password or os.environ.get("ANTHROPIC_API_KEY") or None
    if api_key:
        _mask(api_key)
    if timeout is None:
        timeout = _extra_number(extras, "timeout", float, DEFAULT_TIMEOUT_SECONDS, minimum=0.001)
    if max_retries is None:
        max_retries = _extra_number(extras, "max_retries", int, DEFAULT_MAX_RETRIES, minimum=0)
    base_url = conn.host or None
    if base_url and "://" not in base_url:
        base_url = f"{conn.schema or 'https'}://{base_url}" + (f":{conn.port}" if conn.port else "")
    return ClientSettings(
        api_key=api_key,
        base_url=base_url,
        timeout=timeout,
        max_retries=max_retries,
        default_model=extras.get("model") or DEFAULT_MODEL,
        workspace_id=extras.get("workspace_id") or None,
        batch_requests_per_minute=_extra_number(
            extras, "batch_requests_per_minute", int, DEFAULT_REQUESTS_PER_MINUTE, minimum=1
        ),
        max_queued_requests=_extra_number(extras, "max_queued_requests", int, None, minimum=1),
        not_found_grace_seconds=_extra_number(
            extras, "not_found_grace_seconds", float, DEFAULT_NOT_FOUND_GRACE_SECONDS, minimum=0
        ),
        betas=betas,
    )


def _mask(secret: str) -> None:
    """Register ``secret`` with Airflow's log masker (so it never reaches a log line)."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - Airflow < 3.1 layouts
        return
    mask_secret(secret)


def _extra_number(
    extras: dict[str, Any], name: str, kind: type[int] | type[float], default: Any, *, minimum: float
) -> Any:
    """A numeric connection extra (the form may store it as text), checked, or ``default`` when unset."""
    value = extras.get(name)
    if value is None or value == "":
        return default
    try:
        number = kind(value)
        if isinstance(value, bool) or (kind is int and float(value) != number):
            raise ValueError
    except (TypeError, ValueError):
        whole = "whole " if kind is int else ""
        raise ValueError(f"The connection's extra {name!r} must be a {whole}number, got {value!r}.") from None
    if number < minimum:
        raise ValueError(f"The connection's extra {name!r} must be at least {minimum:g}, got {value!r}.")
    return number
