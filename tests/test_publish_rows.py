"""``publish_rows``: the one writer both routes land their rows through."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from airflow_provider_claude_batch.landing import publish_rows
from airflow_provider_claude_batch.results import ResultRow, RowUsage, decode_row


def row(custom_id: str, status: str = "succeeded") -> ResultRow:
    usage = RowUsage(10, 2) if status == "succeeded" else None
    return ResultRow(custom_id=custom_id, batch_id="", status=status, model="claude-haiku-4-5", usage=usage)


def test_rows_are_tallied_and_published_atomically(tmp_path):
    target = tmp_path / "results.jsonl"
    with publish_rows(target) as sink:
        sink.add(row("a"))
        sink.add(row("b", "errored"))
        assert not target.exists()  # nothing visible until the block ends
    assert [decode_row(line).custom_id for line in target.read_bytes().splitlines()] == ["a", "b"]
    assert sink.written == 2
    assert sink.tally.counts["succeeded"] == 1 and sink.tally.counts["errored"] == 1
    assert sink.tally.usage_by_model == {"claude-haiku-4-5": [10, 2, 0, 0, 0]}
    assert [p.name for p in tmp_path.iterdir()] == ["results.jsonl"]


def test_a_failure_leaves_no_file_and_keeps_the_previous_one(tmp_path):
    target = tmp_path / "results.jsonl"
    target.write_text("previous\n")
    with pytest.raises(RuntimeError, match="boom"), publish_rows(target) as sink:
        sink.add(row("a"))
        raise RuntimeError("boom")
    assert target.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.jsonl"]


def test_a_killed_writers_temporary_file_is_cleared_by_the_next_write(tmp_path):
    """A worker SIGKILLed mid-landing leaves its temporary file; the retry's write removes it."""
    target = tmp_path / "results.jsonl"
    # A real writer process, killed (SIGKILL) while it is inside publish_rows: no clean-up runs.
    writer = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from airflow_provider_claude_batch.landing import publish_rows
        from airflow_provider_claude_batch.results import ResultRow
        with publish_rows(Path({str(target)!r})) as sink:
            sink.add(ResultRow(custom_id="half", batch_id="", status="succeeded", model="m", usage=None))
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert subprocess.run([sys.executable, "-c", writer], check=False).returncode == -signal.SIGKILL
    (stale,) = [p.name for p in tmp_path.iterdir()]
    assert stale.startswith(".results.jsonl.") and stale.endswith(".tmp")
    # Files that are not temporaries of this results file are never touched.
    unrelated = [".results.jsonl.notahexuuid.tmp", ".other.jsonl.0123456789abcdef0123456789abcdef.tmp", "notes.tmp"]
    for name in unrelated:
        (tmp_path / name).write_text("keep")

    with publish_rows(target) as sink:
        sink.add(row("a"))

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["results.jsonl", *unrelated])
    assert [decode_row(line).custom_id for line in target.read_bytes().splitlines()] == ["a"]


def test_landing_into_a_missing_folder_still_fails_clearly(tmp_path):
    """The stale-file sweep must not hide a missing folder: opening the temporary file reports it."""
    target = tmp_path / "absent" / "results.jsonl"
    with pytest.raises(FileNotFoundError), publish_rows(target) as sink:
        sink.add(row("a"))
