"""A real Airflow on a temporary ``AIRFLOW_HOME``: the four components as subprocesses, SQLite, the emulator.

:class:`AirflowHarness` starts the local Anthropic API emulator (``claude-batch emulator``) and the
Airflow components the docker-compose deployment runs (the same subcommands, read from
:mod:`airflow_provider_claude_batch.testing.deployment`): ``db migrate``, then ``api-server``,
``scheduler``, ``dag-processor`` and ``triggerer``. Each runs in its own process group with its
output in ``<home>/component-logs/<name>.log``. Every wait is bounded, and :meth:`AirflowHarness.stop`
always runs (``__exit__``, the pytest finalizer and ``atexit``): SIGTERM to every process group and
every descendant by PID, then SIGKILL to whatever is left after a grace period.

The worker capacity is one slot (``[core] parallelism = 1``), so a test can show that a deferred
batch task gives its slot back: two such tasks can only be ``deferred`` at the same time if the
first one released the only slot.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
from cryptography.fernet import Fernet
from fleet import batch_dag_source
from processes import HarnessError, console_script, free_port, kill_tree, signal_tree, tail, terminate
from rest import RestCalls

from airflow_provider_claude_batch.testing.deployment import COMPOSE_SERVICE_COMMANDS
from airflow_provider_claude_batch.testing.emulator import EmulatorClient

__all__ = ["AirflowHarness", "HarnessError", "batch_dag_source", "free_port"]

T = TypeVar("T")

ADMIN_USER = "admin"
ADMIN_PASSWORD = "e2e-admin-password"
# The compose service each native component stands for (the harness runs what the compose file runs).
COMPONENT_SERVICES = {
    "api-server": "airflow-apiserver",
    "scheduler": "airflow-scheduler",
    "dag-processor": "airflow-dag-processor",
    "triggerer": "airflow-triggerer",
}


class AirflowHarness(RestCalls):
    """Real Airflow components on a temporary home, with the emulator standing in for the API.

    Use as a context manager, or call :meth:`start` and (always) :meth:`stop`. A subclass runs
    another topology by overriding the ``components`` mapping and the hooks
    :meth:`_start_backing_services`, :meth:`_deployment_settings`, :meth:`_initialise_database`,
    :meth:`_component_args`, :meth:`_component_env`, :meth:`_after_healthy` and
    :meth:`_stop_backing_services`.

    :param home: an empty folder to use as ``AIRFLOW_HOME`` (SQLite database, logs, results).
    :param dags: DAG files to write into ``<home>/dags``: file name -> source.
    :param api_key: the key of the ``claude_default`` connection (the emulator accepts only it).
    :param emulator_config: ``EmulatorConfig`` fields for the emulator (e.g. ``processing_seconds``).
    :param startup_timeout: seconds allowed for the migration plus all components to be healthy.
    :param extra_env: more environment for every Airflow process (overrides the harness's own).
    :param copy_into_dags: files and folders copied into ``<home>/dags`` as they are (e.g. the example
        DAGs and their data); each ``.py`` file copied is a DAG the start waits for (id = file name).
    """

    #: Component name -> the compose service whose command it runs (one process each).
    components: Mapping[str, str] = COMPONENT_SERVICES
    #: The parts of ``/api/v2/monitor/health`` that must be healthy before the harness is started.
    health_parts: tuple[str, ...] = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    admin_user = ADMIN_USER
    admin_password = ADMIN_PASSWORD

    def __init__(
        self,
        home: Path,
        dags: Mapping[str, str],
        *,
        api_key: str,
        emulator_config: Mapping[str, Any] | None = None,
        startup_timeout: float = 180.0,
        extra_env: Mapping[str, str] | None = None,
        copy_into_dags: Iterable[Path] = (),
    ) -> None:
        self.home = Path(home)
        self.dags = dict(dags)
        self.api_key = api_key
        self.emulator_config = dict(emulator_config or {})
        self.startup_timeout = startup_timeout
        self.extra_env = dict(extra_env or {})
        self.copy_into_dags = [Path(path) for path in copy_into_dags]
        self.component_logs = self.home / "component-logs"
        # The emulator prints its key on start-up, so its log lives outside the home that tests scan.
        self.emulator_log = self.home.parent / f"{self.home.name}-emulator.log"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._retired: list[subprocess.Popen[bytes]] = []
        self._known_pids: set[int] = set()
        self.api_port = 0
        self.api_url = ""
        self.emulator_url = ""
        self.emulator: EmulatorClient | None = None
        self._emulator_process: subprocess.Popen[bytes] | None = None
        self._token: str | None = None
        self._http: httpx.Client | None = None
        self._stopped = False

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> AirflowHarness:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> AirflowHarness:
        """Emulator, migration, the four components; returns once they are healthy and logged in."""
        atexit.register(self.stop)  # a Ctrl-C'd test session must not leave Airflow running
        try:
            deadline = time.monotonic() + self.startup_timeout
            self._prepare_home()
            self._start_emulator()
            self._start_backing_services()
            self.env = self._environment()
            self._initialise_database(timeout=max(deadline - time.monotonic(), 30))
            for name in self.components:
                self.start_component(name)
            self._http = httpx.Client(base_url=self.api_url, timeout=30, trust_env=False)
            self.wait_for(self._healthy, timeout=max(deadline - time.monotonic(), 10), what="all components healthy")
            self._after_healthy()
            self._token = self.fetch_token()
            for dag_id in self._dag_ids():
                self.wait_for_dag(dag_id, timeout=max(deadline - time.monotonic(), 30))
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare_home(self) -> None:
        (self.home / "dags").mkdir(parents=True, exist_ok=True)
        self.component_logs.mkdir(parents=True, exist_ok=True)
        for name, source in self.dags.items():
            (self.home / "dags" / name).write_text(source)
        for path in self.copy_into_dags:
            target = self.home / "dags" / path.name
            if path.is_dir():
                shutil.copytree(path, target)
            else:
                shutil.copyfile(path, target)
        # SimpleAuthManager keeps passwords it finds in its file, so the admin password is known.
        (self.home / "simple_auth_manager_passwords.json").write_text(
            json.dumps({self.admin_user: self.admin_password})
        )

    def _start_emulator(self) -> None:
        command = [console_script("claude-batch"), "emulator", "--port", "0", "--api-key", self.api_key]
        with self.emulator_log.open("wb") as log:
            self._emulator_process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self._remember(self._emulator_process)

        def announced_url() -> str | None:
            if self._emulator_process is not None and self._emulator_process.poll() is not None:
                raise HarnessError(f"the emulator exited early:\n{tail(self.emulator_log)}")
            for line in self.emulator_log.read_text(errors="replace").splitlines():
                if "listening on " in line:
                    return line.split("listening on ", 1)[1].strip()
            return None

        self.emulator_url = self.wait_for(announced_url, timeout=30, what="the emulator to listen")
        self.emulator = EmulatorClient(self.emulator_url)
        self.emulator.wait_until_ready()
        if self.emulator_config:
            self.emulator.configure(**self.emulator_config)

    def _environment(self) -> dict[str, str]:
        """Every Airflow process's environment: the deployment's settings, then what runs it here."""
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        # Nothing of the developer's (or the unit tests') Airflow settings may leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ANTHROPIC_"))}
        env.update({"AIRFLOW_HOME": str(self.home), "PYTHONUNBUFFERED": "1"})
        env.update(self._deployment_settings())
        env.update(self._native_settings())
        env.update(self._time_scaling_settings())
        env.update(self.extra_env)
        return env

    def _deployment_settings(self) -> dict[str, str]:
        """What the deployment under test configures: here SQLite, the LocalExecutor, one slot."""
        return {
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.home / "dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # One worker slot: two tasks deferred at once proves a deferred task frees its slot.
            "AIRFLOW__CORE__PARALLELISM": "1",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.admin_user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "simple_auth_manager_passwords.json"),
            # Every component must sign and check the same tokens.
            "AIRFLOW__API_AUTH__JWT_SECRET": Fernet.generate_key().decode(),
            "AIRFLOW__API__SECRET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW_CONN_CLAUDE_DEFAULT": json.dumps(
                {"conn_type": "claude", "password": self.api_key, "host": self.emulator_url}
            ),
        }

    def _native_settings(self) -> dict[str, str]:
        """What running every component on one machine needs: loopback, and no fixed port."""
        return {
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": f"{self.api_url}/",
            "AIRFLOW__API__WORKERS": "1",
            # Other harnesses (other engineers, CI) may run on this machine: no fixed ports.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }

    def _time_scaling_settings(self) -> dict[str, str]:
        """Intervals shortened so a test sees in seconds what takes minutes with the defaults."""
        return {
            # Parse the test DAGs within seconds, with one parsing process (2 cores).
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "10",
            # A SIGKILLed triggerer leaves no end date; its triggers move once it looks dead.
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
            "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5",
        }

    def _start_backing_services(self) -> None:
        """Start the database and broker the deployment needs (SQLite needs nothing)."""

    def _stop_backing_services(self) -> None:
        """Stop what :meth:`_start_backing_services` started."""

    def _initialise_database(self, timeout: float) -> None:
        """Bring the metadata database to the current schema (``airflow db migrate``)."""
        self._run_airflow(list(COMPOSE_SERVICE_COMMANDS["airflow-init"]), "db-migrate", timeout=timeout)

    def _after_healthy(self) -> None:
        """Checks that need every component up (none here)."""

    def _spawn_airflow(
        self, args: list[str], log_path: Path, mode: str, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``airflow <args>`` logging to ``log_path``, remembered for teardown."""
        with log_path.open(mode) as log:
            process = subprocess.Popen(
                [console_script("airflow"), *args],
                env=dict(env if env is not None else self.env),
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, so it and its children stop together
            )
        self._remember(process)
        return process

    def _run_airflow(self, args: list[str], log_name: str, timeout: float) -> None:
        log_path = self.component_logs / f"{log_name}.log"
        process = self._spawn_airflow(args, log_path, "wb")
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as error:
            terminate([process], grace=5)
            raise HarnessError(
                f"airflow {' '.join(args)} did not finish in {timeout:.0f}s:\n{tail(log_path)}"
            ) from error
        if code != 0:
            raise HarnessError(f"airflow {' '.join(args)} exited {code}:\n{tail(log_path)}")

    def start_component(self, name: str) -> subprocess.Popen[bytes]:
        """Start one component, a key of ``components`` (``api-server``, ``scheduler``, ...).

        :param name: the component; a second start of the same name appends to its log.
        """
        process = self._spawn_airflow(
            self._component_args(name), self.component_logs / f"{name}.log", "ab", env=self._component_env(name)
        )
        self.processes[name] = process
        return process

    def _component_args(self, name: str) -> list[str]:
        """The ``airflow`` arguments of a component: its compose service's command, bound to loopback."""
        args = list(COMPOSE_SERVICE_COMMANDS[self.components[name]])
        if self.components[name] == "airflow-apiserver":
            args += ["--host", "127.0.0.1", "--port", str(self.api_port)]
        return args

    def _component_env(self, name: str) -> Mapping[str, str]:
        """The environment of one component (every component shares ``env`` here)."""
        return self.env

    def kill_component(self, name: str) -> None:
        """SIGKILL a component's whole process group and its descendants: a crash, no clean shutdown.

        :param name: the component to kill.
        """
        process = self.processes.pop(name)
        kill_tree(process)
        self._retired.append(process)

    def freeze_component(self, name: str, frozen: bool = True) -> None:
        """SIGSTOP (``frozen``) or SIGCONT a component's process tree: a long stall, then it carries on.

        :param name: the component.
        :param frozen: stop it (True) or let it continue (False).
        """
        signal_tree(self.processes[name], signal.SIGSTOP if frozen else signal.SIGCONT)

    def stop(self, grace: float = 15.0) -> None:
        """Stop everything this harness started, by PID; safe to call more than once.

        :param grace: seconds between SIGTERM and SIGKILL.
        """
        if self._stopped:
            return
        self._stopped = True
        if self._http is not None:
            self._http.close()
        processes = [*self.processes.values(), *self._retired]
        if self._emulator_process is not None:
            processes.append(self._emulator_process)
        terminate(processes, grace=grace, also=self._known_pids)
        self.processes.clear()
        self._stop_backing_services()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def _remember(self, process: subprocess.Popen[bytes]) -> None:
        self._known_pids.add(process.pid)

    # -- start-up checks -------------------------------------------------------------------

    def _healthy(self) -> bool:
        process_failures = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if process_failures:
            raise HarnessError(f"components exited during start-up: {process_failures}\n{self.log_tails()}")
        try:
            body = self.http.get("/api/v2/monitor/health").json()
        except (httpx.HTTPError, ValueError):
            return False
        return all((body.get(part) or {}).get("status") == "healthy" for part in self.health_parts)

    def _dag_ids(self) -> list[str]:
        copied = [path.stem for path in self.copy_into_dags if path.suffix == ".py"]
        return [Path(name).stem for name in self.dags] + copied

    # -- waiting and diagnostics ---------------------------------------------------------------

    def wait_for(self, probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.5) -> T:
        """Call ``probe`` until it returns something truthy (returned), for at most ``timeout`` seconds.

        :param probe: returns a falsy value to keep waiting; may raise to fail at once.
        :param timeout: seconds before giving up with a :class:`HarnessError` carrying log tails.
        :param what: what is awaited, for the error message.
        :param interval: seconds between two probes.
        """
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            try:
                value = probe()
                if value:
                    return value
            except HarnessError:
                raise
            except (httpx.HTTPError, OSError, ValueError, KeyError) as error:
                last_error = error  # a component restarting, a half-written file: try again
            if time.monotonic() >= deadline:
                extra = f" (last error: {last_error!r})" if last_error else ""
                raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}{extra}\n{self.log_tails()}")
            time.sleep(interval)

    def log_tails(self, lines: int = 25) -> str:
        """The last lines of every component's log, for failure messages."""
        parts = []
        for path in sorted(self.component_logs.glob("*.log")):
            parts.append(f"--- {path.name} ---\n{tail(path, lines)}")
        return "\n".join(parts)

    def files_containing(self, needle: str) -> list[Path]:
        """Every file under the home whose bytes contain ``needle`` (a leak check)."""
        raw = needle.encode()
        hits = []
        for path in self.home.rglob("*"):
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    if raw in path.read_bytes():
                        hits.append(path)
        return hits

    def results_rows(self, manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The landed ``results.jsonl`` rows a manifest points at (a ``file://`` URI)."""
        uri = str(manifest["results_uri"])
        path = Path(uri.removeprefix("file://")) if uri.startswith("file://") else Path(uri)
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
