"""Private PostgreSQL and Redis servers from Debian's packages, for the production-topology harness.

Each server runs as its own process on a free loopback port with its data in a temporary folder,
configured the way the compose file's images are (the PostgreSQL superuser, password and database
of the ``postgres`` service's environment), and is stopped and deleted afterwards. Readiness is
the compose file's own healthcheck (``pg_isready``, ``redis-cli ping``), run natively.

The servers come from Debian's ``postgresql`` and ``redis-server`` packages. When one is missing
the harness installs it if it runs as root, and otherwise raises :class:`MissingPackage`, whose
message names the package, so a test can skip saying exactly what it could not run and why.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from processes import HarnessError, free_port, tail, terminate

POSTGRES_PACKAGE = "postgresql"
REDIS_PACKAGE = "redis-server"
# PostgreSQL refuses to run as root; Debian's package creates this user for its servers.
POSTGRES_SYSTEM_USER = "postgres"


class MissingPackage(Exception):
    """A Debian package the production topology needs is not installed, and cannot be installed here."""


def _postgres_bin() -> Path | None:
    """The newest PostgreSQL server's binaries (``/usr/lib/postgresql/<major>/bin``), if installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _redis_bin() -> Path | None:
    found = shutil.which("redis-server", path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/bin")
    return Path(found).parent if found else None


_FINDERS: dict[str, Callable[[], Path | None]] = {POSTGRES_PACKAGE: _postgres_bin, REDIS_PACKAGE: _redis_bin}


def ensure_packages(packages: tuple[str, ...] = (POSTGRES_PACKAGE, REDIS_PACKAGE), log: Path | None = None) -> None:
    """Install the missing ones of ``packages`` with apt-get when root; else raise :class:`MissingPackage`.

    :param packages: Debian package names (keys of the known servers).
    :param log: where apt-get's output goes (its tail is in the error if it fails).
    """
    missing = [name for name in packages if _FINDERS[name]() is None]
    if not missing:
        return
    names = " ".join(missing)
    if os.geteuid() != 0:
        raise MissingPackage(
            f"the production-topology test needs the Debian package(s) {names}, which are not installed, and it "
            f"is not running as root, so it cannot install them: run `sudo apt-get install -y {names}`"
        )
    log = log or Path(tempfile.gettempdir()) / "claude-batch-apt.log"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log.open("ab") as out:
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
            if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, check=False).returncode:
                raise MissingPackage(f"`{' '.join(command)}` failed installing {names}:\n{tail(log)}")
    still = [name for name in missing if _FINDERS[name]() is None]
    if still:
        raise MissingPackage(f"apt-get installed {names} but the servers of {' '.join(still)} are not there")


@dataclass
class _Server:
    """One server process on a free loopback port, its data and log in ``root``."""

    root: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def _spawn(self, argv: list[str], user: str | None = None) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, user=user
            )

    def _wait_ready(self, check: list[str], binaries: Path, what: str, timeout: float = 60) -> None:
        """Until ``check`` (the compose healthcheck, run natively) succeeds; its program is in ``binaries``."""
        if not Path(check[0]).is_absolute() and (binaries / check[0]).exists():
            check = [str(binaries / check[0]), *check[1:]]
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise HarnessError(f"{what} exited with {self.process.returncode}:\n{tail(self.log)}")
            if subprocess.run(check, capture_output=True, check=False).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"{what} did not pass `{' '.join(check)}` in {timeout:.0f}s:\n{tail(self.log)}")
            time.sleep(0.3)

    def stop(self, grace: float = 20) -> None:
        """Stop the server (its own process group) and delete its data."""
        if self.process is not None:
            terminate([self.process], grace=grace)
        shutil.rmtree(self.root, ignore_errors=True)


class PostgresServer(_Server):
    """A private PostgreSQL cluster, set up as the ``postgres`` image does from its environment.

    :param root: an empty folder for the cluster (readable by the server's user).
    :param environment: the compose service's ``POSTGRES_USER``, ``POSTGRES_PASSWORD``, ``POSTGRES_DB``.
    """

    def __init__(self, root: Path, environment: Mapping[str, str]) -> None:
        super().__init__(root)
        self.user = environment["POSTGRES_USER"]
        self.password = environment["POSTGRES_PASSWORD"]
        self.database = environment.get("POSTGRES_DB", self.user)

    def start(self, ready_check: list[str]) -> None:
        """Create the cluster, start the server, wait for ``ready_check``, create the database.

        :param ready_check: the compose service's healthcheck command, aimed at this server.
        """
        binaries = _postgres_bin()
        if binaries is None:
            raise MissingPackage(f"the Debian package {POSTGRES_PACKAGE} is not installed")
        run_as = POSTGRES_SYSTEM_USER if os.geteuid() == 0 else None
        self.root.mkdir(parents=True, exist_ok=True)
        password_file = self.root / "password"
        password_file.write_text(self.password)
        if run_as is not None:
            account = pwd.getpwnam(run_as)
            for path in (self.root, password_file):
                os.chown(path, account.pw_uid, account.pw_gid)
        data = self.root / "data"
        initdb = [
            str(binaries / "initdb"),
            f"--pgdata={data}",
            f"--username={self.user}",
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        ]
        with self.log.open("ab") as out:
            result = subprocess.run(initdb, stdout=out, stderr=subprocess.STDOUT, user=run_as, check=False)
        if result.returncode:
            raise HarnessError(f"initdb exited {result.returncode}:\n{tail(self.log)}")
        password_file.unlink()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            # Airflow's processes each keep a pool; the default 100 is tight for ten components.
            "max_connections": "300",
            # A throwaway cluster: durability costs time and buys nothing here.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        argv = [str(binaries / "postgres"), "-D", str(data)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        self._spawn(argv, user=run_as)
        self._wait_ready(ready_check, binaries, "PostgreSQL")
        self._create_database()

    def _create_database(self) -> None:
        """The image's ``POSTGRES_DB``: created by its superuser, as the image's entrypoint does."""
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname="postgres"
        )
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            connection.close()


class RedisServer(_Server):
    """A private Redis without persistence (the compose file's broker keeps nothing on disk either)."""

    def start(self, ready_check: list[str]) -> None:
        """Start the server and wait for ``ready_check`` (the compose healthcheck, aimed at it)."""
        binaries = _redis_bin()
        if binaries is None:
            raise MissingPackage(f"the Debian package {REDIS_PACKAGE} is not installed")
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [
            str(binaries / "redis-server"),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.root),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]
        self._spawn(argv)
        self._wait_ready(ready_check, binaries, "Redis")
