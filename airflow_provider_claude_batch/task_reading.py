"""Reading a Claude task's arguments as the DAG file gave them, plain or mapped, without running it.

The routing policy, the audit and ``claude-batch check`` judge a task from what its DAG file says:
a plain operator holds its arguments as attributes, a mapped one in ``partial_kwargs`` and
``expand_input``. Nothing here imports the operators (or Airflow) at module import.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = [
    "declared_argument",
    "declared_values",
    "is_batch_task",
    "literal_request_count",
    "literal_requests",
    "operator_class",
]

_BATCH_OPERATOR_MODULE = "airflow_provider_claude_batch.operators.batch"


def operator_class(task: Any) -> type | None:
    """The operator class of a task; for ``Op.partial(...).expand(...)`` the class being mapped."""
    if getattr(task, "is_mapped", False):
        cls = getattr(task, "operator_class", None)
        return cls if isinstance(cls, type) else None
    return type(task)


def is_batch_task(task: Any) -> bool:
    """Whether ``task`` is a ``ClaudeBatchOperator`` (or subclass), mapped or not."""
    # If the operator module was never imported, no task in this process can be one of ours; this
    # keeps the policy from importing the operator (and the SDK client) for every DAG Airflow parses.
    module = sys.modules.get(_BATCH_OPERATOR_MODULE)
    cls = operator_class(task)
    return module is not None and cls is not None and issubclass(cls, module.ClaudeBatchOperator)


def declared_values(task: Any, name: str) -> list[Any]:
    """What the DAG file gave for the operator argument ``name``: one value, or one per mapped task.

    A plain operator holds its arguments as attributes. A mapped one holds ``partial()`` arguments in
    ``partial_kwargs`` and ``expand()`` arguments in ``expand_input``: a literal list there gives one
    value per mapped task; an XCom there is unknown until the run and yields nothing.
    """
    if not getattr(task, "is_mapped", False):
        value = getattr(task, name, None)
        return [] if value is None else [value]
    values: list[Any] = []
    partial = getattr(task, "partial_kwargs", None) or {}
    if partial.get(name) is not None:
        values.append(partial[name])
    expanded = getattr(getattr(task, "expand_input", None), "value", None)
    if isinstance(expanded, Mapping) and isinstance(expanded.get(name), (list, tuple)):
        values.extend(value for value in expanded[name] if value is not None)  # .expand(name=[...])
    elif isinstance(expanded, (list, tuple)):  # .expand_kwargs([{...}, ...])
        values.extend(kw[name] for kw in expanded if isinstance(kw, Mapping) and kw.get(name) is not None)
    return values


def declared_argument(task: Any, name: str) -> Any:
    """The operator argument ``name`` as the DAG file gave it (``partial()`` first for a mapped task)."""
    values = declared_values(task, name)
    return values[0] if values else None


def literal_requests(task: Any) -> Iterator[tuple[int, Any]]:
    """Requests written into the DAG file; XComs, file URIs and templates are unknown until the run."""
    for requests in _literal_lists(task):
        yield from enumerate(requests)


def literal_request_count(task: Any) -> int | None:
    """How many requests the DAG file writes out (the largest of a mapped task's); None when none is literal."""
    counts = [len(requests) for requests in _literal_lists(task)]
    return max(counts) if counts else None


def _literal_lists(task: Any) -> Iterator[list[Any]]:
    from airflow.sdk import XComArg

    for value in declared_values(task, "requests"):
        if isinstance(value, (str, bytes, Mapping, XComArg)) or not isinstance(value, Iterable):
            continue  # a URI or template (a string), an XCom, or not requests at all
        yield list(value)
