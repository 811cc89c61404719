"""Deterministic Messages-API behaviour for the emulator: parameter validation and fake answers.

Everything here is a pure function of the request parameters (plus the prompt cache, which is
explicit state passed in), so the same request always yields the same answer. That is what lets
tests assert on real content, and lets a resubmitted batch produce byte-identical results.

Nothing here knows about HTTP or batches; :mod:`.emulator` wires it to the wire protocol.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CacheUsage",
    "ParamsError",
    "PromptCache",
    "deep_params_error",
    "estimate_tokens",
    "generate_message",
    "message_stream_events",
    "shallow_params_error",
    "stable_id",
]

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_TABLE = bytes(ord(BASE62[b % 62]) for b in range(256))
_SHALLOW_DEPTH = 4  # past this, only required fields, minimal arrays, null optionals
_MAX_DEPTH = 64  # unsatisfiable (infinitely recursive) schemas stop here
_DEF_RE = re.compile(r"(?m)^def ([A-Za-z_]\w*)\s*\(")
_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9'_-]*")
_MODULE_RE = re.compile(r"\b([A-Za-z_]\w*)\.py\b|\bmodule\s+`([A-Za-z_][\w.]*)`")
_CODE_START_RE = re.compile(r"(def |async def |class |import \w|from [\w.]+ import |@\w)")
_FENCE_RE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


class ParamsError(ValueError):
    """A Messages API parameter problem, with the API-style message (``field: text``)."""


# --------------------------------------------------------------------------------------------
# hashing helpers


def _digest(*parts: str) -> bytes:
    """blake2b of the joined parts: fast, stable across processes (unlike ``hash()``)."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).digest()


def hash_int(*parts: str) -> int:
    """A stable non-negative integer derived from ``parts``."""
    return int.from_bytes(_digest(*parts)[:8], "big")


def stable_id(prefix: str, *parts: str, length: int = 24) -> str:
    """An id such as ``msg_<24 base62>`` derived from ``parts``, so re-renders are identical."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=length).digest()
    return prefix + digest.translate(_BASE62_TABLE).decode()


def estimate_tokens(chars: int) -> int:
    """The usual chars/4 rule of thumb, never below 1 (the API never reports 0 tokens)."""
    return max(1, math.ceil(chars / 4))


# --------------------------------------------------------------------------------------------
# validation


def _type_name_error(value: Any, kind: str) -> str | None:
    """Pydantic-style message when ``value`` is not of ``kind`` (the API reports these verbatim)."""
    checks = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "list": isinstance(value, list),
        "dictionary": isinstance(value, dict),
    }
    if checks[kind]:
        return None
    return f"Input should be a valid {kind}"


def shallow_params_error(params: Any, prefix: str = "", *, batch: bool = False) -> str | None:
    """The create-time (schema-level) problem of ``params``, or None.

    The real API rejects these synchronously; deeper problems (unknown model, malformed
    messages) are only found when a batch request is processed, see :func:`deep_params_error`.
    """
    if (msg := _type_name_error(params, "dictionary")) is not None:
        return f"{prefix.rstrip('.')}: {msg}" if prefix else msg
    if "model" not in params:
        return f"{prefix}model: Field required"
    if (msg := _type_name_error(params["model"], "string")) is not None:
        return f"{prefix}model: {msg}"
    if "max_tokens" not in params:
        return f"{prefix}max_tokens: Field required"
    if (msg := _type_name_error(params["max_tokens"], "integer")) is not None:
        return f"{prefix}max_tokens: {msg}"
    if params["max_tokens"] < 1:
        return f"{prefix}max_tokens: Input should be greater than or equal to 1"
    if "messages" not in params:
        return f"{prefix}messages: Field required"
    if (msg := _type_name_error(params["messages"], "list")) is not None:
        return f"{prefix}messages: {msg}"
    if not params["messages"]:
        return f"{prefix}messages: List should have at least 1 item after validation, not 0"
    if params.get("stream") is True and batch:
        return f"{prefix}stream: streaming is not supported for Message Batches requests"
    return None


def _message_error(index: int, message: Any) -> str | None:
    """Problems in one entry of ``messages`` (role and content shape)."""
    where = f"messages.{index}"
    if not isinstance(message, dict):
        return f"{where}: Input should be a valid dictionary"
    if message.get("role") not in ("user", "assistant"):
        return f"{where}.role: Input should be 'user' or 'assistant'"
    content = message.get("content")
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"{where}.content: Input should be a valid string or a list of content blocks"
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"{where}.content.{j}: Input should be a content block object with a 'type'"
    return None


def _tool_choice_error(params: dict[str, Any]) -> str | None:
    """``tool_choice`` must name a tool that exists, like the real API checks."""
    choice = params.get("tool_choice")
    if not isinstance(choice, dict) or choice.get("type") != "tool":
        return None
    names = {t.get("name") for t in params.get("tools") or [] if isinstance(t, dict)}
    if choice.get("name") not in names:
        return f"tool_choice: Tool '{choice.get('name')}' not found in tools"
    return None


def _output_config_error(params: dict[str, Any]) -> str | None:
    """A structured-output request must carry a JSON schema object."""
    fmt = _output_format(params)
    if fmt is None:
        return None
    if fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        return "output_config.format: Input should be {'type': 'json_schema', 'schema': {...}}"
    return None


def deep_params_error(params: dict[str, Any]) -> str | None:
    """Processing-time problems of shallow-valid ``params`` (become ``errored`` batch results)."""
    if not params["model"].startswith("claude-"):
        return f"model: Model '{params['model']}' is not a valid Claude model (expected 'claude-...')"
    for i, message in enumerate(params["messages"]):
        if (msg := _message_error(i, message)) is not None:
            return msg
    temperature = params.get("temperature")
    if temperature is not None and (not isinstance(temperature, (int, float)) or not 0 <= temperature <= 1):
        return "temperature: Input should be a number between 0 and 1"
    billing = params.get("billing_policy")
    if isinstance(billing, dict) and billing.get("bill_to") == "user_profile":
        return "billing_policy.bill_to: 'user_profile' is not supported in Message Batches"
    return _tool_choice_error(params) or _output_config_error(params)


# --------------------------------------------------------------------------------------------
# prompt text and token accounting


def _block_text(block: Any) -> str:
    """The text a content block contributes to the prompt (for token counts and echoes)."""
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "tool_result":
        return _content_text(block.get("content", ""))
    if kind == "tool_use":
        return json.dumps(block.get("input", {}))
    if kind in ("image", "document"):
        source = block.get("source") or {}
        return str(source.get("data", ""))[:4000] if source.get("type") == "text" else "x" * 4000
    return json.dumps(block)


def _content_text(content: Any) -> str:
    """Text of a ``content`` field, which is either a string or a list of blocks."""
    if isinstance(content, list):
        return "\n".join(_block_text(b) for b in content)
    return _block_text(content)


def _last_user_text(params: dict[str, Any]) -> str:
    """The last user turn: what a reply should visibly depend on."""
    for message in reversed(params["messages"]):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content", ""))
    return ""


def _prompt_units(params: dict[str, Any]) -> Iterator[tuple[str, bool, str]]:
    """(text, has_cache_control, ttl) per prompt unit, in cache-prefix order: tools, system, messages."""
    for tool in params.get("tools") or []:
        if isinstance(tool, dict):
            cc = tool.get("cache_control")
            yield json.dumps(tool, sort_keys=True, default=str), isinstance(cc, dict), _ttl(cc)
    system = params.get("system")
    blocks: list[Any] = system if isinstance(system, list) else ([system] if system else [])
    for block in blocks:
        cc = block.get("cache_control") if isinstance(block, dict) else None
        yield _block_text(block), isinstance(cc, dict), _ttl(cc)
    for message in params["messages"]:
        content = message.get("content", "") if isinstance(message, dict) else ""
        parts: list[Any] = content if isinstance(content, list) else [content]
        for block in parts:
            cc = block.get("cache_control") if isinstance(block, dict) else None
            yield _block_text(block), isinstance(cc, dict), _ttl(cc)


def _ttl(cache_control: Any) -> str:
    """Normalised cache TTL (``5m`` unless the block asks for ``1h``)."""
    if isinstance(cache_control, dict) and cache_control.get("ttl") == "1h":
        return "1h"
    return "5m"


@dataclass(frozen=True)
class CacheUsage:
    """Cache tokens of one request: written now, or read from an earlier identical prefix."""

    write_tokens: int = 0
    read_tokens: int = 0
    ttl: str = "5m"


NO_CACHE = CacheUsage()


class PromptCache:
    """The set of cached prompt prefixes the emulator has seen, for cache write/read accounting.

    A request's cache breakpoints are the blocks carrying ``cache_control``; the first time a
    prefix (everything up to and including such a block) is seen it is a cache write, afterwards
    a read, which is how the real prompt cache bills repeated system prompts in a batch.
    """

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def clear(self) -> None:
        """Forget all prefixes (emulator reset)."""
        self._seen.clear()

    def account(self, params: dict[str, Any]) -> CacheUsage:
        """Record the request's prefixes and return its cache usage."""
        if _simple_prompt_chars(params) is not None:
            return NO_CACHE  # plain strings cannot carry cache_control
        hasher = hashlib.blake2b(digest_size=16)
        chars = 0
        breakpoints: list[tuple[bytes, int, str]] = []
        for text, cached, ttl in _prompt_units(params):
            hasher.update(text.encode())
            hasher.update(b"\x1e")
            chars += len(text)
            if cached:
                breakpoints.append((hasher.copy().digest(), estimate_tokens(chars), ttl))
        if not breakpoints:
            return NO_CACHE
        read = max((tokens for key, tokens, _ in breakpoints if key in self._seen), default=0)
        _, last_tokens, ttl = breakpoints[-1]
        self._seen.update(key for key, _, _ in breakpoints)
        return CacheUsage(write_tokens=max(0, last_tokens - read), read_tokens=read, ttl=ttl)


def input_token_count(params: dict[str, Any]) -> int:
    """Total prompt tokens: chars/4 of tools, system and every message block."""
    return estimate_tokens(_simple_prompt_chars(params) or sum(len(text) for text, _, _ in _prompt_units(params)))


def _simple_prompt_chars(params: dict[str, Any]) -> int | None:
    """Fast path for the common all-strings prompt (keeps 100k-line result streams quick)."""
    system = params.get("system") or ""
    if params.get("tools") or not isinstance(system, str):
        return None
    total = len(system)
    for message in params["messages"]:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            return None
        total += len(content)
    return total


# --------------------------------------------------------------------------------------------
# JSON-schema driven values (structured outputs and forced tools)


class _SchemaFaker:
    """Builds a value that validates against a JSON schema, derived from the prompt's words.

    Supports the subset pydantic's ``model_json_schema()`` and hand-written schemas use:
    objects, arrays, scalars with bounds/enums/const, ``$defs``/``$ref``, ``anyOf``/``oneOf``
    (first non-null branch), ``allOf`` (merged) and type lists.
    """

    def __init__(self, root: dict[str, Any], words: list[str], seed: str) -> None:
        self._root = root
        self._words = words or ["emulated"]
        self._seed = seed

    def _h(self, path: str) -> int:
        return hash_int(self._seed, path)

    def _resolve(self, schema: Any) -> dict[str, Any]:
        """Follow local ``$ref`` pointers (``#/$defs/X``, ``#/definitions/X``, ``#``)."""
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 32:
            ref = schema["$ref"]
            target: Any = self._root
            for part in ref.lstrip("#").strip("/").split("/") if ref not in ("#", "#/") else []:
                target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
            extra = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **extra}
            seen += 1
        return schema if isinstance(schema, dict) else {}

    def value(self, schema: Any, path: str = "$", depth: int = 0) -> Any:
        """A valid instance of ``schema`` at JSON path ``path``."""
        schema = self._resolve(schema)
        if depth > _MAX_DEPTH:
            return None
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][self._h(path) % len(schema["enum"])]
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self.value(self._pick_branch(schema[key], depth), path, depth + 1)
        if isinstance(schema.get("allOf"), list):
            return self.value(self._merge(schema), path, depth + 1)
        kind = self._type_of(schema)
        maker = {
            "object": self._object,
            "array": self._array,
            "string": self._string,
            "integer": self._integer,
            "number": self._number,
            "boolean": lambda s, p, d: self._h(p) % 2 == 0,
            "null": lambda s, p, d: None,
        }[kind]
        return maker(schema, path, depth)

    def _pick_branch(self, branches: list[Any], depth: int) -> Any:
        """First non-null branch (null only if deep in a recursive structure)."""
        resolved = [self._resolve(b) for b in branches]
        non_null = [b for b in resolved if b.get("type") != "null"]
        if depth > _SHALLOW_DEPTH and len(non_null) < len(resolved):
            return {"type": "null"}
        return non_null[0] if non_null else resolved[0]

    def _merge(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Shallow merge of ``allOf`` parts (properties and required lists are unioned)."""
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = self._resolve(part)
            for key, val in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **val}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *val]
                else:
                    merged.setdefault(key, val)
        return merged

    @staticmethod
    def _type_of(schema: dict[str, Any]) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if isinstance(kind, str) and kind in ("object", "array", "string", "integer", "number", "boolean"):
            return kind
        if kind == "null":
            return "null"
        if "properties" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema:
            return "array"
        return "string"

    def _object(self, schema: dict[str, Any], path: str, depth: int) -> dict[str, Any]:
        props: dict[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        shallow = depth < _SHALLOW_DEPTH
        return {
            name: self.value(sub, f"{path}.{name}", depth + 1)
            for name, sub in props.items()
            if shallow or name in required
        }

    def _array(self, schema: dict[str, Any], path: str, depth: int) -> list[Any]:
        low = int(schema.get("minItems", 0))
        count = max(low, 2 if depth < _SHALLOW_DEPTH else 0)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        items = schema.get("items", {})
        if isinstance(schema.get("prefixItems"), list):
            return [self.value(s, f"{path}[{i}]", depth + 1) for i, s in enumerate(schema["prefixItems"])]
        return [self.value(items, f"{path}[{i}]", depth + 1) for i in range(count)]

    def _string(self, schema: dict[str, Any], path: str, depth: int) -> str:
        text = self._format_value(schema.get("format"), path) or self._words_for(path)
        min_len = int(schema.get("minLength", 0))
        while len(text) < min_len:
            text = f"{text} {self._words_for(path + '+')}"
        if "maxLength" in schema:
            text = text[: int(schema["maxLength"])]
        return text

    def _words_for(self, path: str) -> str:
        """A few consecutive prompt words, starting at a path-dependent offset."""
        start = self._h(path) % len(self._words)
        picked = (self._words[start:] + self._words[:start])[: 3 + self._h(path + "#") % 5]
        return " ".join(picked)

    def _format_value(self, fmt: Any, path: str) -> str | None:
        word = re.sub(r"[^a-z0-9]", "", self._words[self._h(path) % len(self._words)].lower()) or "x"
        return (
            {
                "date-time": "2025-01-15T12:00:00Z",
                "date": "2025-01-15",
                "time": "12:00:00",
                "email": f"{word}@example.com",
                "uri": f"https://example.com/{word}",
                "url": f"https://example.com/{word}",
                "uuid": str(uuid.UUID(int=self._h(path) << 64 | self._h(path + "u"))),
                "ipv4": "192.0.2.10",
            }.get(fmt)
            if isinstance(fmt, str)
            else None
        )

    @staticmethod
    def _bounds(schema: dict[str, Any], step: float) -> tuple[float, float]:
        low = schema.get("minimum")
        high = schema.get("maximum")
        if "exclusiveMinimum" in schema and isinstance(schema["exclusiveMinimum"], (int, float)):
            low = schema["exclusiveMinimum"] + step
        if "exclusiveMaximum" in schema and isinstance(schema["exclusiveMaximum"], (int, float)):
            high = schema["exclusiveMaximum"] - step
        if low is None and high is None:
            return 0, 100
        if low is None:
            return high - 100, high
        if high is None:
            return low, low + 100
        return low, high

    def _integer(self, schema: dict[str, Any], path: str, depth: int) -> int:
        low, high = self._bounds(schema, 1)
        low_i, high_i = math.ceil(low), math.floor(high)
        multiple = schema.get("multipleOf")
        if isinstance(multiple, int) and multiple > 0:
            first = math.ceil(low_i / multiple) * multiple
            slots = max(1, (high_i - first) // multiple + 1)
            return first + multiple * (self._h(path) % slots)
        return low_i + self._h(path) % max(1, high_i - low_i + 1)

    def _number(self, schema: dict[str, Any], path: str, depth: int) -> float:
        low, high = self._bounds(schema, 1e-6)
        frac = 0.1 + 0.8 * (self._h(path) % 1000) / 1000
        value = round(low + (high - low) * frac, 2)
        return min(max(value, low), high)


def _output_format(params: dict[str, Any]) -> dict[str, Any] | None:
    """The structured-output format of a request, if any (``output_config.format``)."""
    config = params.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    return fmt if isinstance(fmt, dict) else None


def _drop_required(value: Any, schema: dict[str, Any], faker: _SchemaFaker) -> Any:
    """Make ``value`` schema-invalid by removing its first required field (``invalid_output``)."""
    resolved = faker._resolve(schema)
    required = resolved.get("required") or []
    if isinstance(value, dict) and required:
        return {k: v for k, v in value.items() if k != required[0]}
    return None


def _schema_value(params: dict[str, Any], schema: dict[str, Any], salt: str, invalid: bool) -> Any:
    """Generate (and optionally break) a schema instance derived from the prompt."""
    prompt = _last_user_text(params)
    faker = _SchemaFaker(schema, _WORD_RE.findall(prompt), seed=f"{salt}:{prompt}")
    value = faker.value(schema)
    return _drop_required(value, schema, faker) if invalid else value


# --------------------------------------------------------------------------------------------
# answers


def _pytest_answer(prompt: str) -> str | None:
    """A runnable pytest module for the public functions in a prompt asking for pytest tests.

    Example DAGs write these answers to disk and run them, so the module must compile and pass:
    each test checks the function exists and has the parameters the source declares.
    """
    if "def " not in prompt:
        return None
    if "pytest" not in prompt.lower() and not re.search(r"(?i)\bunit tests?\b", prompt):
        return None
    fenced = _FENCE_RE.findall(prompt)
    code = _extract_code("\n".join(fenced) if fenced else prompt)
    functions = _public_functions(code)
    if not functions:
        return None
    names = list(functions)
    module = f"{_pytest_header(prompt, code, names)}\n\n" + "\n\n".join(
        _pytest_case(name, parameters) for name, parameters in functions.items()
    )
    return f"Here are pytest tests for {', '.join(names)}:\n\n```python\n{module}```\n"


def _public_functions(code: str) -> dict[str, list[str] | None]:
    """Top-level public functions and their parameter names (None when the code does not parse)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return {n: None for n in dict.fromkeys(_DEF_RE.findall(code)) if not n.startswith("_")}
    found: dict[str, list[str] | None] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            args = node.args
            ordered = [*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg]
            found[node.name] = [a.arg for a in ordered if a is not None]
    return found


def _pytest_case(name: str, parameters: list[str] | None) -> str:
    """One test function: callable, and (when known) the declared parameter names."""
    lines = [f"def test_{name}():", f"    assert callable({name})"]
    if parameters is not None:
        lines.append(f"    assert list(inspect.signature({name}).parameters) == {parameters!r}")
    return "\n".join(lines) + "\n"


def _pytest_header(prompt: str, code: str, names: list[str]) -> str:
    """Imports for the generated tests: the named module, else the inlined source under test."""
    match = _MODULE_RE.search(prompt)
    module = (match.group(1) or match.group(2)) if match else None
    if module and module.replace(".", "_").isidentifier():
        return f"import inspect\n\nfrom {module} import {', '.join(names)}\n"
    try:
        compile(code, "<source>", "exec")
    except SyntaxError:
        skip = 'pytest.skip("source under test not found", allow_module_level=True)'
        return f"import inspect\n\nimport pytest\n\n{skip}\n"
    return f"import inspect\n\n# --- code under test (inlined: the prompt named no module) ---\n{code.rstrip()}\n"


def _extract_code(source: str) -> str:
    """Python source in ``source``: from its first def/class/import line to the longest prefix
    that compiles (so prose after an unfenced snippet is dropped)."""
    lines = source.splitlines()
    start = next((i for i, line in enumerate(lines) if _CODE_START_RE.match(line)), 0)
    lines = lines[start:]
    for end in range(len(lines), max(0, len(lines) - 200), -1):
        code = "\n".join(lines[:end]) + "\n"
        try:
            compile(code, "<source>", "exec")
        except SyntaxError:
            continue
        return code
    return "\n".join(lines) + "\n"


def _plain_answer(prompt: str, params: dict[str, Any]) -> str:
    """A one-line reply that visibly depends on the prompt (its first words and word count)."""
    words = _WORD_RE.findall(prompt)
    head = " ".join(words[:12]) + ("..." if len(words) > 12 else "")
    turns = len(params["messages"])
    return f'Emulated answer to "{head}" ({len(words)} words, {turns} message(s)).'


def _apply_stop_sequences(text: str, params: dict[str, Any]) -> tuple[str, str | None]:
    """Cut ``text`` at the earliest custom stop sequence, as the model would stop there."""
    best: tuple[int, str] | None = None
    for seq in params.get("stop_sequences") or []:
        if isinstance(seq, str) and seq and (pos := text.find(seq)) >= 0 and (best is None or pos < best[0]):
            best = (pos, seq)
    if best is None:
        return text, None
    return text[: best[0]], best[1]


def _text_content(params: dict[str, Any], salt: str, invalid: bool) -> tuple[str, str, str | None]:
    """(text, stop_reason, stop_sequence) for a text reply, honouring max_tokens."""
    fmt = _output_format(params)
    if fmt is not None and isinstance(fmt.get("schema"), dict):
        text = json.dumps(_schema_value(params, fmt["schema"], salt, invalid), ensure_ascii=False)
    else:
        prompt = _last_user_text(params)
        text = _pytest_answer(prompt) or _plain_answer(prompt, params)
    text, stop_sequence = _apply_stop_sequences(text, params)
    if stop_sequence is not None:
        return text, "stop_sequence", stop_sequence
    limit = params["max_tokens"] * 4
    if len(text) > limit:
        return text[:limit], "max_tokens", None
    return text, "end_turn", None


def _forced_tool(params: dict[str, Any]) -> dict[str, Any] | None:
    """The tool the request forces (``tool_choice`` ``tool`` by name, or ``any`` = first tool)."""
    choice = params.get("tool_choice")
    tools = [t for t in params.get("tools") or [] if isinstance(t, dict)]
    if not isinstance(choice, dict) or not tools:
        return None
    if choice.get("type") == "any":
        return tools[0]
    if choice.get("type") == "tool":
        return next((t for t in tools if t.get("name") == choice.get("name")), None)
    return None


def _usage(params: dict[str, Any], output_chars: int, cache: CacheUsage, tier: str) -> dict[str, Any]:
    """The ``usage`` object; cache tokens are carved out of the total input."""
    total = input_token_count(params)
    cached = min(total, cache.write_tokens + cache.read_tokens)
    write = min(cache.write_tokens, cached)
    return {
        "input_tokens": max(0, total - cached),
        "output_tokens": min(estimate_tokens(output_chars), params["max_tokens"]),
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": cached - write,
        "cache_creation": {
            "ephemeral_5m_input_tokens": write if cache.ttl == "5m" else 0,
            "ephemeral_1h_input_tokens": write if cache.ttl == "1h" else 0,
        },
        "server_tool_use": None,
        "service_tier": tier,
    }


def generate_message(
    params: dict[str, Any],
    *,
    message_id: str,
    service_tier: str = "standard",
    cache: CacheUsage = NO_CACHE,
    invalid_output: bool = False,
) -> dict[str, Any]:
    """The full ``message`` object the API would return for ``params`` (already validated).

    ``invalid_output`` breaks structured output / forced-tool input on purpose by dropping a
    required field, to exercise a DAG's output validation path.
    """
    tool = _forced_tool(params)
    if tool is not None:
        schema = tool.get("input_schema") if isinstance(tool.get("input_schema"), dict) else {}
        tool_input = _schema_value(params, schema, message_id, invalid_output)
        if not isinstance(tool_input, dict):
            tool_input = {}
        block = {
            "type": "tool_use",
            "id": stable_id("toolu_", message_id),
            "name": tool["name"],
            "input": tool_input,
        }
        content, stop_reason, stop_sequence = [block], "tool_use", None
        output_chars = len(json.dumps(tool_input))
    else:
        text, stop_reason, stop_sequence = _text_content(params, message_id, invalid_output)
        content = [{"type": "text", "text": text}]
        output_chars = len(text)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": _usage(params, output_chars, cache, service_tier),
    }


def _chunks(text: str, size: int = 24) -> list[str]:
    """Split ``text`` into streaming deltas (at least one, possibly empty)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def message_stream_events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs of the SSE stream for ``message``, in the API's order."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**usage, "output_tokens": 1}
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            opening = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _chunks(json.dumps(block["input"]))]
        else:
            opening = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _chunks(block["text"])]
        yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": opening}
        for delta in deltas:
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    delta_usage = {
        "input_tokens": usage["input_tokens"],
        "output_tokens": usage["output_tokens"],
        "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
        "cache_read_input_tokens": usage["cache_read_input_tokens"],
    }
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
            "usage": delta_usage,
        },
    )
    yield "message_stop", {"type": "message_stop"}
