"""``publish_rows``: the one writer both routes land their rows through."""

from __future__ import annotations

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
