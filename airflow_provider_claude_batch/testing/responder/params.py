"""Messages API parameter checks: what the API refuses at once, and what it finds only when processing.

:func:`shallow_params_error` is the create-time (schema-level) check; :func:`deep_params_error`
the processing-time one, whose problems become ``errored`` rows of a batch (a 400 on
``/v1/messages``). Messages are pydantic-style ``field: text``, as the API reports them.
"""

from __future__ import annotations

from typing import Any

from ...prompt_units import MAX_CACHE_BREAKPOINTS, breakpoints

__all__ = ["ParamsError", "deep_params_error", "output_format", "shallow_params_error"]


class ParamsError(ValueError):
    """A Messages API parameter problem, with the API-style message (``field: text``)."""


def _type_name_error(value: Any, kind: str) -> str | None:
    """Pydantic-style message when ``value`` is not of ``kind`` (the API reports these verbatim)."""
    checks = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "list": isinstance(value, list),
        "dictionary": isinstance(value, dict),
    }
    if checks[kind]:
        return None
    return f"Input should be a valid {kind}"


def shallow_params_error(params: Any, prefix: str = "", *, batch: bool = False) -> str | None:
    """The create-time (schema-level) problem of ``params``, or None.

    The real API rejects these synchronously; deeper problems (unknown model, malformed
    messages) are only found when a batch request is processed, see :func:`deep_params_error`.
    """
    if (msg := _type_name_error(params, "dictionary")) is not None:
        return f"{prefix.rstrip('.')}: {msg}" if prefix else msg
    if "model" not in params:
        return f"{prefix}model: Field required"
    if (msg := _type_name_error(params["model"], "string")) is not None:
        return f"{prefix}model: {msg}"
    if "max_tokens" not in params:
        return f"{prefix}max_tokens: Field required"
    if (msg := _type_name_error(params["max_tokens"], "integer")) is not None:
        return f"{prefix}max_tokens: {msg}"
    if params["max_tokens"] < 1:
        return f"{prefix}max_tokens: Input should be greater than or equal to 1"
    if "messages" not in params:
        return f"{prefix}messages: Field required"
    if (msg := _type_name_error(params["messages"], "list")) is not None:
        return f"{prefix}messages: {msg}"
    if not params["messages"]:
        return f"{prefix}messages: List should have at least 1 item after validation, not 0"
    if params.get("stream") is True and batch:
        return f"{prefix}stream: streaming is not supported for Message Batches requests"
    return None


def _message_error(index: int, message: Any) -> str | None:
    """Problems in one entry of ``messages`` (role and content shape)."""
    where = f"messages.{index}"
    if not isinstance(message, dict):
        return f"{where}: Input should be a valid dictionary"
    if message.get("role") not in ("user", "assistant"):
        return f"{where}.role: Input should be 'user' or 'assistant'"
    content = message.get("content")
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"{where}.content: Input should be a valid string or a list of content blocks"
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"{where}.content.{j}: Input should be a content block object with a 'type'"
    return None


def _tool_choice_error(params: dict[str, Any]) -> str | None:
    """``tool_choice`` must name a tool that exists, like the real API checks."""
    choice = params.get("tool_choice")
    if not isinstance(choice, dict) or choice.get("type") != "tool":
        return None
    names = {t.get("name") for t in params.get("tools") or [] if isinstance(t, dict)}
    if choice.get("name") not in names:
        return f"tool_choice: Tool '{choice.get('name')}' not found in tools"
    return None


def output_format(params: dict[str, Any]) -> dict[str, Any] | None:
    """The structured-output format of a request, if any (``output_config.format``)."""
    config = params.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    return fmt if isinstance(fmt, dict) else None


def _output_config_error(params: dict[str, Any]) -> str | None:
    """A structured-output request must carry a JSON schema object."""
    fmt = output_format(params)
    if fmt is None:
        return None
    if fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        return "output_config.format: Input should be {'type': 'json_schema', 'schema': {...}}"
    return None


def deep_params_error(params: dict[str, Any]) -> str | None:
    """Processing-time problems of shallow-valid ``params`` (become ``errored`` batch results).

    Whether the model exists is the emulator's to say (its Models API): see ``emulator/models.py``.
    """
    for i, message in enumerate(params["messages"]):
        if (msg := _message_error(i, message)) is not None:
            return msg
    temperature = params.get("temperature")
    if temperature is not None and (not isinstance(temperature, (int, float)) or not 0 <= temperature <= 1):
        return "temperature: Input should be a number between 0 and 1"
    billing = params.get("billing_policy")
    if isinstance(billing, dict) and billing.get("bill_to") == "user_profile":
        return "billing_policy.bill_to: 'user_profile' is not supported in Message Batches"
    return _tool_choice_error(params) or _output_config_error(params) or _cache_control_error(params)


def _cache_control_error(params: dict[str, Any]) -> str | None:
    """The API's answers to more than four breakpoints and to a 1-hour breakpoint after a 5-minute one."""
    marks = breakpoints(params)
    if len(marks) > MAX_CACHE_BREAKPOINTS:
        return f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {len(marks)}."
    ttls = [ttl for _, ttl in marks]
    if "5m" in ttls and "1h" in ttls[ttls.index("5m") :]:
        return (
            "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block. Note that "
            "blocks are processed in the following order: `tools`, `system`, `messages`."
        )
    return None
