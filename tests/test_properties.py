"""Property tests: the location grammar round-trips, random policies and objects only raise declared
errors, mutation is idempotent, and our JSON patch applied with jsonpatch gives the mutated object."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import jsonpatch
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mutator.match import MatchError, PolicyError
from mutator.mutation import Mutable, MutationError, MutationSystem, mutator_from_resource
from mutator.mutation.core import deep_copy, json_equal
from mutator.mutation.patch import make_patch
from mutator.mutation.path import INT64_MAX, Glob, List, LocationError, Object, Path, parse

from .conftest import mutation_cases_path

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- locations

_TRICKY = st.sampled_from(
    ['"', "'", "\\", " ", "\t", ".", "[", "]", ":", "*", "é", "日本", "🙂", "0", "9", "-", "_", ""]
)
_NAME = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="ab01_-", min_size=1, max_size=6),
    st.lists(_TRICKY, max_size=5).map("".join),
)
_KEY_VALUE = st.one_of(_NAME, st.integers(min_value=0, max_value=INT64_MAX), st.just(Glob))


@st.composite
def paths(draw: st.DrawFn, max_segments: int = 5) -> Path:
    nodes: list[Object | List] = []
    for _ in range(draw(st.integers(min_value=0, max_value=max_segments))):
        nodes.append(Object(draw(_NAME)))
        if draw(st.booleans()):
            nodes.append(List(draw(_NAME), draw(_KEY_VALUE)))
    return Path(tuple(nodes))


@FAST
@given(paths())
def test_rendered_path_parses_back(path: Path) -> None:
    rendered = str(path)
    again = parse(rendered)
    assert again == path, rendered
    for a, b in zip(again.nodes, path.nodes, strict=True):
        if isinstance(a, List):
            assert isinstance(b, List)
            assert type(a.key_value) is type(b.key_value), rendered  # 1 stays an int, "1" a string
    assert str(again) == rendered


_GRAMMAR_TEXT = st.text(alphabet="abc01 .\"'\\[]:*-_é\n", max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), _GRAMMAR_TEXT, paths().map(str).map(lambda s: s[: len(s) // 2])))
def test_parse_random_text_raises_only_location_error(text: str) -> None:
    try:
        path = parse(text)
    except LocationError:
        return
    assert parse(str(path)) == path, text


# --------------------------------------------------------------------------- JSON values and objects

_KEYS = st.one_of(
    st.sampled_from(["spec", "containers", "name", "image", "metadata", "labels", "a", "b", "0", "~", "/", "a/b~c"]),
    st.text(max_size=6),
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
    st.sampled_from(["nginx", "nginx:1.27", "registry.example.com/web@sha256:" + "a" * 64, "a:b:c", ""]),
)
json_values = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(_KEYS, children, max_size=4),
        # keyed lists, as the locations expect them
        st.lists(st.fixed_dictionaries({"name": st.one_of(_NAME, st.integers(0, 3))}, optional={"image": children})),
    ),
    max_leaves=20,
)


@st.composite
def objects(draw: st.DrawFn) -> dict[str, Any]:
    obj: dict[str, Any] = draw(st.dictionaries(_KEYS, json_values, max_size=4))
    if draw(st.booleans()):
        obj["apiVersion"] = draw(st.sampled_from(["v1", "apps/v1", ""]))
        obj["kind"] = draw(st.sampled_from(["Pod", "Deployment", "Namespace"]))
        obj["metadata"] = draw(
            st.one_of(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["web", "x"])},
                    optional={
                        "namespace": st.sampled_from(["default", "prod", ""]),
                        "labels": st.dictionaries(st.sampled_from(["app", "team"]), st.text(max_size=4), max_size=2),
                    },
                ),
                json_values,
            )
        )
    return obj


# --------------------------------------------------------------------------- mutator resources

_APPLY_TO = [{"groups": ["", "apps"], "versions": ["v1"], "kinds": ["Pod", "Deployment", "Namespace"]}]
_LOCATIONS = st.one_of(
    paths(max_segments=4).map(str),
    st.sampled_from(
        [
            "spec.containers[name:*].image",
            "spec.containers[name: app].image",
            "spec.containers[name: 1].image",
            "spec.a.b",
            "spec.containers[name:*].imagePullPolicy",
            "metadata.labels.team",
            "metadata.annotations.x",
            "spec.containers",
            "spec.a[name: x]",
            "a.b.c",
        ]
    ),
    st.text(max_size=20),
)
_MATCH = st.one_of(
    st.none(),
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "namespaces": st.lists(st.sampled_from(["default", "prod*", "*"]), max_size=2),
            "excludedNamespaces": st.lists(st.sampled_from(["kube-system", "x*"]), max_size=2),
            "scope": st.sampled_from(["*", "Namespaced", "Cluster"]),
            "labelSelector": st.just({"matchLabels": {"app": "web"}}),
            "source": st.sampled_from(["All", "Original", "Generated"]),
        },
    ),
)
_PATH_TESTS = st.one_of(
    st.none(),
    st.lists(
        st.fixed_dictionaries(
            {
                "subPath": st.one_of(st.sampled_from(["spec", "spec.containers", "metadata"]), _LOCATIONS),
                "condition": st.sampled_from(["MustExist", "MustNotExist", "Bogus"]),
            }
        ),
        max_size=2,
    ),
)


def _resource(kind: str, version: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"mutations.gatekeeper.sh/{version}", "kind": kind, "metadata": {"name": name}, "spec": spec}


@st.composite
def mutator_resources(draw: st.DrawFn, valid_ish: bool = True) -> dict[str, Any]:
    kind = draw(st.sampled_from(["Assign", "ModifySet", "AssignImage", "AssignMetadata"]))
    version = "v1alpha1" if kind == "AssignImage" else draw(st.sampled_from(["v1", "v1beta1"]))
    name = draw(st.text(alphabet="abc-", min_size=1, max_size=6))
    spec: dict[str, Any] = {"location": draw(_LOCATIONS)}
    if kind != "AssignMetadata":
        spec["applyTo"] = _APPLY_TO
    match = draw(_MATCH)
    if match is not None:
        spec["match"] = match
    params: dict[str, Any] = {}
    if kind == "Assign":
        params["assign"] = draw(
            st.one_of(
                st.fixed_dictionaries({"value": json_values}),
                st.fixed_dictionaries(
                    {"fromMetadata": st.fixed_dictionaries({"field": st.sampled_from(["name", "namespace", "x"])})}
                ),
            )
        )
    elif kind == "AssignMetadata":
        params["assign"] = draw(st.one_of(st.fixed_dictionaries({"value": st.text(max_size=6)}), st.just({"value": 3})))
    elif kind == "ModifySet":
        params["operation"] = draw(st.sampled_from(["merge", "prune", "merge"]))
        params["values"] = {"fromList": draw(st.lists(json_values, max_size=3))}
    else:
        params["assignDomain"] = draw(st.sampled_from(["", "registry.example.com", "localhost:5000", "bad domain"]))
        params["assignPath"] = draw(st.sampled_from(["", "lib/web", "UPPER", "a//b"]))
        params["assignTag"] = draw(st.sampled_from(["", ":v1", "@sha256:" + "a" * 64, "bad"]))
    path_tests = draw(_PATH_TESTS)
    if path_tests is not None:
        params["pathTests"] = path_tests
    spec["parameters"] = params
    if not valid_ish:
        # scramble one field's type
        field = draw(st.sampled_from(["location", "applyTo", "match", "parameters", "spec", "metadata"]))
        junk = draw(st.one_of(_SCALARS, st.lists(_SCALARS, max_size=2), st.dictionaries(_KEYS, _SCALARS, max_size=2)))
        if field in ("spec", "metadata"):
            return {**_resource(kind, version, name, spec), field: junk}
        spec[field] = junk
    return _resource(kind, version, name, spec)


def _build(resources: list[dict[str, Any]]) -> MutationSystem:
    system = MutationSystem()
    for resource in resources:
        try:
            mutator = mutator_from_resource(resource)
        except PolicyError:
            continue
        system.upsert(mutator)
    return system


_NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "labels": {"a": "b"}}}


@SLOW
@given(st.lists(st.one_of(mutator_resources(), mutator_resources(valid_ish=False)), max_size=4))
def test_random_mutators_raise_only_policy_error(resources: list[dict[str, Any]]) -> None:
    for resource in resources:
        with contextlib.suppress(PolicyError):
            mutator_from_resource(resource)


@SLOW
@given(st.lists(mutator_resources(), min_size=1, max_size=4), objects(), st.sampled_from([None, _NAMESPACE]))
def test_random_mutation_raises_only_mutation_error_and_is_idempotent(
    resources: list[dict[str, Any]], obj: dict[str, Any], namespace: dict[str, Any] | None
) -> None:
    system = _build(resources)
    try:
        system.mutate(Mutable(obj, namespace=namespace))
    except MutationError as err:
        assert err.__cause__ is None or isinstance(err.__cause__, MutationError | MatchError), repr(err.__cause__)
        return
    again = deep_copy(obj)
    result = system.mutate(Mutable(again, namespace=namespace))
    assert result.changed is False, (resources, obj, again)
    assert json_equal(again, obj)


# --------------------------------------------------------------------------- conformance idempotence


def _mutate_cases() -> list[Any]:
    path = mutation_cases_path()
    if not path.exists():
        return [pytest.param(None, id="missing", marks=pytest.mark.skip(reason=f"{path} is absent"))]
    data = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
    cases = [c for c in data["cases"] if c["kind"] == "mutate" and "error_contains" not in c["expect"]]
    return [pytest.param(case, id=case["id"]) for case in cases]


@pytest.mark.parametrize("case", _mutate_cases())
def test_conformance_result_is_a_fixed_point(case: dict[str, Any]) -> None:
    system = MutationSystem()
    for resource in case["mutators"]:
        system.upsert(mutator_from_resource(resource))
    namespace_object = case.get("namespace_object")
    obj = deep_copy(case["expect"]["object"])
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    if namespace_object == "none":
        namespace = None
    elif namespace_object is not None:
        namespace = namespace_object
    else:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": meta.get("namespace") or ""}}
    source = (case.get("request") or {}).get("source", "Original")
    result = system.mutate(Mutable(obj, namespace=namespace, source=source))
    assert result.changed is False
    assert json_equal(obj, case["expect"]["object"])


# --------------------------------------------------------------------------- patches


@st.composite
def edited(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """A randomly edited copy of ``value``: fields set, removed and changed, list elements appended,
    replaced and removed, subtrees replaced (also by another type)."""
    if depth > 6 or draw(st.integers(0, 9)) == 0:
        return draw(json_values) if draw(st.booleans()) else copy.deepcopy(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, child in value.items():
            action = draw(st.sampled_from(["keep", "keep", "edit", "remove"]))
            if action == "keep":
                out[key] = copy.deepcopy(child)
            elif action == "edit":
                out[key] = draw(edited(child, depth + 1))
        for key, child in draw(st.dictionaries(_KEYS, json_values, max_size=2)).items():
            out.setdefault(key, child)
        return out
    if isinstance(value, list):
        items = [draw(edited(child, depth + 1)) if draw(st.booleans()) else copy.deepcopy(child) for child in value]
        if items and draw(st.booleans()):
            del items[draw(st.integers(0, len(items) - 1))]
        items.extend(draw(st.lists(json_values, max_size=2)))
        return items
    return draw(st.one_of(st.just(value), _SCALARS))


@st.composite
def object_pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    original = draw(objects())
    if draw(st.integers(0, 4)) == 0:
        return original, draw(objects())
    changed = draw(edited(original))
    if not isinstance(changed, dict):
        changed = {"replaced": changed}
    return original, changed


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(object_pairs())
def test_patch_applied_gives_the_mutated_object(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    original, mutated = pair
    before = copy.deepcopy(original)
    patch = make_patch(original, mutated)
    assert json_equal(original, before), "make_patch changed its input"
    result = jsonpatch.apply_patch(copy.deepcopy(original), patch)
    assert json_equal(result, mutated), (patch, result)
    assert (patch == []) == json_equal(original, mutated)


@FAST
@given(objects())
def test_patch_of_an_equal_copy_is_empty(obj: dict[str, Any]) -> None:
    assert make_patch(obj, copy.deepcopy(obj)) == []
    assert make_patch(obj, deep_copy(obj)) == []
