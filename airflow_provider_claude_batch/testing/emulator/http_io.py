"""HTTP plumbing: request ids, bounded body reading, answers in the API's error envelope, cuttable row streams."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .wire import ApiError, error_envelope, invalid, random_id

__all__ = [
    "DropCutNoise",
    "RequestIdMiddleware",
    "RowStreamResponse",
    "base_url",
    "drain",
    "error_response",
    "read_json",
]

_CUT_LOG_MESSAGE = "ASGI callable returned without completing response."


class RequestIdMiddleware:
    """Gives every request a ``req_...`` id and every response the ``request-id`` header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = random_id("req_")
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"request-id" for name, _ in headers):
                    headers.append((b"request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class RowStreamResponse(Response):
    """Chunked JSONL body that can be cut mid-stream to simulate a dropped connection.

    Returning without the final empty chunk makes uvicorn close the socket, so the client sees
    an incomplete chunked transfer, exactly like a connection lost mid-download.
    """

    def __init__(self, chunks: Iterator[bytes], *, cut: bool = False) -> None:
        super().__init__(media_type="application/binary")
        self._chunks = chunks
        self._cut = cut

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, gone))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for chunk in self._chunks:
                if gone.is_set():
                    return  # the client hung up: stop rendering rows nobody will read
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await asyncio.sleep(0)  # yield: lets other requests and disconnect detection run
            if self._cut:
                await asyncio.sleep(0.01)  # let the rows reach the socket before it is closed
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client disconnects (uvicorn otherwise drops our sends silently)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


class DropCutNoise(logging.Filter):
    """Hide uvicorn's error line for the connections we cut on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _CUT_LOG_MESSAGE


def base_url(request: Request) -> str:
    """The emulator's own base URL as the client reached it (for absolute ``results_url``)."""
    return f"{request.url.scheme}://{request.url.netloc}"


def error_response(request: Request, error: ApiError) -> JSONResponse:
    request_id = request.scope.get("state", {}).get("request_id")
    body = error_envelope(error.kind, error.message, request_id)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes with 413 after draining the rest."""
    request.state.body_read = True
    declared = request.headers.get("content-length")
    too_large = declared is not None and declared.isdigit() and int(declared) > limit
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        too_large = too_large or size > limit
        if not too_large:
            parts.append(chunk)
    if too_large:
        raise ApiError(413, "request_too_large", f"Request exceeds the maximum allowed number of bytes ({limit}).")
    return b"".join(parts)


async def read_json(request: Request, limit: int) -> Any:
    body = await _read_body(request, limit)
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"Request body is not valid JSON: {exc}") from None


async def drain(request: Request) -> None:
    """Consume an unread body so the connection stays usable after an early error answer."""
    if getattr(request.state, "body_read", False):
        return
    request.state.body_read = True
    async for _ in request.stream():
        pass
