"""DAG files the e2e tests write into the harness's DAGs folder, and a sampler of components' memory.

``batch_dag_source`` is one batch task. ``nightly_fleet`` is what a nightly test-generation fleet
looks like: one batch task mapped over shards of the work, many runs at once, polling
time-scaled. ``pre_merge_check`` is the synchronous work somebody waits on, which runs beside the
fleet on the same workers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import psutil

FLEET_DAG = "nightly_fleet"
FLEET_TASK = "generate_tests"
SYNC_DAG = "pre_merge_check"
SYNC_TASK = "review"


def batch_dag_source(
    dag_id: str,
    request_count: int,
    *,
    task_id: str = "summarise",
    min_poll_interval: float = 1,
    max_poll_interval: float = 2,
) -> str:
    """A DAG file with one ``ClaudeBatchOperator`` polling fast, its results under ``$AIRFLOW_HOME``.

    :param dag_id: the DAG id (also the file name).
    :param request_count: how many prompts the batch carries.
    :param task_id: the batch task's id.
    :param min_poll_interval: the trigger's first poll interval in seconds.
    :param max_poll_interval: the trigger's longest poll interval in seconds.
    """
    return f'''"""End-to-end test DAG written by tests/e2e/fleet.py."""
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator

with DAG(
    dag_id={dag_id!r},
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["e2e"],
):
    ClaudeBatchOperator(
        task_id={task_id!r},
        requests=[f"Summarise item {{i}} in one sentence." for i in range({request_count})],
        model="claude-haiku-4-5",
        max_tokens=64,
        min_poll_interval={min_poll_interval},
        max_poll_interval={max_poll_interval},
    )
'''


def fleet_dag_source(shards: int, requests_per_shard: int, *, min_poll: float, max_poll: float) -> str:
    """A DAG whose batch task is mapped over ``shards`` lists of prompts, each run's prompts its own.

    The prompts carry ``{{ run_id }}`` (``requests`` is a templated field), so every run submits
    different requests, as successive nights do.

    :param shards: mapped task instances per run.
    :param requests_per_shard: prompts in each mapped task's batch.
    :param min_poll: the trigger's shortest poll interval, in seconds.
    :param max_poll: the trigger's longest poll interval, in seconds.
    """
    return f'''"""Nightly-load DAG written by tests/e2e/fleet.py."""
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator

with DAG(
    dag_id={FLEET_DAG!r},
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=100,
    tags=["e2e", "fleet"],
):
    ClaudeBatchOperator.partial(
        task_id={FLEET_TASK!r},
        model="claude-haiku-4-5",
        max_tokens=64,
        min_poll_interval={min_poll},
        max_poll_interval={max_poll},
        retries=2,
        retry_delay=timedelta(seconds=5),
    ).expand(
        requests=[
            [f"Night {{{{{{{{ run_id }}}}}}}}: write a unit test for module {{shard}}, case {{case}}."
             for case in range({requests_per_shard})]
            for shard in range({shards})
        ]
    )
'''


def sync_dag_source(request_count: int) -> str:
    """A DAG whose task somebody waits on: the synchronous Messages API, on the same workers."""
    return f'''"""Synchronous DAG of the nightly-load scenario, written by tests/e2e/fleet.py."""
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_claude_batch.operators.message import ClaudeMessageOperator
from airflow_provider_claude_batch.routing import Workload

with DAG(dag_id={SYNC_DAG!r}, schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["e2e", "sync"]):
    ClaudeMessageOperator(
        task_id={SYNC_TASK!r},
        requests=[f"Review change {{i}} before it merges." for i in range({request_count})],
        model="claude-haiku-4-5",
        max_tokens=64,
        workload=Workload(waiting="person", triggered_by="api", description="a pre-merge check"),
        max_concurrency=2,
    )
'''


@dataclass
class MemoryPeaks:
    """The largest memory each component used while sampled, in bytes.

    ``main_rss`` is the component's own process; ``tree_pss`` is its whole process tree (Celery's
    pool children, task processes, the api-server's workers) in proportional set size, which counts
    pages shared between forked processes once rather than once per process.
    """

    main_rss: dict[str, int] = field(default_factory=dict)
    tree_pss: dict[str, int] = field(default_factory=dict)


class MemorySampler:
    """Samples the memory of every named process tree every ``interval`` seconds, in a thread.

    :param processes: returns name -> PID of the trees to sample now (components come and go).
    :param interval: seconds between two samples.
    """

    def __init__(self, processes: Callable[[], Mapping[str, int]], interval: float = 2.0) -> None:
        self._processes = processes
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self.peaks = MemoryPeaks()
        self.samples = 0

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for name, pid in dict(self._processes()).items():
                with contextlib.suppress(psutil.Error):
                    self._sample(name, psutil.Process(pid))
            self.samples += 1

    def _sample(self, name: str, root: psutil.Process) -> None:
        main = root.memory_info().rss
        tree = 0
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                tree += getattr(process.memory_full_info(), "pss", 0) or process.memory_info().rss
        self.peaks.main_rss[name] = max(self.peaks.main_rss.get(name, 0), main)
        self.peaks.tree_pss[name] = max(self.peaks.tree_pss.get(name, 0), tree)
