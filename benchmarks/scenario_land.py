"""Scenario 2, land: from "the batch has ended" to "results file published, manifest returned".

Each contender lands the same ended batches (mixed succeeded/errored/expired) in a fresh process:

* ours: the operator's own resume path, ``ClaudeBatchOperator.execute_complete`` with the
  trigger's ``ended`` event (streams raw bytes, msgspec-decodes the needed fields, checks the
  custom ids against the submission record, writes 1 MB blocks, publishes atomically, writes
  ``manifest.json``). Only the Airflow context is absent (not read when ``results_uri`` is set);
  the submission record ``execute`` would have written is written before the measurement, and
  follow-up rounds are off (``retry_rounds=0``): the figure is one landing, not a re-run of the
  expired requests;
* official: the provider returns only the batch id and tells users to stream
  ``AnthropicHook.stream_batch_results`` to storage, so: each result written as a JSON line
  (``model_dump_json``, pydantic's fastest path) and counted into a small manifest;
* common-ai: its landing step, ``results.stream_results_to_jsonl`` then
  ``results.assemble_manifest``, with the adapter built from its connection as ``_land`` does;
* raw floor: the SDK's raw HTTP (``with_streaming_response.results``), bytes streamed to the
  file as they come and ``json.loads`` per line to count outcomes.

Before the baseline, each contender lands a small ended batch once through the same path with
its own objects, so modules imported lazily on a first call (``ObjectStoragePath`` and fsspec,
the SDK's decoders, ...) are loaded: the baseline is "after imports", and the figure is what
landing costs, not what importing costs (the same for 10 results as for 250,000).
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import workloads
from benchmarks.measure import measured

Step = Callable[[], dict[str, Any]]


def run(contender: str, params: dict[str, Any]) -> dict[str, Any]:
    # [batch id, index of its first request, request count]: the custom ids are ``<KEY16>-<index>``
    batches: list[tuple[str, int, int]] = [tuple(batch) for batch in params["batches"]]  # type: ignore[misc]
    count = sum(batch[2] for batch in batches)
    workdir = Path(params["workdir"]) / f"{contender}-{os.getpid()}"
    prepare = {"ours": _ours, "official": _official, "common_ai": _common_ai, "raw": _raw}[contender]
    warmup = params.get("warmup")
    if warmup:
        prepare([tuple(warmup)], _folder(workdir / "warmup"), params["base_url"])()  # type: ignore[list-item]
    step = prepare(batches, _folder(workdir / "measured"), params["base_url"])
    with measured() as result:
        landed = step()
    figures = {**result.as_dict(), **landed}
    figures["rows_per_s"] = count / result.wall_s if result.wall_s else None
    figures["file_bytes"] = os.path.getsize(figures.pop("results_path"))
    if figures["rows_written"] != count:
        raise RuntimeError(f"{contender} landed {figures['rows_written']} rows, expected {count}")
    return figures


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ours(batches: list[tuple[str, int, int]], folder: Path, base_url: str) -> Step:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_claude_batch.lifecycle import SubmissionLifecycle
    from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator
    from airflow_provider_claude_batch.results import CustomIdDigest
    from airflow_provider_claude_batch.submission import RECORD_FILE, RecordStore, utc_now

    operator = ClaudeBatchOperator(
        task_id="land",
        requests=[],
        claude_conn_id=workloads.OURS_CONN_ID,
        results_uri=f"file://{folder}",
        max_failed_fraction=1.0,  # the batch has failures on purpose; the task must not fail on them
        retry_rounds=0,
    )
    # What ``execute`` records before and after each create (a retry-safe submission): one round whose
    # parts are the ended batches (landing never reads the input, so no fingerprint is checked).
    now = utc_now()
    lifecycle = SubmissionLifecycle.begin("benchmark", [(count, 0) for _, _, count in batches], now, operator.timeout)
    for index, (batch_id, start, count) in enumerate(batches):
        digest = CustomIdDigest.of(f"{workloads.KEY16}-{i}" for i in range(start, start + count))
        lifecycle.created(0, index, batch_id, digest, now)
    RecordStore(None, ObjectStoragePath(f"file://{folder}") / RECORD_FILE).save(lifecycle.record)
    batch_ids = [batch_id for batch_id, _, _ in batches]
    event = {"status": "ended", "batch_ids": batch_ids, "batches": [], "message": "", "polls": 1}

    def step() -> dict[str, Any]:
        manifest = operator.execute_complete({}, event)  # type: ignore[arg-type]
        return {
            "rows_written": manifest["request_count"],
            "counts": manifest["counts"],
            "results_path": str(folder / "results.jsonl"),
        }

    return step


def _official(batches: list[tuple[str, int, int]], folder: Path, base_url: str) -> Step:
    from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

    batch_ids = [batch_id for batch_id, _, _ in batches]
    hook = AnthropicHook(conn_id=workloads.OFFICIAL_CONN_ID)
    path = folder / "results.jsonl"

    def step() -> dict[str, Any]:
        counts: collections.Counter[str] = collections.Counter()
        with open(path, "w") as out:
            for batch_id in batch_ids:
                for item in hook.stream_batch_results(batch_id):
                    out.write(item.model_dump_json() + "\n")
                    counts[item.result.type] += 1
        manifest = {"batch_ids": batch_ids, "results_uri": str(path), "counts": dict(counts)}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return {"rows_written": sum(counts.values()), "counts": dict(counts), "results_path": str(path)}

    return step


def _common_ai(batches: list[tuple[str, int, int]], folder: Path, base_url: str) -> Step:
    from airflow.providers.common.ai.batch import dispatch, results
    from airflow.providers.common.ai.batch.output_schema import build_output_spec
    from airflow.sdk import ObjectStoragePath

    if len(batches) != 1:
        raise ValueError("common-ai lands one batch per task")
    batch_ids = [batches[0][0]]
    count = batches[0][2]
    spec = build_output_spec(str)
    destination = ObjectStoragePath(f"file://{folder}") / f"{workloads.KEY16}.jsonl"

    def step() -> dict[str, Any]:
        adapter = dispatch.build_adapter("anthropic", llm_conn_id=workloads.COMMON_AI_CONN_ID)
        try:
            merge_counts, diagnostics = results.stream_results_to_jsonl(
                adapter=adapter,
                batch_id=batch_ids[0],
                output_spec=spec,
                request_count=count,
                custom_id_prefix=workloads.KEY16,
                destination=destination,
            )
        finally:
            adapter.close()
        manifest = results.assemble_manifest(
            batch_id=batch_ids[0],
            adapter_name="anthropic",
            llm_conn_id=workloads.COMMON_AI_CONN_ID,
            model_id=f"anthropic:{workloads.MODEL}",
            output_spec=spec,
            result_uri=str(destination),
            request_count=count,
            merge_counts=merge_counts,
            merge_diagnostics=diagnostics,
            custom_id_prefix=workloads.KEY16,
            submitted_at="",
            completed_at="",
        )
        return {
            "rows_written": sum(merge_counts.values()),
            "counts": manifest["counts"],
            "results_path": str(folder / f"{workloads.KEY16}.jsonl"),
        }

    return step


def _raw(batches: list[tuple[str, int, int]], folder: Path, base_url: str) -> Step:
    import anthropic

    batch_ids = [batch_id for batch_id, _, _ in batches]
    client = anthropic.Anthropic(api_key=workloads.API_KEY, base_url=base_url)
    path = folder / "results.jsonl"

    def step() -> dict[str, Any]:
        counts: collections.Counter[str] = collections.Counter()
        with open(path, "wb") as out:
            for batch_id in batch_ids:
                with client.messages.batches.with_streaming_response.results(batch_id) as response:
                    pending = b""
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                        lines = (pending + chunk).split(b"\n")
                        pending = lines.pop()
                        for line in lines:
                            if line:
                                counts[json.loads(line)["result"]["type"]] += 1
                    if pending.strip():
                        counts[json.loads(pending)["result"]["type"]] += 1
        return {"rows_written": sum(counts.values()), "counts": dict(counts), "results_path": str(path)}

    return step
