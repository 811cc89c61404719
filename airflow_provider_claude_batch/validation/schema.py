"""A strict view of the ``anthropic`` SDK's own request types, and the validator that walks it.

The SDK declares a request's params as ``TypedDict`` classes (``MessageCreateParamsNonStreaming``
and everything it references). As types they are lenient: unknown keys are allowed, ``Iterable``
fields accept anything iterable (pydantic validates them lazily) and file handles stand in for
base64 data. Requests here travel as JSON, so the view compiled from those classes is strict:
every ``Iterable``/``Sequence`` is a JSON list, a ``TypedDict`` accepts only the keys it declares
(unless the SDK itself marks it open, as it does for JSON schemas), what JSON cannot carry (file
handles, paths, the SDK's response models) is dropped, and a union of objects is told apart by its
discriminating field (``type``, ``role``), so a mistake is reported against the member it was meant
for. The view is compiled from whatever SDK is installed, once per process, so it follows upgrades.

This module imports nothing from Airflow.
"""

from __future__ import annotations

import collections.abc
import math
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Union

import typing_extensions

from airflow_provider_claude_batch.validation.suggest import closest, did_you_mean

# Parameters the API documents that some SDK releases do not declare (the installed one may not):
# added to the view only when the SDK's own type lacks them, so a declaring SDK's types win.
UNDECLARED_PARAMS: dict[str, type] = {"temperature": float, "top_p": float, "top_k": int}
_SEQUENCE_ORIGINS = {
    collections.abc.Iterable,
    collections.abc.Sequence,
    list,
    typing.List,  # noqa: UP006 - the SDK's annotations use it
}
_MAPPING_ORIGINS = {dict, collections.abc.Mapping, typing.Dict}  # noqa: UP006
_WRAPPERS = {typing_extensions.Required, typing_extensions.NotRequired, typing_extensions.ReadOnly}
_DISCRIMINATORS = ("type", "role")


class Node:
    """One position of the strict view."""

    def expected(self) -> str:
        raise NotImplementedError


@dataclass(eq=False)
class AnyNode(Node):
    def expected(self) -> str:
        return "any JSON value"


@dataclass(eq=False)
class ScalarNode(Node):
    kind: type

    def expected(self) -> str:
        return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[self.kind]


@dataclass(eq=False)
class NoneNode(Node):
    def expected(self) -> str:
        return "null"


@dataclass(eq=False)
class LiteralNode(Node):
    values: tuple[Any, ...]

    def expected(self) -> str:
        return " or ".join(repr(value) for value in self.values)


@dataclass(eq=False)
class ListNode(Node):
    item: Node

    def expected(self) -> str:
        return "a list"


@dataclass(eq=False)
class MapNode(Node):
    value: Node

    def expected(self) -> str:
        return "an object"


@dataclass(eq=False)
class ObjectNode(Node):
    name: str
    fields: dict[str, tuple[bool, Node]] = field(default_factory=dict)  # key -> (required, node)
    open: bool = False  # the SDK allows keys it does not declare (JSON schemas)

    def expected(self) -> str:
        return "an object"

    def tag(self, key: str) -> tuple[tuple[Any, ...], bool] | None:
        """The literal values of field ``key`` and whether it may be left out, when it discriminates."""
        entry = self.fields.get(key)
        if entry is None:
            return None
        required, node = entry
        members = node.members if isinstance(node, UnionNode) else (node,)
        literals = [m for m in members if isinstance(m, LiteralNode)]
        if not literals or not all(isinstance(m, (LiteralNode, NoneNode)) for m in members):
            return None
        optional = not required or any(isinstance(m, NoneNode) for m in members)
        return tuple(v for m in literals for v in m.values), optional


@dataclass(eq=False)
class UnionNode(Node):
    members: tuple[Node, ...]

    def expected(self) -> str:
        return " or ".join(dict.fromkeys(member.expected() for member in self.members))


@dataclass(frozen=True)
class Issue:
    """One problem at one place of a request's params, phrased as what to change."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


# --------------------------------------------------------------------------------------------------
# Compiling the view
# --------------------------------------------------------------------------------------------------


class _Compiler:
    def __init__(self) -> None:
        self._objects: dict[type, ObjectNode] = {}

    def node(self, annotation: Any) -> Node | None:
        """The strict node for ``annotation``, or ``None`` for what JSON cannot carry."""
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin in _WRAPPERS or origin is typing.Annotated:
            return self.node(args[0])
        if typing_extensions.is_typeddict(annotation):
            return self._object(annotation)
        if origin is Union or isinstance(annotation, types.UnionType):
            members = [node for node in (self.node(arg) for arg in args) if node is not None]
            return _union(members)
        if origin is typing.Literal or origin is typing_extensions.Literal:
            return LiteralNode(tuple(args))
        if origin in _SEQUENCE_ORIGINS or _is_sequence_not_str(annotation):
            item = self.node(args[0]) if args else AnyNode()
            return ListNode(item or AnyNode())
        if origin in _MAPPING_ORIGINS:
            value = self.node(args[1]) if len(args) == 2 else AnyNode()
            return MapNode(value or AnyNode())
        if annotation is type(None):
            return NoneNode()
        if annotation in (str, int, float, bool):
            return ScalarNode(annotation)
        if annotation is object or annotation is Any:
            return AnyNode()
        return None  # file handles, paths, bytes, the SDK's pydantic response models: not JSON

    def _object(self, cls: type) -> ObjectNode:
        if cls in self._objects:
            return self._objects[cls]
        config = getattr(cls, "__pydantic_config__", None) or {}
        node = self._objects[cls] = ObjectNode(cls.__name__, open=config.get("extra") == "allow")
        hints = typing.get_type_hints(cls, include_extras=True)
        # With postponed annotations the SDK's Required[...] is invisible to __required_keys__, which
        # then only tells the totality of the class that declared each key.
        total_required = getattr(cls, "__required_keys__", frozenset())
        for key, annotation in hints.items():
            origin = typing.get_origin(annotation)
            required = origin is typing_extensions.Required or (
                key in total_required and origin is not typing_extensions.NotRequired
            )
            child = self.node(annotation)
            if child is not None:
                node.fields[key] = (required, child)
        return node


def _is_sequence_not_str(annotation: Any) -> bool:
    return getattr(annotation, "__name__", None) == "SequenceNotStr" or (
        getattr(typing.get_origin(annotation), "__name__", None) == "SequenceNotStr"
    )


def _union(members: list[Node]) -> Node | None:
    if not members:
        return None
    flat: list[Node] = []
    for member in members:
        flat.extend(member.members if isinstance(member, UnionNode) else (member,))
    return flat[0] if len(flat) == 1 else UnionNode(tuple(flat))


@cache
def message_params_view(*, allow_stream: bool) -> ObjectNode:
    """The strict view of one request's params: the batch form, or the Messages API form."""
    from anthropic.types.message_create_params import MessageCreateParamsNonStreaming

    root = _Compiler().node(MessageCreateParamsNonStreaming)
    assert isinstance(root, ObjectNode)
    view = ObjectNode(root.name, dict(root.fields), root.open)
    for key, kind in UNDECLARED_PARAMS.items():
        view.fields.setdefault(key, (False, ScalarNode(kind)))
    # The batch form's ``stream`` is Literal[False]; rules.py explains a True. The Messages API streams.
    view.fields["stream"] = (False, ScalarNode(bool))
    return view


def sdk_version() -> str:
    import anthropic

    return anthropic.__version__


# --------------------------------------------------------------------------------------------------
# Validating against the view
# --------------------------------------------------------------------------------------------------


def validate(node: Node, value: Any, path: str = "") -> list[Issue]:
    """Every place where ``value`` does not fit ``node``."""
    issues: list[Issue] = []
    _check(node, value, path, issues)
    return issues


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, collections.abc.Mapping):
        return "an object"
    return f"a Python {type(value).__name__} (not JSON)"


def _fits(node: Node, value: Any) -> bool:
    """Whether ``value`` is of the JSON kind ``node`` describes (not whether it is valid)."""
    if isinstance(node, AnyNode):
        return True
    if isinstance(node, NoneNode):
        return value is None
    if isinstance(node, LiteralNode):
        return any(type(value) is type(v) and value == v for v in node.values)
    if isinstance(node, ScalarNode):
        if node.kind is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if node.kind is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, node.kind)
    if isinstance(node, ListNode):
        return isinstance(value, (list, tuple))
    if isinstance(node, (MapNode, ObjectNode)):
        return isinstance(value, collections.abc.Mapping)
    if isinstance(node, UnionNode):
        return any(_fits(member, value) for member in node.members)
    return False


def _check(node: Node, value: Any, path: str, issues: list[Issue]) -> None:
    if isinstance(node, AnyNode):
        return
    if isinstance(node, UnionNode):
        _check_union(node, value, path, issues)
        return
    if isinstance(node, LiteralNode) and isinstance(value, str) and not _fits(node, value):
        hint = did_you_mean(value, node.values)
        issues.append(Issue(path, f"{value!r} is not {_choices(list(node.values))}{hint}"))
        return
    if not _fits(node, value):
        if isinstance(value, float) and not math.isfinite(value):
            return  # NaN/Infinity: the serialiser reports that JSON cannot carry it
        issues.append(Issue(path, f"expected {node.expected()}, got {_json_kind(value)} {_short(value)}"))
        return
    if isinstance(node, ListNode):
        for index, item in enumerate(value):
            _check(node.item, item, f"{path}[{index}]", issues)
    elif isinstance(node, MapNode):
        for key, item in value.items():
            _check(node.value, item, _join(path, key), issues)
    elif isinstance(node, ObjectNode):
        _check_object(node, value, path, issues)


def _check_object(node: ObjectNode, value: collections.abc.Mapping[str, Any], path: str, issues: list[Issue]) -> None:
    suggested: set[str] = set()
    for key, item in value.items():
        entry = node.fields.get(key)
        if entry is None:
            if not node.open:
                match = closest(key, node.fields) if isinstance(key, str) else None
                if match is not None and match not in value:
                    suggested.add(match)
                issues.append(Issue(_join(path, key), _unknown_key(key, match, node, path)))
            continue
        if item is None and not _fits(entry[1], None) and not entry[0]:
            issues.append(Issue(_join(path, key), "is null; leave the key out instead"))
            continue
        _check(entry[1], item, _join(path, key), issues)
    for key, (required, _) in node.fields.items():
        if required and key not in value and key not in suggested:
            issues.append(Issue(_join(path, key), f"is required in {_describe(node)}"))


def _check_union(node: UnionNode, value: Any, path: str, issues: list[Issue]) -> None:
    candidates = [member for member in node.members if _fits(member, value)]
    if not candidates:
        literals = [v for m in node.members if isinstance(m, LiteralNode) for v in m.values]
        if isinstance(value, str) and literals:
            issues.append(Issue(path, f"{value!r} is not {_choices(literals)}{did_you_mean(value, literals)}"))
        else:
            issues.append(Issue(path, f"expected {node.expected()}, got {_json_kind(value)} {_short(value)}"))
        return
    objects = [member for member in candidates if isinstance(member, ObjectNode)]
    if len(objects) > 1:
        chosen = _discriminate(objects, value, path, issues)
        if chosen is None:
            return
        candidates = [chosen, *(m for m in candidates if isinstance(m, MapNode))]
    attempts = [validate(member, value, path) for member in candidates]
    if any(not attempt for attempt in attempts):
        return
    issues.extend(min(attempts, key=len))


def _discriminate(objects: list[ObjectNode], value: Any, path: str, issues: list[Issue]) -> ObjectNode | None:
    """The member of a union of objects that ``value`` names by its ``type`` (or ``role``).

    A member whose discriminator is optional (a custom tool's ``type``) is the one meant when the
    key is absent.
    """
    for key in _DISCRIMINATORS:
        tags = [member.tag(key) for member in objects]
        if any(t is None for t in tags):
            continue
        by_tag = {tag: m for m, t in zip(objects, tags, strict=True) for tag in t[0]}  # type: ignore[index]
        defaults = [m for m, t in zip(objects, tags, strict=True) if t[1]]  # type: ignore[index]
        given = value.get(key)
        if given is None and len(defaults) == 1:
            return defaults[0]
        if given in by_tag:
            return by_tag[given]
        if given is None:
            issues.append(Issue(_join(path, key), f"is required: {_choices(list(by_tag))}"))
        else:
            hint = did_you_mean(given, by_tag) if isinstance(given, str) else ""
            issues.append(
                Issue(_join(path, key), f"{given!r} is not a known {key}{hint or '; ' + _choices(list(by_tag))}")
            )
        return None
    return None


def _choices(values: list[Any], shown: int = 8) -> str:
    listed = ", ".join(map(repr, values[:shown]))
    return f"one of {listed}" + (f" (and {len(values) - shown} more)" if len(values) > shown else "")


def _unknown_key(key: Any, match: str | None, node: ObjectNode, path: str) -> str:
    hint = f"; did you mean {match!r}?" if match is not None else ""
    if not path:
        return "unknown parameter" + (
            hint
            or f" (the Messages API of anthropic {sdk_version()} has no such parameter; if it is newer than "
            "that SDK, upgrade anthropic)"
        )
    return f"unknown key in {_describe(node)}" + (hint or f"; it takes {_listing(list(node.fields))}")


def _describe(node: ObjectNode) -> str:
    name = node.name.removesuffix("Param").removesuffix("Params")
    words = "".join(f" {c.lower()}" if c.isupper() else c for c in name).strip()
    return f"a {words}"


def _listing(keys: list[str]) -> str:
    return ", ".join(repr(key) for key in keys) or "no keys"


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


__all__ = [
    "UNDECLARED_PARAMS",
    "Issue",
    "Node",
    "ObjectNode",
    "message_params_view",
    "sdk_version",
    "validate",
]
