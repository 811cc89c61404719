"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_claude_batch import __version__

_INTEGRATION = "Claude (Anthropic API)"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-claude-batch",
        "name": "Claude Batch",
        "description": (
            "Route Claude work by who is waiting: Message Batches (half price, results within 24 hours) "
            "for latency-tolerant bulk work, the Messages API for work somebody waits on."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://platform.claude.com/docs/en/build-with-claude/batch-processing",
                "tags": ["ai"],
            }
        ],
        "hooks": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_claude_batch.hooks.claude"],
            }
        ],
        "operators": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_provider_claude_batch.operators.batch",
                    "airflow_provider_claude_batch.operators.message",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_claude_batch.sensors.batch"],
            }
        ],
        "triggers": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_provider_claude_batch.triggers.batch",
                    "airflow_provider_claude_batch.triggers.capacity",
                ],
            }
        ],
        "extra-links": ["airflow_provider_claude_batch.links.ClaudeBatchLink"],
        # Also registered through the airflow.plugins entry point: provider info alone is read only
        # with [core] lazy_discover_providers = False.
        "plugins": [
            {"name": "claude_batch", "plugin-class": "airflow_provider_claude_batch.plugins.ui.ClaudeBatchPlugin"}
        ],
        "config": {
            "claude_batch": {
                "description": "Settings of the Claude Batch provider.",
                "options": {
                    "enforce_routing": {
                        "description": (
                            "Refuse ClaudeBatchOperator tasks whose work somebody waits on (blocking=True, "
                            "the DAG tag 'blocking', a deadline, execution_timeout or DeadlineAlert under "
                            "24 hours, a sub-daily schedule, streaming or fast mode), both when DAG files "
                            "are parsed (the airflow.policy plugin claude_batch_routing) and before the "
                            "task submits anything. Set to False to switch both checks off; "
                            "`claude-batch audit` still reports the violations."
                        ),
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": "False",
                        "default": "True",
                    },
                },
            },
        },
        "task-decorators": [
            {
                "name": "claude_batch",
                "class-name": "airflow_provider_claude_batch.decorators.claude_batch.claude_batch_task",
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_claude_batch.hooks.claude.ClaudeHook",
                "hook-name": "Claude (Anthropic API)",
                "connection-type": "claude",
                "conn-fields": {
                    "model": {
                        "label": "Default model",
                        "description": "Model used when a task names none, e.g. claude-sonnet-4-6.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "timeout": {
                        "label": "Request timeout (seconds)",
                        "description": "Per-request HTTP timeout of the Anthropic client (default 600).",
                        "schema": {"type": ["number", "null"], "minimum": 1},
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "description": "SDK retries for idempotent calls (default 2). Batch creation is never "
                        "re-sent blindly, whatever this says.",
                        "schema": {"type": ["integer", "null"], "minimum": 0},
                    },
                    "workspace_id": {
                        "label": "Workspace id",
                        "description": "Optional anthropic-workspace-id header, for keys that span workspaces.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "batch_requests_per_minute": {
                        "label": "Batch API requests per minute (per process)",
                        "description": "Budget every Message Batches API call of one process draws from (create, "
                        "status, results, cancel; default 50). The workspace's limit is shared by every triggerer, "
                        "worker task and api-server: give each a share below it (see docs/deployment.md).",
                        "schema": {"type": ["integer", "null"], "minimum": 1},
                    },
                    "max_queued_requests": {
                        "label": "Max queued batch requests",
                        "description": "Optional: never put more than this many requests in the workspace's "
                        "processing queue (headroom for other jobs). Larger inputs are split and submitted as "
                        "room frees, while the task waits deferred.",
                        "schema": {"type": ["integer", "null"], "minimum": 1},
                    },
                    "not_found_grace_seconds": {
                        "label": "404 grace window (seconds)",
                        "description": "A 404 this soon after a batch's creation is the API's propagation delay "
                        "and is waited through (default 300); later it is an error.",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"password": "API key", "host": "Base URL"},
                    "placeholders": {
                        "host": "https://api.anthropic.com (or http://127.0.0.1:8765 for the emulator)",
                        "password": "sk-ant-... (empty: use ANTHROPIC_API_KEY)",
                    },
                },
            }
        ],
    }
