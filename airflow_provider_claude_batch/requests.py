"""The request model: what users write, what the Message Batches API receives.

A request is either the API's own form ``{"custom_id": ..., "params": {...}}`` or a shorthand:
a prompt string, ``{"custom_id"?, "prompt": ..., **overrides}`` or
``{"custom_id"?, "messages": [...], **overrides}``. Shorthands and full requests are merged with
operator-level :class:`RequestDefaults`; anything the user wrote (multi-turn messages, images,
tools, system prompts, ...) passes through untouched.

Requests are validated against the SDK's own request types and the API's documented rules (see
:mod:`~.validation`), and every problem is reported at once, before any network call. Each valid
request is serialised immediately, byte for byte the way the ``anthropic`` SDK serialises a body,
so the size limits are measured exactly and 100,000 requests are held as compact bytes rather
than as Python dictionaries.

This module imports nothing from Airflow.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_claude_batch.validation.checker import RequestChecker, encode
from airflow_provider_claude_batch.validation.models import ModelUse

CUSTOM_ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REQUESTS_PER_BATCH = 100_000
MAX_BATCH_BODY_BYTES = 256 * 1024 * 1024
MAX_PROBLEMS_SHOWN = 20

_BODY_PREFIX = b'{"requests":['
_BODY_SUFFIX = b"]}"
# Size of the blocks the create body is streamed in (see PreparedRequests.body_chunks).
BODY_BLOCK_BYTES = 256 * 1024
# The SDK encodes bodies with exactly these options (anthropic/_utils/_json.py), so sizes match.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_json(value: Any) -> bytes:
    """Serialise ``value`` exactly as the ``anthropic`` SDK serialises a request body."""
    return _ENCODER.encode(value).encode("utf-8")


@dataclass(frozen=True)
class RequestDefaults:
    """Operator-level values merged into every request that does not set them itself.

    :param model: model id, e.g. ``claude-sonnet-4-6``.
    :param max_tokens: output token ceiling for each request.
    :param system: system prompt (a string or a list of content blocks).
    :param params: any other Messages API parameters (``temperature``, ``tools``, ...).
    """

    model: str | None = None
    max_tokens: int | None = None
    system: str | list[Any] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def apply(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``params`` with the defaults filled in where the request is silent."""
        merged: dict[str, Any] = dict(self.params)
        if self.model is not None:
            merged["model"] = self.model
        if self.max_tokens is not None:
            merged["max_tokens"] = self.max_tokens
        if self.system is not None:
            merged["system"] = self.system
        merged.update(params)
        return merged


@dataclass(frozen=True)
class RequestProblem:
    """One reason one request cannot be sent."""

    index: int
    custom_id: str | None
    message: str

    def __str__(self) -> str:
        where = f"request[{self.index}]"
        if self.custom_id is not None:
            where += f" (custom_id {self.custom_id!r})"
        return f"{where}: {self.message}"


class RequestValidationError(ValueError):
    """The requests cannot be sent as they are; nothing was sent to the API."""

    def __init__(self, problems: Sequence[RequestProblem], total: int, source: str = "requests") -> None:
        self.problems = list(problems)
        self.total = total
        shown = "\n".join(f"  - {problem}" for problem in self.problems[:MAX_PROBLEMS_SHOWN])
        hidden = len(self.problems) - MAX_PROBLEMS_SHOWN
        more = f"\n  ... and {hidden} more problem(s)" if hidden > 0 else ""
        invalid = len({problem.index for problem in self.problems})
        super().__init__(
            f"{invalid} of {total} request(s) in {source} cannot be sent; nothing was sent to the API. "
            f"Fix these and run again:\n{shown}{more}"
        )


class RequestSourceError(ValueError):
    """A requests source (a JSONL file, an XCom value) cannot be read as requests."""


def generated_custom_id(params: Mapping[str, Any]) -> str:
    """A custom id derived from the request's content, so the same input always gets the same id."""
    return "req-" + hashlib.sha256(encode_json(params)).hexdigest()[:20]


def normalize_request(item: Any, defaults: RequestDefaults) -> tuple[str | None, dict[str, Any]]:
    """Turn one user-written request into ``(custom_id or None, params)``.

    ``custom_id`` is ``None`` when the user did not give one; :func:`prepare_requests` then derives
    it from the params. Raises :class:`ValueError` with a fix-it message when ``item`` has no
    recognisable shape.
    """
    if isinstance(item, str):
        return None, defaults.apply({"messages": [{"role": "user", "content": item}]})
    if not isinstance(item, Mapping):
        raise ValueError(
            f"a request must be a prompt string or a mapping, got {type(item).__name__}; "
            'write "prompt text", {"prompt": ...} or {"custom_id": ..., "params": {...}}'
        )
    custom_id = item.get("custom_id")
    if "params" in item:
        extra = sorted(set(item) - {"custom_id", "params"})
        if extra:
            raise ValueError(
                f"a full-form request has only 'custom_id' and 'params', but this one also has {extra}; "
                "move those keys into 'params'"
            )
        params = item["params"]
        if not isinstance(params, Mapping):
            raise ValueError(f"'params' must be a mapping of Messages API parameters, got {type(params).__name__}")
        return custom_id, defaults.apply(params)
    overrides = {key: value for key, value in item.items() if key not in ("custom_id", "prompt")}
    if "prompt" in item:
        if "messages" in item:
            raise ValueError("give either 'prompt' or 'messages', not both")
        overrides["messages"] = [{"role": "user", "content": item["prompt"]}]
    elif "messages" not in item:
        raise ValueError(
            f"a request needs 'params' (the API's full form), 'prompt' or 'messages'; this one has only {sorted(item)}"
        )
    return custom_id, defaults.apply(overrides)


def custom_id_problem(custom_id: Any) -> str | None:
    """Why ``custom_id`` is not acceptable to the API, or ``None`` when it is."""
    if not isinstance(custom_id, str):
        return f"custom_id must be a string, got {type(custom_id).__name__}"
    if not CUSTOM_ID_PATTERN.match(custom_id):
        suggestion = re.sub(r"[^a-zA-Z0-9_-]", "_", custom_id)[:64] or "request-1"
        return (
            "custom_id must be 1-64 characters of letters, digits, '_' or '-' "
            f"(^[a-zA-Z0-9_-]{{1,64}}$); for example {suggestion!r}"
        )
    return None


@dataclass
class PreparedRequests:
    """Validated requests, each already serialised as the API will receive it.

    ``encoded[i]`` is the JSON of ``{"custom_id": custom_ids[i], "params": ...}``.
    """

    custom_ids: list[str] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)
    fast_mode_ids: list[str] = field(default_factory=list)
    models: dict[str, ModelUse] = field(default_factory=dict)
    """The models the requests name: each with the first request naming it and how many do."""

    @property
    def count(self) -> int:
        return len(self.custom_ids)

    @property
    def body_size(self) -> int:
        """Bytes of the create body ``{"requests":[...]}`` the SDK would send."""
        commas = max(self.count - 1, 0)
        return len(_BODY_PREFIX) + sum(map(len, self.encoded)) + commas + len(_BODY_SUFFIX)

    def body_chunks(self) -> Iterator[bytes]:
        """The create body as a stream of ~256 KB blocks, without joining it into one copy.

        Blocks, not one chunk per request: every chunk is a socket write of its own, and 100,000
        tiny writes took longer than the body's bytes (measured in ``benchmarks/``).
        """
        block = [_BODY_PREFIX]
        size = 0
        for position, encoded in enumerate(self.encoded):
            if position:
                block.append(b",")
            block.append(encoded)
            size += len(encoded)
            if size >= BODY_BLOCK_BYTES:
                yield b"".join(block)
                block = []
                size = 0
        block.append(_BODY_SUFFIX)
        yield b"".join(block)

    def fingerprint(self) -> str:
        """SHA-256 of everything that is sent and billed: equal fingerprints mean the same batch."""
        digest = hashlib.sha256()
        for chunk in self.body_chunks():
            digest.update(chunk)
        return digest.hexdigest()

    def id_digest(self) -> str:
        """Order-independent digest of the custom ids (see :class:`~.results.CustomIdDigest`)."""
        from airflow_provider_claude_batch.results import CustomIdDigest

        return CustomIdDigest.of(self.custom_ids)

    def subset(self, custom_ids: set[str]) -> PreparedRequests:
        """Only the requests whose custom id is in ``custom_ids``, in input order (for follow-up rounds)."""
        part = PreparedRequests()
        fast = set(self.fast_mode_ids)
        for custom_id, encoded in zip(self.custom_ids, self.encoded, strict=True):
            if custom_id in custom_ids:
                part.custom_ids.append(custom_id)
                part.encoded.append(encoded)
                if custom_id in fast:
                    part.fast_mode_ids.append(custom_id)
        return part

    def split(
        self, max_requests: int = MAX_REQUESTS_PER_BATCH, max_body_bytes: int = MAX_BATCH_BODY_BYTES
    ) -> list[PreparedRequests]:
        """Split into consecutive parts that each fit one batch, in input order.

        Raises :class:`RequestValidationError` when a single request is larger than a whole batch.
        """
        if 0 < self.count <= max_requests and self.body_size <= max_body_bytes:
            return [self]  # fits one batch (the usual case): no copy of 100,000 entries
        parts: list[PreparedRequests] = []
        current = PreparedRequests()
        current_size = len(_BODY_PREFIX) + len(_BODY_SUFFIX)
        fast = set(self.fast_mode_ids)
        for index, (custom_id, encoded) in enumerate(zip(self.custom_ids, self.encoded, strict=True)):
            added = len(encoded) + (1 if current.count else 0)
            standalone = len(_BODY_PREFIX) + len(encoded) + len(_BODY_SUFFIX)
            if standalone > max_body_bytes:
                problem = RequestProblem(
                    index,
                    custom_id,
                    f"this request alone is {standalone:,} bytes, over the {max_body_bytes:,}-byte batch "
                    "limit; shorten it (large documents belong in the Files API or in fewer requests)",
                )
                raise RequestValidationError([problem], self.count)
            if current.count and (current.count >= max_requests or current_size + added > max_body_bytes):
                parts.append(current)
                current = PreparedRequests()
                current_size = len(_BODY_PREFIX) + len(_BODY_SUFFIX)
                added = len(encoded)
            current.custom_ids.append(custom_id)
            current.encoded.append(encoded)
            if custom_id in fast:
                current.fast_mode_ids.append(custom_id)
            current_size += added
        if current.count:
            parts.append(current)
        return parts


class _TakenIds:
    """The custom ids used so far and where each was first used, without a dict of 100,000 ints.

    Membership is a set. A duplicate's first use is needed only to report it, so it is worked out
    then, from the id's position among the accepted requests and the indexes of the rejected ones.
    For 100,000 requests this keeps about 3 MB (a tenth of the peak) off preparing them (measured
    in ``benchmarks/``).
    """

    def __init__(self, accepted_ids: list[str]) -> None:
        self._accepted_ids = accepted_ids
        self._taken: set[str] = set()
        self._rejected: list[int] = []  # ascending input indexes of requests not accepted
        self._first_rejected_use: dict[str, int] = {}
        self._positions: dict[str, int] = {}

    def __contains__(self, custom_id: object) -> bool:
        return custom_id in self._taken

    def add(self, custom_id: str) -> None:
        self._taken.add(custom_id)

    def reject(self, index: int, took: str | None = None) -> None:
        """Request ``index`` was not accepted; ``took`` is the id it was the first to use, if any."""
        self._rejected.append(index)
        if took is not None:
            self._first_rejected_use[took] = index

    def first_use(self, custom_id: str) -> int:
        """Input index of the first request that used ``custom_id`` (an error path only)."""
        if custom_id in self._first_rejected_use:
            return self._first_rejected_use[custom_id]
        for position in range(len(self._positions), len(self._accepted_ids)):
            self._positions[self._accepted_ids[position]] = position
        index = self._positions[custom_id]
        for rejected in self._rejected:  # every rejected request before it shifts its index by one
            if rejected > index:
                break
            index += 1
        return index


def prepare_requests(
    items: Iterable[Any],
    defaults: RequestDefaults | None = None,
    source: str = "requests",
    *,
    allow_stream: bool = False,
    checker: RequestChecker | None = None,
) -> PreparedRequests:
    """Normalise, validate and serialise ``items``; raise one error listing every problem.

    ``items`` is consumed once, so it may be a generator over a large JSONL file. Params are checked
    by ``checker`` (against the SDK's request types and the API's documented rules, see
    :mod:`~.validation.checker`); by default one for a batch, or for the Messages API when
    ``allow_stream`` is set.
    """
    defaults = defaults or RequestDefaults()
    checker = checker or RequestChecker(batch=not allow_stream)
    prepared = PreparedRequests()
    problems: list[RequestProblem] = []
    taken = _TakenIds(prepared.custom_ids)
    total = 0
    for index, item in enumerate(items):
        total += 1
        try:
            custom_id, params = normalize_request(item, defaults)
        except ValueError as error:
            raw_id = item.get("custom_id") if isinstance(item, Mapping) else None
            problems.append(RequestProblem(index, raw_id if isinstance(raw_id, str) else None, str(error)))
            taken.reject(index)
            continue
        if custom_id is None:
            custom_id = generated_custom_id(params)
            suffix = 2
            base = custom_id
            while custom_id in taken:
                custom_id = f"{base}-{suffix}"
                suffix += 1
        shown_id = custom_id if isinstance(custom_id, str) else None
        verdict = checker.check(params)
        item_problems = [RequestProblem(index, shown_id, text) for text in verdict.problems]
        id_problem = custom_id_problem(custom_id)
        took = None
        if id_problem:
            item_problems.append(RequestProblem(index, shown_id, id_problem))
        elif custom_id in taken:
            item_problems.append(
                RequestProblem(
                    index,
                    custom_id,
                    f"duplicate custom_id, already used by request[{taken.first_use(custom_id)}]; "
                    "custom ids must be unique within a batch (omit custom_id to have one derived)",
                )
            )
        else:
            taken.add(custom_id)
            took = custom_id
        if item_problems:
            problems.extend(item_problems)
            taken.reject(index, took)
            continue
        try:
            encoded = encode({"custom_id": custom_id, "params": params}, verdict, encode_json)
        except (TypeError, ValueError) as error:
            problems.append(RequestProblem(index, custom_id, f"params are not JSON-serialisable: {error}"))
            taken.reject(index, custom_id)
            continue
        prepared.custom_ids.append(custom_id)
        prepared.encoded.append(encoded)
        if verdict.fast:
            prepared.fast_mode_ids.append(custom_id)
        if verdict.model is not None:
            use = prepared.models.get(verdict.model)
            if use is None:
                use = prepared.models[verdict.model] = ModelUse(index, custom_id, 0)
            use.count += 1
            use.max_tokens = max(use.max_tokens, verdict.max_tokens)
            use.input_bytes += len(encoded)
    if total == 0:
        problems.append(RequestProblem(0, None, "there are no requests; a batch needs at least one"))
    if problems:
        raise RequestValidationError(problems, total, source)
    return prepared


def iter_jsonl(lines: Iterable[bytes | str], source: str) -> Iterator[Any]:
    """Parse JSON Lines one line at a time; blank lines are skipped, bad lines name their number."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as error:
            raise RequestSourceError(
                f"{source}, line {number}: not valid JSON ({error.msg} at column {error.colno}); "
                "each line must hold one request as a JSON object or string"
            ) from None
