"""ClaudeBatchOperator: submit latency-tolerant Claude work as Message Batches and land the results."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NoReturn

try:
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 3.1 keeps it in airflow.exceptions
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]

from airflow_provider_claude_batch.lifecycle import (
    AwaitCancel,
    CreatePart,
    LandRound,
    PlanNextRound,
    SendRescue,
    StartRescue,
    SubmissionLifecycle,
    WaitForBatches,
    WaitForCapacity,
)
from airflow_provider_claude_batch.links import ClaudeBatchLink
from airflow_provider_claude_batch.operators.base import ClaudeRequestsOperator
from airflow_provider_claude_batch.operators.batch_attach import Attachment
from airflow_provider_claude_batch.operators.batch_cancel import BatchCanceller
from airflow_provider_claude_batch.operators.batch_rescue import RescueRun
from airflow_provider_claude_batch.operators.batch_run import (
    RESULT_STREAM_ERRORS,
    BatchRun,
    ClaudeBatchError,
    first_created,
    part_limit,
    results_urls,
)
from airflow_provider_claude_batch.operators.cost_cap import ClaudeCostCapError, check_cost_cap, quote_fields
from airflow_provider_claude_batch.policy import batch_route_refusal, refusal_message, rescue_plan, routing_enforced
from airflow_provider_claude_batch.polling import (
    DEFAULT_MAX_POLL_SECONDS,
    DEFAULT_MIN_POLL_SECONDS,
    DEFAULT_WAIT_TIMEOUT,
)
from airflow_provider_claude_batch.rescue import DEFAULT_RESCUE_CONCURRENCY, DEFAULT_SECONDS_PER_REQUEST
from airflow_provider_claude_batch.routing import Workload
from airflow_provider_claude_batch.submission import RECORD_FILE, RecordStore, utc_now
from airflow_provider_claude_batch.triggers.batch import ClaudeBatchTrigger, wait_inline
from airflow_provider_claude_batch.triggers.capacity import ClaudeQueueCapacityTrigger
from airflow_provider_claude_batch.validation import arguments

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_claude_batch.requests import PreparedRequests

__all__ = [
    "RESULT_STREAM_ERRORS",
    "ClaudeBatchError",
    "ClaudeBatchOperator",
    "ClaudeCostCapError",
    "ClaudeRoutingError",
]

# The defer timeout exceeds the trigger's own deadline so the trigger's clean "timeout" event wins.
DEFER_TIMEOUT_MARGIN = timedelta(minutes=5)


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
    :param timeout: how long, from the first submission, the task may take in all (every round
        included) before its batches are cancelled, what completed is landed, and the task fails.
    :param cancel_on_kill: cancel in-flight batches when the task is killed or times out.
    :param retry_rounds: follow-up rounds for requests that came back ``expired`` or ``errored``
        for a transient reason (overloaded, api_error, rate limit); 0 disables. Requests that errored
        for a permanent reason (invalid request) are reported, never re-run.
    :param min_round_window: a follow-up round is submitted only while at least this much time is
        left before the task's deadline (``timeout`` after the first submission).
    :param on_input_change: what a retry does when the input differs from what an earlier attempt
        submitted: ``replace`` (cancel the stale batches, submit the new input) or ``fail``.
    :param blocking: declare that something is held up until this task's results arrive; a
        blocking task belongs on the synchronous route (``ClaudeMessageOperator``), so the routing
        policy refuses it. The DAG tag ``blocking`` says the same for every task of a DAG.
    :param deadline: a hard deadline (SLA, contract) measured from submission. Under 24 hours it
        cannot be met by a batch alone, so the routing policy refuses the task unless a rescue keeps it.
    :param rescue: ``"sync"``: keep ``deadline`` with a synchronous rescue. If the batch has not ended
        ``rescue_lead`` before the deadline, it is cancelled, what it completed lands, and every request
        without a final row worth keeping (canceled, expired, transiently errored) is sent through the
        Messages API and merged into the same results file (each row's ``route`` says which API
        produced it). The routing rule accepts it ("batch with rescue") when the rescue can plausibly
        finish the whole input inside the lead.
    :param rescue_lead: the time kept before the deadline for the synchronous finish (required with
        ``rescue``); what it leaves beyond the estimated send is the cancelled batch's time to end.
    :param rescue_max_concurrency: the most rescue requests in flight at once (default 8); keep it
        within the organisation's Messages API rate limits.
    :param rescue_seconds_per_request: how long one request takes on the Messages API, the SDK's
        retries included (default 30 s): a ``ClaudeMessageOperator`` run's log gives it as its time
        times its concurrency divided by its request count.
    :param workload: the full declaration of who waits and what the work needs
        (:class:`~airflow_provider_claude_batch.routing.Workload`). ``Workload(waiting="nobody")``
        also overrides reading a sub-daily schedule as a refresh deadline (and nothing else).
    :param cache_shared_prefix: put a 1-hour prompt-cache breakpoint at the end of the longest
        prefix (tools, system prompt, leading content) every request shares, when it is at least the
        model's minimum cacheable length; the prefix is then paid in full once and at a tenth of the
        input price after (best effort in a batch; see ``docs/routing.md``, "Cost levers").
    :param max_cost_usd: refuse to submit, before any create, when the most the requests can cost
        at batch prices (input counted with the token-counting endpoint, ``max_tokens`` of output,
        cache writes at their price) exceeds this many dollars; the manifest keeps the quote.

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
        timeout: timedelta | float = DEFAULT_WAIT_TIMEOUT,
        cancel_on_kill: bool = True,
        blocking: bool = False,
        deadline: timedelta | float | None = None,
        workload: Workload | None = None,
        retry_rounds: int = 2,
        min_round_window: timedelta | float = timedelta(hours=1),
        on_input_change: Literal["replace", "fail"] = "replace",
        rescue: Literal["sync"] | None = None,
        rescue_lead: timedelta | float | None = None,
        rescue_max_concurrency: int = DEFAULT_RESCUE_CONCURRENCY,
        rescue_seconds_per_request: timedelta | float = DEFAULT_SECONDS_PER_REQUEST,
        cache_shared_prefix: bool = False,
        max_cost_usd: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cache_shared_prefix = arguments.flag("cache_shared_prefix", cache_shared_prefix)
        self.max_cost_usd = None if max_cost_usd is None else arguments.money("max_cost_usd", max_cost_usd)
        self.retry_rounds = arguments.whole_number("retry_rounds", retry_rounds)
        self.min_round_window = arguments.duration("min_round_window", min_round_window, allow_zero=True)
        self.on_input_change = arguments.one_of("on_input_change", on_input_change, ("replace", "fail"))
        self.blocking = blocking
        self.deadline = deadline if deadline is None else arguments.duration("deadline", deadline)
        self.rescue, self.rescue_lead = arguments.rescue(rescue, rescue_lead, self.deadline, wait_for_completion)
        self.rescue_max_concurrency = arguments.whole_number(
            "rescue_max_concurrency", rescue_max_concurrency, minimum=1
        )
        self.rescue_seconds_per_request = arguments.seconds("rescue_seconds_per_request", rescue_seconds_per_request)
        self.workload = workload
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.min_poll_interval, self.max_poll_interval = arguments.poll_intervals(min_poll_interval, max_poll_interval)
        self.timeout = arguments.duration("timeout", timeout)
        self.cancel_on_kill = cancel_on_kill
        self._submitted: list[str] = []
        self._results_urls: dict[str, str] = {}

    def execute(self, context: Context) -> dict[str, Any]:
        # Checked before and after reading the requests: what the DAG says needs no network, and
        # requests from an XCom or a file may ask for fast mode. Either way before any create.
        self._check_route()
        prepared = self.prepare()
        self._check_route(prepared)
        folder = self.results_folder(context)
        store = self._record_store(context, folder)
        lifecycle = self._attach_or_begin(prepared, store, context, folder)
        return self._advance(context, self._run(context, lambda: prepared, folder, store, lifecycle))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after a wait (for batches to end, or for room in the queue) and carry on."""
        if not event or "status" not in event:
            raise ClaudeBatchError(f"The batch wait ended without a usable event: {event!r}")
        batch_ids: list[str] = list(event.get("batch_ids") or [])
        self._submitted = batch_ids
        if event["status"] == "error":
            raise ClaudeBatchError(f"{event.get('message')} Batch ids: {', '.join(batch_ids)}.")
        run = self._resume(context, batch_ids)
        now = utc_now()
        if event["status"] == "capacity":
            self.log.info("%s Trying the refused create again.", event.get("message"))
            run.lifecycle.capacity_may_have_freed(now)
        elif event["status"] == "timeout":
            if not run.lifecycle.timed_out(now):  # else the rescue begins, or goes on without the cancelled batches
                self._time_out(run, batch_ids, str(event.get("message")))
            if run.record.rescue is not None and run.record.rescue.abandoned_batch_ids:
                self.log.warning(
                    "Cancelled batch(es) %s had not ended by %s: the rescue sends their requests without their "
                    "results, so any they complete while cancelling is billed on both routes and not counted here.",
                    ", ".join(batch_ids),
                    run.record.rescue.cancel_wait_until,
                )
        else:
            self._results_urls.update(results_urls(event))
            run.lifecycle.batches_ended(now)
        run.store.save(run.lifecycle.record)
        return self._advance(context, run)

    # -- the I/O shell around the lifecycle -------------------------------------------------

    def _advance(self, context: Context, run: BatchRun) -> dict[str, Any]:
        """Perform the lifecycle's steps until the task must wait, or is done."""
        while True:
            step = run.lifecycle.next_step(utc_now())
            if isinstance(step, CreatePart):
                run.create_part(step)
                self._submitted = run.record.current.batch_ids
            elif isinstance(step, WaitForCapacity):
                return self._wait_for_capacity(context, run, step)
            elif isinstance(step, WaitForBatches):
                if not self.wait_for_completion and step.round == 0:
                    ids = run.record.batch_ids
                    return {"batch_ids": ids, "batch_id": ids[0], "request_count": run.record.request_count}
                return self._wait(context, run, step.batch_ids)
            elif isinstance(step, LandRound):
                run.land_round(step)
            elif isinstance(step, PlanNextRound):
                run.plan_next_round(retry_rounds=self.retry_rounds, min_round_window=self.min_round_window)
            elif isinstance(step, StartRescue):
                self._rescue(run).start(step)
            elif isinstance(step, AwaitCancel):
                return self._wait(context, run, step.batch_ids, until=step.until)
            elif isinstance(step, SendRescue):
                self._rescue(run).send(step)
            else:
                extra = {**run.manifest_extra(), **quote_fields(run.folder, run.record.fingerprint, self.max_cost_usd)}
                return self.finish(run.folder, run.final_tally(), route="batch", extra=extra)

    def _run(
        self,
        context: Context,
        read_input: Callable[[], PreparedRequests],
        folder: ObjectStoragePath,
        store: RecordStore,
        lifecycle: SubmissionLifecycle,
    ) -> BatchRun:
        return BatchRun(
            read_input=read_input,
            folder=folder,
            store=store,
            lifecycle=lifecycle,
            hook=self.hook,
            log=self.log,
            row_transform=self.row_transform(),
            announce=lambda batch_ids: self._push_ids(context, batch_ids),
            results_urls=self._results_urls,
        )

    def _rescue(self, run: BatchRun) -> RescueRun:
        plan = rescue_plan(self, run.record.request_count)
        if plan is None:
            raise ClaudeBatchError(
                "This submission's record has a rescue point, but the task no longer declares rescue='sync'. "
                "Declare it again, or clear the task's record (submission.json) to submit anew."
            )
        return RescueRun(run, plan, self.retry_rounds, self._canceller.cancel)

    @property
    def _canceller(self) -> BatchCanceller:
        return BatchCanceller(
            self.hook, self.log, self.claude_conn_id, self.min_poll_interval, self.max_poll_interval, self._results_urls
        )

    def _resume(self, context: Context, batch_ids: list[str]) -> BatchRun:
        folder = self.results_folder(context)
        store = self._record_store(context, folder)
        record = store.load()
        if record is None:
            raise ClaudeBatchError(
                f"No submission record for batch(es) {', '.join(batch_ids) or '(none yet)'} in {store.describe()}; "
                "it is written before any batch is created, so it was deleted. Re-run the task."
            )
        return self._run(context, self.prepare, folder, store, SubmissionLifecycle(record))

    def _record_store(self, context: Context, folder: ObjectStoragePath) -> RecordStore:
        # Airflow 3.3+ keeps task state across retries; the file beside the results serves older
        # versions and humans, and survives a cleared task whose state store was wiped.
        return RecordStore(context.get("task_state_store"), folder / RECORD_FILE)

    def _attach_or_begin(
        self, prepared: PreparedRequests, store: RecordStore, context: Context, folder: ObjectStoragePath
    ) -> SubmissionLifecycle:
        """Re-attach to what an earlier attempt submitted for this input, or begin a new submission."""
        # With a rescue the task is due at its deadline (or its timeout, if that comes first).
        timeout = min(self.timeout, self.deadline) if self.rescue and self.deadline else self.timeout
        attachment = Attachment(
            log=self.log,
            on_input_change=self.on_input_change,
            cancel_stale=lambda batch_ids: self._cancel(batch_ids, reason="its input changed", force=True),
            announce=lambda batch_ids: self._push_ids(context, batch_ids),
            max_requests=part_limit(self.hook),
            timeout=timeout,
            rescue_lead=self.rescue_lead,
            before_new_submission=self._quote_against_cap(folder),
        )
        return attachment.attach_or_begin(prepared, store, folder)

    def _quote_against_cap(self, folder: ObjectStoragePath) -> Callable[[PreparedRequests], None] | None:
        """With ``max_cost_usd``, the quote a new submission must pass before anything is created.

        A task with a synchronous rescue is quoted at sync prices: the rescue may send every request.
        """
        cap = self.max_cost_usd
        if cap is None:
            return None
        route = "sync" if self.rescue else "batch"
        return lambda prepared: check_cost_cap(self.hook, prepared, cap, folder, self.log, route=route)

    def _push_ids(self, context: Context, batch_ids: list[str]) -> None:
        context["ti"].xcom_push(key="batch_id", value=batch_ids[0])
        context["ti"].xcom_push(key="batch_ids", value=list(batch_ids))
        # Airflow stores extra links only when a task ends; pushed now, the button works while deferred.
        link = ClaudeBatchLink()
        context["ti"].xcom_push(key=link.xcom_key, value=link.get_link(self, ti_key=context["ti"]))

    def _wait(
        self, context: Context, run: BatchRun, batch_ids: list[str], until: datetime | None = None
    ) -> dict[str, Any]:
        """Wait for ``batch_ids`` until ``until`` (default: the batch path's deadline); resume in execute_complete."""
        record = run.lifecycle.record
        until = until or record.batch_deadline()
        self._submitted = list(batch_ids)
        trigger = ClaudeBatchTrigger(
            batch_ids=list(batch_ids),
            claude_conn_id=self.claude_conn_id,
            end_time=until.timestamp(),
            min_poll_interval=self.min_poll_interval,
            max_poll_interval=self.max_poll_interval,
            cancel_on_kill=self.cancel_on_kill,
            submitted_at=first_created(record, batch_ids),
        )
        return self._defer_or_wait(context, trigger, until)

    def _wait_for_capacity(self, context: Context, run: BatchRun, step: WaitForCapacity) -> dict[str, Any]:
        record = run.lifecycle.record
        if step.until >= record.deadline():
            self._time_out(
                run,
                step.watching,
                f"The workspace's processing queue stayed full until the task's deadline ({record.deadline_at}); "
                f"part {step.part + 1} of round {step.round} was never submitted (nothing was paid for it).",
            )
        trigger = ClaudeQueueCapacityTrigger(
            batch_ids=step.watching,
            wake_at=step.until.timestamp(),
            claude_conn_id=self.claude_conn_id,
            min_poll_interval=self.min_poll_interval,
            max_poll_interval=self.max_poll_interval,
            submitted_at=first_created(record, step.watching),
        )
        return self._defer_or_wait(context, trigger, step.until)

    def _defer_or_wait(self, context: Context, trigger: BaseTrigger, until: datetime) -> dict[str, Any]:
        if self.deferrable:
            remaining = max(until - utc_now(), timedelta(0))
            self.defer(trigger=trigger, method_name="execute_complete", timeout=remaining + DEFER_TIMEOUT_MARGIN)
        return self.execute_complete(context, wait_inline(trigger))

    def _check_route(self, prepared: PreparedRequests | None = None) -> None:
        """Refuse to submit work that somebody waits on: the routing policy's rule, at run time."""
        if not routing_enforced():
            return
        decision = batch_route_refusal(self, prepared)
        if decision is not None:
            raise ClaudeRoutingError(f"{refusal_message(self, decision, prepared)} Nothing was submitted.")

    # -- timeouts and kills ---------------------------------------------------------------

    def _time_out(self, run: BatchRun, batch_ids: list[str], message: str) -> NoReturn:
        """Past the deadline: cancel what runs, land what completed, and fail."""
        self._canceller.time_out(run, batch_ids, message, cancel_on_kill=self.cancel_on_kill)

    def on_kill(self) -> None:
        """Cancel in-flight batches when a running (non-deferred) task is killed."""
        self._cancel(self._submitted, reason="the task was killed")

    def _cancel(self, batch_ids: list[str], reason: str, force: bool = False) -> None:
        if not batch_ids:
            return
        if not (self.cancel_on_kill or force):
            self.log.info("Leaving batches %s running although %s (cancel_on_kill=False).", batch_ids, reason)
            return
        self._canceller.cancel(batch_ids, reason)
