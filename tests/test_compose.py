"""Checks of the docker-compose deployment (``docker-compose.airflow.yml`` and ``docker/``).

Docker's engine does not run where these tests run, so nothing here starts a container. Instead
each test checks for real the part that can be checked without one:

- the compose file parses with its anchors and merge keys resolved, and its ``${VAR}``
  interpolation behaves as ``docker compose`` would (required secrets fail fast);
- every service of the official Airflow 3.3 compose file is there with what the official file has
  for it (command, healthcheck, restart policy, ``depends_on`` conditions);
- the commands the services run are real ``airflow`` subcommands (parsed with Airflow's own CLI
  parser) and the ones the native end-to-end harness runs (``COMPOSE_SERVICE_COMMANDS``);
- the airflow-init script is run, with the image's entrypoint replaced by a stub, in every mode
  (API key, emulator, unmanaged, missing key), and once for real against a SQLite Airflow;
- the emulator service runs the package's real console script and its healthcheck URL answers;
- the image installs the package: the Dockerfile's COPY steps are replayed through
  ``.dockerignore`` into a folder, and the wheel built from exactly that folder is inspected.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from compose_file import (
    AIRFLOW_HOME_IN_IMAGE,
    COMPOSE_PATH,
    REPO,
    InterpolationError,
    as_argv,
    init_script,
    interpolate_tree,
    load_compose,
    services,
)

from airflow_provider_claude_batch.testing.deployment import (
    COMPOSE_FILE,
    COMPOSE_SERVICE_COMMANDS,
    EMULATOR_COMMAND,
    EMULATOR_PORT,
    EMULATOR_SERVICE,
    SHARED_DATA_DIRS,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

DOCKERFILE = REPO / "docker" / "Dockerfile"
ENV_EXAMPLE = REPO / "docker" / ".env.example"
DOCKERIGNORE = REPO / ".dockerignore"
DEPLOYMENT_DOC = REPO / "docs" / "deployment.md"
BIN = Path(sys.executable).parent

COMMON_IMAGE = "${AIRFLOW_IMAGE_NAME:-airflow-provider-claude-batch:latest}"
COMMON_BUILD = {"context": ".", "dockerfile": "docker/Dockerfile"}
EMULATOR_URL = f"http://{EMULATOR_SERVICE}:{EMULATOR_PORT}"
# Unique enough to spot in any output; deliberately not shaped like a real key (no secret scanner hits).
FAKE_API_KEY = "compose-test-api-key-NOT-REAL-0123456789"

HAS_CELERY = importlib.util.find_spec("airflow.providers.celery") is not None
HAS_FAB = importlib.util.find_spec("airflow.providers.fab") is not None
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


# --------------------------------------------------------------------------------------------
# What the official Airflow 3.3 docker-compose file has, service by service
# (apache/airflow airflow-core/docs/howto/docker-compose/docker-compose.yaml). Kept here rather
# than read from the compose file, so that an edit dropping a healthcheck or a condition fails.
# --------------------------------------------------------------------------------------------

HEALTHY = {"condition": "service_healthy"}
COMPLETED = {"condition": "service_completed_successfully"}
COMMON_DEPENDS_ON = {"redis": HEALTHY, "postgres": HEALTHY}
AFTER_INIT = {**COMMON_DEPENDS_ON, "airflow-init": COMPLETED}
CHECK_TIMING = {"interval": "30s", "timeout": "10s", "retries": 5, "start_period": "30s"}


def _jobs_check(job_type: str) -> list[str]:
    """The official ``airflow jobs check`` healthcheck (``$$`` keeps compose off ``$HOSTNAME``)."""
    return ["CMD-SHELL", f'airflow jobs check --job-type {job_type} --hostname "$${{HOSTNAME}}"']


OFFICIAL_SERVICES: dict[str, dict[str, Any]] = {
    "postgres": {
        "image": "postgres:16",
        "environment": {"POSTGRES_USER": "airflow", "POSTGRES_PASSWORD": "airflow", "POSTGRES_DB": "airflow"},
        "volumes": ["postgres-db-volume:/var/lib/postgresql/data"],
        "healthcheck": {
            "test": ["CMD", "pg_isready", "-U", "airflow"],
            "interval": "10s",
            "retries": 5,
            "start_period": "5s",
        },
        "restart": "always",
    },
    "redis": {
        "image": "redis:7.2-bookworm",
        "expose": [6379],
        "healthcheck": {
            "test": ["CMD", "redis-cli", "ping"],
            "interval": "10s",
            "timeout": "30s",
            "retries": 50,
            "start_period": "30s",
        },
        "restart": "always",
    },
    "airflow-apiserver": {
        "command": ["api-server"],
        "ports": ["8080:8080"],
        "healthcheck": {"test": ["CMD", "curl", "--fail", "http://localhost:8080/api/v2/version"], **CHECK_TIMING},
        "restart": "always",
        "depends_on": AFTER_INIT,
    },
    "airflow-scheduler": {
        "command": ["scheduler"],
        "healthcheck": {"test": ["CMD", "curl", "--fail", "http://localhost:8974/health"], **CHECK_TIMING},
        "restart": "always",
        "depends_on": AFTER_INIT,
    },
    "airflow-dag-processor": {
        "command": ["dag-processor"],
        "healthcheck": {"test": _jobs_check("DagProcessorJob"), **CHECK_TIMING},
        "restart": "always",
        "depends_on": AFTER_INIT,
    },
    "airflow-worker": {
        "command": ["celery", "worker"],
        "healthcheck": {
            "test": [
                "CMD-SHELL",
                "celery --app airflow.providers.celery.executors.celery_executor.app inspect ping "
                '-d "celery@$${HOSTNAME}" || celery --app airflow.executors.celery_executor.app inspect ping '
                '-d "celery@$${HOSTNAME}"',
            ],
            **CHECK_TIMING,
        },
        "environment": {"DUMB_INIT_SETSID": "0"},
        "restart": "always",
        "depends_on": {**AFTER_INIT, "airflow-apiserver": HEALTHY},
    },
    "airflow-triggerer": {
        "command": ["triggerer"],
        "healthcheck": {"test": _jobs_check("TriggererJob"), **CHECK_TIMING},
        "restart": "always",
        "depends_on": AFTER_INIT,
    },
    "airflow-init": {
        "entrypoint": "/bin/bash",
        "user": "0:0",
        "environment": {"_PIP_ADDITIONAL_REQUIREMENTS": ""},
        "depends_on": COMMON_DEPENDS_ON,
    },
    "airflow-cli": {
        "profiles": ["debug"],
        "environment": {"CONNECTION_CHECK_MAX_COUNT": "0"},
        "command": ["bash", "-c", "airflow"],
        "depends_on": COMMON_DEPENDS_ON,
    },
    "flower": {
        "profiles": ["flower"],
        "command": ["celery", "flower"],
        "ports": ["5555:5555"],
        "healthcheck": {"test": ["CMD", "curl", "--fail", "http://localhost:5555/"], **CHECK_TIMING},
        "restart": "always",
        "depends_on": AFTER_INIT,
    },
}
AIRFLOW_SERVICES = [name for name in OFFICIAL_SERVICES if name not in ("postgres", "redis")]


def _fernet_key() -> str:
    """A fresh, valid Fernet key, as docker/.env.example tells users to generate."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


#: The values a user puts in .env: every required variable set.
REQUIRED_ENV: dict[str, str] = {
    "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-secret-for-tests",
    "AIRFLOW__API__SECRET_KEY": "api-secret-for-tests",
    "_AIRFLOW_WWW_USER_PASSWORD": "admin-password-for-tests",
}


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    """The compose file as YAML (anchors and ``<<`` merge keys resolved), before interpolation."""
    return load_compose()


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    """The compose file as `docker compose config` would see it with a filled-in .env."""
    return interpolate_tree(raw_compose, REQUIRED_ENV)


def parse_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of an env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            name, sep, value = stripped.partition("=")
            assert sep, f"not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


# --------------------------------------------------------------------------------------------
# The compose file: structure, official parity, env, secrets, mounts
# --------------------------------------------------------------------------------------------


def test_compose_parses_with_anchors_and_merge_keys(raw_compose: dict[str, Any]) -> None:
    """Services get the common image, build, env and volumes through ``<<: *airflow-common``."""
    common = raw_compose["x-airflow-common"]
    assert common["image"] == COMMON_IMAGE
    assert common["build"] == COMMON_BUILD
    assert raw_compose["x-airflow-common"]["depends_on"] == COMMON_DEPENDS_ON
    for name in AIRFLOW_SERVICES:
        service = services(raw_compose)[name]
        assert service["image"] == COMMON_IMAGE, name
        assert service["build"] == COMMON_BUILD, name
        assert service["volumes"] == common["volumes"], name
        # A service overriding `environment` must merge the common env back in (<<: *airflow-common-env).
        overridden = OFFICIAL_SERVICES[name].get("environment", {})
        for key, value in common["environment"].items():
            assert service["environment"].get(key) == overridden.get(key, value), f"{name} lost {key}"
        if name != "airflow-init":
            assert service["user"] == "${AIRFLOW_UID:-50000}:0", name
    emulator = services(raw_compose)[EMULATOR_SERVICE]
    assert emulator["image"] == COMMON_IMAGE and emulator["build"] == COMMON_BUILD


def test_every_official_service_is_present(raw_compose: dict[str, Any]) -> None:
    """Users and Airflow's docs expect the official service names; unknown extras go unchecked."""
    missing = set(OFFICIAL_SERVICES) - set(services(raw_compose))
    assert not missing, f"services of the official Airflow compose file missing: {sorted(missing)}"
    extra = set(services(raw_compose)) - set(OFFICIAL_SERVICES) - {EMULATOR_SERVICE}
    assert not extra, f"services without checks in this file: {sorted(extra)}"


@pytest.mark.parametrize("name", list(OFFICIAL_SERVICES))
def test_service_matches_the_official_file(raw_compose: dict[str, Any], name: str) -> None:
    """Command, healthcheck (test and timings), restart, depends_on conditions, ports, profiles."""
    service = services(raw_compose)[name]
    for key, expected in OFFICIAL_SERVICES[name].items():
        actual = service.get(key)
        if key == "command":
            actual = as_argv(actual)
        if key == "environment":
            actual = {k: v for k, v in actual.items() if k in expected}
        assert actual == expected, f"{name}.{key}"
    for key in ("healthcheck", "restart", "profiles"):
        if key not in OFFICIAL_SERVICES[name]:
            assert key not in service, f"{name} has a {key} the official file does not have"


def test_postgres_keeps_its_data_in_a_named_volume_and_is_not_published(raw_compose: dict[str, Any]) -> None:
    """The database password is the official internal one, so the database must stay unreachable."""
    assert "postgres-db-volume" in raw_compose["volumes"]
    assert "ports" not in services(raw_compose)["postgres"]
    assert "ports" not in services(raw_compose)["redis"]


def test_worker_warm_shutdown_and_scheduler_health_server(compose: dict[str, Any]) -> None:
    """Without these two settings a worker is killed mid-task on stop and the scheduler looks dead."""
    assert services(compose)["airflow-worker"]["environment"]["DUMB_INIT_SETSID"] == "0"
    # The scheduler's healthcheck curls :8974, which only answers with this switched on.
    assert services(compose)["airflow-scheduler"]["environment"]["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"


def test_common_environment(compose: dict[str, Any]) -> None:
    """The official env (Celery, Postgres, Redis, Execution API) plus the shared secrets."""
    env = compose["x-airflow-common"]["environment"]
    expected = {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow:airflow@postgres/airflow",
        # The official file has db+postgresql://, whose driver depends on the SQLAlchemy version.
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+postgresql+psycopg2://airflow:airflow@postgres/airflow",
        "AIRFLOW__CELERY__BROKER_URL": "redis://:@redis:6379/0",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "true",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__DAGS_FOLDER": f"{AIRFLOW_HOME_IN_IMAGE}/dags",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://airflow-apiserver:8080/execution/",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "true",
        "AIRFLOW__CORE__FERNET_KEY": REQUIRED_ENV["AIRFLOW__CORE__FERNET_KEY"],
        "AIRFLOW__API_AUTH__JWT_SECRET": REQUIRED_ENV["AIRFLOW__API_AUTH__JWT_SECRET"],
        "AIRFLOW__API__SECRET_KEY": REQUIRED_ENV["AIRFLOW__API__SECRET_KEY"],
    }
    assert {key: env.get(key) for key in expected} == expected
    # EXECUTION_API_SERVER_URL names the api-server on the port it serves on.
    assert services(compose)["airflow-apiserver"]["ports"] == ["8080:8080"]


def test_example_dags_are_the_mounted_read_only_dags_folder(compose: dict[str, Any]) -> None:
    """The DAGs folder Airflow parses is the repo's dags_examples, which no container may change."""
    dags_folder = compose["x-airflow-common"]["environment"]["AIRFLOW__CORE__DAGS_FOLDER"]
    assert f"./dags_examples:{dags_folder}:ro" in compose["x-airflow-common"]["volumes"]


@pytest.mark.parametrize(
    "secret",
    [
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "_AIRFLOW_WWW_USER_PASSWORD",
    ],
)
def test_required_secret_fails_fast_when_missing(raw_compose: dict[str, Any], secret: str) -> None:
    """Unset or empty, `docker compose` stops with a message naming the variable and the fix."""
    where = raw_compose["x-airflow-common"]["environment"]
    if secret not in where:
        where = services(raw_compose)["airflow-init"]["environment"]
    assert where[secret].startswith("${" + secret + ":?"), f"{secret} must use the ${{{secret}:?message}} form"
    for missing in ({k: v for k, v in REQUIRED_ENV.items() if k != secret}, {**REQUIRED_ENV, secret: ""}):
        with pytest.raises(InterpolationError, match=rf"{secret}.*docker/\.env\.example"):
            interpolate_tree(raw_compose, missing)


def test_fernet_key_reaches_every_airflow_service_and_is_a_real_key(compose: dict[str, Any]) -> None:
    """One key everywhere: the triggerer decrypts what the worker encrypted when it deferred."""
    from cryptography.fernet import Fernet

    for name in AIRFLOW_SERVICES:
        key = services(compose)[name]["environment"]["AIRFLOW__CORE__FERNET_KEY"]
        Fernet(key.encode())  # raises on anything but a 32-byte url-safe base64 key


def test_no_hard_coded_secrets() -> None:
    """No API key literal anywhere, and secret-looking variables only ever come from the env."""
    for path in (COMPOSE_PATH, DOCKERFILE, ENV_EXAMPLE, DOCKERIGNORE, DEPLOYMENT_DOC):
        assert not re.search(r"sk-ant-[A-Za-z0-9]", path.read_text()), f"API key literal in {path.name}"
    raw = yaml.safe_load(COMPOSE_PATH.read_text())
    allowed_literals = {"POSTGRES_PASSWORD": "airflow"}  # the official internal DB, never published
    for name, service in {"x-airflow-common": raw["x-airflow-common"], **raw["services"]}.items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"KEY|SECRET|PASSWORD|TOKEN", key) and allowed_literals.get(key) != value:
                assert re.fullmatch(r"\$\{" + re.escape(key) + r"(:?[-?][^}]*)?\}", str(value)), (
                    f"{name}: {key} must come from ${{{key}...}}, not {value!r}"
                )
            if key == "ANTHROPIC_API_KEY":
                assert name == "airflow-init", "only airflow-init gets the API key"
                assert value == "${ANTHROPIC_API_KEY:-}"
    # In the script the key's value is only ever tested or passed as --conn-password.
    for line in init_script(raw).splitlines():
        if "${ANTHROPIC_API_KEY" in line.replace("$$", "$"):
            assert "echo" not in line, f"the init script prints the key: {line.strip()}"
            assert line.strip().startswith(("if ", "elif ")) or "--conn-password" in line, line.strip()
    env_example = parse_env_file(ENV_EXAMPLE)
    for key in ("ANTHROPIC_API_KEY", *REQUIRED_ENV):
        assert env_example[key] == "", f"docker/.env.example must leave {key} empty"


def test_variables_are_documented_in_env_example(raw_compose: dict[str, Any]) -> None:
    """Every ${VAR} the compose file reads appears in docker/.env.example and in its header."""
    used: set[str] = set()
    interpolate_tree(raw_compose, REQUIRED_ENV, used)
    env_example = parse_env_file(ENV_EXAMPLE)
    header = COMPOSE_PATH.read_text().split("\n---", 1)[0]
    assert used - set(env_example) == set(), "variables missing from docker/.env.example"
    assert {name for name in used if name not in header} == set(), "variables missing from the header comment"


def test_env_example_as_copied_fails_fast_and_its_generators_work(raw_compose: dict[str, Any]) -> None:
    """A fresh copy stops compose until filled; the documented commands produce usable secrets."""
    from cryptography.fernet import Fernet

    with pytest.raises(InterpolationError):
        interpolate_tree(raw_compose, parse_env_file(ENV_EXAMPLE))
    commands = re.findall(r'^#\s+python -c "(.+)"$', ENV_EXAMPLE.read_text(), flags=re.MULTILINE)
    assert any("Fernet.generate_key" in command for command in commands)
    for command in commands:
        output = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, check=True)
        value = output.stdout.strip()
        assert len(value) >= 32, command
        if "Fernet" in command:
            Fernet(value.encode())


def test_volume_and_bind_mount_sources_exist(raw_compose: dict[str, Any]) -> None:
    """Docker would create a missing bind source as an empty root-owned folder, silently."""
    declared = set(raw_compose.get("volumes") or {})
    for name, service in services(raw_compose).items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (REPO / source).resolve().is_dir(), f"{name}: bind mount source {source} does not exist"
                assert (REPO / source).resolve().is_relative_to(REPO), f"{name}: {source} is outside the repo"
            else:
                assert source in declared, f"{name}: named volume {source} is not declared"


def test_shared_data_folders_are_volumes_owned_by_airflow(raw_compose: dict[str, Any]) -> None:
    """Every folder tasks write under $AIRFLOW_HOME is shared by all containers and writable."""
    targets = {volume.split(":")[1]: volume.split(":")[0] for volume in raw_compose["x-airflow-common"]["volumes"]}
    dockerfile = DOCKERFILE.read_text()
    script = init_script(raw_compose)
    brace_lists = re.findall(r'"\$\$\{AIRFLOW_HOME\}"/\{([^}]*)\}', script)
    assert len(brace_lists) == 2, "airflow-init should mkdir and chown one list of folders"
    for folder in (*SHARED_DATA_DIRS, "logs"):
        source = targets.get(f"{AIRFLOW_HOME_IN_IMAGE}/{folder}")
        assert source and source in raw_compose["volumes"], f"{folder} is not a named volume"
        assert all(folder in brace_list.split(",") for brace_list in brace_lists), f"airflow-init skips {folder}"
        if folder != "logs":
            assert f"${{AIRFLOW_HOME}}/{folder}" in dockerfile, f"the image does not create {folder}"


def test_example_dags_write_only_to_shared_folders() -> None:
    """A folder the example DAGs write that is not a volume would differ between Celery workers."""
    written: set[str] = set()
    for path in (REPO / "dags_examples").rglob("*.py"):
        if "data" not in path.relative_to(REPO / "dags_examples").parts:
            written.update(re.findall(r"AIRFLOW_HOME\s*/\s*[\"'](\w+)[\"']", path.read_text()))
    assert written <= set(SHARED_DATA_DIRS), f"add to SHARED_DATA_DIRS and the compose volumes: {written}"


# --------------------------------------------------------------------------------------------
# Commands: the harness's constant, and real Airflow subcommands
# --------------------------------------------------------------------------------------------


def test_services_run_the_native_harness_commands(raw_compose: dict[str, Any]) -> None:
    """The containers run what the native end-to-end harness proved, via the shared constant."""
    for name, argv in COMPOSE_SERVICE_COMMANDS.items():
        if name == "airflow-init":
            assert re.search(rf"^\s*/entrypoint airflow {' '.join(argv)}$", init_script(raw_compose), re.MULTILINE)
        else:
            assert as_argv(services(raw_compose)[name]["command"]) == argv, name
    # Every always-on service of the image is covered by the shared constant.
    always_on = {
        name
        for name, service in services(raw_compose).items()
        if service.get("image") == COMMON_IMAGE and not service.get("profiles")
    }
    assert always_on == set(COMPOSE_SERVICE_COMMANDS)


def test_init_script_is_valid_bash_and_calls_airflow_through_the_entrypoint(compose: dict[str, Any]) -> None:
    """As root, ``airflow`` only works through the image's entrypoint (it waits for the DB too)."""
    script = init_script(compose)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    calls = [line.strip() for line in script.splitlines() if re.search(r"(^|[\s(])airflow\s", line)]
    for line in calls:
        if not line.startswith("echo"):
            assert "/entrypoint airflow " in line, f"airflow called without the image's entrypoint: {line}"


_INIT_STUB = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["INIT_CALLS"], "a") as log:
    log.write(json.dumps([name, *sys.argv[1:]]) + "\\n")
if name == "entrypoint" and os.environ.get("INIT_REAL") == "1":
    import sqlite3, subprocess
    code = subprocess.call(sys.argv[1:])
    if code == 0 and sys.argv[1:4] == ["airflow", "db", "migrate"] and os.environ.get("INIT_SEED_SQL"):
        with sqlite3.connect(os.environ["INIT_SEED_DB"]) as db:
            db.executescript(os.environ["INIT_SEED_SQL"])
    sys.exit(code)
if sys.argv[1:4] == ["airflow", "config", "get-value"]:
    print(os.environ["INIT_AUTH_MANAGER"])
"""


class InitRun:
    """A started run of the init script (output in files, so a full pipe never blocks it)."""

    def __init__(self, process: subprocess.Popen[bytes], tmp: Path) -> None:
        self.process = process
        self.tmp = tmp

    def result(self, timeout: float = 180) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
        """Wait for the script; its exit code, output and the recorded calls."""
        returncode = self.process.wait(timeout=timeout)
        stdout, stderr = ((self.tmp / name).read_text() for name in ("stdout.txt", "stderr.txt"))
        calls_file = self.tmp / "calls.jsonl"
        calls = [json.loads(line) for line in calls_file.read_text().splitlines()] if calls_file.exists() else []
        return subprocess.CompletedProcess(self.process.args, returncode, stdout, stderr), calls

    def stop(self) -> None:
        """End the script and the airflow commands it started (its own process group) if still running."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_init_script(document: Mapping[str, Any], tmp: Path, env: Mapping[str, str], *, real: bool = False) -> InitRun:
    """Start airflow-init's script here: /entrypoint replaced by a stub that records its arguments.

    With ``real``, the stub then runs ``airflow`` with them, as the image's entrypoint does once
    the database answers (and runs ``INIT_SEED_SQL`` on ``INIT_SEED_DB`` after the migration).
    ``chown`` is always recorded only (the test may not run as root).
    """
    bin_dir = tmp / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    stub = _INIT_STUB.format(python=sys.executable)
    for name in ("entrypoint", "chown"):
        (bin_dir / name).write_text(stub)
        (bin_dir / name).chmod(0o755)
    script = init_script(document).replace("/entrypoint ", f"{bin_dir / 'entrypoint'} ")
    (tmp / "calls.jsonl").unlink(missing_ok=True)
    full_env = {
        "PATH": f"{bin_dir}{os.pathsep}{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp),
        "INIT_CALLS": str(tmp / "calls.jsonl"),
        "INIT_AUTH_MANAGER": FAB_AUTH_MANAGER,
        "INIT_REAL": "1" if real else "0",
        **env,
    }
    with open(tmp / "stdout.txt", "wb") as stdout, open(tmp / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(
            ["bash", "-c", script], env=full_env, stdout=stdout, stderr=stderr, start_new_session=True
        )
    return InitRun(process, tmp)


def run_init_script(
    document: Mapping[str, Any], tmp: Path, env: Mapping[str, str]
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run the init script with the recording stub only (a fraction of a second)."""
    run = start_init_script(document, tmp, env)
    try:
        return run.result(timeout=60)
    finally:
        run.stop()


def init_env(compose: Mapping[str, Any], tmp: Path, **overrides: str) -> dict[str, str]:
    """airflow-init's environment from the compose file, with AIRFLOW_HOME in ``tmp``."""
    env = {key: str(value) for key, value in services(compose)["airflow-init"]["environment"].items()}
    env.update({"AIRFLOW_HOME": str(tmp / "home"), "AIRFLOW_UID": str(os.getuid())}, **overrides)
    return env


def _airflow_calls(calls: list[list[str]]) -> list[list[str]]:
    """The ``airflow`` arguments of the recorded ``/entrypoint airflow ...`` calls."""
    return [call[2:] for call in calls if call[:2] == ["entrypoint", "airflow"]]


def _connection_add(*options: str) -> list[str]:
    """The ``airflow connections add`` call for claude_default with ``options``."""
    return ["connections", "add", "claude_default", "--conn-type", "claude", *options]


DELETE_CONNECTION = ["connections", "delete", "claude_default"]
BUDGET_EXTRA = '{"batch_requests_per_minute": 20}'

#: mode -> (environment, the airflow calls after the admin user; None = the script must fail).
INIT_MODES: dict[str, tuple[dict[str, str], list[list[str]] | None]] = {
    "api-key": (
        {"ANTHROPIC_API_KEY": FAKE_API_KEY, "CLAUDE_BASE_URL": ""},
        [DELETE_CONNECTION, _connection_add("--conn-password", FAKE_API_KEY)],
    ),
    "emulator": (
        {"ANTHROPIC_API_KEY": "", "CLAUDE_BASE_URL": EMULATOR_URL},
        [DELETE_CONNECTION, _connection_add("--conn-host", EMULATOR_URL, "--conn-password", "emulator")],
    ),
    "key-through-a-gateway": (
        {"ANTHROPIC_API_KEY": FAKE_API_KEY, "CLAUDE_BASE_URL": "https://gateway.example"},
        [DELETE_CONNECTION, _connection_add("--conn-host", "https://gateway.example", "--conn-password", FAKE_API_KEY)],
    ),
    "emulator-with-a-budget": (
        {"ANTHROPIC_API_KEY": "", "CLAUDE_BASE_URL": EMULATOR_URL, "CLAUDE_CONNECTION_EXTRA": BUDGET_EXTRA},
        [
            DELETE_CONNECTION,
            _connection_add("--conn-host", EMULATOR_URL, "--conn-password", "emulator", "--conn-extra", BUDGET_EXTRA),
        ],
    ),
    "key-with-a-budget": (
        {"ANTHROPIC_API_KEY": FAKE_API_KEY, "CLAUDE_BASE_URL": "", "CLAUDE_CONNECTION_EXTRA": BUDGET_EXTRA},
        [DELETE_CONNECTION, _connection_add("--conn-password", FAKE_API_KEY, "--conn-extra", BUDGET_EXTRA)],
    ),
    "unmanaged": ({"ANTHROPIC_API_KEY": "", "CLAUDE_MANAGE_CONNECTION": "false"}, []),
    "no-key": ({"ANTHROPIC_API_KEY": "", "CLAUDE_BASE_URL": ""}, None),
}


@pytest.fixture(scope="module")
def init_runs(compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The init script run once per mode with a recording stub (about 0.1 s each)."""
    runs = {}
    for mode, (overrides, _) in INIT_MODES.items():
        tmp = tmp_path_factory.mktemp(f"init-{mode}")
        runs[mode] = run_init_script(compose, tmp, init_env(compose, tmp, **overrides))
    return runs


@pytest.mark.parametrize("mode", list(INIT_MODES))
def test_init_script_modes(init_runs: dict[str, Any], mode: str) -> None:
    """Migrate first, check the provider, admin user for FAB, then claude_default per mode."""
    result, calls = init_runs[mode]
    output = result.stdout + result.stderr
    assert FAKE_API_KEY not in output, "the init script printed the API key"
    expected_connection = INIT_MODES[mode][1]
    if expected_connection is None:
        assert result.returncode == 1, output
        assert calls == [], "a missing key must fail before touching anything"
        assert "ANTHROPIC_API_KEY" in output and "--profile emulator" in output and EMULATOR_URL in output
        return
    assert result.returncode == 0, output
    airflow = _airflow_calls(calls)
    assert airflow[0] == ["db", "migrate"]
    assert airflow[1] == ["providers", "get", "airflow-provider-claude-batch"]
    assert airflow[2] == ["config", "get-value", "core", "auth_manager"]
    assert airflow[3][:2] == ["users", "create"] and airflow[3][airflow[3].index("--role") + 1] == "Admin"
    assert airflow[3][airflow[3].index("--password") + 1] == REQUIRED_ENV["_AIRFLOW_WWW_USER_PASSWORD"]
    assert airflow[4:] == expected_connection
    chown = [call for call in calls if call[0] == "chown"]
    assert chown and chown[0][:3] == ["chown", "-R", f"{os.getuid()}:0"]
    assert "airflow-init done" in result.stdout


def test_init_script_skips_the_admin_user_for_other_auth_managers(compose: dict[str, Any], tmp_path: Path) -> None:
    env = init_env(compose, tmp_path, ANTHROPIC_API_KEY=FAKE_API_KEY, INIT_AUTH_MANAGER=SIMPLE_AUTH_MANAGER)
    result, calls = run_init_script(compose, tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [call for call in _airflow_calls(calls) if call[0] == "users"]


_PARSE_WITH_AIRFLOW = """
import json, sys
from airflow.cli.cli_parser import get_parser
parser = get_parser()
errors = {}
for argv in json.load(sys.stdin):
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        errors[" ".join(argv)] = exc.code
print("PARSE-ERRORS " + json.dumps(errors))
"""


def parse_with_airflow(argvs: list[list[str]], tmp: Path) -> dict[str, Any]:
    """Parse each argv with Airflow's own CLI parser (in a subprocess, on a throwaway home)."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if HAS_CELERY else "LocalExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER if HAS_FAB else SIMPLE_AUTH_MANAGER,
    }
    result = subprocess.run(
        [sys.executable, "-c", _PARSE_WITH_AIRFLOW],
        input=json.dumps(argvs),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    marker = [line for line in result.stdout.splitlines() if line.startswith("PARSE-ERRORS ")]
    assert marker, result.stdout + result.stderr
    return json.loads(marker[-1].removeprefix("PARSE-ERRORS "))


def _needs_provider(argv: list[str]) -> bool:
    """``celery`` and ``users`` come from the Celery and FAB providers, which the image has."""
    return argv[0] in ("celery", "users")


def _all_airflow_argvs(compose: Mapping[str, Any], init_runs: Mapping[str, Any]) -> list[list[str]]:
    """Every ``airflow`` command line the deployment runs: services, healthchecks, init calls."""
    argvs = [list(argv) for argv in COMPOSE_SERVICE_COMMANDS.values()]
    argvs.append(as_argv(services(compose)["flower"]["command"]))
    for name in ("airflow-dag-processor", "airflow-triggerer"):
        check = services(compose)[name]["healthcheck"]["test"][1].replace("${HOSTNAME}", "host")
        argvs.append(shlex.split(check)[1:])
    for mode in ("api-key", "emulator"):
        argvs.extend(_airflow_calls(init_runs[mode][1]))
    return argvs


def test_commands_are_real_airflow_subcommands(
    compose: dict[str, Any], init_runs: dict[str, Any], tmp_path: Path
) -> None:
    """Service commands, healthchecks and every init call, parsed by ``airflow``'s own parser."""
    argvs = [argv for argv in _all_airflow_argvs(compose, init_runs) if not _needs_provider(argv)]
    assert ["db", "migrate"] in argvs and ["connections", "delete", "claude_default"] in argvs
    assert parse_with_airflow(argvs, tmp_path) == {}


@pytest.mark.skipif(
    not (HAS_CELERY and HAS_FAB),
    reason="apache-airflow-providers-celery and -fab (in the official image) are not installed here",
)
def test_provider_commands_are_real_airflow_subcommands(
    compose: dict[str, Any], init_runs: dict[str, Any], tmp_path: Path
) -> None:
    argvs = [argv for argv in _all_airflow_argvs(compose, init_runs) if _needs_provider(argv)]
    assert ["celery", "worker"] in argvs
    assert parse_with_airflow(argvs, tmp_path) == {}
    assert importlib.util.find_spec("airflow.providers.celery.executors.celery_executor") is not None


# --------------------------------------------------------------------------------------------
# The emulator profile
# --------------------------------------------------------------------------------------------


def test_emulator_service_only_under_its_profile(raw_compose: dict[str, Any]) -> None:
    """A plain ``up`` must neither start the emulator nor wait for it."""
    service = services(raw_compose)[EMULATOR_SERVICE]
    assert service["profiles"] == ["emulator"]
    assert as_argv(service["command"]) == EMULATOR_COMMAND
    # Not through Airflow's entrypoint, which would prepend `airflow` and wait for the database.
    assert service["entrypoint"] == ["/usr/bin/dumb-init", "--"]
    assert service["healthcheck"]["test"] == [
        "CMD",
        "curl",
        "--fail",
        f"http://localhost:{EMULATOR_PORT}/_emulator/health",
    ]
    assert service["restart"] == "always"
    for name, other in services(raw_compose).items():
        assert EMULATOR_SERVICE not in (other.get("depends_on") or {}), f"{name} would need --profile emulator"
        if name != EMULATOR_SERVICE:
            assert "emulator" not in (other.get("profiles") or []), name


def test_emulator_command_is_the_packages_console_script() -> None:
    """``claude-batch`` is declared in pyproject and the real CLI parser accepts the arguments."""
    from airflow_provider_claude_batch.cli import build_parser

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[EMULATOR_COMMAND[0]] == "airflow_provider_claude_batch.cli:main"
    args = build_parser().parse_args(EMULATOR_COMMAND[1:])
    assert (args.command, args.host, args.port) == ("emulator", "0.0.0.0", EMULATOR_PORT)


def _free_port() -> int:
    """A port nothing listens on now (8765 itself may be taken by a developer's emulator)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[Callable[[list[str]], subprocess.Popen[bytes]]]:
    """Start a command and always stop it again, by its own PID."""
    started: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_emulator_console_script_serves_the_healthcheck_url(
    emulator_process: Callable[[list[str]], subprocess.Popen[bytes]],
) -> None:
    """The installed ``claude-batch`` runs the service's command; its healthcheck URL answers.

    Bound to 127.0.0.1 on a free port here instead of 0.0.0.0:8765, the only two changes.
    """
    script = BIN / EMULATOR_COMMAND[0]
    if not script.exists():
        pytest.skip(f"{script} not installed in this environment")
    port = _free_port()
    argv = [str(script), *EMULATOR_COMMAND[1:]]
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    process = emulator_process(argv)
    health_url = f"http://127.0.0.1:{port}/_emulator/health"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 15
    while True:
        assert process.poll() is None, f"claude-batch emulator exited with {process.returncode}"
        try:
            with opener.open(health_url, timeout=2) as response:
                assert response.status == 200
                break
        except OSError:
            assert time.monotonic() < deadline, f"{health_url} did not answer"
            time.sleep(0.1)
    process.terminate()
    assert process.wait(timeout=10) == 0, "the emulator should stop cleanly on SIGTERM (docker stop)"


# --------------------------------------------------------------------------------------------
# The image: Dockerfile, .dockerignore, and the wheel its install step builds
# --------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#") or (not line.strip() and not pending):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation line"
    return instructions


def test_dockerfile_extends_the_official_image_of_the_tested_airflow() -> None:
    """Same Airflow in the image, in the docs and in this environment (where the tests ran)."""
    installed = importlib.metadata.version("apache-airflow")
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", f"apache/airflow:{installed}")
    assert [keyword for keyword, _ in instructions].count("FROM") == 1
    for path in (COMPOSE_PATH, DOCKERFILE, ENV_EXAMPLE, DEPLOYMENT_DOC):
        versions = set(re.findall(r"apache/airflow:(\d+\.\d+\.\d+)", path.read_text()))
        assert versions <= {installed}, f"{path.name} names apache/airflow:{versions}, tests ran on {installed}"


def test_dockerfile_pins_airflow_and_installs_as_airflow() -> None:
    """The pin stops pip from changing Airflow; the airflow user is where the image installs it."""
    instructions = dockerfile_instructions()
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users and set(users) == {"airflow"}, "install and run as the airflow user, never root"
    installs = [arguments for keyword, arguments in instructions if keyword == "RUN" and "pip install" in arguments]
    assert len(installs) == 1
    assert re.search(r'pip install --no-cache-dir "apache-airflow==\$\{AIRFLOW_VERSION\}" \.(\s|$)', installs[0])
    position = instructions.index(("RUN", installs[0]))
    assert ("USER", "airflow") in instructions[:position]


_GLOB = re.compile(r"\*\*/|\*\*|\*|\?|\[[^\]]*\]|[^*?\[]+")


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (Go ``filepath.Match`` plus ``**``) as a regular expression."""
    parts = []
    for token in _GLOB.findall(pattern):
        if token == "**/":
            parts.append("(?:.*/)?")
        elif token == "**":
            parts.append(".*")
        elif token == "*":
            parts.append("[^/]*")
        elif token == "?":
            parts.append("[^/]")
        elif token.startswith("["):
            parts.append(token)
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts))


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception ``!``, compiled pattern) for each line of .dockerignore, in order."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            pattern = str(PurePosixPath(line.lstrip("!").strip().lstrip("/")))
            rules.append((negated, _glob_regex(pattern)))
    return rules


def is_ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    ignored = False
    for negated, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_the_context_to_the_package() -> None:
    """A small context builds fast and cannot leak a local .env, venv or git history into a layer."""
    rules = dockerignore_rules()
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        ".venv-airflow-3.1.8/bin/python",
        ".env",
        "artifacts/browser/page.png",
        ".pytest_cache/v/cache/nodeids",
        "tests/test_compose.py",
        "build/lib/x.py",
        "dist/x.whl",
        "airflow_provider_claude_batch.egg-info/PKG-INFO",
        "airflow_provider_claude_batch/__pycache__/cli.cpython-311.pyc",
        "airflow_provider_claude_batch/hooks/claude.pyc",
        "docs/deployment.md",
        "benchmarks/x.py",
        "dags_examples/nightly_test_generation.py",
    ):
        assert is_ignored(path, rules), f"{path} would be sent to the Docker build context"
    for path in ("pyproject.toml", "README.md", "airflow_provider_claude_batch/cli.py"):
        assert not is_ignored(path, rules), path


def replay_copies(destination: Path) -> Path:
    """Do the Dockerfile's WORKDIR/COPY steps into ``destination`` (as /), through .dockerignore.

    Returns the folder the ``pip install ... .`` step runs in.
    """
    rules = dockerignore_rules()
    workdir = PurePosixPath("/")
    install_dir: Path | None = None
    for keyword, arguments in dockerfile_instructions():
        if keyword == "WORKDIR":
            workdir = workdir / arguments.replace("${AIRFLOW_HOME}", AIRFLOW_HOME_IN_IMAGE)
        elif keyword == "COPY":
            words = [word for word in shlex.split(arguments) if not word.startswith("--")]
            *sources, target = words
            target_dir = destination / (workdir / target).relative_to("/")
            for source in sources:
                source_path = REPO / source.rstrip("/")
                assert source_path.exists(), f"COPY {source}: not in the repository"
                assert not is_ignored(source.rstrip("/"), rules), f"COPY {source}: excluded by .dockerignore"
                files = [source_path] if source_path.is_file() else sorted(source_path.rglob("*"))
                for file in files:
                    relative = file.relative_to(REPO).as_posix()
                    if not file.is_file() or is_ignored(relative, rules):
                        continue
                    inner = file.relative_to(source_path) if source_path.is_dir() else Path(file.name)
                    (target_dir / inner).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, target_dir / inner)
        elif keyword == "RUN" and "pip install" in arguments:
            install_dir = destination / workdir.relative_to("/")
    assert install_dir is not None, "no pip install step"
    return install_dir


@pytest.fixture(scope="module")
def image_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel pip builds from exactly what the Dockerfile copies into the image."""
    tmp = tmp_path_factory.mktemp("image")
    install_dir = replay_copies(tmp / "root")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp / "wheels"), str(install_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"the image's install step would fail:\n{result.stdout}{result.stderr}"
    (wheel,) = (tmp / "wheels").glob("airflow_provider_claude_batch-*.whl")
    return zipfile.ZipFile(wheel)


def test_image_installs_the_whole_package(image_wheel: zipfile.ZipFile) -> None:
    """Every module and data file of the package (templates, static assets, py.typed) is installed."""
    names = set(image_wheel.namelist())
    package = REPO / "airflow_provider_claude_batch"
    expected = {
        file.relative_to(REPO).as_posix()
        for file in package.rglob("*")
        if file.is_file() and "__pycache__" not in file.parts and file.suffix not in (".pyc", ".pyo")
    }
    assert expected - names == set(), "files of the package the image would not have"


def test_image_registers_the_entry_points(image_wheel: zipfile.ZipFile) -> None:
    """Provider info, policy and plugin entry points, and the console script, each importable."""
    (entry_points_file,) = [name for name in image_wheel.namelist() if name.endswith(".dist-info/entry_points.txt")]
    groups: dict[str, dict[str, str]] = {}
    group = ""
    for line in image_wheel.read(entry_points_file).decode().splitlines():
        line = line.strip()
        if line.startswith("["):
            group = line.strip("[]")
            groups[group] = {}
        elif "=" in line:
            name, _, value = line.partition("=")
            groups[group][name.strip()] = value.strip()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {group: dict(points) for group, points in project.get("entry-points", {}).items()}
    declared["console_scripts"] = dict(project.get("scripts", {}))
    assert "apache_airflow_provider" in declared and "claude-batch" in declared["console_scripts"]
    for group in ("apache_airflow_provider", "airflow.policy", "airflow.plugins", "console_scripts"):
        if group in declared:
            assert groups.get(group) == declared[group], f"entry point group {group}"
    names = set(image_wheel.namelist())
    for points in groups.values():
        for value in points.values():
            module = value.split(":")[0].strip()
            as_path = module.replace(".", "/")
            assert f"{as_path}.py" in names or f"{as_path}/__init__.py" in names, f"{value} is not in the image"


# --------------------------------------------------------------------------------------------
# The deployment guide
# --------------------------------------------------------------------------------------------


def test_deployment_doc_commands_name_real_services_and_profiles(raw_compose: dict[str, Any]) -> None:
    """Copy-pasted commands from the guide must work against this compose file."""
    text = DEPLOYMENT_DOC.read_text()
    profiles = {profile for service in services(raw_compose).values() for profile in service.get("profiles") or []}
    scaled = re.findall(r"--scale ([\w-]+)=\d+", text)
    assert {"airflow-worker", "airflow-triggerer"} <= set(scaled)
    assert set(scaled) <= set(services(raw_compose))
    assert set(re.findall(r"--profile ([\w-]+)", text)) <= profiles
    assert "--profile emulator" in text and f"CLAUDE_BASE_URL={EMULATOR_URL}" in text
    assert f"$AIRFLOW_HOME/{SHARED_DATA_DIRS[0]}" in text
    assert set(re.findall(r"docker compose -f ([\w./-]+)", text)) == {COMPOSE_FILE}


# --------------------------------------------------------------------------------------------
# The init script against a real Airflow: started with the module, checked last, so its
# ten-odd seconds of Airflow CLI start-ups overlap the other tests.
# --------------------------------------------------------------------------------------------

STALE_CONNECTION_SQL = (
    "INSERT INTO connection (conn_id, conn_type, host, password, is_encrypted, is_extra_encrypted) "
    f"VALUES ('claude_default', 'claude', '{EMULATOR_URL}', 'stale', 0, 0);"
)


@pytest.fixture(scope="module", autouse=True)
def real_init_run(
    compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[InitRun, Path, dict[str, str]]]:
    """airflow-init's script on a SQLite Airflow, with a real key, started in the background.

    Right after the migration the database gets a stale ``claude_default`` (pointing at the
    emulator), as a re-run after switching from the emulator to a real key would find it.
    """
    tmp = tmp_path_factory.mktemp("init-real")
    database = tmp / "home" / "airflow.db"
    env = init_env(
        compose,
        tmp,
        ANTHROPIC_API_KEY=FAKE_API_KEY,
        CLAUDE_BASE_URL="",
        INIT_SEED_DB=str(database),
        INIT_SEED_SQL=STALE_CONNECTION_SQL,
        # What the image has and this machine may not: Postgres, the Celery and FAB providers.
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{database}",
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor" if HAS_CELERY else "LocalExecutor",
        AIRFLOW__CORE__AUTH_MANAGER=FAB_AUTH_MANAGER if HAS_FAB else SIMPLE_AUTH_MANAGER,
        AIRFLOW__CORE__DAGS_FOLDER=str(tmp / "dags"),
    )
    run = start_init_script(compose, tmp, env, real=True)
    yield run, tmp, env
    run.stop()


def test_init_script_for_real_stores_the_key_encrypted(
    real_init_run: tuple[InitRun, Path, dict[str, str]],
) -> None:
    """The key lands encrypted with the Fernet key, the stale row is replaced, nothing is printed."""
    from cryptography.fernet import Fernet

    run, tmp, env = real_init_run
    result, calls = run.result()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert FAKE_API_KEY not in output
    assert "airflow-provider-claude-batch" in result.stdout  # `providers get` found the package
    assert _airflow_calls(calls)[0] == ["db", "migrate"]
    with sqlite3.connect(tmp / "home" / "airflow.db") as db:
        rows = db.execute(
            "SELECT conn_type, host, password, is_encrypted FROM connection WHERE conn_id = 'claude_default'"
        ).fetchall()
    assert len(rows) == 1
    conn_type, host, password, is_encrypted = rows[0]
    assert (conn_type, host, is_encrypted) == ("claude", None, 1)
    assert FAKE_API_KEY not in password
    fernet = Fernet(env["AIRFLOW__CORE__FERNET_KEY"].encode())
    assert fernet.decrypt(password.encode()).decode() == FAKE_API_KEY
    for folder in (*SHARED_DATA_DIRS, "logs"):
        assert (tmp / "home" / folder).is_dir()
