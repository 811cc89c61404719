"""The submission record: which batches a task has paid for, kept where a retry can find it.

The Message Batches API has no idempotency key, so a retried task must know what its earlier
attempts submitted or it pays twice. The record holds one entry per round (round 0 is the first
submission; later rounds re-run requests that failed transiently), and one per part of a round
(an input over one batch's limits is split). Before each create a part notes an *intent* (when the
create was sent, and the newest batch id listed just before it); after, the batch id. A task with a
synchronous rescue also keeps when the rescue is due and, once it began, what it cancelled and each
pass of requests it sent through the Messages API. Which step
comes next, and every change to the record, belong to
:class:`~airflow_provider_claude_batch.lifecycle.SubmissionLifecycle`; this module is the data and
where it is kept.

The record is saved to every store given: Airflow 3.3's ``task_state_store`` (survives retries,
unlike XCom) and a JSON file beside the results (any Airflow version, and readable by humans).
This module imports nothing from Airflow; stores are duck-typed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from airflow_provider_claude_batch.polling import parse_iso

RECORD_KEY = "claude_batch_submission"
RECORD_FILE = "submission.json"
RECORD_VERSION = 2


@dataclass
class PartRecord:
    """One batch of a round (inputs over the batch limits are split into several)."""

    index: int
    request_count: int
    body_bytes: int
    intent_at: str | None = None
    # The newest batch id listed just before the create was sent: batches listed before it are newer.
    marker: str | None = None
    batch_id: str | None = None
    created_at: str | None = None
    # The workspace's processing queue refused this part: when to try again, and how often it was refused.
    retry_at: str | None = None
    refusals: int = 0


@dataclass
class RoundRecord:
    """One round: 0 submits the input, each later one re-runs the requests that failed transiently."""

    round: int
    request_count: int
    parts: list[PartRecord]
    # Order-independent digest of the custom ids a follow-up round re-runs (recomputed on resume, checked).
    id_digest: str | None = None
    ended_at: str | None = None
    landed_at: str | None = None

    @property
    def batch_ids(self) -> list[str]:
        return [part.batch_id for part in self.parts if part.batch_id]

    @property
    def submitted(self) -> bool:
        return all(part.batch_id for part in self.parts)


@dataclass
class RescuePass:
    """One pass of the rescue: the requests it sends through the Messages API, and when they landed."""

    number: int
    request_count: int
    # CustomIdDigest of the requests sent; a retry that rebuilds a different set from the results file stops.
    id_digest: str
    started_at: str
    landed_at: str | None = None
    # Requests the deadline cut off before they were answered (their earlier rows stay).
    unanswered: int = 0


@dataclass
class RescueRecord:
    """The synchronous rescue of a submission, once it began."""

    started_at: str
    # Why: "not_ended" (the rescue point passed with batches running) or "transient" (failures no
    # follow-up batch round had time for).
    reason: str
    # The round it interrupted, and that round's batches it cancelled.
    round: int
    canceled_batch_ids: list[str] = field(default_factory=list)
    # How long the cancelled batches may take to end before the rescue goes on without their results.
    cancel_wait_until: str | None = None
    # Cancelled batches that had not ended by then: their results were never landed.
    abandoned_batch_ids: list[str] = field(default_factory=list)
    passes: list[RescuePass] = field(default_factory=list)
    # The pass to send next; None once the rescue is over.
    next_pass: int | None = 1


@dataclass
class SubmissionRecord:
    fingerprint: str
    request_count: int
    rounds: list[RoundRecord]
    deadline_at: str | None = None
    landed_at: str | None = None
    # CustomIdDigest of the requests sent in each batch, checked against the landed rows.
    id_digests: dict[str, str] = field(default_factory=dict)
    # When the batch path gives way to a synchronous rescue if it has not ended (deadline minus lead).
    rescue_at: str | None = None
    rescue: RescueRecord | None = None
    version: int = RECORD_VERSION

    @property
    def batch_ids(self) -> list[str]:
        """Batch ids of the first round, in part order."""
        return self.rounds[0].batch_ids if self.rounds else []

    def all_batch_ids(self) -> list[str]:
        """Every batch of every round: what this task has paid for."""
        return [batch_id for item in self.rounds for batch_id in item.batch_ids]

    @property
    def current(self) -> RoundRecord:
        return self.rounds[-1]

    def round_of(self, batch_id: str) -> RoundRecord | None:
        return next((item for item in self.rounds if batch_id in item.batch_ids), None)

    def deadline(self) -> datetime:
        """When the task as a whole must be done (every round included)."""
        if self.deadline_at is None:
            return datetime.max.replace(tzinfo=timezone.utc)
        return parse_iso(self.deadline_at)

    def batch_deadline(self) -> datetime:
        """When the batch path must have ended: the rescue point until a rescue begins, else the deadline."""
        if self.rescue_at is not None and self.rescue is None:
            return parse_iso(self.rescue_at)
        return self.deadline()

    def rescue_report(self) -> dict[str, Any] | None:
        """The rescue for the manifest: when due, whether it ran, what it cancelled and sent; None if undeclared."""
        if self.rescue_at is None:
            return None
        rescue = self.rescue
        report: dict[str, Any] = {"rescue_at": self.rescue_at, "deadline_at": self.deadline_at, "rescued": bool(rescue)}
        if rescue is not None:
            report.update(
                reason=rescue.reason,
                started_at=rescue.started_at,
                interrupted_round=rescue.round,
                canceled_batch_ids=rescue.canceled_batch_ids,
                abandoned_batch_ids=rescue.abandoned_batch_ids,
                requests_sent=sum(item.request_count for item in rescue.passes),
                unanswered=sum(item.unanswered for item in rescue.passes),
                passes=[asdict(item) for item in rescue.passes],
            )
        return report

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SubmissionRecord:
        if data.get("version", 1) < 2:
            return _from_version_1(data)
        return cls(
            fingerprint=data["fingerprint"],
            request_count=data["request_count"],
            rounds=[
                RoundRecord(**{**item, "parts": [PartRecord(**part) for part in item.get("parts", [])]})
                for item in data.get("rounds", [])
            ],
            deadline_at=data.get("deadline_at"),
            landed_at=data.get("landed_at"),
            id_digests=dict(data.get("id_digests", {})),
            rescue_at=data.get("rescue_at"),
            rescue=_rescue_from_json(data.get("rescue")),
        )


def _rescue_from_json(data: dict[str, Any] | None) -> RescueRecord | None:
    if not data:
        return None
    return RescueRecord(**{**data, "passes": [RescuePass(**item) for item in data.get("passes", [])]})


def _from_version_1(data: dict[str, Any]) -> SubmissionRecord:
    """A record written by 0.1 (parts at the top, follow-up rounds as bare batch-id lists)."""
    first = RoundRecord(0, data["request_count"], [PartRecord(**part) for part in data.get("parts", [])])
    rounds = [first]
    for item in data.get("rounds", []):
        parts = [PartRecord(i, 0, 0, batch_id=batch_id) for i, batch_id in enumerate(item.get("batch_ids", []))]
        rounds.append(RoundRecord(item["round"], item.get("custom_ids_count", 0), parts))
    for earlier in rounds[:-1]:
        earlier.ended_at = earlier.landed_at = now_iso()  # a later round exists only once this one landed
    return SubmissionRecord(
        fingerprint=data["fingerprint"],
        request_count=data["request_count"],
        rounds=rounds,
        deadline_at=data.get("deadline_at"),
        landed_at=data.get("landed_at"),
        id_digests=dict(data.get("id_digests", {})),
    )


class KeyValueStore(Protocol):
    """Airflow's ``context["task_state_store"]``."""

    def get(self, key: str, default: Any = None) -> Any: ...
    def set(self, key: str, value: Any) -> None: ...


class RecordStore:
    """Loads the record from the first store holding it; saves it to every store."""

    def __init__(self, state_store: KeyValueStore | None, record_path: Any | None) -> None:
        self._state_store = state_store
        self._record_path = record_path

    def describe(self) -> str:
        places = []
        if self._state_store is not None:
            places.append("the task state store")
        if self._record_path is not None:
            places.append(str(self._record_path))
        return " and ".join(places) or "nowhere"

    def load(self) -> SubmissionRecord | None:
        if self._state_store is not None:
            data = self._state_store.get(RECORD_KEY)
            if data:
                return SubmissionRecord.from_json(data)
        if self._record_path is not None and self._record_path.exists():
            with self._record_path.open("r") as source:
                return SubmissionRecord.from_json(json.load(source))
        return None

    def save(self, record: SubmissionRecord) -> None:
        data = record.to_json()
        if self._state_store is not None:
            self._state_store.set(RECORD_KEY, data)
        if self._record_path is not None:
            temporary = self._record_path.parent / f".{self._record_path.name}.tmp"
            with temporary.open("w") as out:
                json.dump(data, out, indent=2, sort_keys=True)
            temporary.rename(self._record_path)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def now_iso() -> str:
    return utc_now().isoformat()
