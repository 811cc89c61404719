"""Check each ``AIRFLOW__*`` setting of the compose file with Airflow itself, before the fleet starts.

Run as a script in the environment the components get (``python compose_preflight.py``), with the
names of the compose file's settings as JSON on stdin. It prints one line, ``PREFLIGHT <json>``,
with ``problems`` (setting name -> what Airflow says is wrong with it) and ``hostname`` (what
Airflow records as this machine's name, which the compose healthchecks pass as ``$HOSTNAME``).

A wrong setting would otherwise show up minutes later as a component that never turns healthy or
tasks that stay queued, with the cause somewhere in a log. Here each one is tried the way Airflow
uses it, and the answer names it:

- every setting must be an option Airflow (or an installed provider) knows: a misspelt name is
  otherwise ignored without a word;
- booleans, integers and floats must parse as such;
- the executor and the auth manager must import;
- the metadata database, the Celery broker and the Celery result backend must answer, through the
  Celery app the Celery executor itself builds from the configuration;
- the Fernet key must be a Fernet key.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

CONNECT_TIMEOUT_SECONDS = 10


def _executor() -> None:
    from airflow.executors.executor_loader import ExecutorLoader

    ExecutorLoader.import_default_executor_cls()


def _auth_manager() -> None:
    from airflow.api_fastapi.app import get_auth_manager_cls

    get_auth_manager_cls()


def _database() -> None:
    from airflow.configuration import conf
    from sqlalchemy import create_engine, text

    engine = create_engine(conf.get("database", "sql_alchemy_conn"), connect_args={"connect_timeout": 10})
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _celery_app() -> Any:
    from airflow.providers.celery.executors.celery_executor_utils import app

    return app


def _broker() -> None:
    with _celery_app().connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=CONNECT_TIMEOUT_SECONDS)


def _result_backend() -> None:
    # Reading the state of a task id nobody sent is a round trip to the backend and changes nothing.
    _celery_app().backend.get_task_meta("claude-batch-preflight")


def _fernet_key() -> None:
    from airflow.models.crypto import get_fernet

    get_fernet()


CHECKS: dict[str, Callable[[], None]] = {
    "AIRFLOW__CORE__EXECUTOR": _executor,
    "AIRFLOW__CORE__AUTH_MANAGER": _auth_manager,
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _database,
    "AIRFLOW__CELERY__BROKER_URL": _broker,
    "AIRFLOW__CELERY__RESULT_BACKEND": _result_backend,
    "AIRFLOW__CORE__FERNET_KEY": _fernet_key,
}
_TYPED_GETTERS = {"boolean": "getboolean", "integer": "getint", "float": "getfloat"}


def _known_option(name: str) -> str | None:
    """Why ``AIRFLOW__SECTION__KEY`` is not a usable option, or None; parses typed values."""
    from airflow.configuration import conf

    section, _, key = name.removeprefix("AIRFLOW__").partition("__")
    section, key = section.lower(), key.lower()
    description = conf.configuration_description
    if section not in description:
        return f"Airflow has no configuration section [{section}] (installed providers included)"
    options = description[section]["options"]
    if key not in options and key.endswith(("_cmd", "_secret")):  # a sensitive option's _CMD/_SECRET form
        key = key.rsplit("_", 1)[0]
    option = options.get(key)
    if option is None:
        return f"Airflow has no option {key!r} in section [{section}]; it would be ignored without a word"
    getter = _TYPED_GETTERS.get(str(option.get("type")))
    if getter is not None:
        getattr(conf, getter)(section, key)
    return None


def main() -> None:
    from airflow.configuration import conf
    from airflow.utils.net import get_hostname

    conf.load_providers_configuration()
    names: list[str] = json.load(sys.stdin)
    problems: dict[str, str] = {}
    for name in names:
        try:
            problem = _known_option(name)
            if problem is None and name in CHECKS:
                CHECKS[name]()
        except Exception as error:  # every failure is reported against the setting that caused it
            problem = f"{type(error).__name__}: {error}"
        if problem is not None:
            problems[name] = problem
    print("PREFLIGHT " + json.dumps({"problems": problems, "hostname": get_hostname()}))


if __name__ == "__main__":
    main()
