"""ClaudeQueueCapacityTrigger: wait, holding no worker slot, for room in the workspace's processing queue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import TriggerEvent

from airflow_provider_claude_batch.hooks.claude import ClaudeHook
from airflow_provider_claude_batch.polling import DEFAULT_MAX_POLL_SECONDS, DEFAULT_MIN_POLL_SECONDS
from airflow_provider_claude_batch.triggers.watching import BatchWatchingTrigger


class ClaudeQueueCapacityTrigger(BatchWatchingTrigger):
    """Fire one ``capacity`` event at ``wake_at``, or sooner when one of ``batch_ids`` ends.

    A create refused because the workspace's processing queue is full gets through once requests
    ahead of it are processed. The API does not say when that is, so the task tries again after a
    wait, or as soon as one of its own running batches ends (which certainly freed room). The batches
    are watched through the connection's shared status poller, so waiting costs no extra calls.

    :param batch_ids: the submission's batches created so far (may be empty).
    :param wake_at: POSIX timestamp when the create is tried again at the latest.
    :param claude_conn_id: the Airflow connection to use.
    :param min_poll_interval: seconds between the first looks at a young batch.
    :param max_poll_interval: the longest wait between two looks.
    :param submitted_at: POSIX timestamp of the batches' creation (for the 404 grace window).
    """

    def __init__(
        self,
        batch_ids: list[str],
        wake_at: float,
        claude_conn_id: str = ClaudeHook.default_conn_name,
        min_poll_interval: float = DEFAULT_MIN_POLL_SECONDS,
        max_poll_interval: float = DEFAULT_MAX_POLL_SECONDS,
        submitted_at: float | None = None,
    ) -> None:
        super().__init__()
        self.batch_ids = list(batch_ids)
        self.wake_at = float(wake_at)
        self.claude_conn_id = claude_conn_id
        self.min_poll_interval = float(min_poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.submitted_at = submitted_at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_ids": list(self.batch_ids),
                "wake_at": self.wake_at,
                "claude_conn_id": self.claude_conn_id,
                "min_poll_interval": self.min_poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "submitted_at": self.submitted_at,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        if not self.batch_ids:
            await asyncio.sleep(max(self.wake_at - time.time(), 0.0))
            yield self._event("The wait for room in the processing queue is over.")
            return
        async with self.watching() as watch:
            already_ended: set[str] | None = None
            while True:
                ended = {bid for bid, snapshot in watch.snapshots().items() if snapshot.ended}
                if already_ended is None and watch.cycles:
                    already_ended = ended  # ended before this wait began: they freed nothing new
                if already_ended is not None and ended - already_ended:
                    message = f"Batch {sorted(ended - already_ended)[0]} ended, which freed room in the queue."
                    break
                left = self.wake_at - time.time()
                if left <= 0:
                    message = "The wait for room in the processing queue is over."
                    break
                await watch.changed(left)
        yield self._event(message)

    def _event(self, message: str) -> TriggerEvent:
        return TriggerEvent({"status": "capacity", "batch_ids": list(self.batch_ids), "message": message})
