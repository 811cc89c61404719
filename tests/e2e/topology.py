"""The settings of ``docker-compose.airflow.yml``, translated for processes on one machine.

In the compose network every service is a host name (``postgres``, ``redis``,
``airflow-apiserver``) listening on its usual port, and ``/opt/airflow`` is ``$AIRFLOW_HOME``
inside the image. Natively, each service is a private process on a free loopback port and
``$AIRFLOW_HOME`` is a temporary folder. :class:`NativeNetwork` holds that correspondence, and
:func:`native_environment` rewrites a service's environment through it: the host and port of every
URL, and every path under the image's ``$AIRFLOW_HOME``. Nothing else changes, so the settings that
run are the ones users deploy.

A value that cannot work in the compose network fails here, naming the setting: a URL whose host
is no service of the file, or whose port is not the one that service listens on. What a wrong value
does to Airflow itself is checked by ``compose_preflight.py``. Imports nothing from Airflow.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from compose_file import AIRFLOW_HOME_IN_IMAGE, COMPOSE_PATH, as_argv, services

#: The port each service listens on inside the compose network (the images' defaults, and what the
#: compose file exposes or publishes); the native process of that service listens elsewhere.
CONTAINER_PORTS: dict[str, tuple[int, ...]] = {
    "postgres": (5432,),
    "redis": (6379,),
    "airflow-apiserver": (8080,),
    "airflow-scheduler": (8974,),  # the scheduler's health server
    "claude-emulator": (8765,),
}
#: The port a URL means when it names none.
DEFAULT_PORTS = {"postgresql": 5432, "redis": 6379, "rediss": 6379, "http": 80, "https": 443}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_LOOPBACK = "127.0.0.1"


class ComposeSettingError(Exception):
    """A setting of the compose file that cannot work; the message names it and says why."""


def setting_problem(where: str, name: str, value: str, problem: str) -> ComposeSettingError:
    """The error for one setting, in the words a user of the compose file needs.

    :param where: the service (or ``x-airflow-common``) whose environment has the setting.
    """
    return ComposeSettingError(f"{COMPOSE_PATH.name}: {name}={value!r} (in {where}) cannot work: {problem}")


@dataclass
class NativeNetwork:
    """Where each compose service listens on this machine, and where ``$AIRFLOW_HOME`` is.

    :param home: the native ``$AIRFLOW_HOME`` (``/opt/airflow`` in the image).
    :param ports: ``(service, container port) -> loopback port``.
    """

    home: Path
    ports: dict[tuple[str, int], int] = field(default_factory=dict)

    def bind(self, service: str, native_port: int) -> None:
        """Record that ``service`` (all its container ports; one each here) listens on ``native_port``."""
        for container_port in CONTAINER_PORTS[service]:
            self.ports[(service, container_port)] = native_port

    def native_port(self, service: str, container_port: int) -> int | None:
        return self.ports.get((service, container_port))

    def rewrite_url(self, url: str, *, own_service: str | None = None) -> str:
        """``url`` with a compose service's host and port replaced by its loopback address.

        :param url: a URL naming a compose service (``redis://:@redis:6379/0``).
        :param own_service: the service the URL is used in: ``localhost`` means that service (the
            healthchecks), else ``localhost`` is refused (in a container it is the container itself).
        :raises ValueError: the host is no service, or the port is not the service's.
        """
        parts = urlsplit(url)
        host = parts.hostname
        if host in ("localhost", "127.0.0.1") and own_service is not None:
            host = own_service
        if host not in {service for service, _ in self.ports} | set(CONTAINER_PORTS):
            known = ", ".join(sorted(CONTAINER_PORTS))
            raise ValueError(f"host {parts.hostname!r} is no service of the compose file that listens ({known})")
        port = parts.port or DEFAULT_PORTS.get(_base_scheme(parts.scheme))
        if port is None:
            raise ValueError(f"the URL names no port and scheme {parts.scheme!r} has no default one")
        native = self.native_port(host, port)
        if native is None:
            listens = ", ".join(str(p) for p in CONTAINER_PORTS.get(host, ()))
            raise ValueError(f"{host} listens on port {listens} in the compose network, not {port}")
        return urlunsplit(_with_netloc(parts, f"{_userinfo(parts)}{_LOOPBACK}:{native}"))

    def rewrite_path(self, value: str) -> str:
        """A path under the image's ``$AIRFLOW_HOME`` as the same path under the native home."""
        if value == AIRFLOW_HOME_IN_IMAGE or value.startswith(AIRFLOW_HOME_IN_IMAGE + "/"):
            return str(self.home) + value[len(AIRFLOW_HOME_IN_IMAGE) :]
        return value


def _base_scheme(scheme: str) -> str:
    """``db+postgresql+psycopg2`` -> ``postgresql``: the protocol, without Celery's and SQLAlchemy's parts."""
    return scheme.removeprefix("db+").split("+", 1)[0]


def _userinfo(parts: SplitResult) -> str:
    return parts.netloc.rpartition("@")[0] + "@" if "@" in parts.netloc else ""


def _with_netloc(parts: SplitResult, netloc: str) -> SplitResult:
    return parts._replace(netloc=netloc)


def native_value(network: NativeNetwork, service: str, name: str, value: str) -> str:
    """One environment value of ``service`` as it must be natively (URLs and paths rewritten).

    :raises ComposeSettingError: the value cannot work in the compose network.
    """
    if _URL.match(value):
        try:
            return network.rewrite_url(value)
        except ValueError as error:
            raise setting_problem(service, name, value, str(error)) from None
    return network.rewrite_path(value)


def native_environment(
    document: Mapping[str, Any], service: str, network: NativeNetwork, *, where: str | None = None
) -> dict[str, str]:
    """The environment ``service`` gets from the (interpolated) compose file, rewritten for here.

    :param where: where errors say the settings are (``x-airflow-common`` for the shared ones).
    """
    environment = services(document)[service].get("environment") or {}
    label = where or service
    return {str(name): native_value(network, label, str(name), str(value)) for name, value in environment.items()}


def airflow_settings(environment: Mapping[str, str]) -> dict[str, str]:
    """Only the ``AIRFLOW__SECTION__KEY`` settings of an environment."""
    return {name: value for name, value in environment.items() if name.startswith("AIRFLOW__")}


@dataclass(frozen=True)
class NativeHealthcheck:
    """A compose healthcheck as it runs here: an HTTP GET (``curl --fail URL``) or a command."""

    service: str
    url: str | None = None
    argv: list[str] | None = None
    shell: str | None = None


def native_healthcheck(document: Mapping[str, Any], service: str, network: NativeNetwork) -> NativeHealthcheck:
    """The ``healthcheck.test`` of ``service``, with ``localhost`` and default ports made native.

    ``CMD curl --fail URL`` becomes a GET of the rewritten URL; ``pg_isready`` and ``redis-cli`` get
    the loopback host and port (in the container they use the service's default ones);
    ``CMD-SHELL`` scripts run as they are.
    """
    test = as_argv(services(document)[service]["healthcheck"]["test"])
    kind, command = test[0], test[1:]
    if kind == "CMD-SHELL":
        return NativeHealthcheck(service, shell=" ".join(command))
    if kind != "CMD":
        raise ComposeSettingError(f"{service}: healthcheck test must start with CMD or CMD-SHELL, not {kind!r}")
    if command[:2] == ["curl", "--fail"] and len(command) == 3:
        return NativeHealthcheck(service, url=network.rewrite_url(command[2], own_service=service))
    port = network.native_port(service, CONTAINER_PORTS[service][0])
    if command[0] in ("pg_isready", "redis-cli"):
        return NativeHealthcheck(service, argv=[command[0], "-h", _LOOPBACK, "-p", str(port), *command[1:]])
    raise ComposeSettingError(f"{service}: no native equivalent for healthcheck {shlex.join(command)!r}")
