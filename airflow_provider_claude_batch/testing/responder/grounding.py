"""What a structured answer is grounded in: the request's lines, its title, and any reference list.

A model asked to audit a document against a checklist quotes the document and names checklist
items; an answer assembled from words picked at random offsets ("contracts-payroll_dpa: employment
as required") reads as noise. :class:`Grounding` reads a request the way such an answer needs it:

* the lines of the last user turn (Markdown bullets and headings stripped), and its title (the
  first heading, else the first line);
* a *catalogue*: every line of the request (system prompt included) that starts with an identifier
  such as ``DH-2`` or ``SEC-10``, by identifier;
* which catalogue entry a line is about (:meth:`Grounding.related_id`): the one sharing the most
  distinctive words with it (a word found in few entries counts more than one found in many);
* whether a line states a longer time than its entry allows (:meth:`Grounding.exceeds`): "notified
  within 72 hours" against "reported within 24 hours".

:func:`field_role` names what a string field holds from its name and description (an identifier, a
quoted passage, a recommendation, a summary, a yes/no verdict beside a list of problems), so the
schema faker can fill each with something of that kind. Pure and deterministic: no hashing here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from .prompt import last_user_text, system_text

__all__ = ["Grounding", "Role", "field_role", "verdict_field"]

Role = Literal["identifier", "passage", "recommendation", "summary", "text"]

_MARKUP = re.compile(r"^\s*(?:#{1,6}\s+|[-*+]\s+|\d+[.)]\s+|>\s*)")
_IDENTIFIER = re.compile(r"^([A-Z][A-Z0-9]{0,9}-\d{1,4})\b[\s:.)-]*(.*)$")
_WORD = re.compile(r"[a-z][a-z']+")  # "sub-processors" is "sub" and "processors"
_SHORT_LINE_WORDS = 4  # fewer words than this is a label ("Document: x.md"), not a passage to quote
_STEM = 5  # "processing" and "processed" are the same word here
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(?:working\s+|business\s+|calendar\s+)?(hour|day|week|month|year)s?\b")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_UNITS = {"hour", "hours", "days", "week", "weeks", "month", "months", "year", "years", "within"}
_HOURS = {"hou": 1.0, "day": 24.0, "wee": 168.0, "mon": 730.0, "yea": 8760.0}
_ROLE_WORDS: tuple[tuple[Role, tuple[str, ...]], ...] = (
    ("identifier", ("id", "item", "code", "rule", "control", "requirement", "clause", "reference", "checklist")),
    ("passage", ("evidence", "quote", "passage", "excerpt", "citation", "source_text")),
    ("recommendation", ("recommendation", "fix", "action", "remediation", "remedy", "suggestion", "mitigation")),
    ("summary", ("summary", "overview", "conclusion", "assessment")),
)
_VERDICT_WORDS = ("compliant", "compliance", "ok", "valid", "passed", "pass", "approved", "clean", "acceptable")


def _words(text: str) -> list[str]:
    return [word for word in re.split(r"[^a-z]+", text.lower()) if word]


def field_role(name: str, schema: Mapping[str, Any]) -> Role:
    """What a string field holds, read from its name (``checklist_item``, ``evidence``) and description."""
    words = set(_words(name))
    description = str(schema.get("description") or "")
    for role, markers in _ROLE_WORDS:
        if words & set(markers):
            return role
    if _IDENTIFIER.match(description.split("e.g.", 1)[-1].strip()) and "id" in _words(description):
        return "identifier"
    return "text"


def verdict_field(name: str) -> bool:
    """A yes/no field that states a verdict (``compliant``, ``passed``): it agrees with the problems listed."""
    return bool(set(_words(name)) & set(_VERDICT_WORDS))


def _paragraphs(text: str) -> list[str]:
    """Markdown units: a heading, a list item, or a paragraph, with wrapped lines joined."""
    units: list[str] = []
    joinable = False
    for line in text.splitlines():
        if not line.strip():
            joinable = False
        elif joinable and not _MARKUP.match(line):
            units[-1] = f"{units[-1]} {line.strip()}"
        else:
            units.append(line)
            joinable = not line.lstrip().startswith("#")
    return units


def _stems(text: str) -> set[str]:
    """The words a text is about: longer than three letters, no units of time (those are compared apart)."""
    return {word[:_STEM] for word in _WORD.findall(text.lower()) if len(word) > 3 and word not in _UNITS}


def _durations(text: str) -> list[float]:
    """The times a text states ("72 hours", "2 working days", "10 years"), in hours."""
    return [float(n) * _HOURS[unit[:3]] for n, unit in _DURATION.findall(text.lower())]


def _clean(line: str) -> str:
    return _MARKUP.sub("", line).strip()


@dataclass(frozen=True)
class Grounding:
    """The parts of a request a grounded answer quotes and refers to."""

    title: str
    lines: tuple[str, ...]
    """The user turn's lines long enough to quote, in order (the title excluded)."""
    catalogue: Mapping[str, str] = field(default_factory=dict)
    """Identifier -> the text of its line, from the whole request (system prompt first)."""

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Grounding:
        user = last_user_text(dict(params))
        raw = _paragraphs(user)
        heading = next((line for line in raw if line.lstrip().startswith("#")), None)
        title = _clean(heading if heading is not None else (raw[0] if raw else ""))
        catalogue: dict[str, str] = {}
        for line in (*system_text(dict(params)).splitlines(), *raw):
            match = _IDENTIFIER.match(_clean(line))
            if match and match.group(2):
                catalogue.setdefault(match.group(1), match.group(2).strip())
        # A passage to quote is one sentence: a paragraph says several things.
        cleaned = [sentence for line in raw for sentence in _SENTENCE_END.split(_clean(line)) if sentence]
        lines = tuple(
            line
            for line in cleaned
            if line != title and not _IDENTIFIER.match(line) and len(line.split()) >= _SHORT_LINE_WORDS
        )
        return cls(title=title, lines=lines or tuple(line for line in cleaned if line), catalogue=catalogue)

    @cached_property
    def _stems(self) -> dict[str, set[str]]:
        return {key: _stems(text) for key, text in self.catalogue.items()}

    def related_id(self, line: str) -> str | None:
        """The catalogue entry ``line`` is most about, or None when it shares no word with any.

        Each shared word weighs 1 / (entries it appears in): "retention" says more than "data".
        """
        stems = _stems(line)
        spread: dict[str, int] = {}
        for entry in self._stems.values():
            for stem in entry:
                spread[stem] = spread.get(stem, 0) + 1
        best, best_score = None, 0.0
        for key, entry in self._stems.items():
            score = sum(1 / spread[stem] for stem in stems & entry)
            if score > best_score:
                best, best_score = key, score
        return best

    def exceeds(self, line: str, key: str) -> bool | None:
        """Whether ``line`` states a longer time than catalogue entry ``key`` allows (None: nothing to compare).

        Reference lists state limits ("within 24 hours", "maximum 24 months"); a line that states a
        longer one ("within 72 hours", "10 years") falls short of it.
        """
        limits = _durations(self.catalogue.get(key, ""))
        stated = _durations(line)
        if not stated or not limits:
            return None
        limit = max(limits)
        # Of the times a line states, the one of the limit's order ("within 30 days", not "every 12 months").
        comparable = min(stated, key=lambda hours: abs(math.log(hours / limit)) if hours > 0 else math.inf)
        return comparable > limit

    def related_lines(self) -> list[tuple[str, str]]:
        """``(line, identifier)`` for every quotable line that is about a catalogue entry."""
        return [(line, key) for line in self.lines if (key := self.related_id(line)) is not None]
