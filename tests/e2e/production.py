"""The production topology of ``docker-compose.airflow.yml``, run natively: PostgreSQL, Redis, Celery.

:class:`ProductionHarness` is :class:`~harness.AirflowHarness` with the compose file's deployment
instead of SQLite and the LocalExecutor:

- a private PostgreSQL and a private Redis from Debian's packages (``backing.py``), on free loopback
  ports, set up from the ``postgres`` service's environment;
- every ``AIRFLOW__*`` setting from the compose file, with ``docker compose``'s interpolation and the
  values of a filled-in ``.env`` (fresh secrets, the API key, ``CLAUDE_BASE_URL`` of the emulator
  profile), host names and ``/opt/airflow`` rewritten for this machine (``topology.py``); each one is
  first tried with Airflow itself (``compose_preflight.py``), so a wrong one fails naming it;
- ``airflow-init``'s own script, run for real against PostgreSQL (the image's entrypoint replaced
  by a shim that runs the command): migration, provider check, the FAB admin user, ``claude_default``;
- one process per container: api-server, scheduler, dag-processor, two triggerers and two Celery
  workers, each with its compose service's command and environment;
- each service's compose healthcheck, run natively once everything is up.

What differs from the containers, because all processes share one machine: every listening port is
a free one (the api-server's ``--host/--port``, the log servers, the scheduler's health server), the
Celery workers get distinct node names (``--celery-hostname``; in containers the host names differ),
and the DAGs folder holds the test's DAGs instead of the mounted ``dags_examples``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from backing import POSTGRES_PACKAGE, REDIS_PACKAGE, PostgresServer, RedisServer, ensure_packages
from compose_file import COMPOSE_PATH, init_script, interpolate_tree, load_compose, services
from cryptography.fernet import Fernet
from harness import AirflowHarness
from processes import HarnessError, free_port, tail
from topology import (
    ComposeSettingError,
    NativeHealthcheck,
    NativeNetwork,
    airflow_settings,
    native_environment,
    native_healthcheck,
    setting_problem,
)

from airflow_provider_claude_batch.testing.deployment import EMULATOR_PORT, EMULATOR_SERVICE

__all__ = ["PRODUCTION_COMPONENTS", "ProductionHarness"]

#: One process per container, as ``--scale airflow-triggerer=2 --scale airflow-worker=2`` runs them.
PRODUCTION_COMPONENTS = {
    "api-server": "airflow-apiserver",
    "scheduler": "airflow-scheduler",
    "dag-processor": "airflow-dag-processor",
    "triggerer-1": "airflow-triggerer",
    "triggerer-2": "airflow-triggerer",
    "worker-1": "airflow-worker",
    "worker-2": "airflow-worker",
}
COMMON_SERVICE = "airflow-scheduler"  # a service with only the common environment (x-airflow-common)
COMMON_ANCHOR = "x-airflow-common"
HEALTHCHECK_TIMEOUT_SECONDS = 90
# The image's /entrypoint waits for the database, then runs its arguments; here the database already answers.
ENTRYPOINT_SHIM = '#!/bin/sh\nexec "$@"\n'
# airflow-init runs as root in the image; without root, `chown UID:0` is not permitted here.
CHOWN_SHIM = "#!/bin/sh\n# Not root: the shared folders are already this user's.\nexit 0\n"


class ProductionHarness(AirflowHarness):
    """The compose deployment's components on PostgreSQL and Redis, with the CeleryExecutor.

    Takes :class:`~harness.AirflowHarness`'s parameters, and:

    :param compose_path: the compose file whose settings run (a deliberately broken copy in tests).
    :param connection_extra: extras of ``claude_default`` (``CLAUDE_CONNECTION_EXTRA`` in ``.env``).
    """

    components = PRODUCTION_COMPONENTS
    health_parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    admin_user = "airflow"  # _AIRFLOW_WWW_USER_USERNAME's default in the compose file

    def __init__(
        self,
        home: Path,
        dags: Mapping[str, str],
        *,
        compose_path: Path = COMPOSE_PATH,
        connection_extra: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(home, dags, **kwargs)
        self.compose_path = compose_path
        self.connection_extra = dict(connection_extra or {})
        self.admin_password = secrets.token_urlsafe(16)
        self.network = NativeNetwork(self.home)
        self._backing_root = Path(tempfile.mkdtemp(prefix=f"{self.home.parent.name}-services-"))
        self._backing_root.chmod(0o711)  # PostgreSQL's own user must reach its folder inside
        self.postgres: PostgresServer | None = None
        self.redis: RedisServer | None = None
        self.hostname = ""
        #: Triggerer component -> the id of the TriggererJob it runs (triggers are assigned by job id).
        self.job_ids: dict[str, int] = {}
        self._component_ports: dict[str, dict[str, str]] = {}
        self.document = interpolate_tree(load_compose(self.compose_path), self._dotenv())

    def _dotenv(self) -> dict[str, str]:
        """What a user puts in ``.env`` (docker/.env.example): fresh secrets, the key, the emulator profile."""
        return {
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "_AIRFLOW_WWW_USER_PASSWORD": self.admin_password,
            "AIRFLOW_UID": str(os.getuid()),
            "ANTHROPIC_API_KEY": self.api_key,
            "CLAUDE_BASE_URL": f"http://{EMULATOR_SERVICE}:{EMULATOR_PORT}",
            "CLAUDE_CONNECTION_EXTRA": json.dumps(self.connection_extra) if self.connection_extra else "",
        }

    # -- services and settings -------------------------------------------------------------

    def _start_backing_services(self) -> None:
        ensure_packages((POSTGRES_PACKAGE, REDIS_PACKAGE), log=self._backing_root / "apt.log")
        self.network.bind(EMULATOR_SERVICE, int(self.emulator_url.rsplit(":", 1)[1]))
        postgres_env = services(self.document)["postgres"]["environment"]
        self.postgres = PostgresServer(self._backing_root / "postgres", postgres_env)
        self.redis = RedisServer(self._backing_root / "redis")
        self.network.bind("postgres", self.postgres.port)
        self.network.bind("redis", self.redis.port)
        self.postgres.start(native_healthcheck(self.document, "postgres", self.network).argv or [])
        self.redis.start(native_healthcheck(self.document, "redis", self.network).argv or [])

    def _stop_backing_services(self) -> None:
        for server in (self.redis, self.postgres):
            if server is not None:
                server.stop()
        shutil.rmtree(self._backing_root, ignore_errors=True)

    def log_tails(self, lines: int = 25) -> str:
        backing = [f"--- {path.parent.name}/{path.name} ---\n{tail(path, lines)}" for path in self.backing_logs]
        return "\n".join([super().log_tails(lines), *backing])

    @property
    def backing_logs(self) -> list[Path]:
        """The PostgreSQL and Redis server logs (outside the home; stopped servers delete theirs)."""
        return [server.log for server in (self.postgres, self.redis) if server is not None and server.log.exists()]

    def _deployment_settings(self) -> dict[str, str]:
        self.network.bind("airflow-apiserver", self.api_port)
        return airflow_settings(native_environment(self.document, COMMON_SERVICE, self.network, where=COMMON_ANCHOR))

    def _native_settings(self) -> dict[str, str]:
        settings = super()._native_settings()
        self.network.bind("airflow-scheduler", int(settings["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"]))
        return settings

    def _time_scaling_settings(self) -> dict[str, str]:
        return {
            **super()._time_scaling_settings(),
            # The DAG files never change during a test: re-parsing them every 10 s only costs CPU.
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
            # A SIGKILLed worker's task is declared dead (and retried) after this long without a heartbeat.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            # A SIGKILLed scheduler's queued tasks are adopted by the next one this soon.
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "15",
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "15",
        }

    def _environment(self) -> dict[str, str]:
        env = super()._environment()
        compose = self._deployment_settings()
        overridden = sorted(name for name, value in compose.items() if env.get(name) != value)
        if overridden:
            raise HarnessError(f"the harness would override settings of {self.compose_path.name}: {overridden}")
        self._preflight(env, list(compose))
        return env

    def _preflight(self, env: Mapping[str, str], names: list[str]) -> None:
        """Every compose setting tried with Airflow itself; a wrong one fails here, named."""
        script = Path(__file__).with_name("compose_preflight.py")
        result = subprocess.run(
            [sys.executable, str(script)],
            input=json.dumps(names),
            env=dict(env),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        marker = [line for line in result.stdout.splitlines() if line.startswith("PREFLIGHT ")]
        if not marker:
            raise HarnessError(f"the settings check did not run (exit {result.returncode}):\n{result.stderr[-4000:]}")
        report = json.loads(marker[-1].removeprefix("PREFLIGHT "))
        if report["problems"]:
            lines = [
                str(setting_problem(COMMON_ANCHOR, name, env[name], problem))
                for name, problem in report["problems"].items()
            ]
            raise ComposeSettingError("\n".join(lines))
        self.hostname = report["hostname"]

    # -- airflow-init ------------------------------------------------------------------------

    def _initialise_database(self, timeout: float) -> None:
        """``airflow-init``'s script from the compose file, for real, with a native ``/entrypoint``."""
        bin_dir = self._backing_root / "bin"
        bin_dir.mkdir(exist_ok=True)
        shims = {"entrypoint": ENTRYPOINT_SHIM, **({"chown": CHOWN_SHIM} if os.geteuid() != 0 else {})}
        for name, source in shims.items():
            (bin_dir / name).write_text(source)
            (bin_dir / name).chmod(0o755)
        script = init_script(self.document).replace("/entrypoint ", f"{bin_dir / 'entrypoint'} ")
        env = {
            **{k: v for k, v in self.env.items() if not k.startswith("AIRFLOW__")},
            **native_environment(self.document, "airflow-init", self.network),
            "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
        log_path = self.component_logs / "airflow-init.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                ["bash", "-c", script],
                env=env,
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._remember(process)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise HarnessError(f"airflow-init did not finish in {timeout:.0f}s:\n{self.log_tails()}") from error
        if code != 0:
            raise HarnessError(f"airflow-init exited {code}:\n{log_path.read_text(errors='replace')[-6000:]}")

    # -- components --------------------------------------------------------------------------

    def _component_args(self, name: str) -> list[str]:
        args = super()._component_args(name)
        if self.components[name] == "airflow-worker":
            args += ["--celery-hostname", name]  # in containers, each worker's host name differs
        return args

    def _component_env(self, name: str) -> Mapping[str, str]:
        # Two instances of a service on one machine cannot share their log server's port.
        ports = self._component_ports.setdefault(
            name,
            {
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            },
        )
        service_env = native_environment(self.document, self.components[name], self.network)
        return {**self.env, **service_env, **ports}

    def start_component(self, name: str) -> subprocess.Popen[bytes]:
        known = set(self._triggerer_jobs()) if self.components[name] == "airflow-triggerer" else set()
        process = super().start_component(name)
        if self.components[name] == "airflow-triggerer":
            # Started one at a time, so each TriggererJob row is known to belong to one process.
            self.job_ids[name] = self.wait_for(
                lambda: next((job for job in self._triggerer_jobs() if job not in known), None),
                timeout=120,
                what=f"{name} to register its TriggererJob",
            )
        return process

    def _triggerer_jobs(self) -> list[int]:
        """Ids of the running TriggererJobs."""
        rows = self.query("SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running' ORDER BY id")
        return [int(row[0]) for row in rows]

    def query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the metadata database (PostgreSQL), for what the REST API omits."""
        import psycopg2

        if self.postgres is None:
            raise HarnessError("PostgreSQL is not started")
        connection = psycopg2.connect(
            host="127.0.0.1",
            port=self.postgres.port,
            user=self.postgres.user,
            password=self.postgres.password,
            dbname=self.postgres.database,
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, parameters)
                return list(cursor.fetchall())
        finally:
            connection.close()

    # -- after start-up ------------------------------------------------------------------------

    def _after_healthy(self) -> None:
        """The Execution API answers where the setting says, and every compose healthcheck passes."""
        url = self.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
        health = f"{url.rstrip('/')}/health"
        deadline = time.monotonic() + HEALTHCHECK_TIMEOUT_SECONDS
        while True:  # an answer other than 200 is final; no answer yet (a busy api-server) is retried
            try:
                status: int | str = httpx.get(health, timeout=10, trust_env=False).status_code
            except httpx.HTTPError as error:
                status = f"{type(error).__name__}: {error}"
            if status == 200:
                break
            if isinstance(status, int) or time.monotonic() > deadline:
                raise setting_problem(
                    COMMON_ANCHOR,
                    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                    url,
                    f"workers reach the Execution API there, and GET {health} answered {status}",
                )
            time.sleep(2)
        for name, service in self.components.items():
            check = native_healthcheck(self.document, service, self.network)
            self.wait_for(
                lambda check=check, name=name: self._passes(check, name),
                timeout=HEALTHCHECK_TIMEOUT_SECONDS,
                what=f"the compose healthcheck of {service} ({name})",
                interval=2,
            )

    def _passes(self, check: NativeHealthcheck, name: str) -> bool:
        if check.url is not None:
            return httpx.get(check.url, timeout=10, trust_env=False).status_code < 400
        # $HOSTNAME is the container's host name: Airflow's name of this machine, or the worker's node name.
        hostname = name if self.components[name] == "airflow-worker" else self.hostname
        env = {
            **self._component_env(name),
            "HOSTNAME": hostname,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
        argv = ["bash", "-c", check.shell] if check.shell is not None else list(check.argv or [])
        result = subprocess.run(argv, env=env, cwd=self.home, capture_output=True, timeout=120, check=False)
        return result.returncode == 0
