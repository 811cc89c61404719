"""The submission record: which batches a task has paid for, kept where a retry can find it.

The Message Batches API has no idempotency key, so a retried task must know what its earlier
attempts submitted or it pays twice. Before each create, the record notes an *intent* (when the
create was sent and how many requests it carried); after, the batch id. A later attempt with the
same input (same fingerprint of everything sent and billed) re-attaches to the recorded batches;
an intent without an id means a create may have reached the API unanswered, so the attempt looks
for a batch created since the intent with the same request count before submitting again.

The record is saved to every store given: Airflow 3.3's ``task_state_store`` (survives retries,
unlike XCom) and a JSON file beside the results (any Airflow version, and readable by humans).
This module imports nothing from Airflow; stores are duck-typed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

RECORD_KEY = "claude_batch_submission"
RECORD_FILE = "submission.json"
RECORD_VERSION = 1


@dataclass
class PartRecord:
    """One batch of the submission (inputs over the batch limits are split into several)."""

    index: int
    request_count: int
    body_bytes: int
    intent_at: str | None = None
    # The newest batch id listed just before the create was sent: batches listed before it are newer.
    marker: str | None = None
    batch_id: str | None = None

    def record_batch(self, batch_id: str) -> None:
        self.batch_id = batch_id


@dataclass
class RoundRecord:
    """One follow-up round: the requests re-run after a transient failure, and their batches."""

    round: int
    custom_ids_count: int
    batch_ids: list[str] = field(default_factory=list)
    intent_at: str | None = None
    marker: str | None = None

    def record_batch(self, batch_id: str) -> None:
        self.batch_ids.append(batch_id)
        # The next part of this round has its own intent.
        self.intent_at = None
        self.marker = None


@dataclass
class SubmissionRecord:
    fingerprint: str
    request_count: int
    parts: list[PartRecord]
    rounds: list[RoundRecord] = field(default_factory=list)
    deadline_at: str | None = None
    landed_at: str | None = None
    # CustomIdDigest of the requests sent in each batch, checked against the landed rows.
    id_digests: dict[str, str] = field(default_factory=dict)
    version: int = RECORD_VERSION

    @property
    def batch_ids(self) -> list[str]:
        """Batch ids of the first round, in part order."""
        return [part.batch_id for part in self.parts if part.batch_id]

    @property
    def complete(self) -> bool:
        return all(part.batch_id for part in self.parts)

    def all_batch_ids(self) -> list[str]:
        """Every batch of every round: what this task has paid for."""
        return self.batch_ids + [batch_id for item in self.rounds for batch_id in item.batch_ids]

    def forget(self, batch_id: str) -> None:
        """Drop a batch that turned out not to be ours, so the next attempt submits its part again."""
        for part in self.parts:
            if part.batch_id == batch_id:
                part.batch_id = part.intent_at = part.marker = None
        for item in self.rounds:
            if batch_id in item.batch_ids:
                item.batch_ids.remove(batch_id)
        self.id_digests.pop(batch_id, None)

    def round(self, number: int) -> RoundRecord | None:
        """Follow-up round ``number`` (1-based), if one was submitted."""
        return next((item for item in self.rounds if item.round == number), None)

    def round_of(self, batch_ids: list[str]) -> int:
        """Which round ``batch_ids`` belong to: 0 for the first submission."""
        for item in self.rounds:
            if set(batch_ids) & set(item.batch_ids):
                return item.round
        return 0

    def deadline(self) -> datetime:
        """When the task as a whole must be done (every round included)."""
        if self.deadline_at is None:
            return datetime.max.replace(tzinfo=timezone.utc)
        return parse_iso(self.deadline_at)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SubmissionRecord:
        return cls(
            fingerprint=data["fingerprint"],
            request_count=data["request_count"],
            parts=[PartRecord(**part) for part in data.get("parts", [])],
            rounds=[RoundRecord(**item) for item in data.get("rounds", [])],
            deadline_at=data.get("deadline_at"),
            landed_at=data.get("landed_at"),
            id_digests=dict(data.get("id_digests", {})),
            version=data.get("version", RECORD_VERSION),
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


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value)
