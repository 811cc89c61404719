"""``claude-batch audit`` for the api-server: run in a child process, cached for a few minutes.

Auditing parses the DAG folder (it imports every DAG file, as the dag-processor does), so it never
runs inside the api-server's own process: user code stays out of the web server, and the audit's
switch of the routing policy (an environment variable) stays out of its environment. A child
process runs ``python -m airflow_provider_claude_batch.cli audit --format json`` at most once per
``ttl_seconds``; concurrent page loads wait for the same run. No Airflow import here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["AuditOutcome", "AuditRunner"]

AUDIT_TTL_SECONDS = 300.0
AUDIT_TIMEOUT_SECONDS = 180.0


@dataclass(frozen=True)
class AuditOutcome:
    """The audit's JSON document, or why there is none, and when it was made."""

    document: dict[str, Any] | None
    error: str | None
    audited_at: str
    dags_folder: str


def _run_audit_process(dags_folder: str, airflow_home: str | None, timeout: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "airflow_provider_claude_batch.cli", "audit", "--dags-folder", dags_folder]
    command += ["--format", "json"]
    if airflow_home:
        command += ["--airflow-home", airflow_home]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"claude-batch audit exited {result.returncode}: {last[:500]}")
    return json.loads(result.stdout)


@dataclass
class AuditRunner:
    """Runs the audit of one DAG folder on demand, reusing a result younger than ``ttl_seconds``.

    :param run: ``(dags_folder, airflow_home, timeout) -> document``; the child process by default.
    :param ttl_seconds: how long a result (or a failure) is reused.
    :param timeout: how long one audit may take.
    :param clock: seconds, monotonic (tests pass a fake).
    """

    run: Callable[[str, str | None, float], dict[str, Any]] = _run_audit_process
    ttl_seconds: float = AUDIT_TTL_SECONDS
    timeout: float = AUDIT_TIMEOUT_SECONDS
    clock: Callable[[], float] = time.monotonic
    _cached: dict[tuple[str, str | None], tuple[float, AuditOutcome]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def audit(self, dags_folder: str, airflow_home: str | None, *, refresh: bool = False) -> AuditOutcome:
        """The audit of ``dags_folder`` (manifests of past runs from ``airflow_home``).

        :param dags_folder: the DAG folder the api-server deploys (``[core] dags_folder``).
        :param airflow_home: where past runs' manifests are, to measure tokens per run.
        :param refresh: run again even if a fresh result is cached.
        """
        key = (dags_folder, airflow_home)
        with self._lock:  # one audit at a time: a second page load waits and reuses it
            cached = self._cached.get(key)
            if cached is not None and not refresh and self.clock() - cached[0] < self.ttl_seconds:
                return cached[1]
            outcome = self._fresh(dags_folder, airflow_home)
            self._cached[key] = (self.clock(), outcome)
            return outcome

    def _fresh(self, dags_folder: str, airflow_home: str | None) -> AuditOutcome:
        audited_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if not Path(dags_folder).is_dir():
            error = (
                f"The api-server has no DAG folder at {dags_folder} ([core] dags_folder), so it cannot audit the "
                "DAG files; run `claude-batch audit --dags-folder <folder>` where they are."
            )
            return AuditOutcome(None, error, audited_at, dags_folder)
        try:
            document = self.run(dags_folder, airflow_home, self.timeout)
        except subprocess.TimeoutExpired:
            error = f"Auditing {dags_folder} took more than {self.timeout:.0f} s; run `claude-batch audit` instead."
            return AuditOutcome(None, error, audited_at, dags_folder)
        except (RuntimeError, OSError, ValueError) as failure:
            return AuditOutcome(None, f"The audit of {dags_folder} failed: {failure}", audited_at, dags_folder)
        return AuditOutcome(document, None, audited_at, dags_folder)
