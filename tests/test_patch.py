"""Our RFC 6902 diff: applying it (with jsonpatch) to the original gives exactly the mutated object."""

from __future__ import annotations

from typing import Any

import jsonpatch
import pytest

from mutator.mutation.patch import make_patch

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "api", "labels": {"app": "api", "example.com/tier": "web"}, "annotations": {"a~b": "1"}},
    "spec": {
        "containers": [
            {"name": "app", "image": "api:1", "args": ["--port", "80", "--verbose"]},
            {"name": "proxy", "image": "envoy:1", "ports": [{"containerPort": 9901}]},
        ],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    },
}


def _with(change: Any) -> dict[str, Any]:
    obj = jsonpatch.apply_patch(POD, [])  # a deep copy
    change(obj)
    return obj


CHANGES = {
    "label with a slash": lambda o: o["metadata"]["labels"].__setitem__("team/owner", "payments"),
    "annotation with a tilde changed": lambda o: o["metadata"]["annotations"].__setitem__("a~b", "2"),
    "field removed": lambda o: o["metadata"]["labels"].pop("app"),
    "nested object created": lambda o: o["spec"]["containers"][0].__setitem__(
        "securityContext", {"capabilities": {"drop": ["ALL"]}}
    ),
    "element appended": lambda o: o["spec"]["containers"].append({"name": "log", "image": "fluent:2"}),
    "middle element pruned": lambda o: o["spec"]["containers"][0]["args"].remove("80"),
    "last element pruned": lambda o: o["spec"]["containers"][0]["args"].pop(),
    "keyed element replaced whole": lambda o: o["spec"]["containers"].__setitem__(1, {"name": "proxy", "image": "x"}),
    "type changed": lambda o: o["spec"].__setitem__("volumes", {"tmp": {}}),
    "bool is not an int": lambda o: o["spec"]["containers"][1]["ports"][0].__setitem__("containerPort", True),
    "many at once": lambda o: (
        o["metadata"].__setitem__("namespace", "shop"),
        o["spec"]["containers"][1].__setitem__("imagePullPolicy", "Always"),
        o["spec"]["volumes"].append({"name": "cache", "emptyDir": {"medium": "Memory"}}),
    ),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_patch_applies_to_exactly_the_mutated_object(name: str) -> None:
    mutated = _with(CHANGES[name])
    patch = make_patch(POD, mutated)
    assert patch, "a change must give a non-empty patch"
    result = jsonpatch.apply_patch(POD, patch)
    assert result == mutated
    assert [type(x) for x in _leaves(result)] == [type(x) for x in _leaves(mutated)]


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for k in sorted(value) for leaf in _leaves(value[k])]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def test_equal_objects_give_an_empty_patch() -> None:
    assert make_patch(POD, _with(lambda o: None)) == []
    assert make_patch({"a": 3000}, {"a": 3000.0}) == []


def test_untouched_fields_never_appear_in_the_patch() -> None:
    patch = make_patch(POD, _with(CHANGES["label with a slash"]))
    assert patch == [{"op": "add", "path": "/metadata/labels/team~1owner", "value": "payments"}]
