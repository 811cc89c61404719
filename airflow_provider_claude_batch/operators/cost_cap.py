"""``max_cost_usd``: quote the requests before the first create, refuse over the cap, keep the quote for the manifest.

The quote (:mod:`~airflow_provider_claude_batch.cost_quote`) counts input tokens with
``POST /v1/messages/count_tokens``, one call per distinct request shape, a few at a time. Those are
Messages API calls: they do not draw from the Message Batches request budget. The quote is written
beside the results (``cost_quote.json``, with the input's fingerprint) so the manifest can show it
next to the actual cost, even when the task lands in a later execution.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from logging import Logger
from typing import TYPE_CHECKING, Any

import anthropic

try:
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 3.1 keeps it in airflow.exceptions
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]

from airflow_provider_claude_batch.connection_errors import stops_every_call
from airflow_provider_claude_batch.cost_quote import (
    MAX_COUNTED_SHAPES,
    CostQuote,
    RequestShape,
    build_quote,
    cap_refusal,
    shapes_of,
)
from airflow_provider_claude_batch.hooks.api_errors import api_error_summary
from airflow_provider_claude_batch.operators.base import write_json
from airflow_provider_claude_batch.operators.batch_run import ClaudeBatchError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_claude_batch.hooks.claude import ClaudeHook
    from airflow_provider_claude_batch.requests import PreparedRequests

__all__ = ["QUOTE_FILE", "ClaudeCostCapError", "check_cost_cap", "count_first_requests", "quote_fields"]

QUOTE_FILE = "cost_quote.json"
# count_tokens calls in flight at once (each shape's first request is counted once).
COUNT_CONCURRENCY = 8


class ClaudeCostCapError(ClaudeBatchError, AirflowFailException):
    """The requests may cost more than ``max_cost_usd``; nothing was submitted (and no retry is attempted)."""


def check_cost_cap(
    hook: ClaudeHook,
    prepared: PreparedRequests,
    max_cost_usd: float,
    folder: ObjectStoragePath,
    log: Logger,
    route: str = "batch",
) -> CostQuote:
    """Quote ``prepared`` at ``route`` prices; raise :class:`ClaudeCostCapError` when over ``max_cost_usd``."""
    shapes = shapes_of(prepared.encoded)
    quote = build_quote(shapes, count_first_requests(hook, shapes[:MAX_COUNTED_SHAPES], log), route=route)
    refusal = cap_refusal(quote, max_cost_usd)
    if refusal is not None:
        raise ClaudeCostCapError(f"{refusal} Nothing was submitted.")
    log.info("max_cost_usd=%g: the requests may cost %s; that is under the cap.", max_cost_usd, quote.describe())
    write_json(folder / QUOTE_FILE, {"fingerprint": prepared.fingerprint(), **quote.as_dict(max_cost_usd)})
    return quote


def count_first_requests(hook: ClaudeHook, shapes: list[RequestShape], log: Logger) -> list[int | None]:
    """The input tokens of each shape's first request (None where the endpoint could not tell)."""
    params = [shape.params for shape in shapes]
    warned: list[str] = []

    def count(request: dict[str, Any] | None) -> int | None:
        if request is None:
            return None
        try:
            return hook.count_input_tokens(request)
        except anthropic.APIError as error:
            if stops_every_call(error):
                raise
            if not warned:
                warned.append(api_error_summary(error))
                log.warning(
                    "count_tokens could not count a request (%s); its shape is quoted by its bytes, a looser bound.",
                    warned[0],
                )
            return None

    if len(params) <= 1:
        return [count(request) for request in params]
    with ThreadPoolExecutor(max_workers=min(COUNT_CONCURRENCY, len(params))) as pool:
        return list(pool.map(count, params))


def quote_fields(folder: ObjectStoragePath, fingerprint: str, max_cost_usd: float | None) -> dict[str, Any]:
    """The manifest's ``cost_quote`` (the quote the submission was let through with), when a cap is set."""
    path = folder / QUOTE_FILE
    if max_cost_usd is None or not path.exists():
        return {}
    saved = json.loads(path.read_text())
    if saved.pop("fingerprint", None) != fingerprint:
        return {}
    return {"cost_quote": saved}
