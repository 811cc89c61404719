"""Formatting shared by the suite's tables: contender labels, medians of a row, numbers, ratios, Markdown tables.

Pure functions over the plain dicts of a results file.
"""

from __future__ import annotations

from typing import Any

CONTENDER_LABELS = {
    "ours": "ours (claude-batch)",
    "ours_operator": "ours, whole operator execute",
    "ours_operator_cap": "ours, operator execute with max_cost_usd",
    "ours_operator_cache": "ours, operator execute with cache_shared_prefix",
    "ours_frozen": "ours, startup heap frozen (gc.freeze())",
    "official": "official (providers-anthropic)",
    "common_ai": "common-ai (providers-common-ai)",
    "raw": "raw floor (SDK raw HTTP)",
    "emulator": "emulator (claude-batch emulator)",
}


def median(row: dict[str, Any] | None, key: str) -> float | None:
    if not row or "summary" not in row or key not in row["summary"]:
        return None
    return row["summary"][key]["median"]


def status_text(met: bool | None) -> str:
    if met is None:
        return "N/A"
    return "MET" if met else "MISSED"


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def cell(row: dict[str, Any] | None, key: str, digits: int = 2, noise: bool = True) -> str:
    """The median, with (min-max) when repetitions differ: the noise of the figure."""
    if not row or "summary" not in row or key not in row["summary"]:
        return "-"
    figure = row["summary"][key]
    text = fmt(figure["median"], digits)
    if noise and row.get("reps", 1) > 1 and figure["max"] != figure["min"]:
        text += f" ({fmt(figure['min'], digits)}-{fmt(figure['max'], digits)})"
    return text


def ratio_text(value: float | None, anchor: float | None) -> str:
    if value is None or not anchor:
        return "-"
    return f"{value / anchor:.2f}x"


def contender_label(key: str) -> str:
    name, _, size = key.partition("@")
    label = CONTENDER_LABELS.get(name, name)
    return f"{label} @ {int(size):,}" if size else label


def markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines.extend("| " + " | ".join(cells) + " |" for cells in rows)
    lines.append("")
    return lines
