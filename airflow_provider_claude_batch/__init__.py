"""Apache Airflow provider that routes Claude work to the right Anthropic API."""

from __future__ import annotations

__version__ = "0.1.0"
