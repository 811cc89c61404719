"""Constants and helpers shared by tests (imported as ``support``; conftest holds only fixtures)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from airflow_provider_claude_batch.testing.faults import completion_fraction

REPO_ROOT = Path(__file__).resolve().parent.parent

TEST_API_KEY = "sk-ant-test-0123456789-SECRET-do-not-leak"


# Tests poll every few tens of milliseconds; the default budget (50 calls a minute) would pace them to
# a crawl. Tests of the budget itself pass their own ``batch_requests_per_minute``.
TEST_REQUESTS_PER_MINUTE = 100_000


def claude_connection_uri(base_url: str, api_key: str = TEST_API_KEY, **extra: object) -> str:
    """The JSON form of a ``claude`` connection, for an ``AIRFLOW_CONN_*`` variable."""
    extra.setdefault("batch_requests_per_minute", TEST_REQUESTS_PER_MINUTE)
    return json.dumps({"conn_type": "claude", "password": api_key, "host": base_url, "extra": extra})


def ids_completing(below: float | None = None, above: float | None = None, count: int = 4) -> list[str]:
    """``count`` custom ids whose emulated completion comes before ``below`` or after ``above`` (fractions)."""
    found = []
    for number in range(10_000):
        custom_id = f"doc-{number}"
        fraction = completion_fraction(custom_id)
        if (below is not None and fraction < below) or (above is not None and fraction > above):
            found.append(custom_id)
            if len(found) == count:
                return found
    raise AssertionError("no such ids")


def custom_id_counts(results_file: Path) -> Counter[str]:
    """How many rows of a results file carry each custom id (every one should be 1)."""
    with results_file.open() as results:
        return Counter(json.loads(line)["custom_id"] for line in results)
