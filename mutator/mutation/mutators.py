"""Gatekeeper's mutators, each built once from its resource and validated then:
``Assign``, ``AssignMetadata`` and ``ModifySet`` here, ``AssignImage`` in :mod:`.image`.

``mutator_from_resource`` is the one entry point: a resource dict in, a ready :class:`Mutator` out, or a
:class:`PolicyError` whose message names the field and the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..match import ApplyTo, Match, ObjectFacts, PolicyError
from . import core
from .core import JSON, MutationError, deep_copy, go_repr, json_equal
from .path import List, LocationError, Object, Path, parse
from .tester import PathTest, PathTestError, Tester, must_not_exist_at_leaf

GROUP = "mutations.gatekeeper.sh"
MAX_NAME_LENGTH = 63


@dataclass(frozen=True, slots=True, order=True)
class MutatorID:
    """Mutators run in the order of their IDs: (group, kind, namespace, name)."""

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}.{self.group} {self.namespace}/{self.name}"


@dataclass(slots=True)
class Mutable:
    """An object being mutated, with what the match criteria need."""

    object: dict[str, Any]
    namespace: Mapping[str, Any] | None = None
    username: str = ""
    source: str = "Original"


# Terminal types a mutator implies for the schema (see schema.py).
TERMINAL_ANY = "any"
TERMINAL_SET = "set"
TERMINAL_STRING = "string"


class Mutator:
    """Base: identity, match, applyTo, location and pathTests; subclasses supply the setter."""

    kind: ClassVar[str]
    label: ClassVar[str] = ""  # how Gatekeeper's messages name the kind, when not the kind itself
    requires_apply_to: ClassVar[bool] = True
    terminal_type: ClassVar[str] = TERMINAL_ANY

    def __init__(self, resource: Mapping[str, Any]) -> None:
        meta = resource.get("metadata")
        if not isinstance(meta, Mapping):
            raise PolicyError("metadata: required")
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise PolicyError("metadata.name: required")
        if len(name) > MAX_NAME_LENGTH:
            raise PolicyError(f"metadata.name: maximum name length is {MAX_NAME_LENGTH} characters")
        self.name = name
        namespace = meta.get("namespace") or ""
        self.id = MutatorID(GROUP, self.kind, namespace if isinstance(namespace, str) else "", name)
        spec = resource.get("spec")
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            raise PolicyError("spec: must be an object")
        self.spec = spec
        params = spec.get("parameters")
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise PolicyError("spec.parameters: must be an object")
        self.params = params
        self.resource = resource
        location = spec.get("location", "")
        if not isinstance(location, str):
            raise PolicyError("spec.location: must be a string")
        self.location = location
        self.path = self._parse_location(location)
        self.apply_to = ApplyTo.parse_list(spec.get("applyTo"))
        self.match = Match.from_spec(spec.get("match"))
        self.reads_labels = self.match.reads_labels()
        self._validate()
        self.tester = self._tester()
        self._plan = core.Plan(self.path, self.tester)

    # -- construction hooks

    def _parse_location(self, location: str) -> Path:
        try:
            return parse(location)
        except LocationError as err:
            raise PolicyError(
                f"spec.location: invalid location format `{location}` for {self.label or self.kind} {self.name}: {err}"
            ) from err

    def _validate(self) -> None:
        if self.requires_apply_to and not self.apply_to:
            raise PolicyError(f"spec.applyTo: applyTo required for {self.kind} mutator {self.name}")

    def _path_tests(self) -> list[PathTest]:
        raw = self.params.get("pathTests") or []
        if not isinstance(raw, list):
            raise PolicyError("spec.parameters.pathTests: must be a list")
        tests = []
        for i, entry in enumerate(raw):
            field = f"spec.parameters.pathTests[{i}]"
            if not isinstance(entry, Mapping):
                raise PolicyError(f"{field}: must be an object")
            sub = entry.get("subPath", "")
            if not isinstance(sub, str):
                raise PolicyError(f"{field}.subPath: must be a string")
            try:
                sub_path = parse(sub)
            except LocationError as err:
                raise PolicyError(f"{field}.subPath: invalid subPath `{sub}`: {err}") from err
            tests.append(PathTest(sub_path, entry.get("condition", "")))
        return tests

    def _tester(self) -> Tester:
        try:
            return Tester(self.path, self._path_tests())
        except PathTestError as err:
            raise PolicyError(f"spec.parameters.pathTests: {err}") from err

    def _check_no_metadata_root(self, label: str) -> None:
        nodes = self.path.nodes
        if nodes and isinstance(nodes[0], Object) and nodes[0].reference == "metadata":
            raise PolicyError(f"spec.location: {label} {self.name} can't change metadata")

    def _check_key_not_changed(self) -> None:
        nodes = self.path.nodes
        if len(nodes) < 2 or not isinstance(nodes[-2], List):
            return
        if isinstance(nodes[-1], List):
            raise PolicyError("spec.location: invalid path format: child of a list can't be a list")
        if nodes[-1].reference == nodes[-2].key_field:
            raise PolicyError("spec.location: invalid path format: changing the item key is not allowed")

    # -- request time

    def matches(self, mutable: Mutable) -> bool:
        return self.matches_facts(ObjectFacts(mutable.object), mutable.namespace, mutable.source)

    def matches_facts(self, facts: ObjectFacts, namespace: Mapping[str, Any] | None, source: str) -> bool:
        if self.requires_apply_to:
            group, version, kind = facts.group, facts.version, facts.kind
            if not any(entry.applies(group, version, kind) for entry in self.apply_to):
                return False
        return self.match.matches_facts(facts, namespace, source)

    def mutate(self, mutable: Mutable) -> bool:
        """Apply to ``mutable.object`` in place; return whether it changed."""
        return core.apply_plan(self._plan, self, mutable)

    # Setter protocol (overridden)
    def set_value(self, parent: dict[str, Any], key: str, ctx: Any) -> bool:  # pragma: no cover
        raise NotImplementedError

    def list_value(self, ctx: Any) -> JSON:
        raise MutationError(f"{self.kind} {self.name} cannot set a keyed list element")

    # -- schema

    def schema_gvks(self) -> list[tuple[str, str, str]]:
        return [gvk for entry in self.apply_to for gvk in entry.gvks()]


def _check_finite(value: JSON, field: str) -> None:
    """NaN and infinities are not JSON, and NaN never equals itself, so a mutation could never converge."""
    if isinstance(value, float) and not math.isfinite(value):
        raise PolicyError(f"{field}: {value} is not a JSON number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{field}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{field}[{i}]")


def _metadata_value(obj: Mapping[str, Any], field: str) -> str:
    meta = obj.get("metadata")
    value = meta.get(field) if isinstance(meta, Mapping) else None
    return value if isinstance(value, str) else ""


class _AssignValue:
    """``parameters.assign``: exactly one of value, fromMetadata, externalData."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        assign = params.get("assign")
        if assign is None:
            assign = {}
        if not isinstance(assign, Mapping):
            raise PolicyError("spec.parameters.assign: must be an object")
        given = [k for k in ("value", "fromMetadata", "externalData") if k in assign]
        if len(given) != 1:
            raise PolicyError(
                "spec.parameters.assign: assign must set one of `externalData`, `value` or `fromMetadata`: "
                "invalid assign field"
            )
        self.has_value = "value" in assign
        self.value: JSON = assign.get("value")
        _check_finite(self.value, "spec.parameters.assign.value")
        # What every application puts in the object: one more deep_copy of this is exactly a fresh
        # deep_copy of ``value`` (a copy is plain JSON, which copies to itself).
        self._copied = deep_copy(self.value)
        self.from_metadata: str | None = None
        if "externalData" in assign:
            raise PolicyError("spec.parameters.assign.externalData: external data providers are not supported yet")
        if "fromMetadata" in assign:
            fm = assign["fromMetadata"]
            field = fm.get("field") if isinstance(fm, Mapping) else None
            if field not in ("namespace", "name"):
                raise PolicyError(
                    f"spec.parameters.assign.fromMetadata.field: field {go_repr(field)} is not recognized: "
                    "invalid fromMetadata field"
                )
            self.from_metadata = field

    def list_value(self) -> JSON:
        """The element for a keyed-list terminal, not to be changed: the walk inserts a copy."""
        return self._copied

    def set(self, parent: dict[str, Any], key: str, obj: Mapping[str, Any]) -> bool:
        """``parent[key] = `` the value; whether that changed anything. The value is compared before it
        is copied, so an application that changes nothing copies nothing."""
        if self.from_metadata is not None:
            value = _metadata_value(obj, self.from_metadata)
        else:
            value = self._copied
            if key in parent and json_equal(parent[key], value):
                return False
            parent[key] = deep_copy(value)
            return True
        if key in parent and json_equal(parent[key], value):
            return False
        parent[key] = value
        return True


class Assign(Mutator):
    kind = "Assign"

    def _validate(self) -> None:
        self._check_no_metadata_root("assign")
        self._check_key_not_changed()
        self.assign = _AssignValue(self.params)
        nodes = self.path.nodes
        if nodes and isinstance(nodes[-1], List):
            last = nodes[-1]
            if self.assign.from_metadata is not None:
                raise PolicyError("spec.parameters.assign.fromMetadata: cannot assign a metadata field to a list")
            if last.glob:
                raise PolicyError("spec.location: a keyed-list terminal can't be a glob")
            value = self.assign.value
            if not isinstance(value, Mapping):
                raise PolicyError(
                    f"spec.parameters.assign.value: invalid value: `{go_repr(value)}`, "
                    "only objects can be added to keyed lists"
                )
            if last.key_field not in value or not json_equal(value[last.key_field], last.key_value):
                raise PolicyError(
                    f"spec.parameters.assign.value: adding object to list with different key "
                    f"{last.key_field}: list key {last.key_value}, object key "
                    f"{go_repr(value.get(last.key_field))}"
                )
        super()._validate()

    def set_value(self, parent: dict[str, Any], key: str, ctx: Any) -> bool:
        return self.assign.set(parent, key, ctx.object)

    def list_value(self, ctx: Any) -> JSON:
        return self.assign.list_value()


class AssignMetadata(Mutator):
    kind = "AssignMetadata"
    requires_apply_to = False

    def _validate(self) -> None:
        nodes = self.path.nodes
        valid = (
            len(nodes) == 3
            and all(isinstance(n, Object) for n in nodes)
            and nodes[0].reference == "metadata"
            and nodes[1].reference in ("labels", "annotations")
        )
        if not valid:
            raise PolicyError(f"spec.location: invalid location for assignmetadata {self.name}: {self.location}")
        self.assign = _AssignValue(self.params)
        if self.assign.from_metadata is None and not isinstance(self.assign.value, str):
            raise PolicyError(
                f"spec.parameters.assign.value: assignMetadata {self.name}'s value must be a string, "
                f"got {go_repr(self.assign.value)}"
            )

    def _tester(self) -> Tester:
        return must_not_exist_at_leaf(self.path)

    def set_value(self, parent: dict[str, Any], key: str, ctx: Any) -> bool:
        return self.assign.set(parent, key, ctx.object)

    def schema_gvks(self) -> list[tuple[str, str, str]]:
        return []


class ModifySet(Mutator):
    kind = "ModifySet"
    terminal_type = TERMINAL_SET

    def _validate(self) -> None:
        self._check_no_metadata_root("modifyset")
        nodes = self.path.nodes
        if nodes and isinstance(nodes[-1], List):
            raise PolicyError("spec.location: final node in a modifyset location cannot be a keyed list")
        operation = self.params.get("operation") or "merge"
        if operation not in ("merge", "prune"):
            raise PolicyError(f"spec.parameters.operation: must be merge or prune, got {operation!r}")
        self.operation = operation
        values = self.params.get("values")
        from_list: JSON = None
        if values is not None:
            if not isinstance(values, Mapping):
                raise PolicyError("spec.parameters.values: must be an object with fromList")
            from_list = values.get("fromList")
            if from_list is not None and not isinstance(from_list, list):
                raise PolicyError("spec.parameters.values.fromList: must be a list")
        self.values: list[JSON] = list(from_list or [])
        _check_finite(self.values, "spec.parameters.values.fromList")
        super()._validate()

    def set_value(self, parent: dict[str, Any], key: str, ctx: Any) -> bool:
        if self.operation == "merge":
            current = parent.get(key)
            changed = False
            if current is None:
                if key in parent and not self.values:
                    return False
                current = parent[key] = []  # then merged like an empty list: a value given twice is added once
                changed = True
            if not isinstance(current, list):
                raise MutationError(f"{go_repr(current)} is not a list of values, cannot treat it as a set")
            for value in self.values:
                if not any(json_equal(value, existing) for existing in current):
                    current.append(deep_copy(value))
                    changed = True
            return changed
        if key not in parent:
            return False
        current = parent[key]
        if current is None:
            return False
        if not isinstance(current, list):
            raise MutationError(f"{go_repr(current)} is not a list of values, cannot treat it as a set")
        kept = [e for e in current if not any(json_equal(e, v) for v in self.values)]
        if len(kept) == len(current):
            return False
        parent[key] = kept
        return True
