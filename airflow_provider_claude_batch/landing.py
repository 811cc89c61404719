"""Landing: stream batch results into one JSONL file and publish it atomically.

Rows are decoded and re-encoded one line at a time and written in large blocks, so memory stays
flat whatever the number of results (:func:`publish_rows`, shared with the synchronous operator, whose
rows come from the Messages API instead). A results stream that breaks mid-way is fetched again and
the rows already written for that batch are skipped (the results file of an ended batch does not
change between fetches), so no row is lost and none is written twice. The file is written under a
temporary name and renamed into place only once complete: readers never see half a file, and the
temporary files of a writer that was killed are cleared by the next write of the same file.

This module knows nothing of Airflow; it works on any path object with ``open``, ``rename`` and
``unlink`` (``ObjectStoragePath``, ``pathlib.Path``).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_provider_claude_batch.results import (
    CustomIdDigest,
    ResultRow,
    ResultTally,
    decode_row,
    encode_row,
    is_transient,
    iter_lines,
    parse_result_line,
)

log = logging.getLogger(__name__)

WRITE_BLOCK_BYTES = 1024 * 1024
STREAM_ATTEMPTS = 5

ResultStreamOpener = Callable[[str], AbstractContextManager[Iterator[bytes]]]
RowHook = Callable[[ResultRow], ResultRow]


class PathLike(Protocol):
    name: str

    @property
    def parent(self) -> PathLike: ...
    def open(self, mode: str = ...) -> Any: ...
    def exists(self) -> bool: ...
    def iterdir(self) -> Iterator[PathLike]: ...
    def rename(self, target: Any) -> Any: ...
    def unlink(self) -> Any: ...
    def __truediv__(self, other: str) -> PathLike: ...


class ResultsUnavailableError(RuntimeError):
    """The API no longer serves a batch's results (they are kept 29 days after creation)."""


@dataclass
class LandingReport:
    """What landing wrote: the counts and usage of every row, per batch row counts, and retries."""

    tally: ResultTally = field(default_factory=ResultTally)
    rows_by_batch: dict[str, int] = field(default_factory=dict)
    # CustomIdDigest of each batch's landed rows: compared with what was submitted.
    id_digest_by_batch: dict[str, str] = field(default_factory=dict)
    stream_retries: int = 0


def land_results(
    batch_ids: list[str],
    open_stream: ResultStreamOpener,
    target: PathLike,
    *,
    transient_errors: tuple[type[BaseException], ...],
    unavailable_errors: tuple[type[BaseException], ...] = (),
    transform: RowHook | None = None,
) -> LandingReport:
    """Write every result row of ``batch_ids`` to ``target``, atomically.

    :param batch_ids: ended batches, landed in this order.
    :param open_stream: opens a batch's raw results stream (a context manager of byte chunks).
    :param target: the final results file; a temporary sibling is written first.
    :param transient_errors: errors after which the stream is fetched again.
    :param unavailable_errors: errors meaning the results are gone (archived after 29 days).
    :param transform: applied to each row before it is counted and written (e.g. output validation).
    """
    report = LandingReport()
    with publish_rows(target, report.tally) as sink:
        for batch_id in batch_ids:
            _land_batch(batch_id, open_stream, sink, report, transient_errors, unavailable_errors, transform)
    return report


class RowSink:
    """Where rows go while a results file is written: each one is tallied, then buffered to disk."""

    def __init__(self, writer: _BlockWriter, tally: ResultTally) -> None:
        self._writer = writer
        self.tally = tally
        self.written = 0

    def add(self, row: ResultRow) -> None:
        self.tally.add(row)
        self._writer.write(encode_row(row))
        self.written += 1


@contextmanager
def publish_rows(target: PathLike, tally: ResultTally | None = None) -> Iterator[RowSink]:
    """Write rows to ``target`` atomically: a temporary sibling in large blocks, renamed when complete.

    Use as ``with publish_rows(path) as sink: sink.add(row)``. If the block raises, the temporary
    file is removed and ``target`` is left as it was: readers never see half a file. Temporary files
    of ``target`` that a killed earlier writer left are removed first (:func:`remove_stale_temporaries`).

    :param target: the final results file.
    :param tally: counts and usage to add the rows to (a new one if omitted; ``sink.tally``).
    """
    remove_stale_temporaries(target)
    temporary = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"  # type: ignore[attr-defined]
    try:
        with temporary.open("wb") as out:
            writer = _BlockWriter(out)
            yield RowSink(writer, tally if tally is not None else ResultTally())
            writer.flush()
        temporary.rename(target)
    except BaseException:
        _remove_quietly(temporary)
        raise


def remove_stale_temporaries(target: PathLike) -> list[str]:
    """Delete the temporary files that killed writers of ``target`` left beside it; returns their names.

    A writer killed mid-way (SIGKILL, out of memory, a lost Celery worker) never reaches the clean-up
    in :func:`publish_rows`, so without this its ``.<name>.<uuid>.tmp`` would stay for good.

    Deleting them is safe only because a results file has one writer at a time, which is the
    caller's contract: the operators write into the results folder of one task instance, and
    Airflow runs one try of a task instance at a time. A new try is queued only once the previous
    one is over, either ended or declared dead by the scheduler after ``[scheduler]
    task_instance_heartbeat_timeout`` (300 s by default) without a heartbeat; and a try that cannot
    heartbeat is terminated by its own supervisor, at once when the API server answers that the try
    is no longer running, else after ``[workers] max_failed_heartbeats`` failures (3 x 5 s by
    default), which is well before that timeout. So when a try writes the file, every temporary
    sibling of it belongs to an attempt that is gone, never to a live one. (Two tasks must therefore
    never share a ``results_uri``; they would overwrite each other's results anyway.)

    :param target: the results file about to be written.
    """
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[0-9a-f]{{32}}\.tmp")
    removed = []
    try:
        siblings = [path for path in target.parent.iterdir() if pattern.fullmatch(path.name)]
    except FileNotFoundError:
        return removed
    for path in siblings:
        _remove_quietly(path)
        removed.append(path.name)
    if removed:
        log.warning(
            "Removed %d temporary file(s) left beside %s by an earlier attempt that was killed while landing: %s",
            len(removed),
            target.name,
            ", ".join(removed),
        )
    return removed


def merge_round(target: PathLike, round_rows: PathLike, tally: ResultTally | None = None) -> ResultTally:
    """Replace, in ``target``, the rows of every request that ``round_rows`` re-ran; publish atomically.

    A follow-up round re-runs a few requests; their new rows supersede the old ones, so the results
    file keeps exactly one row per request. Both files are read line by line; only the re-run custom
    ids (a handful, the failures of the previous round) are held in memory.

    :param target: the results file so far (when there is none yet, ``round_rows`` becomes it).
    :param round_rows: the rows landed by the follow-up round (removed once merged).
    :param tally: counts and usage of the merged file (a new one if omitted).
    """
    rerun = {row.custom_id for row in iter_rows(round_rows)}
    earlier = iter_rows(target) if target.exists() else iter(())
    with publish_rows(target, tally) as sink:
        for row in earlier:
            if row.custom_id not in rerun:
                sink.add(row)
        for row in iter_rows(round_rows):
            sink.add(row)
    _remove_quietly(round_rows)
    return sink.tally


def iter_rows(path: PathLike) -> Iterator[ResultRow]:
    """The rows of a published results file, one at a time."""
    with path.open("rb") as source:
        for line in source:
            if line.strip():
                yield decode_row(line)


def tally_results(path: PathLike) -> ResultTally:
    """Counts and usage of a published results file (a resumed task reads them back, no API call)."""
    tally = ResultTally()
    for row in iter_rows(path):
        tally.add(row)
    return tally


def transient_custom_ids(path: PathLike) -> set[str]:
    """Custom ids of the rows that failed transiently (expired, overloaded, ...): a follow-up round re-runs them.

    Read from the published file, so a task resumed between two rounds finds the same set again.
    """
    return {row.custom_id for row in iter_rows(path) if is_transient(row)}


def _land_batch(
    batch_id: str,
    open_stream: ResultStreamOpener,
    sink: RowSink,
    report: LandingReport,
    transient_errors: tuple[type[BaseException], ...],
    unavailable_errors: tuple[type[BaseException], ...],
    transform: RowHook | None,
) -> None:
    written = 0
    digest = CustomIdDigest()
    for attempt in range(1, STREAM_ATTEMPTS + 1):
        seen = 0
        try:
            with open_stream(batch_id) as chunks:
                for line in iter_lines(chunks):
                    seen += 1
                    if seen <= written:
                        continue
                    row = parse_result_line(line, batch_id)
                    if transform is not None:
                        row = transform(row)
                    digest.add(row.custom_id)
                    sink.add(row)
                    written += 1
            report.rows_by_batch[batch_id] = written
            report.id_digest_by_batch[batch_id] = digest.hexdigest()
            return
        except unavailable_errors as error:
            raise ResultsUnavailableError(
                f"The results of batch {batch_id} are no longer available from the API ({error}). "
                "Anthropic keeps results for 29 days after a batch is created; land them sooner, "
                "or re-run the work in a new batch."
            ) from error
        except transient_errors as error:
            if attempt == STREAM_ATTEMPTS:
                raise
            report.stream_retries += 1
            log.warning(
                "The results stream of batch %s broke after %d rows (%s); fetching it again and "
                "skipping the rows already written.",
                batch_id,
                written,
                type(error).__name__,
            )


class _BlockWriter:
    """Buffers small writes into large ones: object stores charge per write, not per byte."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._size += len(data)
        if self._size >= WRITE_BLOCK_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._out.write(b"".join(self._pending))
            self._pending.clear()
            self._size = 0


def _remove_quietly(path: PathLike) -> None:
    with suppress(OSError):
        path.unlink()
