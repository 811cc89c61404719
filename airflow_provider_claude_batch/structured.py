"""Structured output: every request answers with JSON for one pydantic model, and every row is checked.

We use the API's own structured-output support (``output_config.format`` with a JSON schema)
rather than a forced tool: decoding is constrained to the schema by the API, the answer arrives as
plain JSON text in a batch result exactly as it would synchronously, and no tool definition has to
be threaded through every request. The schema goes through ``anthropic.transform_schema``, the
same transformation ``client.messages.parse`` applies, so what the API accepts synchronously it
accepts in a batch. Rows are still validated here: a batch result is never parsed by the SDK, and
a truncated answer (``max_tokens``) or a schema feature the API relaxes can still produce invalid
JSON, which becomes an ``invalid_output`` row instead of a crash.

This module imports nothing from Airflow.
"""

from __future__ import annotations

from typing import Any

import anthropic
import msgspec
import pydantic

from airflow_provider_claude_batch.results import INVALID_OUTPUT, ResultRow, RowError

MAX_ERROR_CHARS = 2000


def output_config_for(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The ``output_config`` request parameter asking for JSON that validates as ``model``."""
    if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
        raise TypeError(f"output_schema must be a pydantic model class, got {model!r}")
    return {"format": {"type": "json_schema", "schema": anthropic.transform_schema(model)}}


def merge_output_config(params: dict[str, Any], model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """``params`` with the structured-output format added (other ``output_config`` keys kept)."""
    existing = dict(params.get("output_config") or {})
    if existing.get("format"):
        raise ValueError(
            "output_schema is set on the operator and request_params already has output_config.format; keep one"
        )
    existing.update(output_config_for(model))
    return {**params, "output_config": existing}


class OutputValidator:
    """Turns each succeeded row's text into the validated object, or marks the row ``invalid_output``."""

    def __init__(self, model: type[pydantic.BaseModel]) -> None:
        self._adapter = pydantic.TypeAdapter(model)

    def __call__(self, row: ResultRow) -> ResultRow:
        if row.status != "succeeded":
            return row
        if not row.text:
            return _invalid(row, "the answer holds no text to parse as JSON")
        try:
            value = self._adapter.validate_json(row.text)
        except pydantic.ValidationError as error:
            return _invalid(row, str(error))
        row.output = msgspec.Raw(self._adapter.dump_json(value))
        return row


def _invalid(row: ResultRow, message: str) -> ResultRow:
    row.status = INVALID_OUTPUT
    row.error = RowError(INVALID_OUTPUT, message[:MAX_ERROR_CHARS])
    return row
