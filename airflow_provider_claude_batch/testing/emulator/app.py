"""The ASGI app: the ``/v1`` routes of the Message Batches, Messages and Models APIs, and the ``/_emulator`` admin.

Every API route is wrapped the same way (:func:`_api_route`): auth and call counting, the rolling
rate limit of the batch endpoints, the ``anthropic-beta`` values, then fault injection: the
per-call checks the service makes before any handler runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..faults import FaultRule
from ..responder.message import message_stream_events
from .http_io import (
    DropCutNoise,
    RequestIdMiddleware,
    RowStreamResponse,
    base_url,
    drain,
    error_response,
    read_json,
)
from .models import model_page, retrieve_model
from .store import EmulatorState
from .validation import request_betas
from .wire import ApiError, invalid, iso

__all__ = ["Handler", "build_app"]

Handler = Callable[[Request, "FaultRule | None"], Awaitable[Response]]


def _api_route(
    state: EmulatorState, method: str, template: str, handler: Handler, *, rows: bool, batch_endpoint: bool
) -> Route:
    """Wrap an API handler with the checks made before it runs: auth, the rolling rate limit, betas, faults.

    That order is the service's: a caller is identified before its calls are counted against its
    limit, and a call refused at the door reaches no server that could fail it.
    """
    key = f"{method} {template}"

    async def endpoint(request: Request) -> Response:
        try:
            request.state.rate_limit_stamp = state.admit(key, request.headers, batch_endpoint=batch_endpoint)
            request.state.betas = request_betas(request.headers)
            fault = state.pick_fault(method, request.url.path, request.url.query, streams_rows=rows)
            if fault is not None and fault.delay_seconds:
                await asyncio.sleep(fault.delay_seconds)
            immediate = fault is not None and not fault.store and fault.cut_after_rows is None
            if immediate:
                raise _fault_error(fault)
            response = await handler(request, fault)
            if fault is not None and fault.store and fault.cut_after_rows is None:
                raise _fault_error(fault)  # the work is done, but the answer is "lost"
            return response
        except ApiError as error:
            await drain(request)
            return error_response(request, error)

    return Route(template, endpoint, methods=[method])


def _fault_error(fault: FaultRule | None) -> ApiError:
    assert fault is not None
    status, kind, message = fault.error_body()
    return ApiError(status, kind, message, fault.headers())


def _api_routes(state: EmulatorState) -> list[Route]:
    """The ``/v1`` routes of the Message Batches and Messages APIs."""

    async def create(request: Request, fault: FaultRule | None) -> Response:
        payload = await read_json(request, state.config.max_body_bytes)
        stamp, betas = request.state.rate_limit_stamp, request.state.betas
        return JSONResponse(state.create_batch(payload, base_url(request), stamp, betas))

    async def list_(request: Request, fault: FaultRule | None) -> Response:
        return JSONResponse(state.list_batches(request.query_params, base_url(request)))

    async def retrieve(request: Request, fault: FaultRule | None) -> Response:
        return JSONResponse(state.retrieve_batch(request.path_params["message_batch_id"], base_url(request)))

    async def cancel(request: Request, fault: FaultRule | None) -> Response:
        await drain(request)
        return JSONResponse(state.cancel_batch(request.path_params["message_batch_id"], base_url(request)))

    async def delete(request: Request, fault: FaultRule | None) -> Response:
        return JSONResponse(state.delete_batch(request.path_params["message_batch_id"]))

    async def results(request: Request, fault: FaultRule | None) -> Response:
        batch = state.open_results(request.path_params["message_batch_id"])
        cut = fault.cut_after_rows if fault is not None else None
        return RowStreamResponse(state.result_chunks(batch, cut), cut=cut is not None)

    async def messages(request: Request, fault: FaultRule | None) -> Response:
        payload = await read_json(request, state.config.max_messages_body_bytes)
        message = state.create_message(payload)
        if isinstance(payload, dict) and payload.get("stream") is True:
            return StreamingResponse(_sse(message), media_type="text/event-stream; charset=utf-8")
        return JSONResponse(message)

    async def count_tokens(request: Request, fault: FaultRule | None) -> Response:
        payload = await read_json(request, state.config.max_messages_body_bytes)
        return JSONResponse(state.count_tokens(payload))

    async def models(request: Request, fault: FaultRule | None) -> Response:
        query = request.query_params
        lifecycles = [*query.getlist("lifecycle[]"), *query.getlist("lifecycle")]
        return JSONResponse(model_page(query, lifecycles, state.config.extra_models))

    async def model(request: Request, fault: FaultRule | None) -> Response:
        return JSONResponse(retrieve_model(request.path_params["model_id"], state.config.extra_models))

    # method, path, handler, streams rows, draws from the Message Batches API's rate limit
    table: list[tuple[str, str, Handler, bool, bool]] = [
        ("POST", "/v1/messages/batches", create, False, True),
        ("GET", "/v1/messages/batches", list_, False, True),
        ("GET", "/v1/messages/batches/{message_batch_id}", retrieve, False, True),
        ("POST", "/v1/messages/batches/{message_batch_id}/cancel", cancel, False, True),
        ("DELETE", "/v1/messages/batches/{message_batch_id}", delete, False, True),
        ("GET", "/v1/messages/batches/{message_batch_id}/results", results, True, True),
        ("POST", "/v1/messages", messages, False, False),
        ("POST", "/v1/messages/count_tokens", count_tokens, False, False),
        ("GET", "/v1/models", models, False, False),
        ("GET", "/v1/models/{model_id}", model, False, False),
    ]
    return [
        _api_route(state, method, path, handler, rows=rows, batch_endpoint=batch)
        for method, path, handler, rows, batch in table
    ]


async def _sse(message: dict[str, Any]) -> AsyncIterator[bytes]:
    """Server-sent events for a streamed Messages API reply."""
    for event, data in message_stream_events(message):
        yield f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _admin_routes(state: EmulatorState) -> list[Route]:
    """``/_emulator/*``: unauthenticated control plane for tests and demos."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "batch_count": len(state.batches)})

    async def get_state(request: Request) -> Response:
        return JSONResponse(state.snapshot())

    async def get_config(request: Request) -> Response:
        return JSONResponse(state.config.model_dump(mode="json"))

    async def set_config(request: Request) -> Response:
        partial = await read_json(request, 16 * 1024 * 1024)
        if not isinstance(partial, dict):
            raise invalid("config update must be a JSON object")
        try:
            config = state.configure(partial)
        except ValidationError as exc:
            raise invalid(f"invalid emulator config: {exc}") from None
        return JSONResponse(config.model_dump(mode="json"))

    async def reset(request: Request) -> Response:
        body = await read_json(request, 1024 * 1024)
        state.reset(config=bool(isinstance(body, dict) and body.get("config")))
        return JSONResponse({"status": "reset", "config": state.config.model_dump(mode="json")})

    async def advance(request: Request) -> Response:
        body = await read_json(request, 1024 * 1024)
        seconds = body.get("seconds") if isinstance(body, dict) else None
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            raise invalid("seconds: Input should be a valid number")
        return JSONResponse({"clock_offset": state.advance(seconds), "now": iso(state.now())})

    def admin(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as error:
                return error_response(request, error)

        return endpoint

    return [
        Route("/_emulator/health", admin(health), methods=["GET"]),
        Route("/_emulator/state", admin(get_state), methods=["GET"]),
        Route("/_emulator/config", admin(get_config), methods=["GET"]),
        Route("/_emulator/config", admin(set_config), methods=["POST"]),
        Route("/_emulator/reset", admin(reset), methods=["POST"]),
        Route("/_emulator/advance", admin(advance), methods=["POST"]),
    ]


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods still answer with the API's error envelope."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    kind = {404: "not_found_error", 405: "invalid_request_error"}.get(status, "api_error")
    message = "Not found" if status == 404 else (getattr(exc, "detail", None) or "error")
    return error_response(request, ApiError(status, kind, str(message)))


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(request, ApiError(500, "api_error", f"Internal server error: {exc!r}"))


def build_app(state: EmulatorState | None = None) -> Starlette:
    """The emulator's ASGI application (serve it with any ASGI server)."""
    state = state or EmulatorState()
    logging.getLogger("uvicorn.error").addFilter(DropCutNoise())
    app = Starlette(
        routes=[*_api_routes(state), *_admin_routes(state)],
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={HTTPException: _http_exception, Exception: _server_error},
    )
    app.state.emulator = state
    return app
