"""What the API checks besides the schema (``emulator/models.py``, ``validation.py``): models, output limits, betas.

Through the unmodified SDK over real HTTP: the Models API's entries in the SDK's own ``ModelInfo``
shape, unknown and retired models, ``max_tokens`` above a model's limit, unknown ``anthropic-beta`` values.
"""

from __future__ import annotations

import re
from datetime import date

import anthropic
import httpx2
import pytest
from anthropic.types.anthropic_beta_param import AnthropicBetaParam
from anthropic.types.model_info import ModelInfo
from anthropic.types.model_param import ModelParam
from emulator_helpers import KEY, client, params, results_by_id, wait_ended

from airflow_provider_claude_batch.pricing import known_models
from airflow_provider_claude_batch.testing.emulator.models import ModelFacts
from airflow_provider_claude_batch.testing.emulator.validation import literal_strings

RETIRED = {"claude-opus-4-0", "claude-opus-4-1", "claude-sonnet-4-5"}  # Sonnet 4.5 since 2026-11-30


def without_retired(ids: set[str] | frozenset[str]) -> set[str]:
    """``ids`` less the retired models and their dated snapshots (``claude-sonnet-4-5-20250929``)."""
    return {model for model in ids if re.sub(r"-\d{8}$", "", model) not in RETIRED}


OUTPUT_300K = "output-300k-2026-03-24"


def test_models_api_serves_every_priced_and_sdk_model_in_the_sdk_shape(claude_emulator):
    api = client(claude_emulator)
    listed = [model.id for model in api.models.list()]  # the SDK follows the pages
    assert len(listed) == len(set(listed))
    assert set(known_models()) - RETIRED <= set(listed)
    assert without_retired(literal_strings(ModelParam)) <= set(listed)
    assert not RETIRED & set(listed)  # retired models only when asked for, as the SDK documents
    every = {model.id for model in api.models.list(lifecycle=["active", "deprecated", "retired"])}
    assert set(known_models()) | RETIRED <= every

    page = httpx2.get(f"{claude_emulator.url}/v1/models", headers={"x-api-key": KEY}).json()
    # The API's default page size is 20; how many models exceed it depends on the SDK's list.
    assert len(page["data"]) == min(20, len(listed)) and page["has_more"] is (len(listed) > 20)
    assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
    for entry in page["data"]:
        assert set(entry) <= set(ModelInfo.model_fields)
        ModelInfo.model_validate(entry)  # strict: every field the SDK requires, with its type
    entries = {model.id: model for model in api.models.list(limit=1000).data}
    sonnet = entries["claude-sonnet-4-6"]
    assert (sonnet.max_input_tokens, sonnet.max_tokens) == (1_000_000, 128_000)
    assert sonnet.display_name == "Claude Sonnet 4.6" and sonnet.lifecycle == "active" and sonnet.line == "sonnet"
    assert sonnet.capabilities.batch.supported and sonnet.capabilities.structured_outputs.supported
    assert (entries["claude-haiku-4-5"].max_input_tokens, entries["claude-haiku-4-5"].max_tokens) == (200_000, 64_000)
    assert all(entries[model].max_tokens for model in set(known_models()) - RETIRED)
    created = [model.created_at for model in entries.values()]
    assert created == sorted(created, reverse=True)  # newest release first

    older = api.models.list(limit=5, after_id=listed[4])
    assert [m.id for m in older.data] == listed[5:10]
    newer = api.models.list(limit=2, before_id=listed[4])
    assert [m.id for m in newer.data] == listed[2:4] and newer.has_more


def test_models_retrieve(claude_emulator):
    api = client(claude_emulator, max_retries=0)
    haiku = api.models.retrieve("claude-haiku-4-5-20251001")
    assert haiku.display_name == "Claude Haiku 4.5" and haiku.max_tokens == 64_000
    assert haiku.created_at.isoformat().startswith("2025-10-15")
    assert api.models.retrieve("claude-opus-4-1").lifecycle == "retired"
    sonnet_4_5 = api.models.retrieve("claude-sonnet-4-5")
    assert sonnet_4_5.lifecycle == "retired" and sonnet_4_5.retires_at.isoformat().startswith("2026-11-30")
    with pytest.raises(anthropic.NotFoundError) as excinfo:
        api.models.retrieve("claude-sonnet-4.6")
    assert excinfo.value.body["error"] == {"type": "not_found_error", "message": "model: claude-sonnet-4.6"}


def test_unknown_and_retired_models_error_their_rows_only(claude_emulator):
    api = client(claude_emulator)
    batch = api.messages.batches.create(
        requests=[
            {"custom_id": "ok", "params": params()},
            {"custom_id": "dated", "params": {**params(), "model": "claude-haiku-4-5-20251001"}},
            {"custom_id": "typo", "params": {**params(), "model": "claude-sonnet-4.6"}},
            {"custom_id": "retired", "params": {**params(), "model": "claude-opus-4-1"}},
            {"custom_id": "retired-since", "params": {**params(), "model": "claude-sonnet-4-5"}},
        ]
    )  # accepted: the API checks models when it processes the requests
    counts = wait_ended(api, batch.id).request_counts
    rows = results_by_id(api, batch.id)
    outcomes = {custom_id: row.type for custom_id, row in rows.items()}
    errors = {custom_id: row.error.error.message for custom_id, row in rows.items() if row.type == "errored"}
    expected = {"ok": "succeeded", "dated": "succeeded", "typo": "errored", "retired": "errored"}
    assert outcomes == {**expected, "retired-since": "errored"}, errors
    assert (counts.succeeded, counts.errored) == (2, 3)
    assert rows["typo"].error.error.type == "not_found_error"
    assert rows["typo"].error.error.message == "model: claude-sonnet-4.6"
    assert rows["retired"].error.error.message == "model: claude-opus-4-1"
    assert rows["retired-since"].error.error.message == "model: claude-sonnet-4-5"
    assert rows["dated"].message.model == "claude-haiku-4-5-20251001"


async def test_unknown_model_is_404_on_the_messages_api(claude_emulator):
    sync_api = client(claude_emulator, max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as excinfo:
        sync_api.messages.create(model="claude-sonnet-4.6", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert excinfo.value.body["error"] == {"type": "not_found_error", "message": "model: claude-sonnet-4.6"}
    with pytest.raises(anthropic.NotFoundError):
        sync_api.messages.count_tokens(model="claude-imaginary-9", messages=[{"role": "user", "content": "x"}])
    assert sync_api.messages.count_tokens(model="claude-opus-5-5", messages=[{"role": "user", "content": "x"}])

    api = anthropic.AsyncAnthropic(api_key=KEY, base_url=claude_emulator.url, max_retries=0)
    with pytest.raises(anthropic.NotFoundError, match="model: claude-opus-4-0"):
        await api.messages.create(model="claude-opus-4-0", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    reply = await api.messages.create(
        model="claude-haiku-5-5", max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    assert reply.model == "claude-haiku-5-5"
    await api.close()


def test_extra_models_serve_a_model_newer_than_the_sdk(claude_emulator):
    api = client(claude_emulator, max_retries=0)
    ask = {"model": "claude-nova-6", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(anthropic.NotFoundError):
        api.messages.create(**ask)
    claude_emulator.configure(extra_models=["claude-nova-6"])
    assert api.messages.create(**ask).model == "claude-nova-6"
    assert "claude-nova-6" in {model.id for model in api.models.list()}


def test_max_tokens_above_the_models_output_limit(claude_emulator):
    api = client(claude_emulator, max_retries=0, timeout=30)  # a timeout: the SDK refuses big max_tokens without
    with pytest.raises(anthropic.BadRequestError) as excinfo:
        api.messages.create(model="claude-haiku-4-5", max_tokens=64_001, messages=[{"role": "user", "content": "x"}])
    assert excinfo.value.body["error"]["message"] == (
        "max_tokens: 64001 > 64000, which is the maximum allowed number of output tokens for claude-haiku-4-5"
    )
    with pytest.raises(anthropic.BadRequestError, match="200000 > 128000"):  # the 300k beta is batch-only
        api.beta.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=200_000,
            messages=[{"role": "user", "content": "x"}],
            betas=[OUTPUT_300K],
        )
    assert api.messages.create(
        model="claude-sonnet-4-6", max_tokens=128_000, messages=[{"role": "user", "content": "x"}]
    )

    big = [
        {"custom_id": "sonnet", "params": params(max_tokens=200_000)},
        {"custom_id": "haiku", "params": {**params(max_tokens=100_000), "model": "claude-haiku-4-5"}},
    ]
    plain = api.messages.batches.create(requests=big)
    with_beta = api.beta.messages.batches.create(requests=big, betas=[OUTPUT_300K])
    plain_rows = results_by_id(api, wait_ended(api, plain.id).id)
    assert plain_rows["sonnet"].error.error.type == "invalid_request_error"
    assert "200000 > 128000" in plain_rows["sonnet"].error.error.message
    beta_rows = results_by_id(api, wait_ended(api, with_beta.id).id)
    assert beta_rows["sonnet"].type == "succeeded"  # the beta raises Sonnet 4.6's limit to 300,000
    assert "100000 > 64000" in beta_rows["haiku"].error.error.message  # Haiku 4.5 does not take it


async def test_unknown_beta_values_are_refused_on_every_route(claude_emulator):
    api = client(claude_emulator, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as excinfo:
        api.beta.messages.batches.create(requests=[{"custom_id": "a", "params": params()}], betas=["output-300k-2099"])
    assert excinfo.value.body["error"]["type"] == "invalid_request_error"
    assert excinfo.value.body["error"]["message"].startswith(
        "Unexpected value(s) `output-300k-2099` for the `anthropic-beta` header."
    )
    assert claude_emulator.state()["batch_count"] == 0
    with pytest.raises(anthropic.BadRequestError) as excinfo:
        api.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"anthropic-beta": "prompt-caching-2024-07-31, nope-1"},
        )
    assert "`nope-1`" in excinfo.value.body["error"]["message"]
    assert "prompt-caching" not in excinfo.value.body["error"]["message"]
    every_known = ",".join(sorted(literal_strings(AnthropicBetaParam)))  # taken from the installed SDK
    assert len(api.messages.batches.list(extra_headers={"anthropic-beta": every_known}).data) == 0

    async_api = anthropic.AsyncAnthropic(api_key=KEY, base_url=claude_emulator.url, max_retries=0)
    with pytest.raises(anthropic.BadRequestError):
        await async_api.beta.messages.batches.list(betas=["message-batches-2099-01-01"])
    with pytest.raises(anthropic.BadRequestError):
        await async_api.models.list(extra_headers={"anthropic-beta": "files-api-2025-04-14,nope"})
    await async_api.close()


def test_a_deprecated_model_is_retired_from_its_retirement_date_on():
    facts = ModelFacts(200_000, 64_000, lifecycle="deprecated", retires="2026-11-30")
    assert facts.lifecycle_on(date(2026, 11, 29)) == "deprecated"
    assert facts.lifecycle_on(date(2026, 11, 30)) == facts.lifecycle_on(date(2027, 1, 1)) == "retired"
    assert ModelFacts(200_000, 64_000).lifecycle_on(date(2030, 1, 1)) == "active"
