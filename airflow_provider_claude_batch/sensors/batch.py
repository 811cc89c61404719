"""ClaudeBatchSensor: wait for Message Batches that were submitted elsewhere."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, XComArg

from airflow_provider_claude_batch.hooks.claude import ClaudeHook
from airflow_provider_claude_batch.hooks.poller import refresh_statuses
from airflow_provider_claude_batch.polling import (
    DEFAULT_MAX_POLL_SECONDS,
    DEFAULT_MIN_POLL_SECONDS,
    DEFAULT_WAIT_TIMEOUT,
    BatchSnapshot,
)
from airflow_provider_claude_batch.results import failure_verdict
from airflow_provider_claude_batch.triggers.batch import ClaudeBatchTrigger
from airflow_provider_claude_batch.validation import arguments

if TYPE_CHECKING:
    from airflow.sdk import Context

_OUTCOMES = ("succeeded", "errored", "canceled", "expired")


class ClaudeBatchSensorError(RuntimeError):
    """The batches ended, but not well enough for the outcome policy, or could not be watched."""


class ClaudeBatchSensor(BaseSensorOperator):
    """Wait until one or more Message Batches, submitted by id elsewhere, have ended.

    In deferrable mode (default) the wait runs in the triggerer with the same trigger as
    :class:`~airflow_provider_claude_batch.operators.batch.ClaudeBatchOperator`; otherwise each poke
    looks at every batch once. When the batches end, the same partial-failure policy applies to
    their request counts. Returns (to XCom) one snapshot per batch and the summed counts.

    :param batch_ids: a batch id or a list of them (templated).
    :param claude_conn_id: the Airflow connection (type ``claude``).
    :param max_failed_fraction: the share of requests allowed not to succeed (0 = none).
    :param deferrable: wait in the triggerer instead of poking from a worker.
    :param min_poll_interval: seconds between the first status checks (deferrable mode).
    :param max_poll_interval: the longest wait between two status checks (deferrable mode).
    """

    template_fields: Sequence[str] = ("batch_ids", "claude_conn_id", "max_failed_fraction")

    def __init__(
        self,
        *,
        batch_ids: str | list[str],
        claude_conn_id: str = ClaudeHook.default_conn_name,
        max_failed_fraction: float = 0.0,
        deferrable: bool = True,
        min_poll_interval: float = DEFAULT_MIN_POLL_SECONDS,
        max_poll_interval: float = DEFAULT_MAX_POLL_SECONDS,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("timeout", DEFAULT_WAIT_TIMEOUT.total_seconds())
        super().__init__(**kwargs)
        self.batch_ids = batch_ids
        self.claude_conn_id = claude_conn_id
        self.max_failed_fraction = max_failed_fraction
        self.deferrable = deferrable
        self.min_poll_interval, self.max_poll_interval = arguments.poll_intervals(min_poll_interval, max_poll_interval)
        self._first_poke: float | None = None
        self._check_arguments(rendered=False)

    def _check_arguments(self, *, rendered: bool) -> None:
        """Check the templated arguments: literals when the DAG is parsed, the rest once rendered."""
        if (rendered or not arguments.is_templated(self.batch_ids)) and not isinstance(self.batch_ids, XComArg):
            self.batch_ids = arguments.batch_ids(self.batch_ids)
        if rendered or not arguments.is_templated(self.max_failed_fraction):
            self.max_failed_fraction = arguments.fraction("max_failed_fraction", self.max_failed_fraction)

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render as Airflow does, then read rendered lists and numbers back (``"['msgbatch_a']"``)."""
        super().render_template_fields(context, jinja_env)
        self._check_arguments(rendered=True)

    def _ids(self) -> list[str]:
        return arguments.batch_ids(self.batch_ids)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        self.defer(
            trigger=ClaudeBatchTrigger(
                batch_ids=self._ids(),
                claude_conn_id=self.claude_conn_id,
                end_time=time.time() + self.timeout,
                min_poll_interval=self.min_poll_interval,
                max_poll_interval=self.max_poll_interval,
                # The sensor does not own these batches: killing it must not cancel them.
                cancel_on_kill=False,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + 300),
        )

    def poke(self, context: Context) -> bool | PokeReturnValue:
        # One refresh for every batch (a list page, retrieve for the rest), as the shared poller does.
        seen = refresh_statuses(ClaudeHook(self.claude_conn_id), self._ids(), self._first_poke_hints())
        snapshots = []
        for look in seen.values():
            if look.snapshot is not None:
                self.log.info("Claude %s", look.snapshot.describe())
                snapshots.append(look.snapshot)
            elif look.pending:
                self.log.info("%s Still waiting.", look.message)
            else:
                raise ClaudeBatchSensorError(f"Waiting for Claude batches failed: {look.message}")
        if len(snapshots) < len(seen) or not all(snapshot.ended for snapshot in snapshots):
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._outcome(snapshots))

    def _first_poke_hints(self) -> dict[str, float]:
        """The 404 grace window of batches never seen counts from this sensor's first poke."""
        if self._first_poke is None:
            self._first_poke = time.time()
        return dict.fromkeys(self._ids(), self._first_poke)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        if not event or event.get("status") != "ended":
            message = (event or {}).get("message", "the wait ended without an event")
            raise ClaudeBatchSensorError(f"Waiting for Claude batches failed: {message}")
        return self._outcome([BatchSnapshot.from_dict(data) for data in event["batches"]])

    def _outcome(self, snapshots: list[BatchSnapshot]) -> dict[str, Any]:
        counts = {name: sum(s.request_counts.get(name, 0) for s in snapshots) for name in _OUTCOMES}
        verdict = failure_verdict(counts, self.max_failed_fraction)
        if verdict:
            raise ClaudeBatchSensorError(
                f"{verdict}. The results are at the batches' results_url: "
                + ", ".join(f"{s.batch_id} -> {s.results_url}" for s in snapshots)
            )
        return {"batches": [s.as_dict() for s in snapshots], "counts": counts}
