"""Checks of operator, sensor, trigger and decorator arguments: in the constructor, and after rendering.

A literal argument is checked when the DAG file is parsed (a bad one is an import error naming the
argument); a templated one right after Airflow renders it, before anything is created. Rendered
templates are strings, so numbers and lists also accept their rendered forms (``"64"``, ``"0.05"``,
``"['msgbatch_a', 'msgbatch_b']"``); anything else explains ``render_template_as_native_obj``.
Each function returns the value in its proper type, or raises ``TypeError``/``ValueError`` naming
the argument and the fix.

This module imports nothing from Airflow.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
from collections.abc import Collection, Iterable, Mapping
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from airflow_provider_claude_batch.validation.suggest import did_you_mean

T = TypeVar("T")
_NATIVE_HINT = (
    "templates render to strings, so write a literal value, or render the DAG's templates to Python "
    "objects with DAG(..., render_template_as_native_obj=True)"
)
_LOCAL_SCHEMES = ("", "file", "local")


def is_templated(value: Any) -> bool:
    """A string Airflow will still render (checked after rendering instead of at parse time)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _number_from(name: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise TypeError(f"{name} must be a number, got the string {value!r}; {_NATIVE_HINT}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def seconds(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """A positive number of seconds (``timedelta`` and rendered numbers accepted)."""
    number = value.total_seconds() if isinstance(value, timedelta) else _number_from(name, value)
    if number < 0 or (number == 0 and not allow_zero):
        least = "0 or more" if allow_zero else "more than 0"
        raise ValueError(f"{name} must be {least} seconds, got {value!r}")
    return number


def duration(name: str, value: Any, *, allow_zero: bool = False) -> timedelta:
    """A ``timedelta``, or a number of seconds (as ``BaseSensorOperator.timeout`` takes it)."""
    if isinstance(value, timedelta):
        seconds(name, value, allow_zero=allow_zero)
        return value
    try:
        return timedelta(seconds=seconds(name, value, allow_zero=allow_zero))
    except TypeError:
        raise TypeError(
            f"{name} must be a datetime.timedelta or a number of seconds, got {type(value).__name__} {value!r}"
        ) from None


def poll_intervals(minimum: Any, maximum: Any) -> tuple[float, float]:
    """``min_poll_interval`` and ``max_poll_interval``: positive seconds, the first no larger."""
    low = seconds("min_poll_interval", minimum)
    high = seconds("max_poll_interval", maximum)
    if high < low:
        raise ValueError(f"max_poll_interval ({high:g} s) must not be less than min_poll_interval ({low:g} s)")
    return low, high


def whole_number(name: str, value: Any, *, minimum: int = 0) -> int:
    """An integer of at least ``minimum`` (``"3"`` accepted)."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    elif isinstance(value, str):
        raise TypeError(f"{name} must be a whole number, got the string {value!r}; {_NATIVE_HINT}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, got {value}")
    return value


def fraction(name: str, value: Any) -> float:
    """A share from 0 to 1 (``"0.05"`` accepted)."""
    number = _number_from(name, value)
    if not 0 <= number <= 1:
        raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")
    return number


def flag(name: str, value: Any) -> bool:
    """``True`` or ``False``, nothing that merely looks like one."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def money(name: str, value: Any) -> float:
    """A positive amount of US dollars (``"12.5"`` accepted)."""
    number = _number_from(name, value)
    if number <= 0:
        raise ValueError(f"{name} must be a positive number of US dollars, got {value!r}")
    return number


def one_of(name: str, value: Any, choices: Collection[T]) -> T:
    if value not in choices:
        hint = did_you_mean(value, [str(c) for c in choices]) if isinstance(value, str) else ""
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}{hint}")
    return value  # type: ignore[no-any-return]


def mapping(name: str, value: Any) -> dict[str, Any]:
    """A dict argument (``request_params``); a rendered string explains native rendering."""
    if isinstance(value, str):
        raise TypeError(f"{name} must be a dict, got the string {value[:40]!r}; {_NATIVE_HINT}")
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict of Messages API parameters, got {type(value).__name__}")
    return dict(value)


def optional_max_tokens(value: Any) -> int | None:
    """The operator's ``max_tokens``: ``None`` (each request sets its own) or an integer of at least 1."""
    return None if value is None else whole_number("max_tokens", value, minimum=1)


def batch_ids(value: Any) -> list[str]:
    """One batch id or a non-empty list of them; a rendered list literal is read back as the list.

    A batch task's manifest or submission result (a dict with ``batch_ids``, what ``task.output``
    resolves to) gives its ``batch_ids``.
    """
    if isinstance(value, str) and value.strip().startswith("["):
        value = _list_literal(value)
    if isinstance(value, Mapping) and "batch_ids" in value:
        value = value["batch_ids"]
    ids = [value] if isinstance(value, str) else value
    if not isinstance(ids, (list, tuple)):
        raise TypeError(f"batch_ids must be a batch id or a list of them, got {type(value).__name__} {value!r}")
    if not ids:
        raise ValueError("batch_ids needs at least one batch id, got an empty list")
    for batch_id in ids:
        if not isinstance(batch_id, str) or not batch_id.strip():
            raise TypeError(f"batch_ids must hold batch id strings, got {batch_id!r} in {value!r}")
        if not batch_id.replace("_", "").replace("-", "").isalnum():
            raise ValueError(
                f"batch_ids: {batch_id!r} is not a batch id (msgbatch_...); to pass a list from a template, "
                f"render it as a list literal ({{{{ ids | tojson }}}}) or use {_NATIVE_HINT.split(', or ')[1]}"
            )
    return list(ids)


def _list_literal(text: str) -> Any:
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    raise ValueError(f"batch_ids looks like a list but is not one: {text!r}; {_NATIVE_HINT}")


def betas(value: Any, known: Iterable[str]) -> tuple[str, ...]:
    """``anthropic-beta`` values: a list of names the installed SDK knows (the API refuses others)."""
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"betas must be a list of beta names, got {value!r}")
    known = list(known)
    for name in names:
        if name not in known:
            hint = did_you_mean(name, known)
            raise ValueError(
                f"betas: {name!r} is not a beta the installed anthropic SDK knows{hint or ''}; the API answers "
                "400 to unknown betas (if it is newer than the SDK, upgrade anthropic)"
            )
    return tuple(names)


def installed_filesystems(extra: Iterable[str] = ()) -> list[str]:
    """URI schemes ``ObjectStoragePath`` can open here: local files, ``extra`` (Airflow providers'), fsspec's."""
    from fsspec.registry import known_implementations, registry

    schemes = {"file", "local", *extra, *registry}
    for scheme, spec in known_implementations.items():
        module = spec["class"].split(".")[0]
        if importlib.util.find_spec(module) is not None:
            schemes.add(scheme)
    return sorted(schemes)


def results_uri(value: Any, installed: Collection[str]) -> str | None:
    """``results_uri``: ``None`` (the default folder) or a folder URI of an installed filesystem."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"results_uri must be a folder URI such as 's3://bucket/claude/', got {value!r}")
    scheme = urlsplit(value).scheme
    if scheme in _LOCAL_SCHEMES or scheme in installed or len(scheme) == 1:  # "C:/..." is a local path
        return value
    from fsspec.registry import known_implementations

    known = known_implementations.get(scheme)
    need = f"; it needs {known['err']}" if known and known.get("err") else ""
    hint = did_you_mean(scheme, installed)
    raise ValueError(
        f"results_uri {value!r}: no filesystem for {scheme}:// is installed{need}{hint or ''}. "
        f"Installed: {', '.join(s for s in sorted(installed) if s not in ('local',))}."
    )


def rescue(
    route: Any, lead: Any, deadline: timedelta | None, wait_for_completion: bool
) -> tuple[str | None, timedelta | None]:
    """``rescue`` and ``rescue_lead`` of a batch task: a synchronous rescue that keeps ``deadline``.

    :returns: the rescue route (``"sync"``, or None without a rescue) and the lead as a ``timedelta``.
    """
    if route is None:
        if lead is not None:
            raise ValueError(
                "rescue_lead is set but rescue is not: add rescue='sync' to keep the deadline with a synchronous "
                "rescue, or drop rescue_lead"
            )
        return None, None
    route = one_of("rescue", route, ("sync",))
    if deadline is None:
        raise ValueError(
            "rescue='sync' keeps a deadline, and this task has none: set deadline=timedelta(hours=...), measured "
            "from submission"
        )
    if lead is None:
        raise ValueError(
            "rescue='sync' needs rescue_lead, the time kept before the deadline for the synchronous finish, "
            "e.g. rescue_lead=timedelta(hours=1)"
        )
    lead = duration("rescue_lead", lead)
    if lead >= deadline:
        raise ValueError(
            f"rescue_lead ({lead}) must be shorter than the deadline ({deadline}): the batch runs until the deadline "
            "minus the lead, then the rescue finishes the rest"
        )
    if not wait_for_completion:
        raise ValueError(
            "rescue='sync' needs wait_for_completion=True: the task must still be there at the rescue point"
        )
    return route, lead
