"""What both Claude triggers share: watching their batches through the connection's shared status poller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from airflow.triggers.base import BaseTrigger

from airflow_provider_claude_batch.hooks.claude import ClaudeHook
from airflow_provider_claude_batch.hooks.poller import Watch, shared_poller


class BatchWatchingTrigger(BaseTrigger):
    """A trigger that waits on ``batch_ids`` of ``claude_conn_id``, polled as its intervals say.

    Subclasses set ``batch_ids``, ``claude_conn_id``, ``min_poll_interval``, ``max_poll_interval`` and
    ``submitted_at`` (the batches' creation, for the 404 grace window) in their constructor.
    """

    batch_ids: list[str]
    claude_conn_id: str
    min_poll_interval: float
    max_poll_interval: float
    submitted_at: float | None

    @asynccontextmanager
    async def watching(self) -> AsyncIterator[Watch]:
        """Track the batches with this event loop's poller for the duration of the block."""
        poller = await shared_poller(ClaudeHook(self.claude_conn_id))
        async with poller.watch(
            self.batch_ids,
            min_interval=self.min_poll_interval,
            max_interval=self.max_poll_interval,
            created_hint=self.submitted_at,
        ) as watch:
            yield watch
