"""What a trigger's ``on_kill`` must allow for on Airflow 3.3: handovers reported as kills, repeated cancels.

Airflow 3.3 calls a trigger's ``on_kill`` when a user acts on its task (mark failed, mark success,
clear), and documents that it does not when the trigger is redistributed to another triggerer. Two
things a real deployment does are not in that picture (both seen running two triggerers on
PostgreSQL, Airflow 3.3.2):

- **A handover looks like a kill.** A triggerer whose heartbeat was late (CPU starvation, a long
  pause, a slow database) has its triggers claimed by another triggerer while it still runs them.
  When it notices, it cancels them through the same "user action" path, so ``on_kill`` runs
  although the task is still deferred and now waits in the other triggerer. Cancelling the batch
  then would throw away work that is paid for and still wanted. :func:`still_deferred` asks the
  API server whether the task instance is still deferred, which tells the two apart.
- **The cancellation repeats.** Until the trigger has exited, the triggerer re-sends its
  cancellation on every turn of its loop (about once a second), which interrupts whatever
  ``on_kill`` is awaiting: a connection lookup or a cancel call that takes longer is cut short.
  :func:`finish_in_background` runs the work in a task of its own, so a repeat ends only the wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

# Strong references: the event loop keeps only weak ones to tasks, and this work must not be collected.
_unfinished_work: set[asyncio.Task[Any]] = set()


async def still_deferred(trigger: Any) -> bool | None:
    """Whether the task instance of ``trigger`` is still deferred; None when it cannot be told.

    :param trigger: a trigger running in a triggerer, which sets its ``task_instance``.
    """
    ti = getattr(trigger, "task_instance", None)
    if ti is None:
        return None
    try:
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.comms import GetTICount

        answer = await task_runner.SUPERVISOR_COMMS.asend(
            GetTICount(
                dag_id=ti.dag_id,
                run_ids=[ti.run_id],
                task_ids=[ti.task_id],
                map_index=ti.map_index,
                states=["deferred"],
            )
        )
    except Exception as error:  # no triggerer comms (another Airflow, a test): say "unknown"
        log.debug("Could not read the state of the trigger's task instance: %r", error)
        return None
    count = getattr(answer, "count", None)
    return None if count is None else count > 0


async def finish_in_background(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end in its own task; a cancellation of the caller ends only the wait.

    :param work: what ``on_kill`` has to do (bounded by its own timeouts).
    """
    task = asyncio.get_running_loop().create_task(work)
    _unfinished_work.add(task)
    task.add_done_callback(_unfinished_work.discard)
    await asyncio.shield(task)
