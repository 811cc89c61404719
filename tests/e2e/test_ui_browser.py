"""The "Claude Batches" page in a real browser: headless Debian Chromium, driven by Playwright, real api-server.

One batch has landed (cost, saving) and one is still running (24-hour bar, no fake progress) when
the page is opened through the Airflow UI's navigation (Browse > Claude Batches). The screenshot is
kept as a test artifact (``artifacts/claude-batches.png``); with ``CLAUDE_BATCH_UPDATE_DOCS_SCREENSHOT=1``
it also refreshes ``docs/claude-batches.png``, the README's copy (so a plain test run leaves the tree clean).

Needs Debian's ``chromium`` (``apt-get install chromium``) and the ``playwright`` Python package
(``pip install playwright``; its own browser download is not used, so never ``playwright install``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import UI_LANDED_DAG, UI_LANDED_REQUESTS, UI_RUNNING_DAG, UI_RUNNING_REQUESTS
from harness import AirflowHarness

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = REPO_ROOT / "artifacts" / "claude-batches.png"
DOCS_COPY = REPO_ROOT / "docs" / "claude-batches.png"
CHROMIUM = os.environ.get("CLAUDE_BATCH_CHROMIUM", "/usr/bin/chromium")
# What Chromium needs in this sandbox: no sandbox as root, no GPU, and no background connections to a
# network that is not there (each refused connection slows start-up down).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TIMEOUT_MS = 45_000


def chromium_executable() -> str:
    """Debian's Chromium, or a failure that says how to install it (never a silent skip)."""
    path = shutil.which(CHROMIUM) or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: the browser test needs Debian's Chromium. "
            "Install it with `apt-get install -y chromium` (or set CLAUDE_BATCH_CHROMIUM to its path)."
        )
    return path


@pytest.fixture(scope="module")
def ui_batches(airflow_harness: AirflowHarness) -> Iterator[dict[str, str]]:
    """One run whose batch has landed, one whose batch is still running (cancelled afterwards)."""
    harness = airflow_harness
    assert harness.emulator is not None
    # Not shorter: a batch that ends before the worker process of the first half has exited (~5 s
    # after deferring) trips an Airflow 3.3 race in which the scheduler fails the resumed task
    # ("finished with state success, but the task instance's state attribute is running").
    harness.emulator.configure(processing_seconds=12)
    harness.trigger_dag(UI_LANDED_DAG, "weekly_2026_w09")
    harness.wait_for_state(UI_LANDED_DAG, "weekly_2026_w09", "audit_documents", ["success"], timeout=120)
    harness.emulator.configure(processing_seconds=3600)
    harness.trigger_dag(UI_RUNNING_DAG, "nightly_2026_03_01")
    harness.wait_for_state(UI_RUNNING_DAG, "nightly_2026_03_01", "generate_tests", ["deferred"], timeout=120)
    yield {"landed": "weekly_2026_w09", "running": "nightly_2026_03_01"}
    # Do not leave an hour-long batch behind (the harness stops anyway; this exercises the cancel once more).
    harness.set_ti_state(UI_RUNNING_DAG, "nightly_2026_03_01", "generate_tests", "failed")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_executable()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("The browser test needs the playwright package: pip install playwright (no `playwright install`).")
    profile = tempfile.mkdtemp(prefix="claude-batch-chromium-")
    with sync_playwright() as playwright:
        # launch_persistent_context is Playwright's way to give Chromium a fresh --user-data-dir.
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1500, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def test_unauthenticated_api_gets_401(airflow_harness: AirflowHarness):
    for path in ("/claude-batch/api/batches", "/claude-batch/"):
        response = httpx.get(airflow_harness.api_url + path, trust_env=False)
        assert response.status_code == 401, (path, response.status_code)


def test_claude_batches_page_in_the_airflow_ui(airflow_harness: AirflowHarness, ui_batches, browser):
    harness = airflow_harness
    # Signed in the way the UI is after its login form: the api-server's JWT in the _token cookie.
    browser.add_cookies([{"name": "_token", "value": harness.token, "url": harness.api_url}])
    page = browser.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(harness.api_url + "/")

    # Through the UI's own navigation: Browse > Claude Batches (our external view, url_route claude-batches).
    page.get_by_role("button", name=re.compile("Browse", re.I)).click()
    page.get_by_role("menuitem", name="Claude Batches").click()
    page.wait_for_url(re.compile(r"/plugin/claude-batches"))
    frame = page.frame_locator("iframe")
    rows = frame.locator("tr.batch-row")
    landed_row = rows.filter(has_text=UI_LANDED_DAG)
    running_row = rows.filter(has_text=UI_RUNNING_DAG)
    landed_row.first.wait_for()
    running_row.first.wait_for()

    # The landed batch: ended, every request succeeded, cost and saving from the manifest.
    landed_text = landed_row.first.inner_text()
    assert "ended" in landed_text and "task success" in landed_text
    assert f"succeeded {UI_LANDED_REQUESTS}" in landed_text
    assert re.search(r"\$\d+\.\d{4}", landed_row.first.locator("td.saving").inner_text())
    assert "ended after" in landed_text
    # The running batch: in progress, every request still "processing", time in the 24-hour window.
    running_text = running_row.first.inner_text()
    assert "in progress" in running_text and "task deferred" in running_text
    assert f"processing {UI_RUNNING_REQUESTS}" in running_text
    assert re.search(r"\d+s of 24h 00m|\dm \d+s of 24h 00m", running_text), running_text
    bar = running_row.first.locator(".bar")
    assert "not progress" in bar.get_attribute("title")  # the tooltip says why there is no per-request progress
    assert float(bar.get_attribute("data-fraction")) < 0.05
    assert "not landed yet" in running_text

    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACT))
    assert ARTIFACT.stat().st_size > 10_000
    if os.environ.get("CLAUDE_BATCH_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(ARTIFACT, DOCS_COPY)

    # The per-task page, as the task's "Claude batch" extra link opens it.
    links = harness.api(
        "GET", f"/api/v2/dags/{UI_RUNNING_DAG}/dagRuns/{ui_batches['running']}/taskInstances/generate_tests/links"
    )["extra_links"]
    task_page = browser.new_page()
    task_page.set_default_timeout(UI_TIMEOUT_MS)
    task_page.goto(links["Claude batch"])
    task_page.locator("body[data-loaded=true]").wait_for()
    text = task_page.locator("#content").inner_text()
    assert "in progress" in text and f"processing {UI_RUNNING_REQUESTS}" in text
    assert "once the results land" in text
    task_page.screenshot(path=str(ARTIFACT.with_name("claude-batch-task.png")))
