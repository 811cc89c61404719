"""The API's wire vocabulary, shared by every layer: its errors and their envelope, ids and timestamps."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ..responder.hashing import BASE62

__all__ = ["ApiError", "base62", "error_envelope", "invalid", "iso", "not_found", "random_id"]


class ApiError(Exception):
    """An error answered with the API's envelope and status."""

    def __init__(self, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = dict(headers or {})


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def not_found(batch_id: str) -> ApiError:
    return ApiError(404, "not_found_error", f"message_batch {batch_id!r} not found")


def iso(ts: float | None) -> str | None:
    """RFC 3339 with microseconds and ``Z``, like the API's timestamps."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def base62(n: int, width: int) -> str:
    chars = []
    for _ in range(width):
        n, r = divmod(n, 62)
        chars.append(BASE62[r])
    return "".join(reversed(chars))


def random_id(prefix: str, length: int = 24) -> str:
    """``prefix`` + base62 characters, like ``req_...`` and ``msg_...`` ids."""
    return prefix + "".join(random.choices(BASE62, k=length))


def error_envelope(kind: str, message: str, request_id: str | None) -> dict[str, Any]:
    """The API's error body; the type sits at ``error.type``."""
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
