"""``docker-compose.airflow.yml`` as ``docker compose`` reads it: YAML with anchors, then interpolation.

Shared by the static checks (``tests/test_compose.py``) and the production-topology harness
(``tests/e2e/topology.py``), which runs the file's settings natively. Imports nothing from Airflow.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from airflow_provider_claude_batch.testing.deployment import COMPOSE_FILE

REPO = Path(__file__).resolve().parent.parent
COMPOSE_PATH = REPO / COMPOSE_FILE
AIRFLOW_HOME_IN_IMAGE = "/opt/airflow"


class InterpolationError(Exception):
    """What `docker compose` reports and stops on: a required variable unset, or a bad `$`."""


_TEMPLATE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


def interpolate(text: str, env: Mapping[str, str], used: set[str] | None = None) -> str:
    """Resolve ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-x}``, ``${VAR-x}``, ``${VAR:?msg}``, ``${VAR:+x}``."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["invalid"] is not None:
            raise InterpolationError(f"invalid interpolation format near {text[match.start() : match.start() + 20]!r}")
        name = match["braced"] or match["named"]
        if used is not None:
            used.add(name)
        op, arg = match["op"], match["arg"] or ""
        value = env.get(name)
        present = value is not None if op is None or not op.startswith(":") else bool(value)
        if op in (":-", "-"):
            return value if present else arg  # type: ignore[return-value]
        if op in (":?", "?"):
            if not present:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return value  # type: ignore[return-value]
        if op in (":+", "+"):
            return arg if present else ""
        return value or ""

    return _TEMPLATE.sub(substitute, text)


def interpolate_tree(node: Any, env: Mapping[str, str], used: set[str] | None = None) -> Any:
    """Interpolate every string value of a parsed compose document (keys are left alone)."""
    if isinstance(node, str):
        return interpolate(node, env, used)
    if isinstance(node, list):
        return [interpolate_tree(item, env, used) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env, used) for key, value in node.items()}
    return node


def load_compose(path: Path = COMPOSE_PATH) -> dict[str, Any]:
    """The compose file as YAML (anchors and ``<<`` merge keys resolved), before interpolation."""
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict):
        raise ValueError(f"{path.name} is not a YAML mapping")
    return document


def services(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``services`` mapping of a compose document."""
    return document["services"]


def as_argv(command: str | list[str]) -> list[str]:
    """A compose ``command`` in list form (compose splits the string form like a shell)."""
    return shlex.split(command) if isinstance(command, str) else list(command)


def init_script(document: Mapping[str, Any]) -> str:
    """The bash script airflow-init runs (``entrypoint: /bin/bash``, ``command: [-c, SCRIPT]``)."""
    command = services(document)["airflow-init"]["command"]
    if not (isinstance(command, list) and len(command) == 2 and command[0] == "-c"):
        raise ValueError("airflow-init must run one bash script: command: [-c, SCRIPT]")
    return command[1]
