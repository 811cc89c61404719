"""``bash scripts/test.sh`` on a machine where Chromium is missing and cannot be installed.

The real script runs (bootstrap, ruff, pytest) with ``--collect-only`` so no test runs twice; a
folder first on ``PATH`` makes it a non-root user without password-less sudo (``id -u`` answers
1000, ``sudo -n`` fails), and ``CLAUDE_BATCH_CHROMIUM`` points at no Chromium. The browser tests must
then be left out by name, listed with the one command that installs Chromium, and the rest kept.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BROWSER_TESTS = (
    "test_claude_batches_page_in_the_airflow_ui",
    "test_claude_batch_tab_on_an_unmapped_and_a_mapped_task",
    "test_extra_link_on_an_unmapped_and_a_mapped_task",
    "test_routing_and_cost_page_shows_the_audit_and_three_charts",
)


def test_without_chromium_the_browser_tests_are_named_with_the_install_command(tmp_path):
    shims = tmp_path / "bin"
    shims.mkdir()
    for name, body in (("id", "echo 1000"), ("sudo", "exit 1")):
        (shims / name).write_text(f"#!/bin/sh\n{body}\n")
        (shims / name).chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}",
        "CLAUDE_BATCH_CHROMIUM": str(tmp_path / "no-chromium"),
        "CLAUDE_BATCH_VENV": sys.prefix,  # this environment: nothing to install
    }
    env.pop("CLAUDE_BATCH_NO_BROWSER", None)
    result = subprocess.run(
        ["bash", "scripts/test.sh", "--collect-only", "-q", "tests/e2e/test_ui_browser.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "could not install chromium here" in output
    section = output.split("browser tests NOT run", 1)[1]
    for name in BROWSER_TESTS:
        assert f"tests/e2e/test_ui_browser.py::{name}" in section
    assert "Install it with:  sudo apt-get install -y chromium" in section
    assert "(4 deselected)" in output
    # The test that needs no browser is still collected.
    assert "tests/e2e/test_ui_browser.py::test_unauthenticated_api_gets_401" in output.split("browser tests NOT run")[0]
