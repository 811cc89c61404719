"""Text helpers for product catalogues."""

from __future__ import annotations

import re
import unicodedata


def slugify(title: str) -> str:
    """URL-safe lower-case slug of a product title."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending with an ellipsis when cut."""
    if limit < 1:
        raise ValueError("limit must be positive")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def normalise_sku(raw: str) -> str:
    """Upper-case SKU without spaces or dashes."""
    return re.sub(r"[\s-]+", "", raw).upper()
