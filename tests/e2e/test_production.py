"""The production topology of docker-compose.airflow.yml, for real, under a nightly load with kills.

PostgreSQL and Redis (Debian's packages), the CeleryExecutor, the FAB auth manager, api-server,
scheduler, dag-processor, two triggerers and two Celery workers, every ``AIRFLOW__*`` setting from
the compose file (see ``production.py``). Skipped, saying which package is missing, where the
Debian packages are not installed and cannot be (not root).

The night (``nightly.py``): 20 runs of a batch task mapped over 10 shards (200 batch tasks, all
deferred at once on 8 worker slots) and a synchronous DAG, against the emulator with transient
faults and one results stream cut mid-way; a triggerer, the scheduler and a worker in the middle of
a landing are SIGKILLed. Set ``CLAUDE_BATCH_PRODUCTION_FIGURES=<path>`` to write the night's
figures (for docs/deployment.md) as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from backing import MissingPackage, ensure_packages
from compose_file import COMPOSE_PATH
from fleet import FLEET_DAG, FLEET_TASK, SYNC_DAG, fleet_dag_source, sync_dag_source
from nightly import TEMPORARY_GLOB, NightReport, results_folder, run_night
from production import ProductionHarness
from topology import ComposeSettingError

pytestmark = pytest.mark.e2e

API_KEY = "sk-ant-e2e-PRODUCTION-LEAKCHECK-4c8e1a"
RUNS = 20
SHARDS = 10
REQUESTS_PER_SHARD = 5
SYNC_REQUESTS = 6
WORKER_CONCURRENCY = 4  # per worker: 8 slots for 200 batch tasks
PROCESSING_SECONDS = 3600  # batches never end by themselves; the night moves time on (advance)
# The workspace's Batch API limit (the emulator's rolling window, in real minutes as the budget
# counts), and each process's budget under it (docs/deployment.md, "The Batch API's rate limit"):
# at most two triggerers, the worker slots' task processes and the api-server call it at once.
RATE_LIMIT_PER_MINUTE = 240
BUDGET_PER_PROCESS = 20
PROCESSES_AT_ONCE = 2 + 2 * WORKER_CONCURRENCY + 1
DAGS = {
    f"{FLEET_DAG}.py": fleet_dag_source(SHARDS, REQUESTS_PER_SHARD, min_poll=5, max_poll=15),
    f"{SYNC_DAG}.py": sync_dag_source(SYNC_REQUESTS),
}
# Transient faults of every kind the fleet meets: creates refused while overloaded (nothing is
# created), list pages and status calls answering 5xx and 429, and the first results download cut
# after 2 rows.
FAULTS: list[dict[str, Any]] = [
    {"method": "POST", "path": "/v1/messages/batches", "status": 529, "count": 3, "retry_after": 1},
    {"method": "GET", "path": "/v1/messages/batches", "status": 503, "rate": 0.03},
    {"method": "GET", "path": "/v1/messages/batches/[^/]+", "status": 503, "rate": 0.03},
    {"method": "GET", "path": "/v1/messages/batches/[^/]+", "status": 429, "rate": 0.02, "retry_after": 2},
    {"method": "GET", "path": "/v1/messages/batches/[^/]+/results", "cut_after_rows": 2, "count": 1},
]


def _packages_or_skip() -> None:
    """Skip, naming the missing package, where PostgreSQL or Redis cannot be had (CI fails instead)."""
    try:
        ensure_packages()
    except MissingPackage as error:
        if os.environ.get("CLAUDE_BATCH_REQUIRE_PRODUCTION_E2E") == "1":
            pytest.fail(f"CLAUDE_BATCH_REQUIRE_PRODUCTION_E2E=1 but {error}")
        pytest.skip(f"production topology not run: {error}")


@pytest.fixture(scope="module")
def workdir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The module's temporary folder: deleted afterwards, kept (and named) when a test failed."""
    root = Path(tempfile.mkdtemp(prefix="claude-batch-production-"))
    failed_before = request.session.testsfailed
    yield root
    if request.session.testsfailed > failed_before:
        print(f"\nproduction-topology logs kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


# -- a wrong setting in the compose file fails, naming it ------------------------------------------

BROKEN_SETTINGS = {
    "executor module": (
        "AIRFLOW__CORE__EXECUTOR: CeleryExecutor",
        "AIRFLOW__CORE__EXECUTOR: airflow.providers.celery.executors.celery_executr.CeleryExecutor",
        "AIRFLOW__CORE__EXECUTOR",
    ),
    "broker URL format": (
        "AIRFLOW__CELERY__BROKER_URL: redis://:@redis:6379/0",
        "AIRFLOW__CELERY__BROKER_URL: redis//:@redis:6379/0",
        "AIRFLOW__CELERY__BROKER_URL",
    ),
    "broker host": (
        "AIRFLOW__CELERY__BROKER_URL: redis://:@redis:6379/0",
        "AIRFLOW__CELERY__BROKER_URL: redis://:@redis-server:6379/0",
        "AIRFLOW__CELERY__BROKER_URL",
    ),
    "misspelt option": (
        "AIRFLOW__CORE__LOAD_EXAMPLES: 'false'",
        "AIRFLOW__CORE__LOAD_EXAMPLE: 'false'",
        "AIRFLOW__CORE__LOAD_EXAMPLE",
    ),
}


@pytest.mark.parametrize("breakage", list(BROKEN_SETTINGS))
def test_a_wrong_compose_setting_fails_naming_it(breakage: str, workdir: Path) -> None:
    _packages_or_skip()
    original, broken, setting = BROKEN_SETTINGS[breakage]
    text = COMPOSE_PATH.read_text()
    assert text.count(original) == 1, f"the compose file no longer has {original!r}"
    name = breakage.replace(" ", "-")
    compose = workdir / f"broken-{name}.yml"
    compose.write_text(text.replace(original, broken))
    harness = ProductionHarness(workdir / name / "home", {}, api_key=API_KEY, compose_path=compose)
    with pytest.raises(ComposeSettingError) as failure:
        harness.start()
    message = str(failure.value)
    assert f"{setting}=" in message and "docker-compose.airflow.yml" in message
    assert harness.processes == {}, "no Airflow component may start on a broken setting"


# -- the night ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def production(request: pytest.FixtureRequest, workdir: Path) -> ProductionHarness:
    _packages_or_skip()
    harness = ProductionHarness(
        workdir / "night" / "home",
        DAGS,
        api_key=API_KEY,
        emulator_config={
            "processing_seconds": PROCESSING_SECONDS,
            "faults": FAULTS,
            "seed": 11,
            "rate_limit_rpm": RATE_LIMIT_PER_MINUTE,
            "rate_limit_window_seconds": 60,
        },
        connection_extra={"batch_requests_per_minute": BUDGET_PER_PROCESS},
        extra_env={"AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY)},
        startup_timeout=600,
    )
    request.addfinalizer(harness.stop)  # registered first: a start that fails half-way still stops
    harness.start()
    return harness


@pytest.fixture(scope="module")
def night(production: ProductionHarness) -> NightReport:
    report = run_night(
        production,
        runs=RUNS,
        shards=SHARDS,
        worker_slots=2 * WORKER_CONCURRENCY,
        processing_seconds=PROCESSING_SECONDS,
        faults=FAULTS,
    )
    figures = os.environ.get("CLAUDE_BATCH_PRODUCTION_FIGURES")
    if figures:
        Path(figures).write_text(json.dumps(_figures(production, report), indent=2, default=str))
    return report


def _manifests(harness: ProductionHarness, report: NightReport) -> list[dict[str, Any]]:
    return [
        json.loads((results_folder(harness, run_id, shard) / "manifest.json").read_text())
        for run_id in report.run_ids
        for shard in range(SHARDS)
    ]


def test_every_task_succeeds_with_the_fleet_deferred_on_a_few_worker_slots(night: NightReport) -> None:
    expected = RUNS * SHARDS
    assert night.peak_deferred == expected, "the whole fleet was deferred at once"
    assert night.worker_slots * 20 <= expected  # a deferred task holds no worker slot
    assert Counter(ti["state"] for ti in night.task_instances) == {"success": expected}


def test_exactly_one_batch_per_submission_and_every_result_row_once(
    production: ProductionHarness, night: NightReport
) -> None:
    manifests = _manifests(production, night)
    owned = [batch_id for manifest in manifests for batch_id in manifest["batch_ids"]]
    assert all(len(manifest["batch_ids"]) == 1 for manifest in manifests), "one batch, no follow-up round"
    emulator_batches = {batch["id"]: batch for batch in night.emulator_state["batches"]}
    assert sorted(owned) == sorted(emulator_batches), "every batch created belongs to exactly one task"
    for run_id in night.run_ids:
        for shard in range(SHARDS):
            folder = results_folder(production, run_id, shard)
            rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
            ids = [row["custom_id"] for row in rows]
            assert len(ids) == len(set(ids)) == REQUESTS_PER_SHARD, folder
            assert {row["status"] for row in rows} == {"succeeded"}, folder
    # The cut stream was fetched again and its rows written once: the counts above include it.
    assert night.emulator_state["calls"]["GET /v1/messages/batches/{message_batch_id}/results"] > len(owned)


def test_no_partial_temporary_file_is_left_in_any_results_folder(
    production: ProductionHarness, night: NightReport
) -> None:
    kill = night.kill("worker killed mid-landing")
    assert kill.details["temporary_files_at_kill"], "the worker was killed while its temporary file existed"
    left = sorted(str(path) for path in (production.home / "claude_batch_results").rglob("*.tmp"))
    assert left == []
    victim = results_folder(production, night.victim["run_id"], night.victim["map_index"])
    assert not list(victim.glob(TEMPORARY_GLOB))


def test_a_killed_triggerers_triggers_move_to_the_other(night: NightReport) -> None:
    kill = night.kill("triggerer killed")
    before = kill.details["triggers_before"]
    assert before[kill.component] > 0, "the killed triggerer was running triggers"
    assert kill.details["deferred_after_move"] == RUNS * SHARDS, "no task left its deferral when they moved"
    assert kill.details["restarted_as_job"] != kill.details["dead_job"]


def test_a_stalled_triggerer_hands_its_triggers_over_without_cancelling_a_batch(night: NightReport) -> None:
    """Frozen past the health threshold, a triggerer loses its triggers; thawed, Airflow stops them there
    through its user-kill path (on_kill). The batches must keep running: the tasks still wait on them."""
    freeze = night.kill("triggerer frozen")
    held = freeze.details["triggers_before"][freeze.component]
    assert held == RUNS * SHARDS, "the frozen triggerer held every trigger"
    assert freeze.details["stopped_on_thaw"] >= held, "Airflow stopped each one on the thawed triggerer"
    assert freeze.details["cancel_calls"] == 0
    assert freeze.details["deferred_after_thaw"] == RUNS * SHARDS
    assert night.emulator_state["calls"].get("POST /v1/messages/batches/{message_batch_id}/cancel", 0) == 0


def test_a_worker_killed_mid_landing_is_retried_and_lands(production: ProductionHarness, night: NightReport) -> None:
    kill = night.kill("worker killed mid-landing")
    assert kill.details["try_number"] >= 2, "the landing that was killed did not count as a success"
    folder = results_folder(production, night.victim["run_id"], night.victim["map_index"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["batch_ids"] == [night.victim["batch_id"]], "the retry re-attached instead of resubmitting"
    assert manifest["counts"]["succeeded"] == REQUESTS_PER_SHARD


def test_the_scheduler_restart_left_the_fleet_running(night: NightReport) -> None:
    assert night.kill("scheduler restarted").details["healthy_after_seconds"] > 0
    assert Counter(ti["state"] for ti in night.task_instances) == {"success": RUNS * SHARDS}


def test_the_claude_batches_page_lists_the_fleet_from_postgresql(
    production: ProductionHarness, night: NightReport
) -> None:
    assert production.request("GET", "/claude-batch/", auth=False).status_code == 401
    assert production.request("GET", "/claude-batch/").status_code == 200
    rows = production.api("GET", "/claude-batch/api/batches", params={"dag_id": FLEET_DAG, "limit": 500})["rows"]
    assert len(rows) == RUNS * SHARDS
    assert {(row["run_id"], row["map_index"]) for row in rows} == {
        (run_id, shard) for run_id in night.run_ids for shard in range(SHARDS)
    }
    for row in rows:
        assert (row["task_state"], row["status"], row["landed"]) == ("success", "ended", True), row
        assert row["request_counts"] == {"succeeded": REQUESTS_PER_SHARD}, row
        assert row["task_id"] == FLEET_TASK and len(row["batch_ids"]) == 1


def test_no_rate_limit_answer_failed_a_task(production: ProductionHarness, night: NightReport) -> None:
    """The budgets add up to less than the workspace's limit, and no 429 (limit or fault) failed a try."""
    assert PROCESSES_AT_ONCE * BUDGET_PER_PROCESS <= RATE_LIMIT_PER_MINUTE
    connection = production.api("GET", "/api/v2/connections/claude_default")
    assert json.loads(connection["extra"]) == {"batch_requests_per_minute": BUDGET_PER_PROCESS}
    failures = [
        f"{path.parent.name}/{path.name}: {line[:300]}"
        for path in production.home.joinpath("logs").rglob("attempt=*.log*")
        for line in path.read_text(errors="replace").splitlines()
        if _is_error(line) and any(word in line for word in ("429", "RateLimitError", "rate_limit_error"))
    ]
    assert failures == []


def _is_error(log_line: str) -> bool:
    """Whether a task or trigger log line (JSON) is at level error."""
    try:
        return json.loads(log_line).get("level") == "error"
    except ValueError:
        return False


def test_the_api_key_is_in_no_log(production: ProductionHarness, night: NightReport) -> None:
    logs = [*production.home.rglob("*.log"), *production.backing_logs]
    assert any(path.name == "airflow-init.log" for path in logs) and production.backing_logs
    assert [path for path in logs if API_KEY.encode() in path.read_bytes()] == []
    assert production.files_containing(API_KEY) == []


def _figures(harness: ProductionHarness, report: NightReport) -> dict[str, Any]:
    """The night in numbers, for docs/deployment.md."""
    manifests = _manifests(harness, report)
    created = [batch["created_at"] for batch in report.emulator_state["batches"]]
    last_landed = max(manifest["landed_at"] for manifest in manifests)
    fleet_seconds = datetime.fromisoformat(last_landed) - datetime.fromisoformat(min(created))
    return {
        "tasks": RUNS * SHARDS,
        "requests_per_task": REQUESTS_PER_SHARD,
        "worker_slots": report.worker_slots,
        "peak_deferred": report.peak_deferred,
        "seconds_first_trigger_to_all_deferred": round(report.seconds_to_all_deferred, 1),
        "first_batch_created_at": min(created),
        "last_batch_created_at": max(created),
        "last_landed_at": last_landed,
        "seconds_first_submit_to_last_landing": round(fleet_seconds.total_seconds(), 1),
        "seconds_advance_to_all_success": round(report.seconds_advance_to_all_success, 1),
        "kills": [asdict(kill) for kill in report.kills],
        "peak_main_rss_mib": {k: round(v / 2**20) for k, v in sorted(report.memory.main_rss.items())},
        "peak_tree_pss_mib": {k: round(v / 2**20) for k, v in sorted(report.memory.tree_pss.items())},
        "api_calls": report.emulator_state["calls"],
        "rate_limited_429s": report.emulator_state.get("rate_limited"),
        "faults_injected": report.emulator_state.get("faults_injected"),
        "task_tries": Counter(ti["try_number"] for ti in report.task_instances),
    }
