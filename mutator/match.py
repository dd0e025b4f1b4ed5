"""Match criteria shared by mutators and constraints (Gatekeeper's ``spec.match``).

Every given criterion must hold: ``kinds``, ``scope``, ``namespaces``, ``excludedNamespaces``,
``labelSelector``, ``namespaceSelector``, ``name`` and ``source``.  The criteria are compiled once, when
the policy is loaded; :meth:`Match.matches` is the request-time check.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

__all__ = [
    "ApplyTo",
    "Match",
    "MatchError",
    "Matchable",
    "ObjectFacts",
    "PolicyError",
    "gvk_of",
    "wildcard_matches",
]

SOURCE_ALL = "All"
SOURCE_ORIGINAL = "Original"
SOURCE_GENERATED = "Generated"


class PolicyError(ValueError):
    """A policy resource that cannot be loaded; the message names the field and the reason."""


class MatchError(RuntimeError):
    """Matching could not be decided (bad selector at run time, missing Namespace, missing source)."""


@dataclass(slots=True)
class Matchable:
    """What the match criteria look at: the object, its Namespace object (if known) and its source."""

    object: Mapping[str, Any]
    namespace: Mapping[str, Any] | None = None
    source: str = SOURCE_ORIGINAL


class ObjectFacts:
    """Everything the match criteria and applyTo read from an object, computed once.

    :meth:`compare` tells whether a decision made on these facts still holds for the object as it is now:
    its identity (apiVersion, kind, namespace, name, generateName) and its labels (kept as a copy)."""

    __slots__ = (
        "api_version",
        "generate_name",
        "group",
        "is_namespace",
        "kind",
        "labels",
        "name",
        "namespace",
        "version",
    )

    def __init__(self, obj: Mapping[str, Any]) -> None:
        api_version = obj.get("apiVersion") or ""
        if not isinstance(api_version, str):
            api_version = ""
        self.api_version = api_version
        group, _, self.version = api_version.rpartition("/")
        self.group = group
        kind = obj.get("kind") or ""
        if not isinstance(kind, str):
            kind = ""
        self.kind = kind
        self.is_namespace = kind == "Namespace" and group == ""
        meta = obj.get("metadata")
        if isinstance(meta, Mapping):
            value = meta.get("namespace")
            self.namespace = value if isinstance(value, str) else ""
            value = meta.get("name")
            self.name = value if isinstance(value, str) else ""
            value = meta.get("generateName")
            self.generate_name = value if isinstance(value, str) else ""
            value = meta.get("labels")
            self.labels: Mapping[str, Any] = dict(value) if isinstance(value, Mapping) else {}
        else:
            self.namespace = self.name = self.generate_name = ""
            self.labels = {}

    def compare(self, obj: Mapping[str, Any]) -> int:
        """How ``obj`` differs from these facts now: 0 not at all, 1 only in its labels, 2 in its identity.
        Allocates nothing unless it must."""
        api_version = obj.get("apiVersion") or ""
        if not isinstance(api_version, str):
            api_version = ""
        kind = obj.get("kind") or ""
        if not isinstance(kind, str):
            kind = ""
        if kind != self.kind or api_version != self.api_version:
            return 2
        meta = obj.get("metadata")
        if isinstance(meta, Mapping):
            value = meta.get("namespace")
            if (value if isinstance(value, str) else "") != self.namespace:
                return 2
            value = meta.get("name")
            if (value if isinstance(value, str) else "") != self.name:
                return 2
            value = meta.get("generateName")
            if (value if isinstance(value, str) else "") != self.generate_name:
                return 2
            labels = meta.get("labels")
            if not isinstance(labels, Mapping):
                labels = {}
        else:
            if self.namespace or self.name or self.generate_name:
                return 2
            labels = {}
        return 0 if labels == self.labels else 1

    @property
    def gvk(self) -> tuple[str, str, str]:
        return self.group, self.version, self.kind


def gvk_of(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """(group, version, kind) of an object from its apiVersion and kind."""
    api_version = obj.get("apiVersion") or ""
    if not isinstance(api_version, str):
        api_version = ""
    group, _, version = api_version.rpartition("/")
    kind = obj.get("kind") or ""
    return group, version, kind if isinstance(kind, str) else ""


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _str_field(meta: Mapping[str, Any], key: str) -> str:
    value = meta.get(key)
    return value if isinstance(value, str) else ""


def _labels(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if obj is None:
        return {}
    labels = _meta(obj).get("labels")
    return labels if isinstance(labels, Mapping) else {}


def is_namespace(obj: Mapping[str, Any]) -> bool:
    group, _, kind = gvk_of(obj)
    return group == "" and kind == "Namespace"


# --------------------------------------------------------------------------- wildcards


@lru_cache(maxsize=4096)
def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")) + r"\Z", re.DOTALL)


def wildcard_matches(pattern: str, candidate: str) -> bool:
    """Gatekeeper's wildcard: ``*`` matches any run of characters (``kube-*``, ``*-system``, ``*sys*``)."""
    if "*" not in pattern:
        return pattern == candidate
    return _wildcard_regex(pattern).match(candidate) is not None


def _split_patterns(patterns: Sequence[str]) -> tuple[frozenset[str], tuple[re.Pattern[str], ...]]:
    """Wildcard patterns as (the exact ones, regexes for those with ``*``), for :func:`_any_matches`."""
    exact = frozenset(p for p in patterns if "*" not in p)
    return exact, tuple(_wildcard_regex(p) for p in patterns if "*" in p)


def _any_matches(split: tuple[frozenset[str], tuple[re.Pattern[str], ...]], candidate: str) -> bool:
    """Whether any of the split patterns matches: ``any(wildcard_matches(p, candidate) for p in patterns)``."""
    exact, wild = split
    if candidate in exact:
        return True
    return bool(wild) and any(regex.match(candidate) is not None for regex in wild)


# --------------------------------------------------------------------------- label selectors

_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_NAME_RULE = (
    "must be 63 characters or less, consist of alphanumeric characters, '-', '_' or '.', "
    "and start and end with an alphanumeric character"
)


def _key_error(key: str) -> str | None:
    """Kubernetes' qualified-name rule for label keys, or None when the key is valid."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f'key: Invalid value: "{key}": prefix part must be a lowercase RFC 1123 subdomain'
    if not name or len(name) > 63 or not _NAME.match(name):
        return f'key: Invalid value: "{key}": name part {_NAME_RULE}'
    return None


def _value_error(value: str) -> str | None:
    if value and (len(value) > 63 or not _NAME.match(value)):
        return f'values: Invalid value: "{value}": a valid label value {_NAME_RULE}'
    return None


Requirement = Callable[[Mapping[str, Any]], bool]


def _requirement(key: str, operator: str, values: Sequence[str]) -> Requirement:
    if operator == "In":
        allowed = frozenset(values)
        return lambda labels: key in labels and labels[key] in allowed
    if operator == "NotIn":
        denied = frozenset(values)
        return lambda labels: key not in labels or labels[key] not in denied
    if operator == "Exists":
        return lambda labels: key in labels
    return lambda labels: key not in labels


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A compiled ``metav1.LabelSelector``. ``error`` is set when the selector is invalid: like
    Gatekeeper, using it is a match error, not a load error."""

    requirements: tuple[Requirement, ...]
    error: str | None = None

    @classmethod
    def compile(cls, spec: Any, field: str) -> LabelSelector:
        if not isinstance(spec, Mapping):
            raise PolicyError(f"{field}: must be an object")
        reqs: list[Requirement] = []
        match_labels = spec.get("matchLabels") or {}
        if not isinstance(match_labels, Mapping):
            raise PolicyError(f"{field}.matchLabels: must be a map of strings")
        for key, value in match_labels.items():
            problem = _key_error(str(key)) or _value_error(str(value))
            if problem:
                return cls((), problem)
            reqs.append(_requirement(str(key), "In", [str(value)]))
        expressions = spec.get("matchExpressions") or []
        if not isinstance(expressions, list):
            raise PolicyError(f"{field}.matchExpressions: must be a list")
        for i, expr in enumerate(expressions):
            where = f"{field}.matchExpressions[{i}]"
            if not isinstance(expr, Mapping):
                raise PolicyError(f"{where}: must be an object")
            key = expr.get("key")
            operator = expr.get("operator")
            values = expr.get("values") or []
            if not isinstance(key, str) or not key:
                return cls((), f"{where}.key: Required value")
            if operator not in _OPERATORS:
                return cls((), f'"{operator}" is not a valid label selector operator')
            if not isinstance(values, list):
                return cls((), f"{where}.values: must be a list")
            if operator in ("In", "NotIn") and not values:
                return cls((), "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty")
            if operator in ("Exists", "DoesNotExist") and values:
                return cls(
                    (), "values: Invalid value: for 'exists', 'doesnotexist' operators, values set must be empty"
                )
            problem = _key_error(key) or next((e for v in values if (e := _value_error(str(v)))), None)
            if problem:
                return cls((), problem)
            reqs.append(_requirement(key, operator, [str(v) for v in values]))
        return cls(tuple(reqs))

    def matches(self, labels: Mapping[str, Any]) -> bool:
        if self.error is not None:
            raise MatchError(self.error)
        return all(req(labels) for req in self.requirements)


# --------------------------------------------------------------------------- kinds and applyTo


def _str_list(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{field}: must be a list of strings")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class KindSelector:
    api_groups: tuple[str, ...]
    kinds: tuple[str, ...]

    def matches(self, group: str, kind: str) -> bool:
        kind_ok = not self.kinds or "*" in self.kinds or kind in self.kinds
        return kind_ok and (not self.api_groups or "*" in self.api_groups or group in self.api_groups)


@dataclass(frozen=True, slots=True)
class ApplyTo:
    """One ``applyTo`` entry: exact group, version and kind lists (no wildcards)."""

    groups: tuple[str, ...]
    versions: tuple[str, ...]
    kinds: tuple[str, ...]

    @classmethod
    def parse_list(cls, value: Any, field: str = "spec.applyTo") -> tuple[ApplyTo, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise PolicyError(f"{field}: must be a list")
        out = []
        for i, entry in enumerate(value):
            if not isinstance(entry, Mapping):
                raise PolicyError(f"{field}[{i}]: must be an object")
            out.append(
                cls(
                    _str_list(entry.get("groups"), f"{field}[{i}].groups"),
                    _str_list(entry.get("versions"), f"{field}[{i}].versions"),
                    _str_list(entry.get("kinds"), f"{field}[{i}].kinds"),
                )
            )
        return tuple(out)

    def applies(self, group: str, version: str, kind: str) -> bool:
        return group in self.groups and version in self.versions and kind in self.kinds

    def gvks(self) -> list[tuple[str, str, str]]:
        return [(g, v, k) for g in self.groups for v in self.versions for k in self.kinds]


def applies_to(entries: Sequence[ApplyTo], obj: Mapping[str, Any]) -> bool:
    group, version, kind = gvk_of(obj)
    return any(entry.applies(group, version, kind) for entry in entries)


# --------------------------------------------------------------------------- match


@dataclass(frozen=True, slots=True)
class Match:
    kinds: tuple[KindSelector, ...] = ()
    scope: str = ""
    namespaces: tuple[str, ...] | None = None
    excluded_namespaces: tuple[str, ...] | None = None
    label_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    name: str = ""
    source: str = ""
    # namespaces / excludedNamespaces split for the request-time check: exact names, wildcard regexes
    _namespaces: tuple[frozenset[str], tuple[re.Pattern[str], ...]] = field(
        init=False, repr=False, compare=False, default=(frozenset(), ())
    )
    _excluded: tuple[frozenset[str], tuple[re.Pattern[str], ...]] = field(
        init=False, repr=False, compare=False, default=(frozenset(), ())
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_namespaces", _split_patterns(self.namespaces or ()))
        object.__setattr__(self, "_excluded", _split_patterns(self.excluded_namespaces or ()))

    @classmethod
    def from_spec(cls, spec: Any, field: str = "spec.match") -> Match:
        if spec is None:
            return cls()
        if not isinstance(spec, Mapping):
            raise PolicyError(f"{field}: must be an object")
        kinds_raw = spec.get("kinds") or []
        if not isinstance(kinds_raw, list):
            raise PolicyError(f"{field}.kinds: must be a list")
        kinds = []
        for i, entry in enumerate(kinds_raw):
            if not isinstance(entry, Mapping):
                raise PolicyError(f"{field}.kinds[{i}]: must be an object")
            kinds.append(
                KindSelector(
                    _str_list(entry.get("apiGroups"), f"{field}.kinds[{i}].apiGroups"),
                    _str_list(entry.get("kinds"), f"{field}.kinds[{i}].kinds"),
                )
            )
        scope = spec.get("scope") or ""
        name = spec.get("name") or ""
        source = spec.get("source") or ""
        for key, value in (("scope", scope), ("name", name), ("source", source)):
            if not isinstance(value, str):
                raise PolicyError(f"{field}.{key}: must be a string")
        if source and source not in (SOURCE_ALL, SOURCE_ORIGINAL, SOURCE_GENERATED):
            raise PolicyError(f"{field}.source: must be one of All, Original, Generated, got {source!r}")
        namespaces = spec.get("namespaces")
        excluded = spec.get("excludedNamespaces")
        label_sel = spec.get("labelSelector")
        ns_sel = spec.get("namespaceSelector")
        return cls(
            kinds=tuple(kinds),
            scope=scope,
            namespaces=None if namespaces is None else _str_list(namespaces, f"{field}.namespaces"),
            excluded_namespaces=None if excluded is None else _str_list(excluded, f"{field}.excludedNamespaces"),
            label_selector=None if label_sel is None else LabelSelector.compile(label_sel, f"{field}.labelSelector"),
            namespace_selector=None if ns_sel is None else LabelSelector.compile(ns_sel, f"{field}.namespaceSelector"),
            name=name,
            source=source,
        )

    def reads_labels(self) -> bool:
        """Whether a decision can depend on the object's own labels (the label selector, or the namespace
        selector when the object is a Namespace)."""
        return self.label_selector is not None or self.namespace_selector is not None

    def matches(self, target: Matchable) -> bool:
        return self.matches_facts(ObjectFacts(target.object), target.namespace, target.source)

    def only_kinds(self) -> bool:
        """Whether ``kinds`` is the only criterion :meth:`matches_facts` would check (it can then never raise,
        and decides by the object's group and kind alone)."""
        return (
            self.scope not in ("Cluster", "Namespaced")
            and not self.namespaces
            and not self.excluded_namespaces
            and self.label_selector is None
            and self.namespace_selector is None
            and not self.name
            and not (self.source and self.source != SOURCE_ALL)
        )

    # Each criterion in Gatekeeper's order; the first that fails decides, an error stops the match.
    def matches_facts(self, facts: ObjectFacts, namespace_obj: Mapping[str, Any] | None, source: str) -> bool:
        namespace = facts.namespace
        object_is_namespace = facts.is_namespace

        if self.kinds:
            group, kind = facts.group, facts.kind
            for selector in self.kinds:
                if selector.matches(group, kind):
                    break
            else:
                return False

        if self.scope == "Cluster":
            if not (object_is_namespace or namespace == ""):
                return False
        elif self.scope == "Namespaced" and (object_is_namespace or namespace == ""):
            return False

        if self.namespaces:
            if object_is_namespace:
                candidate = facts.name
            elif namespace:
                candidate = namespace
            else:
                candidate = None  # cluster-scoped objects pass namespace criteria
            if candidate is not None and not _any_matches(self._namespaces, candidate):
                return False

        if self.excluded_namespaces:
            if object_is_namespace:
                candidate = facts.name
            elif namespace:
                candidate = namespace
            else:
                candidate = None
            if candidate is not None and _any_matches(self._excluded, candidate):
                return False

        if self.label_selector is not None and not self.label_selector.matches(facts.labels):
            return False

        if self.namespace_selector is not None:
            if object_is_namespace:
                labels = facts.labels
            elif namespace == "":
                labels = None  # cluster-scoped: passes
            elif namespace_obj is None:
                raise MatchError("namespace selector for namespace-scoped object but missing Namespace")
            else:
                labels = _labels(namespace_obj)
            if labels is not None and not self.namespace_selector.matches(labels):
                return False

        if self.name:
            name = facts.name
            generate_name = facts.generate_name
            if name:
                if not wildcard_matches(self.name, name):
                    return False
            elif generate_name:
                if not (self.name.endswith("*") and wildcard_matches(self.name, generate_name)):
                    return False
            else:
                return False

        if self.source and self.source != SOURCE_ALL:
            if not source:
                raise MatchError(f"source field not specified for resource {facts.name}")
            if self.source != source:
                return False
        return True
