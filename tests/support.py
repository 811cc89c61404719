"""Constants and helpers shared by tests (imported as ``support``; conftest holds only fixtures)."""

from __future__ import annotations

import json

TEST_API_KEY = "sk-ant-test-0123456789-SECRET-do-not-leak"


def claude_connection_uri(base_url: str, api_key: str = TEST_API_KEY, **extra: object) -> str:
    """The JSON form of a ``claude`` connection, for an ``AIRFLOW_CONN_*`` variable."""
    return json.dumps({"conn_type": "claude", "password": api_key, "host": base_url, "extra": extra})
