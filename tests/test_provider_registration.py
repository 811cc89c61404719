"""Airflow's own CLI sees the provider: provider info validates, hooks and triggers import."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import TEST_API_KEY, claude_connection_uri


def airflow_cli(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_provider_info_is_accepted_by_the_provider_schema():
    from airflow_provider_claude_batch.get_provider_info import get_provider_info

    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-claude-batch"
    listed = airflow_cli("providers", "list")
    assert "airflow-provider-claude-batch" in listed


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("hooks", "airflow_provider_claude_batch.hooks.claude.ClaudeHook"),
        ("triggers", "airflow_provider_claude_batch.triggers.batch"),
        ("triggers", "airflow_provider_claude_batch.triggers.capacity"),
        # Airflow 3.1 reads custom connection fields only through wtforms, which a default install lacks;
        # declarative conn-fields arrived in 3.2.
        pytest.param("widgets", "extra__claude__model", marks=pytest.mark.latest_airflow_only),
        pytest.param("widgets", "extra__claude__batch_requests_per_minute", marks=pytest.mark.latest_airflow_only),
        pytest.param("widgets", "extra__claude__max_queued_requests", marks=pytest.mark.latest_airflow_only),
        pytest.param("widgets", "extra__claude__not_found_grace_seconds", marks=pytest.mark.latest_airflow_only),
        pytest.param("behaviours", "claude", marks=pytest.mark.latest_airflow_only),
    ],
)
def test_airflow_providers_commands_show_the_provider(command, expected):
    assert expected in airflow_cli("providers", command)


def test_connection_test_from_airflow_cli(claude_emulator):
    env = {
        "AIRFLOW_CONN_CLAUDE_DEFAULT": claude_connection_uri(claude_emulator.url),
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
    }
    output = airflow_cli("connections", "test", "claude_default", env=env)
    assert "Connection success" in output
    assert TEST_API_KEY not in output
