"""What every Claude operator shares: request inputs and defaults, where results land, the manifest
and the partial-failure policy. Moving a task between the batch and the synchronous route is
swapping the class; everything here stays the same."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

import pydantic
from airflow.sdk import BaseOperator, ObjectStoragePath

from airflow_provider_claude_batch.billing import bill
from airflow_provider_claude_batch.hooks.claude import ClaudeHook
from airflow_provider_claude_batch.hooks.settings import DEFAULT_MODEL
from airflow_provider_claude_batch.metrics import emit_landed_metrics
from airflow_provider_claude_batch.pricing import (
    PRICES_AS_OF,
    CostReport,
    TokenUsage,
    UnknownModelError,
    cost_of,
    price_for,
)
from airflow_provider_claude_batch.requests import (
    PreparedRequests,
    RequestDefaults,
    RequestProblem,
    RequestSourceError,
    RequestValidationError,
    iter_jsonl,
    prepare_requests,
)
from airflow_provider_claude_batch.results import USAGE_KINDS, ResultTally, failure_verdict
from airflow_provider_claude_batch.shared_prefix import CachePlan, caching_summary, place_breakpoints
from airflow_provider_claude_batch.structured import OutputValidator, merge_output_config, output_config_for
from airflow_provider_claude_batch.validation import arguments
from airflow_provider_claude_batch.validation.checker import RequestChecker
from airflow_provider_claude_batch.validation.models import RuleContext, catalog_problems, offline_model_problem

if TYPE_CHECKING:
    from airflow.sdk import Context

RESULTS_FILE = "results.jsonl"
MANIFEST_FILE = "manifest.json"


class ClaudeTaskError(RuntimeError):
    """A Claude task failed; the message says why and where its results are."""


class ClaudeRequestsOperator(BaseOperator):
    """Base for operators that send a set of Claude requests and land one row per request.

    :param requests: the requests: a list (prompt strings, ``{"prompt": ..., **overrides}``,
        ``{"messages": [...], **overrides}`` or the API's ``{"custom_id": ..., "params": {...}}``),
        an upstream ``XComArg``, or the URI of a JSONL file (``file://``, ``s3://``, ... read with
        ``ObjectStoragePath``; one request per line) for inputs too large for XCom.
    :param model: default model for requests that do not name one (else the connection's).
    :param max_tokens: default output ceiling per request.
    :param system: default system prompt.
    :param request_params: other default Messages API parameters (``temperature``, ``tools``, ...).
    :param claude_conn_id: the Airflow connection (type ``claude``).
    :param results_uri: folder (``ObjectStoragePath`` URI) for ``results.jsonl`` and
        ``manifest.json``; defaults to ``$AIRFLOW_HOME/claude_batch_results/<dag>/<run>/<task>``.
    :param max_failed_fraction: the share of requests allowed not to succeed before the task fails
        (0 = any failure fails the task; the results land either way).
    :param usage_estimate: tokens one run of the task uses, for ``claude-batch audit`` to price the
        task before it has run, e.g. ``{"model": "claude-sonnet-4-6", "input_tokens": 2_000_000,
        "output_tokens": 400_000}`` (also ``cache_creation_input_tokens``, ``cache_read_input_tokens``,
        ``cache_creation_1h_input_tokens``;
        ``model`` defaults to the task's ``model``). Manifests of past runs take precedence once they exist.
    :param output_schema: a pydantic model every request must answer with: requests ask for JSON of
        that schema (the API's structured outputs), each row carries the validated object under
        ``output``, and a row that does not validate is ``invalid_output`` (counted as a failure).
    :param betas: ``anthropic-beta`` values sent with every call of the task, e.g.
        ``["output-300k-2026-03-24"]`` (batches with ``max_tokens`` up to 300,000 on supporting models).

    Every argument is checked when the DAG is parsed, or right after rendering when it is templated
    (rendered numbers such as ``"64"`` are accepted), so a task never submits and then fails on its
    own arguments. Every request is checked against the SDK's request types, the API's documented
    rules and the Models API's list of models before the first create.
    """

    # Whether requests may set "stream": only the Messages API can stream (see ClaudeMessageOperator).
    allows_streaming: bool = False
    # Whether prepare() marks the requests' shared prefix for the prompt cache (ClaudeBatchOperator's
    # cache_shared_prefix); what it did, once prepared.
    cache_shared_prefix: bool = False
    cache_plan: CachePlan | None = None

    template_fields: Sequence[str] = (
        "requests",
        "model",
        "max_tokens",
        "system",
        "request_params",
        "claude_conn_id",
        "results_uri",
        "max_failed_fraction",
    )
    template_fields_renderers = {"requests": "json", "request_params": "json", "system": "md"}

    def __init__(
        self,
        *,
        requests: Any,
        model: str | None = None,
        max_tokens: int | None = 1024,
        system: str | list[Any] | None = None,
        request_params: dict[str, Any] | None = None,
        claude_conn_id: str = ClaudeHook.default_conn_name,
        results_uri: str | None = None,
        max_failed_fraction: float = 0.0,
        usage_estimate: dict[str, Any] | None = None,
        output_schema: type[pydantic.BaseModel] | None = None,
        betas: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if output_schema is not None:
            output_config_for(output_schema)  # not a pydantic model: fail when the DAG is parsed
        self.output_schema = output_schema
        self.requests = requests
        self.model = model
        self.max_tokens = max_tokens
        self.system = system
        self.request_params = request_params or {}
        self.claude_conn_id = claude_conn_id
        self.results_uri = results_uri
        self.max_failed_fraction = max_failed_fraction
        if usage_estimate is not None:
            usage_from_estimate(usage_estimate, model)  # a typo fails when the DAG is parsed, not in the audit
        self.usage_estimate = usage_estimate
        self.betas = arguments.betas(betas, known_betas())
        self._check_arguments(rendered=False)

    def _check_arguments(self, *, rendered: bool) -> None:
        """Check, and convert from their rendered forms, the templated arguments (literals at parse time)."""

        def ready(value: Any) -> bool:
            return rendered or not arguments.is_templated(value)

        if ready(self.max_tokens):
            self.max_tokens = arguments.optional_max_tokens(self.max_tokens)
        if ready(self.max_failed_fraction):
            self.max_failed_fraction = arguments.fraction("max_failed_fraction", self.max_failed_fraction)
        if ready(self.results_uri):
            arguments.results_uri(self.results_uri, installed_filesystems())
        if ready(self.model) and self.model is not None:
            if not isinstance(self.model, str) or not self.model:
                raise TypeError(f"model must be a model id string, got {self.model!r}")
            problem = offline_model_problem(self.model)
            if problem:
                raise ValueError(f"model: {problem}")
        if ready(self.request_params):
            self.request_params = arguments.mapping("request_params", self.request_params)

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render as Airflow does, then check the rendered arguments before anything is sent."""
        super().render_template_fields(context, jinja_env)
        self._check_arguments(rendered=True)

    @cached_property
    def hook(self) -> ClaudeHook:
        """One hook (one connection lookup, one client) for the whole run of the task."""
        return ClaudeHook(self.claude_conn_id, betas=self.betas)

    def rule_context(self, catalog: Any = None) -> RuleContext:
        """Where this task's requests go: the route and betas the checks apply."""
        return RuleContext(batch=not self.allows_streaming, betas=frozenset(self.betas), catalog=catalog)

    def request_defaults(self, default_model: str) -> RequestDefaults:
        """Operator-level values merged into every request; ``default_model`` when ``model`` is unset."""
        params = dict(self.request_params)
        if self.output_schema is not None:
            params = merge_output_config(params, self.output_schema)
        return RequestDefaults(
            model=self.model or default_model, max_tokens=self.max_tokens, system=self.system, params=params
        )

    def prepare(self) -> PreparedRequests:
        """Read, normalise and validate every request, then check their models with the Models API.

        Everything that can be checked offline raises before any network call; then one call (cached
        per connection) checks the model ids before anything is created.
        """
        prepared = self.prepare_offline(self.hook.default_model)
        self._check_models(prepared)
        if self.cache_plan is not None:
            self.log.info("cache_shared_prefix: %s", self.cache_plan.describe())
        return prepared

    def prepare_offline(self, default_model: str) -> PreparedRequests:
        """Read, normalise and validate every request without any network call (and mark their shared prefix)."""
        prepared = self._read_requests(default_model)
        if self.cache_shared_prefix:
            self.cache_plan = place_breakpoints(prepared)
        return prepared

    def _read_requests(self, default_model: str) -> PreparedRequests:
        defaults = self.request_defaults(default_model)
        checker = RequestChecker(batch=not self.allows_streaming, betas=frozenset(self.betas))
        if isinstance(self.requests, str):
            return self._prepare_from_uri(self.requests, defaults, checker)
        if isinstance(self.requests, dict) or not isinstance(self.requests, Iterable):
            raise TypeError(
                "requests must be a list of requests, an XComArg resolving to one, or the URI of a JSONL "
                f"file; got {type(self.requests).__name__}"
            )
        return prepare_requests(self.requests, defaults, allow_stream=self.allows_streaming, checker=checker)

    def _check_models(self, prepared: PreparedRequests) -> None:
        """Model ids against the Models API (when it answers), and a warning for models without a price."""
        catalog = self.hook.available_models()
        if catalog is not None:
            found = catalog_problems(prepared.models, self.rule_context(catalog))
            if found:
                problems = [RequestProblem(use.index, use.custom_id, text) for use, text in found]
                raise RequestValidationError(problems, prepared.count)
        for model in prepared.models:
            try:
                price_for(model)
            except UnknownModelError:
                self.log.warning(
                    "Model %s has no price in the price table (prices as of %s): the cost reported for this "
                    "task will leave its tokens out rather than count them as $0.",
                    model,
                    PRICES_AS_OF.isoformat(),
                )

    def row_transform(self) -> OutputValidator | None:
        """What every landed row goes through: validation against ``output_schema`` when one is set."""
        return OutputValidator(self.output_schema) if self.output_schema is not None else None

    def _prepare_from_uri(self, uri: str, defaults: RequestDefaults, checker: RequestChecker) -> PreparedRequests:
        path = ObjectStoragePath(uri)
        if not path.exists():
            raise RequestSourceError(
                f"requests={uri!r} is read as the URI of a JSONL file, but there is no such file. "
                "Pass a list to send prompts directly, or fix the path."
            )
        with path.open("rb") as lines:
            return prepare_requests(
                iter_jsonl(lines, uri), defaults, source=uri, allow_stream=self.allows_streaming, checker=checker
            )

    def results_folder(self, context: Context) -> ObjectStoragePath:
        """Where this task instance's results land (created if missing)."""
        if self.results_uri:
            folder = ObjectStoragePath(self.results_uri)
        else:
            ti = context["ti"]
            home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
            parts = [ti.dag_id, ti.run_id, ti.task_id]
            map_index = getattr(ti, "map_index", -1)
            if map_index is not None and map_index >= 0:
                parts.append(f"map_{map_index}")
            safe = "/".join(map(results_path_part, parts))
            folder = ObjectStoragePath(f"file://{home}/claude_batch_results/{safe}")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def finish(
        self, folder: ObjectStoragePath, tally: ResultTally, route: str, extra: dict[str, Any]
    ) -> dict[str, Any]:
        """Write the manifest, log the one-line cost summary, apply the failure policy.

        :param folder: where ``results.jsonl`` was published.
        :param tally: counts and usage of every landed row.
        :param route: ``batch`` or ``sync``: the task's route (``billing`` prices each row at the route
            that produced it, which differs for the rows a synchronous rescue finished).
        :param extra: route-specific manifest entries (batch ids, rounds, ...).
        """
        usage_by_model = {model: TokenUsage(*totals) for model, totals in sorted(tally.usage_by_model.items())}
        cost = cost_of(usage_by_model)
        charged = bill(tally)
        unpriced = ""
        if cost.unpriced_models:
            unpriced = (
                f" NOT INCLUDED: the tokens of {', '.join(cost.unpriced_models)}, which the price table (as of "
                f"{cost.prices_as_of.isoformat()}) does not price."
            )
            self.log.warning("The cost below leaves out model(s) without a price:%s", unpriced)
        results_path = folder / RESULTS_FILE
        totals = tally.usage_totals()
        manifest = {
            **extra,
            "route": route,
            "results_uri": str(results_path),
            "manifest_uri": str(folder / MANIFEST_FILE),
            "request_count": tally.total,
            "counts": dict(tally.counts),
            "usage": totals,
            "usage_by_model": {model: usage.as_dict() for model, usage in usage_by_model.items()},
            "cost": {**_route_cost_fields(cost, route), **({"warning": unpriced.strip()} if unpriced else {})},
            "billing": charged.as_dict(),
            "error_types": dict(tally.error_types),
            "landed_at": datetime.now(timezone.utc).isoformat(),
        }
        if self.cache_shared_prefix or totals["cache_creation_input_tokens"] or totals["cache_read_input_tokens"]:
            manifest["caching"] = caching_summary(totals, cost.cache_saving_on(route), self.cache_shared_prefix)
        write_json(folder / MANIFEST_FILE, manifest)
        emit_landed_metrics(manifest)
        billed, other = (cost.batch_usd, cost.sync_usd) if route == "batch" else (cost.sync_usd, cost.batch_usd)
        if charged.mixed:  # a rescued batch: each route's rows at their own price
            cost_text = f"Cost {charged.summary()}"
        else:
            verb = "saved" if route == "batch" else "would have saved"
            cost_text = (
                f"Cost ${billed:.4f} on the {route} route (${other:.4f} on the other; "
                f"batching {verb} ${cost.saving_usd:.4f})"
            )
        self.log.info(
            "Landed %d result row(s) to %s: %s. Tokens in %d / out %d / cache write %d (1h %d) / cache read %d. "
            "%s; the prompt cache saved $%.4f; prices as of %s.%s",
            tally.total,
            results_path,
            ", ".join(f"{status} {n}" for status, n in tally.counts.items() if n) or "no rows",
            totals["input_tokens"],
            totals["output_tokens"],
            totals["cache_creation_input_tokens"],
            totals["cache_creation_1h_input_tokens"],
            totals["cache_read_input_tokens"],
            cost_text,
            cost.cache_saving_on(route),
            cost.prices_as_of.isoformat(),
            unpriced,
        )
        verdict = failure_verdict(tally.counts, self.max_failed_fraction)
        if verdict:
            raise ClaudeTaskError(f"{verdict}. Every row, failures included, is in {results_path}.")
        return manifest


def _route_cost_fields(cost: CostReport, route: str) -> dict[str, Any]:
    """The manifest's ``cost``. Nothing is saved on the synchronous route: there it says what batching would save."""
    fields = cost.as_dict()
    if route != "batch":
        fields["batching_would_save_usd"] = fields.pop("saving_usd")
    return fields


def results_path_part(name: str) -> str:
    """A DAG, run or task id as it appears in the default results folder (the audit reads it back)."""
    return re.sub(r"[^A-Za-z0-9._=-]", "_", name)


def usage_from_estimate(estimate: Mapping[str, Any], default_model: str | None) -> dict[str, TokenUsage]:
    """``{model: TokenUsage}`` from a ``usage_estimate`` such as ``{"model": ..., "input_tokens": ...}``.

    :param estimate: the operator's ``usage_estimate``.
    :param default_model: the model to price when the estimate names none (the task's ``model``).
    """
    if not isinstance(estimate, Mapping):
        raise TypeError(f"usage_estimate must be a dict of token counts, got {type(estimate).__name__}")
    unknown = sorted(set(estimate) - {"model", *USAGE_KINDS})
    if unknown:
        raise ValueError(f"usage_estimate has unknown keys {unknown}; use 'model' and any of {list(USAGE_KINDS)}")
    model = estimate.get("model") or default_model or DEFAULT_MODEL
    if not isinstance(model, str):
        raise TypeError(f"usage_estimate['model'] must be a model id string, got {model!r}")
    return {model: TokenUsage(**{kind: estimate.get(kind, 0) for kind in USAGE_KINDS})}


def known_betas() -> list[str]:
    """The ``anthropic-beta`` names the installed SDK declares."""
    import typing

    from anthropic.types.anthropic_beta_param import AnthropicBetaParam

    return [value for arg in typing.get_args(AnthropicBetaParam) for value in typing.get_args(arg)]


@cache
def installed_filesystems() -> list[str]:
    """URI schemes ObjectStoragePath opens here: Airflow providers' filesystems and fsspec's installed ones."""
    try:
        from airflow.sdk.io.fs import _register_filesystems

        registered = list(_register_filesystems())
    except ImportError:  # pragma: no cover - Airflow 3.1 keeps it in airflow.io
        registered = []
    return arguments.installed_filesystems(registered)


def write_json(path: ObjectStoragePath, payload: dict[str, Any]) -> None:
    """Write JSON under a temporary name and rename it into place."""
    temporary = path.parent / f".{path.name}.tmp"
    with temporary.open("w") as out:
        json.dump(payload, out, indent=2, sort_keys=True)
    temporary.rename(path)
