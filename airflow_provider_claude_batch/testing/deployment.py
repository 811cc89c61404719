"""What the docker-compose deployment runs, shared by its checks and the native end-to-end harness.

``docker-compose.airflow.yml`` cannot be started where the tests run (no Docker engine), so the
real-Airflow harness starts the same components natively instead. Both read the commands from
here, so "the compose file runs what the harness proved works" is one constant, not two lists
that drift apart. Importing this module imports nothing from Airflow.
"""

from __future__ import annotations

__all__ = [
    "COMPOSE_FILE",
    "COMPOSE_SERVICE_COMMANDS",
    "EMULATOR_COMMAND",
    "EMULATOR_PORT",
    "EMULATOR_SERVICE",
    "SHARED_DATA_DIRS",
    "airflow_argv",
]

COMPOSE_FILE = "docker-compose.airflow.yml"
"""The compose file, relative to the repository root."""

COMPOSE_SERVICE_COMMANDS: dict[str, list[str]] = {
    "airflow-init": ["db", "migrate"],
    "airflow-apiserver": ["api-server"],
    "airflow-scheduler": ["scheduler"],
    "airflow-dag-processor": ["dag-processor"],
    "airflow-triggerer": ["triggerer"],
    "airflow-worker": ["celery", "worker"],
}
"""Compose service -> the ``airflow`` subcommand it runs (the arguments after ``airflow``).

The image's entrypoint prepends ``airflow``, so these lists are the services' ``command:``
verbatim; ``airflow-init`` runs ``airflow db migrate`` inside its setup script. A native harness
with the LocalExecutor runs all of them except ``airflow-worker``, which only the
CeleryExecutor needs.
"""

EMULATOR_SERVICE = "claude-emulator"
"""The compose service (profile ``emulator``) serving the local Anthropic API emulator."""

EMULATOR_PORT = 8765
"""Port of the emulator inside the compose network (``http://claude-emulator:8765``)."""

EMULATOR_PROCESSING_SECONDS = 30
"""How long the deployed emulator's batches take: a batch ending within seconds of its task deferring can
trip a scheduler race in Airflow (the resumed task is marked failed), which real batches never do."""

EMULATOR_COMMAND: list[str] = [
    "claude-batch",
    "emulator",
    "--host",
    "0.0.0.0",
    "--port",
    str(EMULATOR_PORT),
    "--processing-seconds",
    str(EMULATOR_PROCESSING_SECONDS),
]
"""The emulator service's full command line (a console script of this package, not ``airflow``)."""

SHARED_DATA_DIRS: tuple[str, ...] = (
    "claude_batch_results",
    "claude_batch_state",
    "generated_tests",
    "compliance_reports",
)
"""Folders under ``$AIRFLOW_HOME`` that tasks write and other containers read.

Each is a named volume in the compose file: with Celery, the task that lands results, the task
that reads them and the api-server's plugin may run in different containers, so a folder that is
not shared would look empty to all but one of them. The first is where the operators land
results by default; the others are what the example DAGs keep and write.
"""


def airflow_argv(service: str) -> list[str]:
    """The native command line of ``service``, e.g. ``["airflow", "api-server"]``."""
    return ["airflow", *COMPOSE_SERVICE_COMMANDS[service]]
