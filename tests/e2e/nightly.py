"""The nightly-load scenario on the production topology, with components killed while it runs.

:func:`run_night` drives a started :class:`~production.ProductionHarness` the way a night goes, and
records what happened for the tests to assert on and for ``docs/deployment.md``'s figures:

1. every DAG run of the fleet and one synchronous run are triggered together; the emulator's
   batches do not end on their own (time is moved on later, ``advance``), so the whole fleet is
   seen deferred at once while the workers have a few slots;
2. mid-wait, the triggerer holding the most triggers is SIGKILLed (how long until the other one
   holds them all is measured) and restarted; then the one holding them all is frozen (SIGSTOP)
   past the health threshold, so the other takes them over, and let go on (SIGCONT): Airflow then
   stops them in the thawed one as if a user had killed the tasks, and no batch may be cancelled;
   then the scheduler is SIGKILLed and restarted;
3. the results download of one chosen task is made slow, time is moved past every batch's end,
   and the Celery worker landing that task is SIGKILLed while its temporary results file exists,
   then restarted; the task's retry must land;
4. everything must end ``success``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from fleet import FLEET_DAG, FLEET_TASK, SYNC_DAG, SYNC_TASK, MemoryPeaks, MemorySampler
from processes import HarnessError
from production import ProductionHarness

FAILED_STATES = frozenset({"failed", "upstream_failed", "removed", "skipped"})
TEMPORARY_GLOB = ".results.jsonl.*.tmp"
# The chosen task's results download is held this long before it answers (a slow, large download).
SLOW_RESULTS_SECONDS = 120
# How long a batch created after time was moved on takes: above the ~5 s in which a batch ending right
# after its task deferred can trip Airflow's scheduler (docs/deployment.md), short enough for the test.
LATE_BATCH_SECONDS = 20


@dataclass
class Kill:
    """One component killed (SIGKILL) or frozen (SIGSTOP) during the night, and what followed."""

    kind: str  # "triggerer killed", "triggerer frozen", "scheduler restarted", "worker killed mid-landing"
    component: str
    at_seconds: float  # since the first DAG run was triggered
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class NightReport:
    """What the night did, as observed through the REST API, the metadata DB and the emulator."""

    run_ids: list[str]
    worker_slots: int
    peak_deferred: int = 0
    seconds_to_all_deferred: float = 0.0
    kills: list[Kill] = field(default_factory=list)
    seconds_advance_to_all_success: float = 0.0
    memory: MemoryPeaks = field(default_factory=MemoryPeaks)
    emulator_state: dict[str, Any] = field(default_factory=dict)
    task_instances: list[dict[str, Any]] = field(default_factory=list)
    victim: dict[str, Any] = field(default_factory=dict)

    def kill(self, kind: str) -> Kill:
        return next(kill for kill in self.kills if kill.kind == kind)


def results_folder(harness: ProductionHarness, run_id: str, map_index: int) -> Path:
    """Where the fleet task ``map_index`` of ``run_id`` lands (the operator's default layout)."""
    return harness.home / "claude_batch_results" / FLEET_DAG / run_id / FLEET_TASK / f"map_{map_index}"


def state_counts(harness: ProductionHarness, dag_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ti in harness.task_instances(dag_id):
        counts[str(ti.get("state"))] = counts.get(str(ti.get("state")), 0) + 1
    return counts


def _fail_on_failed(harness: ProductionHarness, counts: dict[str, int]) -> None:
    failed = {state: n for state, n in counts.items() if state in FAILED_STATES}
    if failed:
        bad = [ti for ti in harness.task_instances(FLEET_DAG) if ti.get("state") in FAILED_STATES][:3]
        logs = [
            harness.task_log(FLEET_DAG, ti["dag_run_id"], FLEET_TASK, ti["try_number"], ti["map_index"])[-3000:]
            for ti in bad
        ]
        raise HarnessError(f"fleet tasks ended {failed}:\n" + "\n---\n".join(logs) + f"\n{harness.log_tails()}")


def run_night(
    harness: ProductionHarness,
    *,
    runs: int,
    shards: int,
    worker_slots: int,
    processing_seconds: float,
    faults: list[dict[str, Any]],
    timeout: float = 600,
) -> NightReport:
    """Run the whole night; returns its report (raises :class:`HarnessError` on a stuck or failed fleet).

    :param runs: DAG runs of the fleet, triggered together.
    :param shards: mapped batch tasks per run.
    :param worker_slots: Celery slots in all (for the report: far fewer than the tasks).
    :param processing_seconds: the emulator's batch duration, moved past with ``advance``.
    :param faults: the emulator's transient fault rules for the night.
    :param timeout: seconds allowed for each phase.
    """
    assert harness.emulator is not None
    report = NightReport(run_ids=[f"night_{index:02d}" for index in range(runs)], worker_slots=worker_slots)
    expected = runs * shards
    with MemorySampler(lambda: _sampled_processes(harness)) as sampler:
        for dag_id in (FLEET_DAG, SYNC_DAG):
            harness.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        started = time.monotonic()
        for run_id in report.run_ids:
            harness.trigger_dag(FLEET_DAG, run_id)
        harness.trigger_dag(SYNC_DAG, "checked_while_the_fleet_waits")

        def all_deferred() -> bool:
            counts = state_counts(harness, FLEET_DAG)
            _fail_on_failed(harness, counts)
            report.peak_deferred = max(report.peak_deferred, counts.get("deferred", 0))
            return counts.get("deferred", 0) == expected

        harness.wait_for(all_deferred, timeout=timeout, what=f"all {expected} fleet tasks deferred at once", interval=2)
        report.seconds_to_all_deferred = time.monotonic() - started
        harness.wait_for_state(SYNC_DAG, "checked_while_the_fleet_waits", SYNC_TASK, ["success"], timeout=timeout)

        report.kills.append(_kill_a_triggerer(harness, started, expected))
        report.kills.append(_freeze_a_triggerer(harness, started, expected))
        report.kills.append(_restart_the_scheduler(harness, started))

        victim = _choose_victim(harness)
        # Batches created from now on (a retry that must submit again) end on their own, soon.
        harness.emulator.configure(
            faults=[_slow_results_rule(victim["batch_id"]), *faults], processing_seconds=LATE_BATCH_SECONDS
        )
        harness.emulator.advance(processing_seconds + 60)
        advanced = time.monotonic()
        report.kills.append(_kill_the_worker_landing(harness, started, victim, timeout))

        def all_succeeded() -> bool:
            counts = state_counts(harness, FLEET_DAG)
            _fail_on_failed(harness, counts)
            return counts.get("success", 0) == expected

        harness.wait_for(all_succeeded, timeout=timeout, what=f"all {expected} fleet tasks to succeed", interval=3)
        report.seconds_advance_to_all_success = time.monotonic() - advanced
        report.memory = sampler.peaks
    report.victim = victim
    report.emulator_state = harness.emulator.state()
    report.task_instances = harness.task_instances(FLEET_DAG)
    return report


def _sampled_processes(harness: ProductionHarness) -> dict[str, int]:
    processes = {name: process.pid for name, process in list(harness.processes.items()) if process.poll() is None}
    for name, server in (("postgres", harness.postgres), ("redis", harness.redis)):
        if server is not None and server.process is not None and server.process.poll() is None:
            processes[name] = server.process.pid
    return processes


def _trigger_owners(harness: ProductionHarness) -> dict[int | None, int]:
    rows = harness.query("SELECT triggerer_id, count(*) FROM trigger GROUP BY triggerer_id")
    return {row[0]: int(row[1]) for row in rows}


def _busiest_triggerer(harness: ProductionHarness, expected: int) -> tuple[dict[str, int], str, str]:
    """Triggers per triggerer once all are assigned; the one with the most, and the other one."""

    def assigned() -> dict[int | None, int] | None:
        owners = _trigger_owners(harness)
        return owners if sum(owners.values()) == expected and None not in owners else None

    owners = harness.wait_for(assigned, timeout=120, what="every trigger to be assigned to a triggerer")
    by_component = {name: owners.get(job, 0) for name, job in harness.job_ids.items()}
    busiest = max(by_component, key=lambda name: by_component[name])
    return by_component, busiest, next(name for name in harness.job_ids if name != busiest)


def _wait_for_takeover(harness: ProductionHarness, taker: str, expected: int, since: float) -> float:
    """Seconds from ``since`` until ``taker`` holds every trigger."""
    job = harness.job_ids[taker]
    harness.wait_for(
        lambda: _trigger_owners(harness).get(job, 0) == expected,
        timeout=180,
        what=f"{taker} to take over every trigger",
        interval=0.5,
    )
    return time.monotonic() - since


def _kill_a_triggerer(harness: ProductionHarness, started: float, expected: int) -> Kill:
    """SIGKILL the triggerer with the most triggers; measure until the other one holds them all."""
    by_component, victim, survivor = _busiest_triggerer(harness, expected)
    dead_job, live_job = harness.job_ids[victim], harness.job_ids[survivor]
    killed_at = time.monotonic()
    harness.kill_component(victim)
    moved_after = _wait_for_takeover(harness, survivor, expected, killed_at)
    deferred_now = len(harness.task_instances(FLEET_DAG, state="deferred"))
    harness.start_component(victim)  # restart: always
    return Kill(
        kind="triggerer killed",
        component=victim,
        at_seconds=killed_at - started,
        details={
            "triggers_before": by_component,
            "dead_job": dead_job,
            "survivor": survivor,
            "survivor_job": live_job,
            "moved_after_seconds": round(moved_after, 1),
            "deferred_after_move": deferred_now,
            "restarted_as_job": harness.job_ids[victim],
        },
    )


def _freeze_a_triggerer(harness: ProductionHarness, started: float, expected: int) -> Kill:
    """SIGSTOP the triggerer holding the triggers until the other takes them; SIGCONT; no batch cancelled."""
    by_component, frozen, taker = _busiest_triggerer(harness, expected)
    cancels_before = _cancel_calls(harness)
    frozen_at = time.monotonic()
    harness.freeze_component(frozen)
    try:
        moved_after = _wait_for_takeover(harness, taker, expected, frozen_at)
    finally:
        harness.freeze_component(frozen, frozen=False)
    # Thawed, it finds its triggers gone and stops them; Airflow calls on_kill as for a user's kill.
    frozen_job = harness.job_ids[frozen]
    harness.wait_for(
        lambda: len(_handover_logs(harness, frozen_job)) >= by_component[frozen],
        timeout=180,
        what=f"the thawed {frozen} to stop the triggers it lost",
        interval=2,
    )
    return Kill(
        kind="triggerer frozen",
        component=frozen,
        at_seconds=frozen_at - started,
        details={
            "triggers_before": by_component,
            "taken_over_by": taker,
            "moved_after_seconds": round(moved_after, 1),
            "stopped_on_thaw": len(_handover_logs(harness, frozen_job)),
            "cancel_calls": _cancel_calls(harness) - cancels_before,
            "deferred_after_thaw": len(harness.task_instances(FLEET_DAG, state="deferred")),
        },
    )


# What the trigger logs when Airflow stops it because it moved (see triggers/handover.py).
HANDOVER_LINE = "the trigger moved to another triggerer"


def _handover_logs(harness: ProductionHarness, job_id: int) -> list[Path]:
    """Trigger logs of job ``job_id`` saying a trigger was stopped there because it moved."""
    found = []
    for path in harness.home.joinpath("logs").rglob(f"*.log.trigger.{job_id}.log"):
        if HANDOVER_LINE in path.read_text(errors="replace"):
            found.append(path)
    return found


def _cancel_calls(harness: ProductionHarness) -> int:
    assert harness.emulator is not None
    return int(harness.emulator.state()["calls"].get("POST /v1/messages/batches/{message_batch_id}/cancel", 0))


def _restart_the_scheduler(harness: ProductionHarness, started: float) -> Kill:
    """SIGKILL the scheduler and start another, as ``restart: always`` does; until it is healthy again."""
    killed_at = time.monotonic()
    harness.kill_component("scheduler")
    harness.start_component("scheduler")

    def healthy_again() -> bool:
        scheduler = harness.api("GET", "/api/v2/monitor/health").get("scheduler") or {}
        heartbeat = scheduler.get("latest_scheduler_heartbeat")
        return scheduler.get("status") == "healthy" and heartbeat is not None and _after(heartbeat, killed_at)

    harness.wait_for(healthy_again, timeout=180, what="the restarted scheduler to heartbeat", interval=1)
    healthy_after = round(time.monotonic() - killed_at, 1)
    return Kill("scheduler restarted", "scheduler", killed_at - started, {"healthy_after_seconds": healthy_after})


def _after(iso_moment: str, monotonic_moment: float) -> bool:
    """Whether an API timestamp is later than a ``time.monotonic()`` moment of this process."""
    wall = time.time() - (time.monotonic() - monotonic_moment)
    return datetime.fromisoformat(iso_moment).timestamp() > wall


def _choose_victim(harness: ProductionHarness) -> dict[str, Any]:
    """The first fleet task whose one batch no other task points at.

    After a create that failed, the hook adopts a batch of the same size created meanwhile; in a
    fleet of same-sized batches that can be a sibling's (a known limit: the API has no idempotency
    key), and both tasks then wait on it until landing tells them apart. Such a pair is no place to
    watch one landing, so it is skipped.
    """
    rows = harness.query(
        "SELECT run_id, map_index, value FROM xcom WHERE dag_id = %s AND task_id = %s AND key = 'batch_ids'",
        (FLEET_DAG, FLEET_TASK),
    )
    batches = {
        (run_id, map_index): value if isinstance(value, list) else json.loads(value)
        for run_id, map_index, value in rows
    }
    waiting_on = Counter(batch_id for ids in batches.values() for batch_id in ids)
    run_id, map_index = min(key for key, ids in batches.items() if len(ids) == 1 and waiting_on[ids[0]] == 1)
    ti = next(ti for ti in harness.task_instances(FLEET_DAG, run_id) if ti["map_index"] == map_index)
    return {"run_id": run_id, "map_index": map_index, "ti_id": ti["id"], "batch_id": batches[run_id, map_index][0]}


def _slow_results_rule(batch_id: str) -> dict[str, Any]:
    """The first results download of ``batch_id`` answers only after a long while (then a 503)."""
    return {
        "method": "GET",
        "path": f"/v1/messages/batches/{batch_id}/results",
        "status": 503,
        "delay_seconds": SLOW_RESULTS_SECONDS,
        "count": 1,
    }


def _task_processes(harness: ProductionHarness, component: str) -> dict[str, int]:
    """Task instance id -> PID of every task process (``airflow worker -- <ti id>``) under a worker."""
    found: dict[str, int] = {}
    process = harness.processes.get(component)
    if process is None:
        return found
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        return found
    for child in children:
        try:
            title = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if title.startswith("airflow worker -- "):
            found[title.removeprefix("airflow worker -- ").strip()] = child.pid
    return found


def _connected_to(pid: int, port: int) -> bool:
    """Whether the process has a TCP connection open to ``port``: a resumed task's first API call is the
    results download, so the download has been sent and is being held by the emulator."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED for c in connections)


def _workers(harness: ProductionHarness) -> Iterable[str]:
    return [name for name, service in harness.components.items() if service == "airflow-worker"]


def _kill_the_worker_landing(
    harness: ProductionHarness, started: float, victim: dict[str, Any], timeout: float
) -> Kill:
    """SIGKILL the Celery worker whose task is landing the victim's results, mid-landing; restart it."""
    folder = results_folder(harness, victim["run_id"], victim["map_index"])
    emulator_port = int(harness.emulator_url.rsplit(":", 1)[1])
    first_seen: dict[tuple[str, int, tuple[str, ...]], float] = {}

    def landing_now() -> tuple[str, list[str]] | None:
        """The worker running the victim, once the victim has sat in its held download for a second.

        Its temporary file exists and it is connected to the emulator; a landing that is not held
        is over in milliseconds, so one still there a second later is waiting on the slow download.
        """
        if (folder / "manifest.json").exists():
            raise HarnessError(f"the chosen task {victim} landed before it was caught landing:\n{harness.log_tails()}")
        temporaries = tuple(sorted(path.name for path in folder.glob(TEMPORARY_GLOB)))
        for worker in _workers(harness) if temporaries else ():
            pid = _task_processes(harness, worker).get(victim["ti_id"])
            if pid is not None and _connected_to(pid, emulator_port):
                seen = first_seen.setdefault((worker, pid, temporaries), time.monotonic())
                return (worker, list(temporaries)) if time.monotonic() - seen >= 1 else None
        return None

    worker, temporaries = harness.wait_for(
        landing_now, timeout=timeout, what="the chosen task to be held in its results download", interval=0.25
    )
    also_running = sorted(set(_task_processes(harness, worker)) - {victim["ti_id"]})
    killed_at = time.monotonic()
    harness.kill_component(worker)
    time.sleep(2)
    harness.start_component(worker)  # restart: always

    def retried_and_landed() -> dict[str, Any] | None:
        ti = next(
            ti for ti in harness.task_instances(FLEET_DAG, victim["run_id"]) if ti["map_index"] == victim["map_index"]
        )
        if ti.get("state") in FAILED_STATES:
            raise HarnessError(f"the killed landing's task ended {ti.get('state')}:\n{harness.log_tails()}")
        return ti if ti.get("state") == "success" else None

    landed = harness.wait_for(
        retried_and_landed, timeout=timeout, what="the killed landing's retry to land", interval=2
    )
    return Kill(
        kind="worker killed mid-landing",
        component=worker,
        at_seconds=killed_at - started,
        details={
            "temporary_files_at_kill": temporaries,
            "other_tasks_killed": len(also_running),
            "landed_after_seconds": round(time.monotonic() - killed_at, 1),
            "try_number": landed["try_number"],
        },
    )
