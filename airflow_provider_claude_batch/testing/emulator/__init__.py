"""A local emulator of the Anthropic Message Batches and Messages APIs.

The unmodified ``anthropic`` SDK (sync and async) talks to it over real HTTP, so tests, the
benchmarks, the demo and users' own DAGs exercise the genuine client code paths: auth headers,
retries on 429/5xx with ``retry-after``, auto-pagination, absolute ``results_url`` following and
JSONL streaming. It deliberately imports nothing from Airflow so that it starts fast and can run
anywhere (``claude-batch emulator``, :class:`EmulatorServer`, or the pytest plugin).

State is advanced lazily whenever a batch is read, from timestamps alone, so thousands of
in-flight batches cost no background work.

A package rather than one module, with this ``__init__`` re-exporting every name the module
``testing/emulator.py`` had: users import from ``airflow_provider_claude_batch.testing.emulator``
(the docs, the CLI, the pytest plugin, the benchmarks), and a subpackage keeps that one path while
its parts sit together under it instead of scattered through ``testing/``. One concern a module:

* :mod:`.config`: :class:`EmulatorConfig` and where it is read from;
* :mod:`.wire`: the API's error type and envelope, ids and timestamps;
* :mod:`.lifecycle`: one stored batch, its status and the outcomes fixed when it ends;
* :mod:`.validation`: create-time validation of a batch, of list queries and of ``anthropic-beta`` values;
* :mod:`.models`: the models served, their limits and Models API entries, the model checks of a request;
* :mod:`.results`: rendering and replaying a batch's JSONL results file;
* :mod:`.store`: :class:`EmulatorState`, every batch and counter behind one lock;
* :mod:`.http_io`: request ids, bounded body reading, error answers, cuttable row streams;
* :mod:`.app`: the routes and :func:`build_app`;
* :mod:`.server`: :class:`EmulatorServer` and :func:`run_emulator`;
* :mod:`.client`: :class:`EmulatorClient`, for an emulator in another process.

What the emulator answers comes from :mod:`..responder`; configured outcomes and HTTP faults,
the per-call misbehaviour, from :mod:`..faults`; the Message Batches API's fleet limits (rolling
rate limit, processing-queue cap, propagation delay) from :mod:`..limits`.
"""

from __future__ import annotations

# Besides ``__all__``, every name the single module ``testing/emulator.py`` offered stays importable
# from here (``name as name``: an explicit re-export).
from ..faults import SUCCEEDED as SUCCEEDED
from ..faults import FaultInjector as FaultInjector
from ..faults import FaultRule as FaultRule
from ..faults import OutcomeDecision as OutcomeDecision
from ..faults import OutcomeRule as OutcomeRule
from ..faults import completion_fraction as completion_fraction
from ..faults import decide_outcome as decide_outcome
from ..responder import BASE62 as BASE62
from ..responder import NO_CACHE as NO_CACHE
from ..responder import CacheUsage as CacheUsage
from ..responder import PromptCache as PromptCache
from ..responder import deep_params_error as deep_params_error
from ..responder import generate_message as generate_message
from ..responder import input_token_count as input_token_count
from ..responder import message_stream_events as message_stream_events
from ..responder import shallow_params_error as shallow_params_error
from ..responder import stable_id as stable_id
from .app import Handler as Handler
from .app import build_app
from .client import EmulatorClient
from .config import ARCHIVE_DAYS as ARCHIVE_DAYS
from .config import DAY as DAY
from .config import ENV_PREFIX as ENV_PREFIX
from .config import EmulatorConfig, load_config
from .http_io import RequestIdMiddleware as RequestIdMiddleware
from .http_io import RowStreamResponse as RowStreamResponse
from .results import RESULT_CHUNK_BYTES as RESULT_CHUNK_BYTES
from .server import EmulatorServer, run_emulator
from .store import EmulatorState
from .wire import ApiError as ApiError
from .wire import error_envelope as error_envelope
from .wire import iso as iso
from .wire import random_id as random_id

__all__ = [
    "EmulatorClient",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorState",
    "build_app",
    "load_config",
    "run_emulator",
]
