"""Every case of the shared mutation conformance file, through the webhook's own code path.

Parse cases go through the location parser, validation cases through the mutator constructor, and mutate
cases through ``mutate_review`` (what POST /v1/mutate runs) with the returned JSON patch applied.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import pytest
import yaml

from mutator.match import PolicyError
from mutator.mutation import MutationSystem, mutator_from_resource
from mutator.mutation.core import deep_copy, json_equal
from mutator.mutation.path import Glob, List, LocationError, Object, parse
from mutator.webhook.admission import mutate_review, review_for

from .conftest import mutation_cases_path


def _load_cases() -> list[Any]:
    path = mutation_cases_path()
    if not path.exists():
        return [pytest.param(None, id="missing", marks=pytest.mark.skip(reason=f"{path} is absent"))]
    data = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
    return [pytest.param(case, id=case["id"]) for case in data["cases"]]


CASES = _load_cases()


def test_case_count() -> None:
    if CASES and CASES[0].values[0] is None:
        pytest.skip("conformance cases are absent")
    assert len(CASES) == 254


def _nodes(path: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for node in path.nodes:
        if isinstance(node, Object):
            out.append({"object": node.reference})
        else:
            assert isinstance(node, List)
            if node.key_value is Glob:
                out.append({"list": {"keyField": node.key_field, "glob": True}})
            else:
                out.append({"list": {"keyField": node.key_field, "keyValue": node.key_value}})
    return out


def _typed_equal(a: Any, b: Any) -> bool:
    """Node lists compare with types: the int 123 is not the string "123"."""
    return json_equal(a, b)


def run_parse(case: dict[str, Any]) -> None:
    expect = case["expect"]
    if "error" in expect:
        with pytest.raises(LocationError) as info:
            parse(case["location"])
        assert info.value.kind == expect["error"]
        return
    path = parse(case["location"])
    assert _typed_equal(_nodes(path), expect["nodes"]), _nodes(path)
    assert str(path) == expect["string"]
    assert parse(str(path)) == path


def run_validation(case: dict[str, Any]) -> None:
    expect = case["expect"]
    if expect.get("valid"):
        mutator_from_resource(case["mutator"])
        return
    with pytest.raises(PolicyError) as info:
        mutator_from_resource(case["mutator"])
    assert expect["error_contains"] in str(info.value)


def run_mutate(case: dict[str, Any]) -> None:
    expect = case["expect"]
    system = MutationSystem()
    upsert_errors = []
    for resource in case["mutators"]:
        if system.upsert(mutator_from_resource(resource)):
            upsert_errors.append(resource["metadata"]["name"])
    assert upsert_errors == expect.get("upsert_errors", [])

    namespace_object = case.get("namespace_object")

    def lookup(name: str) -> dict[str, Any] | None:
        if namespace_object == "none":
            return None
        if namespace_object is not None:
            return namespace_object
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}

    obj = case["object"]
    review = review_for(deep_copy(obj))
    source = (case.get("request") or {}).get("source", "Original")
    outcome = mutate_review(review, system, lookup, source=source)

    if "error_contains" in expect:
        assert outcome.response["allowed"] is False
        assert expect["error_contains"] in outcome.error
        assert expect["error_contains"] in outcome.response["status"]["message"]
        return
    assert outcome.error == ""
    assert outcome.response["allowed"] is True
    result = jsonpatch.apply_patch(deep_copy(obj), outcome.patch) if outcome.patch else deep_copy(obj)
    assert json_equal(result, expect["object"]), yaml.safe_dump(result)
    assert bool(outcome.patch) == expect["mutated"]
    if "passes" in expect:
        assert outcome.passes == expect["passes"]


RUNNERS = {"parse": run_parse, "mutator_validation": run_validation, "mutate": run_mutate}


@pytest.mark.parametrize("case", CASES)
def test_mutation_conformance(case: dict[str, Any]) -> None:
    RUNNERS[case["kind"]](case)
