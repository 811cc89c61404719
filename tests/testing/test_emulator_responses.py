"""Answers (``responder/``): structured outputs, forced tools, pytest modules, truncation, streaming."""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Any, Literal

import anthropic
import jsonschema
import pytest
from emulator_helpers import KEY, MODEL, client, params, results_by_id, wait_ended
from pydantic import BaseModel, Field


class Priority(str, Enum):
    low = "low"
    high = "high"


class Item(BaseModel):
    name: str = Field(min_length=3)
    quantity: int = Field(ge=1, le=5)
    price: float = Field(gt=0, lt=10)


class Order(BaseModel):
    summary: str
    priority: Priority
    items: list[Item] = Field(min_length=2)
    note: str | None = None
    urgent: bool
    kind: Literal["order"]


def test_structured_output_validates_against_the_pydantic_schema(claude_emulator):
    schema = Order.model_json_schema()
    output_config = {"format": {"type": "json_schema", "schema": schema}}
    api = client(claude_emulator)
    message = api.messages.create(
        model=MODEL,
        max_tokens=1024,
        messages=[{"role": "user", "content": "Order three red apples for the kitchen"}],
        extra_body={"output_config": output_config},
    )
    order = Order.model_validate_json(message.content[0].text)
    jsonschema.validate(json.loads(message.content[0].text), schema)
    assert order.kind == "order" and len(order.items) >= 2
    words = set(["Order", "three", "red", "apples", "for", "the", "kitchen"])
    assert set(order.summary.split()) <= words  # derived from the prompt

    batch = api.messages.batches.create(
        requests=[{"custom_id": "o1", "params": params("Ship paper", output_config=output_config)}]
    )
    wait_ended(api, batch.id)
    Order.model_validate_json(results_by_id(api, batch.id)["o1"].message.content[0].text)


def test_forced_tool_use(claude_emulator):
    tool = {
        "name": "record_weather",
        "description": "Record a weather report",
        "input_schema": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "celsius": {"type": "number", "minimum": -30, "maximum": 45},
                "conditions": {"type": "array", "items": {"enum": ["sun", "rain", "snow"]}, "minItems": 1},
            },
            "required": ["city", "celsius", "conditions"],
            "additionalProperties": False,
        },
    }
    message = client(claude_emulator).messages.create(
        model=MODEL,
        max_tokens=512,
        messages=[{"role": "user", "content": "Weather in Lisbon today"}],
        tools=[tool],
        tool_choice={"type": "tool", "name": "record_weather"},
    )
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "record_weather" and block.id.startswith("toolu_")
    jsonschema.validate(block.input, tool["input_schema"])


def test_pytest_prompt_yields_compilable_tests(claude_emulator):
    source = (
        "def add(a, b):\n    return a + b\n\n\ndef _private():\n    pass\n\n\ndef slugify(text):\n    return text\n"
    )
    prompt = f"Write pytest tests for this module:\n\n```python\n{source}```\n"
    message = client(claude_emulator).messages.create(
        model=MODEL, max_tokens=4096, messages=[{"role": "user", "content": prompt}]
    )
    code = re.search(r"```python\n(.*?)```", message.content[0].text, re.DOTALL).group(1)
    compile(code, "test_generated.py", "exec")
    assert "def test_add():" in code and "def test_slugify():" in code and "test__private" not in code
    namespace: dict[str, Any] = {}
    exec(compile(code, "test_generated.py", "exec"), namespace)
    namespace["test_add"]()
    namespace["test_slugify"]()


def test_max_tokens_truncates_and_stop_sequences(claude_emulator):
    api = client(claude_emulator)
    short = api.messages.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "hello " * 30}])
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 2
    assert len(short.content[0].text) <= 8
    stopped = api.messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "abc"}], stop_sequences=["answer"]
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "answer"
    assert stopped.usage.service_tier == "standard"


def test_messages_validation_is_immediate(claude_emulator):
    api = client(claude_emulator, max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        api.messages.create(model=MODEL, max_tokens=0, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.NotFoundError, match="model: gpt-4o"):
        api.messages.create(model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert claude_emulator.state()["messages_calls"] == 2


def test_streaming_messages(claude_emulator):
    api = client(claude_emulator)
    kwargs: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "Tell me a long story about streaming servers and clients"}],
    }
    with api.messages.stream(**kwargs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    plain = api.messages.create(**kwargs)
    assert text == plain.content[0].text == final.content[0].text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens


async def test_async_streaming_messages(claude_emulator):
    api = anthropic.AsyncAnthropic(api_key=KEY, base_url=claude_emulator.url)
    async with api.messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "async hello"}]
    ) as stream:
        text = "".join([chunk async for chunk in stream.text_stream])
    assert "async hello" in text
    await api.close()
