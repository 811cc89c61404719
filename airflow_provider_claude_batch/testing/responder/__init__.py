"""Deterministic Messages-API behaviour for the emulator: parameter validation and fake answers.

Everything here is a pure function of the request parameters (plus the prompt cache, which is
explicit state passed in), so the same request always yields the same answer. That is what lets
tests assert on real content, and lets a resubmitted batch produce byte-identical results.

Nothing here knows about HTTP or batches; :mod:`..emulator` wires it to the wire protocol.

A package whose ``__init__`` re-exports every name the module ``testing/responder.py`` had, so
imports from ``airflow_provider_claude_batch.testing.responder`` keep working. One concern a module:

* :mod:`.hashing`: stable hashes and ids;
* :mod:`.params`: parameter checks, create-time and processing-time;
* :mod:`.prompt`: prompt text, input tokens and prompt-cache accounting;
* :mod:`.schema_faker`: values valid against a JSON schema (structured outputs, forced tools);
* :mod:`.grounding`: what those values quote and refer to (the request's sentences, its reference list);
* :mod:`.pytest_answer`: the runnable pytest module answering a "write tests" prompt;
* :mod:`.message`: the ``message`` object and its SSE stream events.
"""

from __future__ import annotations

# Besides ``__all__``, every name the single module ``testing/responder.py`` offered stays importable
# from here (``name as name``: an explicit re-export).
from .hashing import BASE62 as BASE62
from .hashing import hash_int as hash_int
from .hashing import stable_id
from .message import generate_message, message_stream_events
from .params import ParamsError, deep_params_error, shallow_params_error
from .prompt import NO_CACHE as NO_CACHE
from .prompt import CacheUsage, PromptCache, estimate_tokens
from .prompt import input_token_count as input_token_count

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
