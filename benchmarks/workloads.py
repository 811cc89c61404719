"""The inputs every contender gets: the same requests, the same connections, the same names.

Kept free of Airflow and provider imports, so the orchestrator can use it without paying for them.
"""

from __future__ import annotations

import json
from typing import Any

MODEL = "claude-sonnet-4-6"
MAX_TOKENS = 256
API_KEY = "sk-ant-bench-0123456789"

# One connection per contender, each of its own type, all pointed at the same emulator.
OURS_CONN_ID = "claude_bench"
OFFICIAL_CONN_ID = "anthropic_bench"
COMMON_AI_CONN_ID = "llm_bench"

# common-ai parses the request index back out of ``<key16>-<index>`` custom ids, so the batches
# landed by every contender carry ids of that shape (any custom id works for the others).
KEY16 = "0123456789abcdef"


def prompt(index: int) -> str:
    """A short, distinct user message (about the size of a one-line instruction)."""
    return f"Summarise support ticket #{index} in one sentence for the weekly report."


def full_requests(count: int, prefix: str = KEY16, start: int = 0) -> list[dict[str, Any]]:
    """``count`` requests in the API's own form (one user message, ``max_tokens`` 256), ids from ``start``."""
    return [
        {
            "custom_id": f"{prefix}-{index}",
            "params": {
                "model": MODEL,
                "max_tokens": MAX_TOKENS,
                "messages": [{"role": "user", "content": prompt(index)}],
            },
        }
        for index in range(start, start + count)
    ]


def prompt_requests(count: int) -> list[dict[str, Any]]:
    """The same requests in common-ai's input shape (``{"prompt": ...}``; model and cap per batch)."""
    return [{"prompt": prompt(index)} for index in range(count)]


def create_body(requests: list[dict[str, Any]]) -> bytes:
    """The create body exactly as the SDK serialises it (compact, UTF-8, no ASCII escaping)."""
    return json.dumps({"requests": requests}, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def connection_env(base_url: str) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` variables: one connection per contender, in the type it expects."""
    ours = {"conn_type": "claude", "password": API_KEY, "host": base_url}
    official = {"conn_type": "anthropic", "password": API_KEY, "host": base_url}
    # common-ai reads password -> api_key and host -> base_url of a ``pydanticai`` connection, and
    # the "<provider>:<model>" model id from the operator or the connection's extra.
    common_ai = {
        "conn_type": "pydanticai",
        "password": API_KEY,
        "host": base_url,
        "extra": {"model": f"anthropic:{MODEL}"},
    }
    return {
        f"AIRFLOW_CONN_{OURS_CONN_ID.upper()}": json.dumps(ours),
        f"AIRFLOW_CONN_{OFFICIAL_CONN_ID.upper()}": json.dumps(official),
        f"AIRFLOW_CONN_{COMMON_AI_CONN_ID.upper()}": json.dumps(common_ai),
    }
