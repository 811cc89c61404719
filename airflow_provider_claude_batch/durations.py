"""Durations and lists as a person would say them: "2 hours", "5 minutes", "a, b and c".

Reasons and refusals are read by people deciding what to change. This module imports nothing from Airflow.
"""

from __future__ import annotations

from datetime import timedelta

__all__ = ["format_duration", "join_parts", "plural"]


def plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def join_parts(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def format_duration(td: timedelta) -> str:
    """Render a timedelta the way a person would say it: "2 hours", "5 minutes", "1 day and 6 hours".

    Reasons are read by people deciding what to change, so "2 hours" beats "2:00:00".
    """
    if not isinstance(td, timedelta):
        raise TypeError(f"format_duration expects a datetime.timedelta, got {type(td).__name__}: {td!r}")
    if td < timedelta(0):
        return "minus " + format_duration(-td)

    days = td.days
    hours, remainder = divmod(td.seconds, 3600)
    minutes, seconds = divmod(remainder, 60)
    parts = [plural(value, unit) for value, unit in ((days, "day"), (hours, "hour"), (minutes, "minute")) if value]
    if td.microseconds:
        # Sub-second precision only matters for tiny durations; keep it readable, not exact.
        fractional = f"{seconds + td.microseconds / 1_000_000:.6f}".rstrip("0").rstrip(".")
        parts.append(f"{fractional} seconds")
    elif seconds:
        parts.append(plural(seconds, "second"))
    return join_parts(parts) if parts else "0 seconds"
