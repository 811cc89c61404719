"""Did-you-mean: the nearest known name to a mistyped one."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

_SEPARATORS = re.compile(r"[\s._/:-]+")


def _folded(name: str) -> str:
    return _SEPARATORS.sub("-", name.strip().lower())


def closest(name: str, known: Iterable[str], *, fuzzy: bool = True) -> str | None:
    """The known name ``name`` most probably meant, or ``None`` when nothing is close.

    Names equal up to case and separators (``claude-sonnet-4.6`` for ``claude-sonnet-4-6``) win
    over spelling distance; ``fuzzy=False`` accepts only those.
    """
    candidates = [candidate for candidate in known if isinstance(candidate, str)]
    folded = _folded(name)
    for candidate in candidates:
        if _folded(candidate) == folded:
            return candidate
    if not fuzzy:
        return None
    by_folded = {_folded(candidate): candidate for candidate in candidates}
    match = difflib.get_close_matches(folded, list(by_folded), n=1, cutoff=0.75)
    return by_folded[match[0]] if match else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` or the empty string."""
    match = closest(name, known)
    return f"; did you mean {match!r}?" if match is not None and match != name else ""
