"""``claude-batch demo``: run the example DAGs end to end, offline, on the embedded default.

The embedded default is a throwaway ``AIRFLOW_HOME`` with SQLite and the local emulator of the
Anthropic API, so no API key and no network are needed. Each DAG runs through ``airflow dags test``:
real parsing (with the routing policy), real tasks, the batch trigger run in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from airflow_provider_claude_batch.testing.emulator import EmulatorConfig, EmulatorServer

DEFAULT_DAGS = ("nightly_test_generation", "compliance_audit", "pre_merge_review")
# What each example DAG writes besides its results file, relative to AIRFLOW_HOME.
EXAMPLE_OUTPUTS = {"nightly_test_generation": "generated_tests", "compliance_audit": "compliance_reports"}
DEMO_API_KEY = "sk-ant-demo-emulator-key"


def run_demo(dags_folder: Path, airflow_home: Path, dag_ids: list[str], processing_seconds: float) -> int:
    """Run ``dag_ids`` from ``dags_folder`` against a fresh emulator; print where the results are."""
    if not dags_folder.is_dir():
        print(f"No DAG folder at {dags_folder}; run the demo from a clone of the repository or pass --dags-folder.")
        return 2
    airflow_home.mkdir(parents=True, exist_ok=True)
    logs = airflow_home / "demo-logs"
    logs.mkdir(exist_ok=True)
    config = EmulatorConfig(processing_seconds=processing_seconds, api_key=DEMO_API_KEY)
    with EmulatorServer(config) as emulator:
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder.resolve()),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_CLAUDE_DEFAULT": json.dumps(
                {"conn_type": "claude", "password": DEMO_API_KEY, "host": emulator.url}
            ),
        }
        env.pop("ANTHROPIC_API_KEY", None)
        print(f"AIRFLOW_HOME   {airflow_home}  (SQLite)")
        print(f"Claude API     emulator at {emulator.url}  (batches end after {processing_seconds:g} s)")
        _airflow(["db", "migrate"], env, logs / "db-migrate.log")
        failures = 0
        for dag_id in dag_ids:
            started = time.monotonic()
            started_at = time.time()
            print(f"\n>> airflow dags test {dag_id}")
            log_file = logs / f"{dag_id}.log"
            ok = _airflow(["dags", "test", dag_id], env, log_file, check=False)
            print(f"   {'succeeded' if ok else 'FAILED'} in {time.monotonic() - started:.1f} s; log: {log_file}")
            failures += not ok
            _print_outcome(airflow_home, dag_id, since=started_at)
        state = emulator.state()
        print(
            f"\nThe emulator received {state['create_calls']} batch create call(s) and holds "
            f"{state['batch_count']} batch(es)."
        )
    return 1 if failures else 0


def _airflow(args: list[str], env: dict[str, str], log_file: Path, check: bool = True) -> bool:
    with log_file.open("w") as log:
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args], env=env, stdout=log, stderr=subprocess.STDOUT, timeout=900
        )
    if check and result.returncode != 0:
        raise SystemExit(f"airflow {' '.join(args)} failed; see {log_file}")
    return result.returncode == 0


def _print_outcome(airflow_home: Path, dag_id: str, since: float) -> None:
    """Where the results of the run that just ended are (manifests written since ``since``)."""
    manifests = sorted(
        path
        for path in (airflow_home / "claude_batch_results" / dag_id).rglob("manifest.json")
        if path.stat().st_mtime >= since
    )
    if not manifests:
        print("   no results landed in this run (nothing to do, or see the log)")
        return
    for path in manifests:
        manifest = json.loads(path.read_text())
        cost = manifest["cost"]
        route = manifest.get("route", "batch")
        billed = cost["batch_usd"] if route == "batch" else cost["sync_usd"]
        counts = ", ".join(f"{status} {n}" for status, n in manifest["counts"].items() if n)
        print(f"   results:  {manifest['results_uri']}  ({counts})")
        print(f"   manifest: {path}")
        print(
            f"   cost:     ${billed:.4f} on the {route} route (at batch prices ${cost['batch_usd']:.4f}, "
            f"synchronously ${cost['sync_usd']:.4f})"
        )
    if dag_id in EXAMPLE_OUTPUTS:
        print(f"   outputs:  {airflow_home / EXAMPLE_OUTPUTS[dag_id]}")
