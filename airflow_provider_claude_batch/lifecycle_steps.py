"""What a batch task does next: the steps :class:`~airflow_provider_claude_batch.lifecycle.SubmissionLifecycle` gives.

Each is a plain value the operator performs (a create, a wait, a landing, a rescue pass) before
reporting back through the lifecycle's transitions. Pure: no I/O, no Airflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "AwaitCancel",
    "CreatePart",
    "Finished",
    "LandRound",
    "PlanNextRound",
    "RoundVerdict",
    "SendRescue",
    "StartRescue",
    "Step",
    "WaitForBatches",
    "WaitForCapacity",
]


@dataclass(frozen=True)
class CreatePart:
    """Create this part's batch. ``lost_create``: an earlier attempt sent it unanswered; look first."""

    round: int
    part: int
    lost_create: bool


@dataclass(frozen=True)
class WaitForCapacity:
    """The processing queue refused a part: wait until ``until`` (or until one of ``watching`` ends)."""

    round: int
    part: int
    until: datetime
    watching: list[str]


@dataclass(frozen=True)
class _RoundBatches:
    """A step about the batches of one round."""

    round: int
    batch_ids: list[str]


@dataclass(frozen=True)
class WaitForBatches(_RoundBatches):
    """Every part of the round is created: wait for its batches to end."""


@dataclass(frozen=True)
class LandRound(_RoundBatches):
    """The round's batches ended: land their results (a follow-up round is merged over the earlier rows)."""


@dataclass(frozen=True)
class PlanNextRound:
    """The round landed: find the requests that failed transiently and decide whether to re-run them."""

    after_round: int


@dataclass(frozen=True)
class StartRescue(_RoundBatches):
    """The rescue point passed before the round ended: cancel its batches and finish the rest synchronously."""


@dataclass(frozen=True)
class AwaitCancel(_RoundBatches):
    """The rescue cancelled these batches: wait until ``until`` for them to end, so what they completed lands."""

    until: datetime


@dataclass(frozen=True)
class SendRescue:
    """Send every request without a final row worth keeping through the Messages API (pass ``number``)."""

    number: int


@dataclass(frozen=True)
class Finished:
    """Everything landed; the manifest can be written."""


Step = (
    CreatePart
    | WaitForCapacity
    | WaitForBatches
    | LandRound
    | PlanNextRound
    | StartRescue
    | AwaitCancel
    | SendRescue
    | Finished
)


@dataclass(frozen=True)
class RoundVerdict:
    """Whether a follow-up round (or rescue pass) may run, and why not when it may not.

    ``rescue``: no batch round has time before the rescue point, so the failures go to the rescue.
    """

    allowed: bool
    reason: str = ""
    rescue: bool = False
