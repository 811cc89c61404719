"""The emulator's prompt cache through the real SDK: writes then reads, minimum lengths, lifetimes, best-effort hits."""

from __future__ import annotations

import math

import anthropic
import pytest
from emulator_helpers import client, params, results_by_id, wait_ended

# Sonnet 4.6 caches prefixes of 1,024 tokens or more; the emulator counts four characters a token.
LONG_SYSTEM = "You review pull requests for a payments service and flag risky changes. " * 80  # 5,760 chars
PREFIX_TOKENS = math.ceil(len(LONG_SYSTEM) / 4)


def cached_system(ttl: str | None = "1h", text: str = LONG_SYSTEM) -> list[dict]:
    control = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    return [{"type": "text", "text": text, "cache_control": control}]


def run_batch(api: anthropic.Anthropic, count: int, prefix: str = "c", **extra) -> dict:
    reqs = [{"custom_id": f"{prefix}-{i}", "params": params(f"Review change {i}", **extra)} for i in range(count)]
    batch = api.messages.batches.create(requests=reqs)
    wait_ended(api, batch.id)
    return {cid: result.message.usage for cid, result in results_by_id(api, batch.id).items()}


def test_first_request_writes_the_prefix_for_an_hour_and_the_others_read_it(claude_emulator):
    api = client(claude_emulator)
    usage = run_batch(api, 3, system=cached_system())
    first, *rest = (usage[f"c-{i}"] for i in range(3))
    assert first.cache_creation_input_tokens == PREFIX_TOKENS and first.cache_read_input_tokens == 0
    assert first.cache_creation.ephemeral_1h_input_tokens == PREFIX_TOKENS
    assert first.cache_creation.ephemeral_5m_input_tokens == 0
    for later in rest:
        assert later.cache_read_input_tokens == PREFIX_TOKENS and later.cache_creation_input_tokens == 0
    # input_tokens leaves the cached part out: together they are what count_tokens counts
    whole = api.messages.count_tokens(
        model="claude-sonnet-4-6", system=LONG_SYSTEM, messages=[{"role": "user", "content": "Review change 1"}]
    ).input_tokens
    assert rest[0].input_tokens + rest[0].cache_read_input_tokens == whole
    assert claude_emulator.state()["prompt_cache"] == {"entries": 1, "requests_writing": 1, "requests_reading": 2}


def test_a_prefix_under_the_models_minimum_is_not_cached(claude_emulator):
    api = client(claude_emulator)
    short = [{"type": "text", "text": "Be brief. " * 100, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    usage = run_batch(api, 2, system=short)  # 250 tokens, under Sonnet 4.6's 1,024
    assert all(u.cache_creation_input_tokens == 0 and u.cache_read_input_tokens == 0 for u in usage.values())
    # Haiku 4.5 needs 4,096 tokens: the long system prompt (1,440) caches on Sonnet, not on Haiku
    haiku = run_batch(api, 2, prefix="h", system=cached_system(), model="claude-haiku-4-5")
    assert all(u.cache_creation_input_tokens == 0 and u.cache_read_input_tokens == 0 for u in haiku.values())


def test_hits_are_best_effort_at_the_configured_rate_and_deterministic_given_the_seed(claude_emulator):
    claude_emulator.configure(cache_hit_rate=0.5, seed=11)
    api = client(claude_emulator)
    usage = run_batch(api, 200, system=cached_system())
    readers = {cid for cid, u in usage.items() if u.cache_read_input_tokens == PREFIX_TOKENS}
    writers = {cid for cid, u in usage.items() if u.cache_creation_input_tokens == PREFIX_TOKENS}
    assert readers.isdisjoint(writers) and len(readers | writers) == 200  # a miss writes the prefix again
    assert 70 <= len(readers) <= 130

    claude_emulator.reset()
    claude_emulator.configure(cache_hit_rate=0.5, seed=11)
    again = run_batch(client(claude_emulator), 200, system=cached_system())
    assert {cid for cid, u in again.items() if u.cache_read_input_tokens} == readers


def test_a_five_minute_entry_expires_and_a_one_hour_entry_outlives_it(claude_emulator):
    api = client(claude_emulator)
    other = LONG_SYSTEM.replace("payments", "billings")  # same length, another prefix
    run_batch(api, 1, prefix="short", system=cached_system(None))
    run_batch(api, 1, prefix="long", system=cached_system("1h", other))
    claude_emulator.advance(6 * 60)
    usage = run_batch(api, 1, prefix="later5", system=cached_system(None))["later5-0"]
    assert usage.cache_creation.ephemeral_5m_input_tokens == PREFIX_TOKENS and usage.cache_read_input_tokens == 0
    usage = run_batch(api, 1, prefix="later1", system=cached_system("1h", other))["later1-0"]
    assert usage.cache_read_input_tokens == PREFIX_TOKENS


def test_top_level_cache_control_caches_through_the_last_block(claude_emulator):
    api = client(claude_emulator)
    automatic = {"cache_control": {"type": "ephemeral", "ttl": "1h"}, "system": LONG_SYSTEM}
    first = api.messages.create(**params("Review change 7", **automatic)).usage
    second = api.messages.create(**params("Review change 7", **automatic)).usage
    assert first.cache_creation_input_tokens > PREFIX_TOKENS and first.cache_read_input_tokens == 0
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens and second.input_tokens == 0


def test_more_than_four_breakpoints_and_a_one_hour_after_a_five_minute_are_refused(claude_emulator):
    api = client(claude_emulator)
    five = [{"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}} for i in range(5)]
    with pytest.raises(anthropic.BadRequestError, match="A maximum of 4 blocks with cache_control may be provided"):
        api.messages.create(**params(system=five))
    mixed = [
        {"type": "text", "text": "short-lived", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "long-lived", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ]
    with pytest.raises(anthropic.BadRequestError, match="must not come after a ttl='5m'"):
        api.messages.create(**params(system=mixed))
    batch = api.messages.batches.create(requests=[{"custom_id": "five", "params": params(system=five)}])
    wait_ended(api, batch.id)
    result = results_by_id(api, batch.id)["five"]
    assert result.type == "errored" and "Found 5" in result.error.error.message
