"""The plugin's pages in a real browser: headless Debian Chromium, driven by Playwright, a real Airflow.

The example DAGs are deployed as they ship (``dags_examples/`` and its data) to a harness of their
own: the scheduler runs the latest scheduled run of ``nightly_test_generation`` (one batch task)
and of ``compliance_audit`` (one batch per document set: a mapped task), a developer's pre-merge
review is triggered through the REST API (the synchronous route), and one more batch is still
running when the pages are shot. The tests then go through the UI as a user does: Browse > Claude
Batches, the "Claude batch" tab of an unmapped and of a mapped task instance, the extra link on
the task's Details, and Browse > Claude Routing & Cost (the audit and the three charts).

Screenshots are kept as test artifacts (``artifacts/*.png``); with
``CLAUDE_BATCH_UPDATE_DOCS_SCREENSHOT=1`` they also refresh the copies in ``docs/`` (so a plain test
run leaves the tree clean).

Needs Debian's ``chromium`` (``bash scripts/test.sh`` installs it when it can, or says which tests
it left out and how to install it) and the ``playwright`` Python package (its own browser download
is not used: never ``playwright install``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from harness import AirflowHarness, batch_dag_source

pytestmark = pytest.mark.e2e
browser_test = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "dags_examples"
ARTIFACTS = REPO_ROOT / "artifacts"
DOCS = REPO_ROOT / "docs"
API_KEY = "sk-ant-e2e-browser-LEAKCHECK-2c81"
RUNNING_DAG = "support_backlog_summaries"
RUNNING_REQUESTS = 40
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
            f"Chromium not found at {CHROMIUM}: the browser tests need Debian's Chromium. "
            "Install it with `apt-get install -y chromium` (or set CLAUDE_BATCH_CHROMIUM to its path); "
            "`bash scripts/test.sh` does this itself when it runs as root."
        )
    return path


def keep_screenshot(page: Any, name: str, *, full_page: bool = False) -> Path:
    """Save ``artifacts/<name>``; refresh ``docs/<name>`` too when CLAUDE_BATCH_UPDATE_DOCS_SCREENSHOT=1."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 10_000
    if os.environ.get("CLAUDE_BATCH_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(path, DOCS / name)
    return path


@pytest.fixture(scope="module")
def ui_harness(request: pytest.FixtureRequest) -> Iterator[AirflowHarness]:
    """The example DAGs deployed as they ship, plus one DAG whose batch will still be running."""
    root = Path(tempfile.mkdtemp(prefix="claude-batch-ui-"))
    harness = AirflowHarness(
        root / "home",
        {f"{RUNNING_DAG}.py": batch_dag_source(RUNNING_DAG, RUNNING_REQUESTS, task_id="summarise")},
        api_key=API_KEY,
        # Not shorter: a batch that ends before the worker process of the first half has exited (~5 s
        # after deferring) trips an Airflow 3.3 race in which the scheduler fails the resumed task
        # ("finished with state success, but the task instance's state attribute is running").
        emulator_config={"processing_seconds": 12},
        copy_into_dags=[*sorted(EXAMPLES.glob("*.py")), EXAMPLES / "data"],
    )
    request.addfinalizer(harness.stop)
    with harness:
        yield harness


def scheduled_run(harness: AirflowHarness, dag_id: str) -> str:
    """The run the scheduler created for the latest interval (unpaused DAGs with catchup=False get one)."""

    def created() -> str | None:
        runs = [run for run in harness.dag_runs(dag_id) if run["run_type"] == "scheduled"]
        return runs[-1]["dag_run_id"] if runs else None

    return harness.wait_for(created, timeout=120, what=f"a scheduled run of {dag_id}")


@pytest.fixture(scope="module")
def runs(ui_harness: AirflowHarness) -> Iterator[dict[str, str]]:
    """Last night's batches landed, a pre-merge review answered, and one batch still running."""
    harness = ui_harness
    nightly = scheduled_run(harness, "nightly_test_generation")
    harness.wait_for_state("nightly_test_generation", nightly, "write_test_files", ["success"], timeout=300)
    weekly = scheduled_run(harness, "compliance_audit")
    harness.wait_for_state("compliance_audit", weekly, "write_report", ["success"], timeout=300)
    conf = {"pull_request": 1042, "files": ["inventory/pricing.py", "inventory/stock.py"]}
    review = harness.trigger_dag("pre_merge_review", "pr_1042", conf=conf)
    harness.wait_for_state("pre_merge_review", review, "review", ["success"], timeout=180)
    harness.emulator.configure(processing_seconds=3600)
    running = harness.trigger_dag(RUNNING_DAG, "backlog_2026_w48")
    harness.wait_for_state(RUNNING_DAG, running, "summarise", ["deferred"], timeout=120)
    yield {"nightly": nightly, "weekly": weekly, "review": review, "running": running}
    # Do not leave an hour-long batch behind (the harness stops anyway; this exercises the cancel once more).
    harness.set_ti_state(RUNNING_DAG, running, "summarise", "failed")


@pytest.fixture(scope="module")
def browser(ui_harness: AirflowHarness) -> Iterator[Any]:
    executable = chromium_executable()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("The browser tests need the playwright package: pip install playwright (no `playwright install`).")
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
        # Signed in the way the UI is after its login form: the api-server's JWT in the _token cookie.
        context.add_cookies([{"name": "_token", "value": ui_harness.token, "url": ui_harness.api_url}])
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def new_page(browser: Any) -> Any:
    page = browser.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    return page


def ti_path(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The Airflow UI's own page of a task instance (React router paths, as its links make them)."""
    path = f"/dags/{dag_id}/runs/{run_id}/tasks/{task_id}"
    return path + (f"/mapped/{map_index}" if map_index >= 0 else "")


def open_claude_tab(browser: Any, harness: AirflowHarness, path: str) -> tuple[Any, Any]:
    """Open a task instance in the real UI and click its "Claude batch" tab; returns (page, iframe)."""
    page = new_page(browser)
    page.goto(harness.api_url + path)
    page.get_by_role("link", name="Claude batch", exact=True).first.click()
    page.wait_for_url(re.compile(r"/plugin/claude-batch-task$"))
    frame = page.frame_locator("iframe")
    frame.locator("body[data-loaded=true]").wait_for()
    return page, frame


def test_unauthenticated_api_gets_401(ui_harness: AirflowHarness):
    for path in ("/claude-batch/api/batches", "/claude-batch/", "/claude-batch/routing", "/claude-batch/api/costs"):
        response = httpx.get(ui_harness.api_url + path, trust_env=False)
        assert response.status_code == 401, (path, response.status_code)


@browser_test
def test_claude_batches_page_in_the_airflow_ui(ui_harness: AirflowHarness, runs, browser):
    page = new_page(browser)
    page.goto(ui_harness.api_url + "/")
    # Through the UI's own navigation: Browse > Claude Batches (our external view, url_route claude-batches).
    page.get_by_role("button", name=re.compile("Browse", re.I)).click()
    page.get_by_role("menuitem", name="Claude Batches").click()
    page.wait_for_url(re.compile(r"/plugin/claude-batches"))
    frame = page.frame_locator("iframe")
    rows = frame.locator("tr.batch-row")
    landed_row = rows.filter(has_text="nightly_test_generation")
    mapped_rows = rows.filter(has_text="compliance_audit")
    running_row = rows.filter(has_text=RUNNING_DAG)
    for row in (landed_row, mapped_rows, running_row):
        row.first.wait_for()

    # Last night's batch: ended, every request succeeded, cost and saving from the manifest.
    landed_text = landed_row.first.inner_text()
    assert "ended" in landed_text and "task success" in landed_text and "succeeded 3" in landed_text
    assert re.search(r"\$\d+\.\d{4}", landed_row.first.locator("td.saving").inner_text())
    assert "ended after" in landed_text
    # The mapped audit: one row per document set, each with its own batch.
    assert mapped_rows.count() == 2
    assert {re.search(r"\[(\d)\]", mapped_rows.nth(i).inner_text()).group(1) for i in range(2)} == {"0", "1"}
    # The running batch: in progress, every request still "processing", time in the 24-hour window.
    running_text = running_row.first.inner_text()
    assert "in progress" in running_text and "task deferred" in running_text
    assert f"processing {RUNNING_REQUESTS}" in running_text
    assert re.search(r"\d+s of 24h 00m|\dm \d+s of 24h 00m", running_text), running_text
    bar = running_row.first.locator(".bar")
    assert "not progress" in bar.get_attribute("title")  # the tooltip says why there is no per-request progress
    assert float(bar.get_attribute("data-fraction")) < 0.05
    assert "not landed yet" in running_text
    keep_screenshot(page, "claude-batches.png")


@browser_test
def test_claude_batch_tab_on_an_unmapped_and_a_mapped_task(ui_harness: AirflowHarness, runs, browser):
    harness = ui_harness
    # Unmapped: the UI leaves {MAP_INDEX} unfilled in the tab's URL (Airflow 3.3.2 showed int_parsing here).
    page, frame = open_claude_tab(
        browser, harness, ti_path("nightly_test_generation", runs["nightly"], "generate_tests")
    )
    assert "map_index={MAP_INDEX}" in page.locator("iframe").get_attribute("src")
    text = frame.locator("#content").inner_text()
    assert "ended" in text and "task success" in text and "succeeded 3" in text and "Message Batches API" in text
    assert re.search(r"Saving\s+\$\d+\.\d{4}", text), text
    assert frame.locator("h1").inner_text().endswith("generate_tests")

    # Mapped: the tab of document set 1 shows that instance's own batch.
    page, frame = open_claude_tab(browser, harness, ti_path("compliance_audit", runs["weekly"], "audit_documents", 1))
    assert page.locator("iframe").get_attribute("src").endswith("map_index=1")
    assert "/ map 1" in frame.locator(".sub").inner_text()
    text = frame.locator("#content").inner_text()
    assert "ended" in text and "succeeded 3" in text and "Batches" in text
    keep_screenshot(page, "claude-batch-tab.png")

    # Still running: the tab of a deferred task.
    _, frame = open_claude_tab(browser, harness, ti_path(RUNNING_DAG, runs["running"], "summarise"))
    text = frame.locator("#content").inner_text()
    assert "in progress" in text and f"processing {RUNNING_REQUESTS}" in text and "once the results land" in text

    # The synchronous route: nothing was saved, and the tab says what batching would have saved.
    _, frame = open_claude_tab(browser, harness, ti_path("pre_merge_review", runs["review"], "review"))
    text = frame.locator("#content").inner_text()
    assert "synchronous Messages API" in text and "succeeded 2" in text
    assert re.search(r"Batching would have saved\s+\$\d+\.\d{4}", text), text
    assert "Saving" not in text

    # Every task instance has the tab: on a task that is not Claude's it explains, with no raw error.
    _, frame = open_claude_tab(browser, harness, ti_path("compliance_audit", runs["weekly"], "write_report"))
    message = frame.locator("#not-claude").inner_text()
    assert "not a ClaudeBatchOperator or ClaudeMessageOperator task" in message


@browser_test
def test_extra_link_on_an_unmapped_and_a_mapped_task(ui_harness: AirflowHarness, runs, browser):
    harness = ui_harness
    for path, expected in (
        (ti_path("nightly_test_generation", runs["nightly"], "generate_tests"), "map_index=-1"),
        (ti_path("compliance_audit", runs["weekly"], "audit_documents", 0), "map_index=0"),
    ):
        page = new_page(browser)
        page.goto(harness.api_url + path + "/details")  # the UI lists extra links on a task's Details
        link = page.locator('a[href*="/claude-batch/task/"]').filter(has_text="Claude batch")
        href = link.first.get_attribute("href")
        assert href.startswith(harness.api_url) and href.endswith(expected), href
        page.goto(href)
        page.locator("body[data-loaded=true]").wait_for()
        text = page.locator("#content").inner_text()
        assert "ended" in text and "succeeded 3" in text, text


@browser_test
def test_routing_and_cost_page_shows_the_audit_and_three_charts(ui_harness: AirflowHarness, runs, browser):
    harness = ui_harness
    landed = []
    for dag_id, run_id, task_id, indexes in (
        ("nightly_test_generation", runs["nightly"], "generate_tests", [-1]),
        ("compliance_audit", runs["weekly"], "audit_documents", [0, 1]),
    ):
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/xcomEntries/return_value"
        )
        for index in indexes:
            params = {"deserialize": True, "stringify": False, "map_index": index}
            landed.append(harness.api("GET", path, params=params)["value"])
    batch_spend = sum(manifest["cost"]["batch_usd"] for manifest in landed)

    page = new_page(browser)
    page.goto(harness.api_url + "/")
    # From the Claude Batches page, as its header links it.
    page.get_by_role("button", name=re.compile("Browse", re.I)).click()
    page.get_by_role("menuitem", name="Claude Batches").click()
    frame = page.frame_locator("iframe")
    frame.locator("#routing-link").click()
    frame.locator("#audit[data-loaded=true]").wait_for()

    # The audit of the deployed DAG files: every Claude task, its route, the rule's route, the verdict.
    audit_rows = frame.locator("tr.audit-row")
    verdicts = {row.get_attribute("data-dag"): row.get_attribute("data-verdict") for row in audit_rows.all()}
    assert verdicts == {
        "compliance_audit": "OK",
        "nightly_test_generation": "OK",
        "pre_merge_review": "OK",
        RUNNING_DAG: "OK",
    }
    review = audit_rows.filter(has_text="pre_merge_review").inner_text()
    assert "a person waits on this pre-merge review" in review and "$" in review
    nightly = audit_rows.filter(has_text="nightly_test_generation").inner_text()
    assert "/month" in nightly and "measured (1 run)" in nightly

    # The cards and the charts, against the manifests the tasks returned.
    assert frame.locator("#card-batch-spend b").inner_text() == f"${batch_spend:.4f}"
    assert frame.locator("#card-tasks b").inner_text() == "3 / 1"
    spend = frame.locator("#chart-spend svg")
    series = {bar.get_attribute("data-series") for bar in spend.locator("rect[data-series]").all()}
    assert {"nightly_test_generation", "compliance_audit"} <= series
    drawn = sum(float(bar.get_attribute("data-value")) for bar in spend.locator("rect[data-series]").all())
    assert drawn == pytest.approx(batch_spend, abs=1e-6)
    assert spend.locator("circle[data-series]").count() >= 1  # the same work at synchronous prices
    outcomes = frame.locator("#chart-outcomes svg rect[data-series='succeeded']")
    assert sum(float(bar.get_attribute("data-value")) for bar in outcomes.all()) == 3 + 6 + 2
    durations = frame.locator("#chart-time-to-land svg rect[data-series]")
    assert sum(float(bar.get_attribute("data-value")) for bar in durations.all()) == len(landed)
    assert "3 batch task(s): median" in frame.locator("#chart-time-to-land figcaption").inner_text()

    # Filtered to one DAG through the selector (a plain GET form, submitted by the page's script).
    frame.locator("#dag-filter").select_option("compliance_audit")
    frame.locator('#dag-filter option[value="compliance_audit"][selected]').wait_for(state="attached")  # new page
    filtered = frame.locator("#chart-spend svg rect[data-series]")
    assert {bar.get_attribute("data-series") for bar in filtered.all()} == {"compliance_audit"}
    assert frame.locator("#card-tasks b").inner_text() == "2 / 0"
    frame.locator("#dag-filter").select_option("")
    expect(frame.locator("#dag-filter option[selected]")).to_have_count(0)
    frame.locator("#audit[data-loaded=true]").wait_for()
    page.set_viewport_size({"width": 1500, "height": 1400})
    keep_screenshot(page, "routing-cost.png")
