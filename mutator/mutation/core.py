"""The walk every mutator shares: follow a parsed location through an object and set the value at its end.

Missing object fields are created, a keyed selector descends every element whose key equals the value
(appending ``{key: value}`` when none exists), a glob descends every element and never creates one.
pathTests can veto a step.  The object is changed in place; the walk reports whether anything changed.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from .path import List, Object, Path
from .tester import Tester

JSON = Any


class MutationError(RuntimeError):
    """A mutator could not be applied to this object (type clash, bad value)."""


def json_equal(a: JSON, b: JSON) -> bool:
    """Deep equality as JSON sees it: ``true`` differs from ``1``, ``3000`` equals ``3000.0``."""
    if isinstance(a, dict):
        if not isinstance(b, dict) or len(a) != len(b):
            return False
        return all(key in b and json_equal(value, b[key]) for key, value in a.items())
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return False
        return all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return type(a) is type(b) and a == b
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return False
    return a == b


def _copy(value: JSON) -> JSON:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def deep_copy(value: JSON) -> JSON:
    """A copy of a JSON value: through orjson (C, ~5x faster than a Python walk), or by a walk when the value
    holds what JSON cannot (non-string keys, integers over 64 bits, NaN)."""
    if not isinstance(value, dict | list):
        return value
    try:
        return orjson.loads(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError):
        return _copy(value)


def go_repr(value: JSON) -> str:
    """Render a value the way Go's ``%v`` would, for error messages users compare with Gatekeeper's."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_repr(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_repr(v) for v in value) + "]"
    return str(value)


def type_name(value: JSON) -> str:
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, list):
        return "[]interface {}"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    return "string"


class Context(Protocol):
    """What a setter may read about the request (fromMetadata)."""

    object: dict[str, Any]


class Setter(Protocol):
    def set_value(self, parent: dict[str, Any], key: str, ctx: Context) -> bool:
        """Set ``parent[key]``; return whether the object changed."""
        ...

    def list_value(self, ctx: Context) -> JSON:
        """The whole element to put at a keyed-list terminal."""
        ...


class _Walk:
    __slots__ = ("changed", "ctx", "last", "nodes", "setter", "tester")

    def __init__(self, path: Path, tester: Tester, setter: Setter, ctx: Context) -> None:
        self.nodes = path.nodes
        self.last = len(path.nodes) - 1
        self.tester = tester
        self.setter = setter
        self.ctx = ctx
        self.changed = False

    def create(self, depth: int) -> JSON:
        """A fresh container for the node after ``depth``."""
        nxt = self.nodes[depth + 1]
        return [] if isinstance(nxt, List) else {}

    def walk(self, current: JSON, depth: int) -> tuple[bool, JSON]:
        """Returns (applied, new value of ``current``)."""
        node = self.nodes[depth]
        if isinstance(node, Object):
            if not isinstance(current, dict):
                raise MutationError(
                    f"mismatch between path entry (type: object) and received object "
                    f"(type: {type_name(current)}). Path: {node.reference}"
                )
            exists = node.reference in current
            if exists:
                if not self.tester.exists_ok(depth):
                    return False, current
            elif not self.tester.missing_ok(depth):
                return False, current
            if depth == self.last:
                if self.setter.set_value(current, node.reference, self.ctx):
                    self.changed = True
                return True, current
            nxt = current[node.reference] if exists else self.create(depth)
            applied, nxt = self.walk(nxt, depth + 1)
            if applied and not exists:
                current[node.reference] = nxt
                self.changed = True
            return applied, current

        if not isinstance(current, list):
            raise MutationError(
                f"mismatch between path entry (type: List) and received object "
                f"(type: {type_name(current)}). Path: {node}"
            )
        if depth == self.last:
            return self._set_list_element(current, node, depth)
        if node.glob and not self.tester.exists_ok(depth):
            return False, current
        applied = False
        found = False
        for element in current:
            if node.matches(element):
                if not self.tester.exists_ok(depth):
                    return False, current
                found = True
                sub_applied, _ = self.walk(element, depth + 1)
                applied = applied or sub_applied
        if not node.glob and not found:
            if not self.tester.missing_ok(depth):
                return False, current
            element = {node.key_field: node.key_value}
            sub_applied, element = self.walk(element, depth + 1)
            if sub_applied:
                current.append(element)
                self.changed = True
                applied = True
        return applied, current

    def _set_list_element(self, current: list[JSON], node: List, depth: int) -> tuple[bool, JSON]:
        value = self.setter.list_value(self.ctx)
        for i, element in enumerate(current):
            if node.matches(element):
                if not self.tester.exists_ok(depth):
                    return False, current
                if not json_equal(element, value):
                    current[i] = value
                    self.changed = True
                return True, current
        if not self.tester.missing_ok(depth):
            return False, current
        current.append(value)
        self.changed = True
        return True, current


def apply(path: Path, tester: Tester, setter: Setter, ctx: Context) -> bool:
    """Apply a setter at ``path`` in ``ctx.object`` (in place); return whether the object changed."""
    if not path.nodes:
        raise MutationError("attempting to mutate an empty target location")
    walk = _Walk(path, tester, setter, ctx)
    walk.walk(ctx.object, 0)
    return walk.changed
