"""``@task.claude_batch``: a TaskFlow function returns the requests, ClaudeBatchOperator sends them."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory
from airflow.sdk.definitions._internal.types import SET_DURING_EXECUTION
from airflow.sdk.definitions.context import context_merge

from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator

try:
    from airflow.sdk.bases.decorator import determine_kwargs
except ImportError:  # Airflow 3.1
    from airflow.utils.operator_helpers import determine_kwargs  # type: ignore[no-redef]

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_claude_batch.requests import PreparedRequests


class _ClaudeBatchDecoratedOperator(DecoratedOperator, ClaudeBatchOperator):
    """Calls the decorated function for the requests, then runs them as ClaudeBatchOperator does.

    The function may take Airflow context values and upstream XComs as arguments, like any TaskFlow
    function. It is called again when the task resumes for a follow-up round, so it must return
    the same requests for the same inputs (the submission fingerprint verifies that).

    :param python_callable: the function returning the requests (any form ``requests`` accepts).
    :param op_args: positional arguments for the function (templated).
    :param op_kwargs: keyword arguments for the function (templated).
    """

    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        *(field for field in ClaudeBatchOperator.template_fields if field != "requests"),
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **ClaudeBatchOperator.template_fields_renderers,
    }
    custom_operator_name = "@task.claude_batch"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            requests=SET_DURING_EXECUTION,
            **kwargs,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        self._requests_from_function(context)
        # Not DecoratedOperator.execute: the function's return value is the input, not the output.
        return ClaudeBatchOperator.execute(self, context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        self._context = context
        return super().execute_complete(context, event)

    def prepare(self) -> PreparedRequests:
        if self.requests is SET_DURING_EXECUTION:  # resumed for a follow-up round: a new instance
            self._requests_from_function(self._context)
        return super().prepare()

    def _requests_from_function(self, context: Context) -> None:
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        requests = self.python_callable(*self.op_args, **kwargs)
        if requests is None or isinstance(requests, (bytes, dict)):
            raise TypeError(
                f"@task.claude_batch function {self.python_callable.__name__}() must return the requests "
                f"(a list, or the URI of a JSONL file), got {type(requests).__name__}"
            )
        self.requests = requests


def claude_batch_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function returning Claude requests into a ClaudeBatchOperator task.

    .. code-block:: python

        @task.claude_batch(model="claude-sonnet-4-6", max_tokens=512)
        def summaries(ds=None):
            return [f"Summarise the {ds} report for {team}" for team in TEAMS]

    :param python_callable: the function (when used without parentheses).
    :param kwargs: any ClaudeBatchOperator argument except ``requests``.
    """
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_ClaudeBatchDecoratedOperator,
        **kwargs,
    )
