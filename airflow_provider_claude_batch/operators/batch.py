"""ClaudeBatchOperator: submit latency-tolerant Claude work as Message Batches and land the results."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anthropic
import httpx2

try:
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 3.1 keeps it in airflow.exceptions
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]

from airflow_provider_claude_batch.landing import land_results
from airflow_provider_claude_batch.links import ClaudeBatchLink
from airflow_provider_claude_batch.operators.base import RESULTS_FILE, ClaudeRequestsOperator, ClaudeTaskError
from airflow_provider_claude_batch.policy import batch_route_refusal, refusal_message, routing_enforced
from airflow_provider_claude_batch.polling import DEFAULT_MAX_POLL_SECONDS, DEFAULT_MIN_POLL_SECONDS
from airflow_provider_claude_batch.routing import Workload
from airflow_provider_claude_batch.triggers.batch import ClaudeBatchTrigger, wait_inline

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_claude_batch.requests import PreparedRequests

# The batch window is 24 hours; waiting a little longer lets the API's own expiry end the batch
# (and land its completed requests) before our deadline does.
DEFAULT_TIMEOUT = timedelta(hours=25)
# The defer timeout exceeds the trigger's own deadline so the trigger's clean "timeout" event wins.
DEFER_TIMEOUT_MARGIN = timedelta(minutes=5)
# A results stream cut mid-way surfaces as one of these; landing fetches it again.
RESULT_STREAM_ERRORS = (anthropic.APIConnectionError, anthropic.InternalServerError, httpx2.TransportError)


class ClaudeBatchError(ClaudeTaskError):
    """A batch task failed; the message says why and where its results are."""


class ClaudeRoutingError(ClaudeBatchError, AirflowFailException):
    """The work of a batch task belongs on the synchronous route; nothing was submitted.

    An ``AirflowFailException`` too: the answer cannot change on a retry, so none is attempted.
    """


class ClaudeBatchOperator(ClaudeRequestsOperator):
    """Submit Claude requests as Message Batches (half price, results within 24 hours).

    For work nobody waits on: nightly reports, audits, test generation, evaluations. The task
    validates every request before any network call, submits, pushes the batch id to XCom at
    once, then defers (holding no worker slot) until the batch ends, and lands one JSONL row per
    request in ``results_uri``. XCom receives only a small manifest: batch ids, where the
    results are, counts per status, token usage and cost.

    Takes every parameter of
    :class:`~airflow_provider_claude_batch.operators.base.ClaudeRequestsOperator` (``requests``,
    ``model``, ``max_tokens``, ``system``, ``request_params``, ``claude_conn_id``, ``results_uri``,
    ``max_failed_fraction``), and:

    :param wait_for_completion: when False, return right after submission.
    :param deferrable: wait in the triggerer (default) instead of polling in the worker.
    :param min_poll_interval: seconds between the first status checks of a young batch.
    :param max_poll_interval: the longest wait between two status checks (polling is adaptive).
    :param timeout: how long to wait for the batch before cancelling it and failing.
    :param cancel_on_kill: cancel in-flight batches when the task is killed or times out.
    :param blocking: declare that something is held up until this task's results arrive; a
        blocking task belongs on the synchronous route (``ClaudeMessageOperator``), so the routing
        policy refuses it. The DAG tag ``blocking`` says the same for every task of a DAG.
    :param deadline: a hard deadline (SLA, contract) measured from submission. Under 24 hours it
        cannot be met by a batch, so the routing policy refuses the task.
    :param workload: the full declaration of who waits and what the work needs
        (:class:`~airflow_provider_claude_batch.routing.Workload`). ``Workload(waiting="nobody")``
        also overrides reading a sub-daily schedule as a refresh deadline (and nothing else).

    Before submitting anything the task checks its route with the same rule as the routing policy
    (see ``docs/routing.md``) and fails with :class:`ClaudeRoutingError` if the work belongs on the
    synchronous route, unless ``[claude_batch] enforce_routing`` is False.
    """

    ui_color = "#e8d6c6"
    operator_extra_links = (ClaudeBatchLink(),)

    def __init__(
        self,
        *,
        wait_for_completion: bool = True,
        deferrable: bool = True,
        min_poll_interval: float = DEFAULT_MIN_POLL_SECONDS,
        max_poll_interval: float = DEFAULT_MAX_POLL_SECONDS,
        timeout: timedelta = DEFAULT_TIMEOUT,
        cancel_on_kill: bool = True,
        blocking: bool = False,
        deadline: timedelta | None = None,
        workload: Workload | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.blocking = blocking
        self.deadline = deadline
        self.workload = workload
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.min_poll_interval = min_poll_interval
        self.max_poll_interval = max_poll_interval
        self.timeout = timeout
        self.cancel_on_kill = cancel_on_kill
        self._submitted: list[str] = []

    def execute(self, context: Context) -> dict[str, Any]:
        # Checked before and after reading the requests: what the DAG says needs no network, and
        # requests from an XCom or a file may ask for fast mode. Either way before any create.
        self._check_route()
        prepared = self.prepare()
        self._check_route(prepared)
        hook = self.hook
        batch_ids = self._submitted
        for part in prepared.split():
            batch = hook.create_batch(part, known_batch_ids=batch_ids)
            batch_ids.append(batch.id)
            # Pushed before anything else can fail, so a lost task never loses track of its batch.
            context["ti"].xcom_push(key="batch_id", value=batch_ids[0])
            context["ti"].xcom_push(key="batch_ids", value=list(batch_ids))
            if len(batch_ids) == 1:
                # Airflow stores extra links only when a task ends; pushed now, the button works while deferred.
                link = ClaudeBatchLink()
                context["ti"].xcom_push(key=link.xcom_key, value=link.get_link(self, ti_key=context["ti"]))
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
            self.defer(trigger=trigger, method_name="execute_complete", timeout=self.timeout + DEFER_TIMEOUT_MARGIN)
        return self.execute_complete(context, wait_inline(trigger))

    def _check_route(self, prepared: PreparedRequests | None = None) -> None:
        """Refuse to submit work that somebody waits on: the routing policy's rule, at run time."""
        if not routing_enforced():
            return
        decision = batch_route_refusal(self, prepared)
        if decision is not None:
            raise ClaudeRoutingError(f"{refusal_message(self, decision, prepared)} Nothing was submitted.")

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
            left = "They were cancelled." if self.cancel_on_kill else "They were left running (cancel_on_kill=False)."
            raise ClaudeBatchError(f"{event.get('message')} {left}")
        folder = self.results_folder(context)
        report = land_results(
            batch_ids,
            self.hook.stream_results,
            folder / RESULTS_FILE,
            transient_errors=RESULT_STREAM_ERRORS,
            unavailable_errors=(anthropic.NotFoundError,),
        )
        return self.finish(
            folder,
            report.tally,
            route="batch",
            extra={"batch_id": batch_ids[0] if batch_ids else None, "batch_ids": batch_ids},
        )

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
