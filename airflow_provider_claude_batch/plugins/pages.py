"""The plugin's HTML pages, assembled from the packaged assets (``plugins/assets``): no Airflow import.

Every page is one self-contained document: the stylesheet and the script are inlined, so a page
loads nothing from anywhere else (no CDN, no second request through the UI's iframe). The script
reads its settings from a JSON ``<script id="config">`` block.

Also here: :func:`parse_map_index`, because the Airflow UI fills the ``{MAP_INDEX}`` placeholder of
a task-instance view's URL only on a mapped task's page.
"""

from __future__ import annotations

import html
import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "MAP_INDEX_PLACEHOLDER",
    "ROUTING_PATH",
    "asset",
    "parse_map_index",
    "render_batches_page",
    "render_document",
]

MAP_INDEX_PLACEHOLDER = "{MAP_INDEX}"
ROUTING_PATH = "/routing"
"""The Routing & cost page, under the plugin's prefix."""


@cache
def asset(name: str) -> str:
    """One file of ``plugins/assets`` (read once per process)."""
    return resources.files("airflow_provider_claude_batch.plugins").joinpath("assets", name).read_text("utf-8")


def parse_map_index(value: str | int | None) -> int:
    """The map index a task-instance URL carries; -1 for an unmapped task.

    The Airflow UI (3.1 to 3.3) substitutes ``{MAP_INDEX}`` from its own route, which has a map index
    only on a mapped task instance's page (``.../tasks/<task>/mapped/<n>``). On an unmapped task's
    page the placeholder arrives as is: that means -1.

    :param value: the ``map_index`` query parameter.
    :raises ValueError: for anything that is not a whole number of -1 or more (nor the placeholder).
    """
    if value is None:
        return -1
    text = str(value).strip()
    if text in ("", MAP_INDEX_PLACEHOLDER):
        return -1
    try:
        index = int(text)
    except ValueError:
        raise ValueError(
            f"map_index must be a whole number (-1, or omitted, for an unmapped task), got {text!r}"
        ) from None
    if index < -1:
        raise ValueError(f"map_index must be -1 (unmapped) or a mapped task's index from 0, got {index}")
    return index


def _script_json(config: dict[str, Any]) -> str:
    # </ cannot close the script element from inside the JSON.
    return json.dumps(config).replace("</", "<\\/")


def render_document(
    *, page: str, title: str, subtitle: str, nav: str, body: str, config: dict[str, Any], script: str
) -> str:
    """One page in the shared shell (``page.html``) with the stylesheet and ``script`` inlined.

    :param page: the page's name (``data-page`` on ``<body>``).
    :param title: the heading and document title (escaped here).
    :param subtitle: the line beside the heading (escaped here).
    :param nav: HTML of the links at the top right (already escaped).
    :param body: HTML of the page's content (already escaped).
    :param config: settings for the script, as JSON.
    :param script: the name of the asset with the page's script.
    """
    # One pass over the shell: a value that happens to contain "{{BODY}}" is never substituted again.
    values = {
        "TITLE": html.escape(title),
        "SUBTITLE": html.escape(subtitle),
        "PAGE": html.escape(page),
        "NAV": nav,
        "BODY": body,
        "CONFIG": _script_json(config),
        "STYLE": asset("style.css"),
        "SCRIPT": asset(script),
    }
    shell = asset("page.html")
    out, cursor = [], 0
    while (start := shell.find("{{", cursor)) >= 0:
        end = shell.index("}}", start)
        out += [shell[cursor:start], values[shell[start + 2 : end]]]
        cursor = end + 2
    out.append(shell[cursor:])
    return "".join(out)


def nav_links(prefix: str, *, fleet: bool, routing: bool, status: str) -> str:
    """The links at the top right ("All batches", "Routing & cost") and a status line.

    :param prefix: where the app is mounted.
    :param fleet: link to the fleet page.
    :param routing: link to the Routing & cost page.
    :param status: the status text (escaped here), in ``<span id="updated">``.
    """
    links = []
    if fleet:
        links.append(f'<a href="{html.escape(prefix + "/")}" id="fleet-link">All batches</a>')
    if routing:
        links.append(f'<a href="{html.escape(prefix + ROUTING_PATH)}" id="routing-link">Routing &amp; cost</a>')
    return " &middot; ".join([*links, f'<span id="updated">{html.escape(status)}</span>'])


def render_batches_page(prefix: str, task: dict[str, Any] | None, *, refresh_seconds: int, progress_note: str) -> str:
    """The fleet page (``task=None``) or one task instance's page: the script renders the JSON API.

    :param prefix: where the app is mounted (``/claude-batch``), for the script's API calls.
    :param task: ``dag_id``, ``run_id``, ``task_id``, ``map_index`` of the per-task page.
    :param refresh_seconds: how often the script refreshes.
    :param progress_note: why the bar is time, not progress.
    """
    prefix = prefix.rstrip("/")
    if task is None:
        title, subtitle = "Claude Batches", "Message Batches submitted by Airflow tasks"
    else:
        title = f"Claude batch \u00b7 {task['task_id']}"
        subtitle = f"{task['dag_id']} / {task['run_id']}" + (
            f" / map {task['map_index']}" if task["map_index"] >= 0 else ""
        )
    body = (
        '<div class="note" id="note"></div>\n<div class="summary" id="summary"></div>\n'
        '<div id="content"><div class="empty">Loading&hellip;</div></div>'
    )
    config = {"prefix": prefix, "task": task, "refreshSeconds": refresh_seconds, "progressNote": progress_note}
    return render_document(
        page="task" if task else "fleet",
        title=title,
        subtitle=subtitle,
        nav=nav_links(prefix, fleet=task is not None, routing=True, status="loading\u2026"),
        body=body,
        config=config,
        script="batches.js",
    )
