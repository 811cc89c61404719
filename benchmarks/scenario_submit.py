"""Scenario 1, submit: from the user's requests in memory to a batch id, in one fresh process.

The timed region is everything the contender's own submit path does with the requests,
*including its own validation*, because validating is part of what a task does before it can
submit, and each contender validates differently:

* ours: ``prepare_requests`` (normalise, validate, serialise once), ``split`` (as the operator
  does; one part for 100,000 requests) and ``ClaudeHook.create_batch`` (streams the
  pre-serialised body);
* ours, operator: the whole ``ClaudeBatchOperator.execute`` with ``wait_for_completion=False``,
  which adds the retry-safe submission around that (routing check, fingerprint, a submission
  record saved before and after the create, the newest-batch marker, the custom-id digest);
  two variants add a cost lever each: ``max_cost_usd`` (the quote: every request decoded and
  grouped by shape, one ``count_tokens`` call per shape) and ``cache_shared_prefix`` (the planner's
  pass over every request; the workload's requests share no prefix, so nothing is re-encoded);
* official: ``AnthropicHook.create_batch`` (no validation of its own; the SDK transforms and
  serialises the list);
* common-ai: the operator's ``_normalize_requests``, then the adapter's ``validate_requests``
  and ``submit`` (its fingerprint and state-file writes are left out, which only favours it);
* raw floor: ``json.dumps`` of the body and one POST with the SDK's HTTP client (``httpx2``).

Before the baseline, each contender submits :data:`WARMUP_REQUESTS` requests once through the
same path with its own objects: modules imported lazily on a first call are then loaded (the
baseline is "after imports"), while the measured call still builds its own client.
"""

from __future__ import annotations

import json
from typing import Any

from benchmarks import workloads
from benchmarks.measure import measured

WARMUP_REQUESTS = 10
WARMUP_PREFIX = "warmup"


def run(contender: str, params: dict[str, Any]) -> dict[str, Any]:
    count = int(params["count"])
    base_url = params["base_url"]
    runner = {
        "ours": _ours,
        "ours_operator": _ours_operator,
        "ours_operator_cap": lambda *args: _ours_operator(*args, max_cost_usd=1_000.0),
        "ours_operator_cache": lambda *args: _ours_operator(*args, cache_shared_prefix=True),
        "official": _official,
        "common_ai": _common_ai,
        "raw": _raw,
    }[contender]
    return runner(count, base_url, params)


def _ours(count: int, base_url: str, params: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_claude_batch.hooks.claude import ClaudeHook
    from airflow_provider_claude_batch.requests import prepare_requests

    ClaudeHook(workloads.OURS_CONN_ID).create_batch(
        prepare_requests(workloads.full_requests(WARMUP_REQUESTS, WARMUP_PREFIX))
    )
    requests = workloads.full_requests(count)
    hook = ClaudeHook(workloads.OURS_CONN_ID)
    with measured() as result:
        prepared = prepare_requests(requests)
        parts = prepared.split()
        result.extra["prepare_s"] = result.elapsed()
        batch_ids = [hook.create_batch(part, known_batch_ids=[]).id for part in parts]
    result.extra["post_s"] = result.wall_s - result.extra["prepare_s"]
    result.extra["body_bytes"] = prepared.body_size
    return {**result.as_dict(), "batch_id": batch_ids[0], "request_count": count}


def _ours_operator(count: int, base_url: str, params: dict[str, Any], **levers: Any) -> dict[str, Any]:
    import os
    from types import SimpleNamespace

    from airflow.sdk import DAG

    from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator

    def execute(requests: list[dict[str, Any]], folder: str) -> dict[str, Any]:
        with DAG(f"benchmark_{os.getpid()}", schedule=None):
            operator = ClaudeBatchOperator(
                task_id="submit",
                requests=requests,
                claude_conn_id=workloads.OURS_CONN_ID,
                results_uri=f"file://{folder}",
                wait_for_completion=False,
                **levers,
            )
        ti = SimpleNamespace(
            dag_id="benchmark", run_id="run", task_id="submit", map_index=-1, xcom_push=lambda **_: None
        )
        return operator.execute({"ti": ti})  # type: ignore[arg-type]

    workdir = f"{params['workdir']}/ours_operator-{os.getpid()}-{'-'.join(levers) or 'plain'}"
    execute(workloads.full_requests(WARMUP_REQUESTS, WARMUP_PREFIX), f"{workdir}/warmup")
    requests = workloads.full_requests(count)
    with measured() as result:
        returned = execute(requests, f"{workdir}/measured")
    result.extra["body_bytes"] = len(workloads.create_body(requests))
    return {**result.as_dict(), "batch_id": returned["batch_id"], "request_count": count}


def _official(count: int, base_url: str, params: dict[str, Any]) -> dict[str, Any]:
    from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

    AnthropicHook(conn_id=workloads.OFFICIAL_CONN_ID).create_batch(
        workloads.full_requests(WARMUP_REQUESTS, WARMUP_PREFIX)
    )
    requests = workloads.full_requests(count)
    hook = AnthropicHook(conn_id=workloads.OFFICIAL_CONN_ID)
    with measured() as result:
        batch = hook.create_batch(requests)
    result.extra["body_bytes"] = len(workloads.create_body(requests))
    return {**result.as_dict(), "batch_id": batch.id, "request_count": count}


def _common_ai(count: int, base_url: str, params: dict[str, Any]) -> dict[str, Any]:
    from airflow.providers.common.ai.batch import dispatch
    from airflow.providers.common.ai.batch.output_schema import build_output_spec
    from airflow.providers.common.ai.operators.llm_batch import LLMBatchOperator
    from airflow.providers.common.compat.sdk import BaseHook

    conn = BaseHook.get_connection(workloads.COMMON_AI_CONN_ID)
    model_id = conn.extra_dejson["model"]
    adapter_name = dispatch.get_adapter_class(conn.conn_type, model_id).name
    _, bare_model = dispatch.split_model_id(model_id)
    spec = build_output_spec(str)

    def submit(adapter: Any, requests: list[dict[str, Any]], key16: str) -> str:
        """What the operator's ``execute`` does with the requests up to the batch id."""
        normalized = LLMBatchOperator._normalize_requests(requests)
        options = {"model": bare_model, "output_spec": spec, "idempotency_key": key16}
        adapter.validate_requests(normalized, max_tokens=workloads.MAX_TOKENS, **options)
        submitted = adapter.submit(normalized, input_fingerprint="0" * 64, max_tokens=workloads.MAX_TOKENS, **options)
        return submitted.batch_id

    warmup = dispatch.build_adapter_from_connection(adapter_name, conn)
    try:
        submit(warmup, workloads.prompt_requests(WARMUP_REQUESTS), "fedcba9876543210")
    finally:
        warmup.close()
    requests = workloads.prompt_requests(count)
    # built before submitting, as the operator does
    adapter = dispatch.build_adapter_from_connection(adapter_name, conn)
    try:
        with measured() as result:
            batch_id = submit(adapter, requests, workloads.KEY16)
    finally:
        adapter.close()
    result.extra["body_bytes"] = len(workloads.create_body(workloads.full_requests(count)))
    return {**result.as_dict(), "batch_id": batch_id, "request_count": count}


def _raw(count: int, base_url: str, params: dict[str, Any]) -> dict[str, Any]:
    import httpx2

    headers = {
        "content-type": "application/json",
        "x-api-key": workloads.API_KEY,
        "anthropic-version": "2023-06-01",
    }

    def submit(client: httpx2.Client, requests: list[dict[str, Any]]) -> tuple[str, int]:
        body = workloads.create_body(requests)
        response = client.post("/v1/messages/batches", content=body, headers=headers)
        response.raise_for_status()
        return json.loads(response.content)["id"], len(body)

    with httpx2.Client(base_url=base_url, timeout=600) as warmup:
        submit(warmup, workloads.full_requests(WARMUP_REQUESTS, WARMUP_PREFIX))
    requests = workloads.full_requests(count)
    with httpx2.Client(base_url=base_url, timeout=600) as client, measured() as result:
        batch_id, body_bytes = submit(client, requests)
    result.extra["body_bytes"] = body_bytes
    return {**result.as_dict(), "batch_id": batch_id, "request_count": count}
