"""Values that validate against a JSON schema (structured outputs, forced tool inputs), derived from the prompt.

Strings are whole lines of the request, chosen by what the field holds (:mod:`.grounding`): a
passage quotes a line of the document, an identifier names the reference-list entry (checklist
item, control) that line is about, a recommendation points at that entry's text, a summary starts
from the document's title, and a yes/no verdict beside a list of problems agrees with the list.
Checked against a reference list, an array of objects holds one object per line that falls short
of its entry (a longer time than the entry allows, or by a stable hash of the line when there is
no time to compare). Enum values and the rest come from a stable hash of the request, so the same
request always gets the same answer.
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

from .grounding import Grounding, field_role, verdict_field
from .hashing import hash_int
from .prompt import WORD_RE, last_user_text

__all__ = ["SchemaFaker", "schema_value"]

_SHALLOW_DEPTH = 4  # past this, only required fields, minimal arrays, null optionals
_MAX_DEPTH = 64  # unsatisfiable (infinitely recursive) schemas stop here
_CONTAINERS = ("array", "object")


class SchemaFaker:
    """Builds a value that validates against a JSON schema, derived from the prompt's words.

    Supports the subset pydantic's ``model_json_schema()`` and hand-written schemas use:
    objects, arrays, scalars with bounds/enums/const, ``$defs``/``$ref``, ``anyOf``/``oneOf``
    (first non-null branch), ``allOf`` (merged) and type lists.
    """

    def __init__(self, root: dict[str, Any], words: list[str], seed: str, grounding: Grounding | None = None) -> None:
        self._root = root
        self._words = words or ["emulated"]
        self._seed = seed
        self._grounding = grounding or Grounding(title="", lines=())
        # The line each object being built is about, innermost last; and the fields built so far.
        self._anchors: list[str | None] = [None]
        self._siblings: list[dict[str, Any]] = [{}]

    def _h(self, path: str) -> int:
        return hash_int(self._seed, path)

    def _resolve(self, schema: Any) -> dict[str, Any]:
        """Follow local ``$ref`` pointers (``#/$defs/X``, ``#/definitions/X``, ``#``)."""
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 32:
            ref = schema["$ref"]
            target: Any = self._root
            for part in ref.lstrip("#").strip("/").split("/") if ref not in ("#", "#/") else []:
                target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
            extra = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **extra}
            seen += 1
        return schema if isinstance(schema, dict) else {}

    def value(self, schema: Any, path: str = "$", depth: int = 0) -> Any:
        """A valid instance of ``schema`` at JSON path ``path``."""
        schema = self._resolve(schema)
        if depth > _MAX_DEPTH:
            return None
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][self._h(path) % len(schema["enum"])]
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self.value(self._pick_branch(schema[key], depth), path, depth + 1)
        if isinstance(schema.get("allOf"), list):
            return self.value(self._merge(schema), path, depth + 1)
        kind = self._type_of(schema)
        maker = {
            "object": self._object,
            "array": self._array,
            "string": self._string,
            "integer": self._integer,
            "number": self._number,
            "boolean": self._boolean,
            "null": lambda s, p, d: None,
        }[kind]
        return maker(schema, path, depth)

    def _pick_branch(self, branches: list[Any], depth: int) -> Any:
        """First non-null branch (null only if deep in a recursive structure)."""
        resolved = [self._resolve(b) for b in branches]
        non_null = [b for b in resolved if b.get("type") != "null"]
        if depth > _SHALLOW_DEPTH and len(non_null) < len(resolved):
            return {"type": "null"}
        return non_null[0] if non_null else resolved[0]

    def _merge(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Shallow merge of ``allOf`` parts (properties and required lists are unioned)."""
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = self._resolve(part)
            for key, val in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **val}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *val]
                else:
                    merged.setdefault(key, val)
        return merged

    @staticmethod
    def _type_of(schema: dict[str, Any]) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if isinstance(kind, str) and kind in ("object", "array", "string", "integer", "number", "boolean"):
            return kind
        if kind == "null":
            return "null"
        if "properties" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema:
            return "array"
        return "string"

    def _object(self, schema: dict[str, Any], path: str, depth: int) -> dict[str, Any]:
        props: dict[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        shallow = depth < _SHALLOW_DEPTH
        chosen = [(name, sub) for name, sub in props.items() if shallow or name in required]
        built: dict[str, Any] = {}
        self._siblings.append(built)
        try:
            # Lists and objects first, so a summary or a verdict can agree with what they hold.
            for name, sub in sorted(chosen, key=lambda item: self._type_of(self._resolve(item[1])) not in _CONTAINERS):
                built[name] = self.value(sub, f"{path}.{name}", depth + 1)
        finally:
            self._siblings.pop()
        return {name: built[name] for name, _ in chosen}

    def _array(self, schema: dict[str, Any], path: str, depth: int) -> list[Any]:
        low = int(schema.get("minItems", 0))
        high = int(schema["maxItems"]) if "maxItems" in schema else None
        items = schema.get("items", {})
        if isinstance(schema.get("prefixItems"), list):
            return [self.value(s, f"{path}[{i}]", depth + 1) for i, s in enumerate(schema["prefixItems"])]
        anchors = self._item_anchors(items, path, depth)
        if anchors is None:
            count = max(low, 2 if depth < _SHALLOW_DEPTH else 0)
            anchors = [self._anchors[-1]] * (count if high is None else min(count, high))
        else:  # objects about lines that fall short of a reference list: one each, maybe none
            count = max(low, len(anchors)) if high is None else min(max(low, len(anchors)), high)
            anchors = [anchors[i % len(anchors)] if anchors else None for i in range(count)]
        values = []
        for index, anchor in enumerate(anchors):
            self._anchors.append(anchor)
            try:
                values.append(self.value(items, f"{path}[{index}]", depth + 1))
            finally:
                self._anchors.pop()
        return values

    def _item_anchors(self, items: Any, path: str, depth: int) -> list[str] | None:
        """For an array of objects checked against a reference list, the lines that fall short of their
        entry, in document order; None otherwise (each item is then about the enclosing object's line).

        A line falls short when it states a longer time than its entry allows; a line with no time to
        compare does one time in four (a stable hash of the request and the line).
        """
        grounding = self._grounding
        if not grounding.catalogue or self._type_of(self._resolve(items)) != "object" or depth >= _SHALLOW_DEPTH:
            return None
        flagged = []
        for line, key in grounding.related_lines():
            verdict = grounding.exceeds(line, key)
            if verdict or (verdict is None and hash_int(self._seed, path, line) % 4 == 0):
                flagged.append(line)
        return flagged

    def _boolean(self, schema: dict[str, Any], path: str, depth: int) -> bool:
        name = path.rsplit(".", 1)[-1]
        lists = [value for value in self._siblings[-1].values() if isinstance(value, list)]
        if verdict_field(name) and lists:
            return not any(lists)  # "compliant" beside its findings: true only when there are none
        return self._h(path) % 2 == 0

    def _line_for(self, path: str) -> str:
        lines = self._grounding.lines
        return lines[self._h(path) % len(lines)] if lines else self._words_for(path)

    def _grounded_text(self, schema: dict[str, Any], path: str) -> str:
        """A string of the kind the field holds, from the request's lines (see the module docstring)."""
        grounding = self._grounding
        name = path.rsplit(".", 1)[-1]
        anchor = self._anchors[-1]
        line = anchor or self._line_for(path)
        entry = grounding.related_id(line) if grounding.catalogue else None
        role = field_role(name, schema)
        if role == "identifier" and entry is not None:
            return entry
        if role == "recommendation" and entry is not None:
            return f"Bring this in line with {entry}: {grounding.catalogue[entry]}"
        if role == "recommendation":
            return f"Review this: {line}"
        if role == "summary" and grounding.title:
            return self._summary(grounding)
        if role == "identifier":
            return self._words_for(path)
        return line

    def _summary(self, grounding: Grounding) -> str:
        """The title, and with a reference list, what the lists beside it found."""
        found = [item for value in self._siblings[-1].values() if isinstance(value, list) for item in value]
        if not grounding.catalogue or not all(isinstance(item, dict) for item in found):
            return grounding.title
        if not found:
            return f"{grounding.title}: no findings."
        entries = sorted({str(v) for item in found for v in item.values() if v in grounding.catalogue})
        against = f" ({', '.join(entries)})" if entries else ""
        return f"{grounding.title}: {len(found)} finding(s){against}."

    def _string(self, schema: dict[str, Any], path: str, depth: int) -> str:
        text = self._format_value(schema.get("format"), path) or self._grounded_text(schema, path)
        min_len = int(schema.get("minLength", 0))
        while len(text) < min_len:
            text = f"{text} {self._words_for(path + '+')}"
        if "maxLength" in schema:
            text = text[: int(schema["maxLength"])]
        return text

    def _words_for(self, path: str) -> str:
        """A few consecutive prompt words, starting at a path-dependent offset."""
        start = self._h(path) % len(self._words)
        picked = (self._words[start:] + self._words[:start])[: 3 + self._h(path + "#") % 5]
        return " ".join(picked)

    def _format_value(self, fmt: Any, path: str) -> str | None:
        word = re.sub(r"[^a-z0-9]", "", self._words[self._h(path) % len(self._words)].lower()) or "x"
        return (
            {
                "date-time": "2025-01-15T12:00:00Z",
                "date": "2025-01-15",
                "time": "12:00:00",
                "email": f"{word}@example.com",
                "uri": f"https://example.com/{word}",
                "url": f"https://example.com/{word}",
                "uuid": str(uuid.UUID(int=self._h(path) << 64 | self._h(path + "u"))),
                "ipv4": "192.0.2.10",
            }.get(fmt)
            if isinstance(fmt, str)
            else None
        )

    @staticmethod
    def _bounds(schema: dict[str, Any], step: float) -> tuple[float, float]:
        low = schema.get("minimum")
        high = schema.get("maximum")
        if "exclusiveMinimum" in schema and isinstance(schema["exclusiveMinimum"], (int, float)):
            low = schema["exclusiveMinimum"] + step
        if "exclusiveMaximum" in schema and isinstance(schema["exclusiveMaximum"], (int, float)):
            high = schema["exclusiveMaximum"] - step
        if low is None and high is None:
            return 0, 100
        if low is None:
            return high - 100, high
        if high is None:
            return low, low + 100
        return low, high

    def _integer(self, schema: dict[str, Any], path: str, depth: int) -> int:
        low, high = self._bounds(schema, 1)
        low_i, high_i = math.ceil(low), math.floor(high)
        multiple = schema.get("multipleOf")
        if isinstance(multiple, int) and multiple > 0:
            first = math.ceil(low_i / multiple) * multiple
            slots = max(1, (high_i - first) // multiple + 1)
            return first + multiple * (self._h(path) % slots)
        return low_i + self._h(path) % max(1, high_i - low_i + 1)

    def _number(self, schema: dict[str, Any], path: str, depth: int) -> float:
        low, high = self._bounds(schema, 1e-6)
        frac = 0.1 + 0.8 * (self._h(path) % 1000) / 1000
        value = round(low + (high - low) * frac, 2)
        return min(max(value, low), high)


def _drop_required(value: Any, schema: dict[str, Any], faker: SchemaFaker) -> Any:
    """Make ``value`` schema-invalid by removing its first required field (``invalid_output``)."""
    resolved = faker._resolve(schema)
    required = resolved.get("required") or []
    if isinstance(value, dict) and required:
        return {k: v for k, v in value.items() if k != required[0]}
    return None


def schema_value(params: dict[str, Any], schema: dict[str, Any], salt: str, invalid: bool) -> Any:
    """Generate (and optionally break) a schema instance derived from the prompt."""
    prompt = last_user_text(params)
    faker = SchemaFaker(
        schema, WORD_RE.findall(prompt), seed=f"{salt}:{prompt}", grounding=Grounding.from_params(params)
    )
    value = faker.value(schema)
    return _drop_required(value, schema, faker) if invalid else value
