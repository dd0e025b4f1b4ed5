"""Constraints (mutator.validation.constraints): parameters against the template's schema, enforcement actions."""

from __future__ import annotations

from typing import Any

import pytest

from mutator.match import PolicyError
from mutator.validation.constraints import (
    AUDIT_POINT,
    GATOR_POINT,
    WEBHOOK_POINT,
    Constraint,
    constraint_from_resource,
)
from mutator.validation.templates import Template, template_from_resource

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "repos": {"type": "array", "items": {"type": "string"}},
        "maxReplicas": {"type": "integer"},
        "limits": {
            "type": "object",
            "properties": {
                "cpu": {"x-kubernetes-int-or-string": True},
                "memory": {"type": "string", "nullable": True},
            },
        },
        "exemptions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"image": {"type": "string"}, "until": {"type": "integer"}},
            },
        },
        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "mode": {"type": "string", "enum": ["strict", "lenient"]},
    },
}

REGO = """package k8slimitedrepos

violation[{"msg": msg}] {
  image := input.review.object.spec.containers[_].image
  not startswith(image, input.parameters.repos[_])
  msg := sprintf("image %v is from an unknown repo", [image])
}
"""


def make_template(schema: Any = SCHEMA) -> Template:
    crd_spec: dict[str, Any] = {"names": {"kind": "K8sLimitedRepos"}}
    if schema is not None:
        crd_spec["validation"] = {"openAPIV3Schema": schema}
    return template_from_resource(
        {
            "apiVersion": "templates.gatekeeper.sh/v1",
            "kind": "ConstraintTemplate",
            "metadata": {"name": "k8slimitedrepos"},
            "spec": {
                "crd": {"spec": crd_spec},
                "targets": [{"target": "admission.k8s.gatekeeper.sh", "rego": REGO}],
            },
        }
    )


TEMPLATE = make_template()


def make_constraint(name: str = "repos", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": "K8sLimitedRepos",
        "metadata": {"name": name},
        "spec": spec,
    }


def load(parameters: Any = None, template: Template = TEMPLATE, **spec: Any) -> Constraint:
    if parameters is not None:
        spec["parameters"] = parameters
    return constraint_from_resource(make_constraint(**spec), template)


def rejected(parameters: Any, template: Template = TEMPLATE, **spec: Any) -> str:
    with pytest.raises(PolicyError) as info:
        load(parameters, template, **spec)
    return str(info.value)


# --- parameters ---------------------------------------------------------------------------------------------------


def test_valid_parameters_are_kept() -> None:
    params = {
        "repos": ["corp.example/", "mirror.example/"],
        "maxReplicas": 5,
        "limits": {"cpu": "500m", "memory": "1Gi"},
        "exemptions": [{"image": "corp.example/debug", "until": 20300101}],
        "extra": {"anything": [1, {"nested": True}]},
        "mode": "strict",
    }
    constraint = load(params)
    assert constraint.parameters == params
    assert (constraint.kind, constraint.name) == ("K8sLimitedRepos", "repos")
    assert constraint.key == ("K8sLimitedRepos", "repos")


def test_no_parameters_at_all() -> None:
    assert load().parameters is None


def test_wrong_type_names_the_parameter() -> None:
    message = rejected({"maxReplicas": "five"})
    assert message.startswith("spec.parameters.maxReplicas: ")
    assert "integer" in message


def test_wrong_type_in_an_array_names_the_index() -> None:
    message = rejected({"repos": ["corp.example/", 42]})
    assert message.startswith("spec.parameters.repos[1]: ")


def test_wrong_type_in_an_array_of_objects_names_index_and_field() -> None:
    message = rejected({"exemptions": [{"image": "a", "until": 1}, {"image": "b", "until": "soon"}]})
    assert message.startswith("spec.parameters.exemptions[1].until: ")


def test_wrong_type_of_a_nested_object_field() -> None:
    assert rejected({"limits": {"memory": 512}}).startswith("spec.parameters.limits.memory: ")


def test_parameters_that_are_not_an_object() -> None:
    assert rejected(["corp.example/"]).startswith("spec.parameters: ")


def test_enum_is_enforced() -> None:
    assert rejected({"mode": "sloppy"}).startswith("spec.parameters.mode: ")


def test_float_is_not_an_integer() -> None:
    assert rejected({"maxReplicas": 2.5}).startswith("spec.parameters.maxReplicas: ")


@pytest.mark.parametrize("cpu", [2, "500m", "2"])
def test_int_or_string_accepts_both(cpu: Any) -> None:
    assert load({"limits": {"cpu": cpu}}).parameters == {"limits": {"cpu": cpu}}


@pytest.mark.parametrize("cpu", [[1], {"m": 500}, True, 1.5])
def test_int_or_string_rejects_other_types(cpu: Any) -> None:
    assert rejected({"limits": {"cpu": cpu}}).startswith("spec.parameters.limits.cpu: ")


def test_nullable_accepts_null_and_its_type() -> None:
    load({"limits": {"memory": None}})
    load({"limits": {"memory": "2Gi"}})


def test_null_is_refused_where_not_nullable() -> None:
    assert rejected({"maxReplicas": None}).startswith("spec.parameters.maxReplicas: ")
    assert rejected({"limits": {"cpu": None}}).startswith("spec.parameters.limits.cpu: ")


def test_preserve_unknown_fields_accepts_anything_inside() -> None:
    load({"extra": {"a": {"b": ["c", 1, None]}, "d": 2}})


def test_unknown_parameters_are_not_errors() -> None:
    # Kubernetes prunes unknown fields of a structural schema; it does not reject them.
    load({"repos": ["corp.example/"], "notInSchema": 1})


def test_template_without_schema_accepts_any_parameters() -> None:
    template = make_template(schema=None)
    assert load({"whatever": [1, "two"]}, template).parameters == {"whatever": [1, "two"]}


# --- enforcementAction ----------------------------------------------------------------------------------------------

POINTS = (WEBHOOK_POINT, AUDIT_POINT, GATOR_POINT)


def test_enforcement_point_names() -> None:
    assert POINTS == ("validation.gatekeeper.sh", "audit.gatekeeper.sh", "gator.gatekeeper.sh")


def test_default_action_is_deny_everywhere() -> None:
    constraint = load()
    assert constraint.enforcement_action == "deny"
    assert [constraint.actions_for(p) for p in POINTS] == [["deny"], ["deny"], ["deny"]]


@pytest.mark.parametrize("action", ["deny", "dryrun", "warn"])
def test_plain_actions_apply_at_every_point(action: str) -> None:
    constraint = load(enforcementAction=action)
    assert constraint.enforcement_action == action
    assert all(constraint.actions_for(p) == [action] for p in POINTS)


@pytest.mark.parametrize("action", ["Deny", "block", "audit", 3])
def test_unknown_action_is_rejected(action: Any) -> None:
    assert rejected(None, enforcementAction=action).startswith("spec.enforcementAction: ")


def test_scoped_actions_per_enforcement_point() -> None:
    constraint = load(
        enforcementAction="scoped",
        scopedEnforcementActions=[
            {"action": "deny", "enforcementPoints": [{"name": "validation.gatekeeper.sh"}]},
            {"action": "warn", "enforcementPoints": [{"name": "audit.gatekeeper.sh"}, {"name": "gator.gatekeeper.sh"}]},
            {"action": "dryrun", "enforcementPoints": [{"name": "audit.gatekeeper.sh"}]},
        ],
    )
    assert constraint.enforcement_action == "scoped"
    assert constraint.actions_for(WEBHOOK_POINT) == ["deny"]
    assert constraint.actions_for(AUDIT_POINT) == ["warn", "dryrun"]
    assert constraint.actions_for(GATOR_POINT) == ["warn"]
    assert constraint.actions_for("some.other.point") == []


def test_scoped_wildcard_point_is_every_point() -> None:
    constraint = load(
        enforcementAction="scoped",
        scopedEnforcementActions=[
            {"action": "warn", "enforcementPoints": [{"name": "*"}]},
            {"action": "deny", "enforcementPoints": [{"name": "validation.gatekeeper.sh"}]},
            {"action": "warn", "enforcementPoints": [{"name": "validation.gatekeeper.sh"}]},
        ],
    )
    assert constraint.actions_for(WEBHOOK_POINT) == ["warn", "deny"]  # each action once
    assert constraint.actions_for(AUDIT_POINT) == ["warn"]
    assert constraint.actions_for(GATOR_POINT) == ["warn"]


def test_scoped_point_not_listed_takes_no_action() -> None:
    constraint = load(
        enforcementAction="scoped",
        scopedEnforcementActions=[{"action": "deny", "enforcementPoints": [{"name": "audit.gatekeeper.sh"}]}],
    )
    assert constraint.actions_for(WEBHOOK_POINT) == []
    assert constraint.actions_for(AUDIT_POINT) == ["deny"]


def test_scoped_without_its_list_is_rejected() -> None:
    assert rejected(None, enforcementAction="scoped").startswith("spec.scopedEnforcementActions")
    assert rejected(None, enforcementAction="scoped", scopedEnforcementActions=[]).startswith(
        "spec.scopedEnforcementActions"
    )


def test_scoped_entry_with_a_bad_action_names_the_entry() -> None:
    message = rejected(
        None,
        enforcementAction="scoped",
        scopedEnforcementActions=[
            {"action": "warn", "enforcementPoints": [{"name": "*"}]},
            {"action": "scoped", "enforcementPoints": [{"name": "*"}]},
        ],
    )
    assert message.startswith("spec.scopedEnforcementActions[1].action")


def test_scoped_list_is_ignored_unless_the_action_is_scoped() -> None:
    constraint = load(
        enforcementAction="warn",
        scopedEnforcementActions=[{"action": "deny", "enforcementPoints": [{"name": "*"}]}],
    )
    assert all(constraint.actions_for(p) == ["warn"] for p in POINTS)


# --- the rest of the resource ---------------------------------------------------------------------------------------


def test_unknown_kind_is_rejected() -> None:
    resource = make_constraint()
    resource["kind"] = "K8sNoSuchKind"
    with pytest.raises(PolicyError, match="K8sNoSuchKind") as info:
        constraint_from_resource(resource, None)
    assert str(info.value).startswith("kind: ")


def test_wrong_api_version_is_rejected() -> None:
    resource = make_constraint()
    resource["apiVersion"] = "constraints.gatekeeper.sh/v2"
    with pytest.raises(PolicyError, match="apiVersion"):
        constraint_from_resource(resource, TEMPLATE)


@pytest.mark.parametrize("api_version", ["v1beta1", "v1", "v1alpha1"])
def test_supported_api_versions(api_version: str) -> None:
    resource = make_constraint()
    resource["apiVersion"] = f"constraints.gatekeeper.sh/{api_version}"
    assert constraint_from_resource(resource, TEMPLATE).name == "repos"


def test_name_is_required() -> None:
    resource = make_constraint()
    resource["metadata"] = {}
    with pytest.raises(PolicyError, match=r"metadata\.name"):
        constraint_from_resource(resource, TEMPLATE)


def test_bad_match_names_the_field() -> None:
    bad_selector = {"labelSelector": "team=a"}
    with pytest.raises(PolicyError, match=r"spec\.match\.labelSelector"):
        load(match=bad_selector)
    with pytest.raises(PolicyError, match=r"spec\.match\.kinds"):
        load(match={"kinds": "Pod"})


def test_constraint_takes_the_kind_of_its_template() -> None:
    constraint = load(match={"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}], "namespaces": ["prod"]})
    assert constraint.kind == "K8sLimitedRepos"
    assert list(constraint.match.namespaces or []) == ["prod"]
