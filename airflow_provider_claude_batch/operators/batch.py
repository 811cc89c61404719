"""ClaudeBatchOperator: submit latency-tolerant Claude work as Message Batches and land the results."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import anthropic
from airflow.sdk import BaseOperator, ObjectStoragePath

from airflow_provider_claude_batch.hooks.claude import ClaudeHook
from airflow_provider_claude_batch.landing import land_results
from airflow_provider_claude_batch.polling import DEFAULT_MAX_POLL_SECONDS, DEFAULT_MIN_POLL_SECONDS
from airflow_provider_claude_batch.pricing import TokenUsage, cost_of
from airflow_provider_claude_batch.requests import (
    PreparedRequests,
    RequestDefaults,
    RequestSourceError,
    iter_jsonl,
    prepare_requests,
)
from airflow_provider_claude_batch.results import failure_verdict
from airflow_provider_claude_batch.triggers.batch import ClaudeBatchTrigger, wait_inline

if TYPE_CHECKING:
    from airflow.sdk import Context

RESULTS_FILE = "results.jsonl"
MANIFEST_FILE = "manifest.json"
# The batch window is 24 hours; waiting a little longer lets the API's own expiry end the batch
# (and land its completed requests) before our deadline does.
DEFAULT_TIMEOUT = timedelta(hours=25)
# The defer timeout exceeds the trigger's own deadline so the trigger's clean "timeout" event wins.
DEFER_TIMEOUT_MARGIN = timedelta(minutes=5)


class ClaudeBatchError(RuntimeError):
    """A batch task failed; the message says why and where its results are."""


class ClaudeBatchOperator(BaseOperator):
    """Submit Claude requests as Message Batches (half price, results within 24 hours).

    For work nobody waits on: nightly reports, audits, test generation, evaluations. The task
    validates every request before any network call, submits, pushes the batch id to XCom at
    once, then defers (holding no worker slot) until the batch ends, and lands one JSONL row per
    request in ``results_uri``. XCom receives only a small manifest: batch ids, where the
    results are, counts per status, token usage and cost.

    :param requests: the requests: a list (prompt strings, ``{"prompt": ..., **overrides}``,
        ``{"messages": [...], **overrides}`` or the API's ``{"custom_id": ..., "params": {...}}``),
        an upstream ``XComArg``, or the URI of a JSONL file (``file://``, ``s3://``, ... read with
        ``ObjectStoragePath``; one request per line) for inputs too large for XCom.
    :param model: default model for requests that do not name one (else the connection's).
    :param max_tokens: default output ceiling per request.
    :param system: default system prompt.
    :param request_params: other default Messages API parameters (``temperature``, ``tools``, ...).
    :param claude_conn_id: the Airflow connection (type ``claude``).
    :param results_uri: folder (``ObjectStoragePath`` URI) for ``results.jsonl`` and
        ``manifest.json``; defaults to ``$AIRFLOW_HOME/claude_batch_results/<dag>/<run>/<task>``.
    :param wait_for_completion: when False, return right after submission.
    :param deferrable: wait in the triggerer (default) instead of polling in the worker.
    :param max_failed_fraction: the share of requests allowed not to succeed before the task fails
        (0 = any failure fails the task; the results land either way).
    :param min_poll_interval: seconds between the first status checks of a young batch.
    :param max_poll_interval: the longest wait between two status checks (polling is adaptive).
    :param timeout: how long to wait for the batch before cancelling it and failing.
    :param cancel_on_kill: cancel in-flight batches when the task is killed or times out.
    """

    template_fields: Sequence[str] = (
        "requests",
        "model",
        "max_tokens",
        "system",
        "request_params",
        "claude_conn_id",
        "results_uri",
        "max_failed_fraction",
    )
    template_fields_renderers = {"requests": "json", "request_params": "json", "system": "md"}
    ui_color = "#e8d6c6"

    def __init__(
        self,
        *,
        requests: Any,
        model: str | None = None,
        max_tokens: int | None = 1024,
        system: str | list[Any] | None = None,
        request_params: dict[str, Any] | None = None,
        claude_conn_id: str = ClaudeHook.default_conn_name,
        results_uri: str | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = True,
        max_failed_fraction: float = 0.0,
        min_poll_interval: float = DEFAULT_MIN_POLL_SECONDS,
        max_poll_interval: float = DEFAULT_MAX_POLL_SECONDS,
        timeout: timedelta = DEFAULT_TIMEOUT,
        cancel_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.requests = requests
        self.model = model
        self.max_tokens = max_tokens
        self.system = system
        self.request_params = request_params or {}
        self.claude_conn_id = claude_conn_id
        self.results_uri = results_uri
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.max_failed_fraction = max_failed_fraction
        self.min_poll_interval = min_poll_interval
        self.max_poll_interval = max_poll_interval
        self.timeout = timeout
        self.cancel_on_kill = cancel_on_kill
        self._submitted: list[str] = []

    @property
    def hook(self) -> ClaudeHook:
        return ClaudeHook(self.claude_conn_id)

    # -- submission ------------------------------------------------------------------------

    def prepare(self) -> PreparedRequests:
        """Read, normalise and validate every request; raises before any network call."""
        _check_fraction(self.max_failed_fraction)
        defaults = RequestDefaults(
            model=self.model,
            max_tokens=self.max_tokens,
            system=self.system,
            params=self.request_params,
        )
        if isinstance(self.requests, str):
            return self._prepare_from_uri(self.requests, defaults)
        if isinstance(self.requests, dict) or not isinstance(self.requests, Iterable):
            raise TypeError(
                f"requests must be a list of requests, an XComArg resolving to one, or the URI of a JSONL "
                f"file; got {type(self.requests).__name__}"
            )
        return prepare_requests(self.requests, self._with_connection_model(defaults))

    def _prepare_from_uri(self, uri: str, defaults: RequestDefaults) -> PreparedRequests:
        path = ObjectStoragePath(uri)
        if not path.exists():
            raise RequestSourceError(
                f"requests={uri!r} is read as the URI of a JSONL file, but there is no such file. "
                "Pass a list to send prompts directly, or fix the path."
            )
        with path.open("rb") as lines:
            return prepare_requests(iter_jsonl(lines, uri), self._with_connection_model(defaults), source=uri)

    def _with_connection_model(self, defaults: RequestDefaults) -> RequestDefaults:
        if defaults.model is not None:
            return defaults
        return RequestDefaults(
            model=self.hook.default_model,
            max_tokens=defaults.max_tokens,
            system=defaults.system,
            params=defaults.params,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        prepared = self.prepare()
        hook = self.hook
        batch_ids = self._submitted
        for part in prepared.split():
            batch = hook.create_batch(part, known_batch_ids=batch_ids)
            batch_ids.append(batch.id)
            # Pushed before anything else can fail, so a lost task never loses track of its batch.
            context["ti"].xcom_push(key="batch_id", value=batch_ids[0])
            context["ti"].xcom_push(key="batch_ids", value=list(batch_ids))
            self.log.info("Submitted Claude batch %s with %d request(s).", batch.id, part.count)
        if not self.wait_for_completion:
            return {"batch_ids": list(batch_ids), "batch_id": batch_ids[0], "request_count": prepared.count}
        trigger = ClaudeBatchTrigger(
            batch_ids=list(batch_ids),
            claude_conn_id=self.claude_conn_id,
            end_time=time.time() + self.timeout.total_seconds(),
            min_poll_interval=self.min_poll_interval,
            max_poll_interval=self.max_poll_interval,
            cancel_on_kill=self.cancel_on_kill,
        )
        if self.deferrable:
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=self.timeout + DEFER_TIMEOUT_MARGIN,
            )
        return self.execute_complete(context, wait_inline(trigger))

    # -- resuming and landing -------------------------------------------------------------

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the wait: land the results, write the manifest, apply the failure policy."""
        if not event or "status" not in event:
            raise ClaudeBatchError(f"The batch wait ended without a usable event: {event!r}")
        batch_ids: list[str] = list(event.get("batch_ids") or [])
        self._submitted = batch_ids
        if event["status"] == "error":
            raise ClaudeBatchError(f"{event.get('message')} Batch ids: {', '.join(batch_ids)}.")
        if event["status"] == "timeout":
            self._cancel(batch_ids, reason="it did not end before the task's timeout")
            raise ClaudeBatchError(
                f"{event.get('message')} "
                + ("They were cancelled." if self.cancel_on_kill else "They were left running (cancel_on_kill=False).")
            )
        folder = self.results_folder(context)
        folder.mkdir(parents=True, exist_ok=True)
        results_path = folder / RESULTS_FILE
        hook = self.hook
        report = land_results(
            batch_ids,
            hook.stream_results,
            results_path,
            transient_errors=(anthropic.APIConnectionError, anthropic.InternalServerError, _stream_errors()),
            unavailable_errors=(anthropic.NotFoundError,),
        )
        tally = report.tally
        usage_by_model = {model: TokenUsage(*totals) for model, totals in sorted(tally.usage_by_model.items())}
        cost = cost_of(usage_by_model)
        manifest = {
            "batch_id": batch_ids[0] if batch_ids else None,
            "batch_ids": batch_ids,
            "results_uri": str(results_path),
            "manifest_uri": str(folder / MANIFEST_FILE),
            "request_count": tally.total,
            "counts": dict(tally.counts),
            "usage": tally.usage_totals(),
            "usage_by_model": {model: usage.as_dict() for model, usage in usage_by_model.items()},
            "cost": cost.as_dict(),
            "error_types": dict(tally.error_types),
            "landed_at": datetime.now(timezone.utc).isoformat(),
        }
        _write_json(folder / MANIFEST_FILE, manifest)
        self.log.info(
            "Landed %d result row(s) to %s: %s. Cost $%.4f at batch prices vs $%.4f synchronously "
            "(saved $%.4f; prices as of %s).",
            tally.total,
            results_path,
            ", ".join(f"{status} {n}" for status, n in tally.counts.items() if n),
            cost.batch_usd,
            cost.sync_usd,
            cost.saving_usd,
            cost.prices_as_of.isoformat(),
        )
        verdict = failure_verdict(tally.counts, self.max_failed_fraction)
        if verdict:
            raise ClaudeBatchError(f"{verdict}. Every row, failures included, is in {results_path}.")
        return manifest

    def results_folder(self, context: Context) -> ObjectStoragePath:
        """Where this task instance's results land."""
        if self.results_uri:
            return ObjectStoragePath(self.results_uri)
        ti = context["ti"]
        home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
        parts = [ti.dag_id, ti.run_id, ti.task_id]
        map_index = getattr(ti, "map_index", -1)
        if map_index is not None and map_index >= 0:
            parts.append(f"map_{map_index}")
        safe = "/".join(_safe_segment(part) for part in parts)
        return ObjectStoragePath(f"file://{home}/claude_batch_results/{safe}")

    # -- cancellation ---------------------------------------------------------------------

    def on_kill(self) -> None:
        """Cancel in-flight batches when a running (non-deferred) task is killed."""
        self._cancel(self._submitted, reason="the task was killed")

    def _cancel(self, batch_ids: list[str], reason: str) -> None:
        if not batch_ids:
            return
        if not self.cancel_on_kill:
            self.log.info("Leaving batches %s running although %s (cancel_on_kill=False).", batch_ids, reason)
            return
        hook = self.hook
        for batch_id in batch_ids:
            try:
                hook.cancel_batch(batch_id)
                self.log.info("Cancelled Claude batch %s because %s.", batch_id, reason)
            except anthropic.APIError as error:
                self.log.warning("Could not cancel Claude batch %s: %s", batch_id, type(error).__name__)


def _stream_errors() -> type[BaseException]:
    """The HTTP library's error for a response body cut mid-way (httpx2 under the SDK)."""
    import httpx2

    return httpx2.TransportError


def _check_fraction(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"max_failed_fraction must be a number from 0 to 1, got {value!r}")


def _safe_segment(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]", "_", value)


def _write_json(path: ObjectStoragePath, payload: dict[str, Any]) -> None:
    temporary = path.parent / f".{path.name}.tmp"
    with temporary.open("w") as out:
        json.dump(payload, out, indent=2, sort_keys=True)
    temporary.rename(path)
