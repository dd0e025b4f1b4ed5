"""The validation system (mutator.validation.system): templates, constraints, inventory and one review."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import pytest

from mutator.match import PolicyError
from mutator.validation.constraints import AUDIT_POINT, GATOR_POINT, WEBHOOK_POINT
from mutator.validation.inventory import Inventory
from mutator.validation.review import review_from_object
from mutator.validation.system import ReviewResult, ValidationSystem
from mutator.validation.templates import Template, template_from_resource

# --- fixtures: templates, constraints, objects --------------------------------------------------------------------


def make_template(
    kind: str,
    rego: str,
    *,
    schema: dict[str, Any] | None = None,
    libs: list[str] | None = None,
    v1: bool = False,
) -> Template:
    target: dict[str, Any] = {"target": "admission.k8s.gatekeeper.sh"}
    if v1:
        target["code"] = [
            {"engine": "Rego", "source": {"rego": rego, "version": "v1", **({"libs": libs} if libs else {})}}
        ]
    else:
        target["rego"] = rego
        if libs:
            target["libs"] = libs
    crd_spec: dict[str, Any] = {"names": {"kind": kind}}
    if schema is not None:
        crd_spec["validation"] = {"openAPIV3Schema": schema}
    return template_from_resource(
        {
            "apiVersion": "templates.gatekeeper.sh/v1",
            "kind": "ConstraintTemplate",
            "metadata": {"name": kind.lower()},
            "spec": {"crd": {"spec": crd_spec}, "targets": [target]},
        }
    )


def make_constraint(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


OWNER_REGO = """package k8sneedsowner

violation[{"msg": msg, "details": {"missing": label}}] {
  label := object.get(input.parameters, "label", "owner")
  not input.review.object.metadata.labels[label]
  msg := sprintf("%v %v has no %v label", [input.review.kind.kind, input.review.object.metadata.name, label])
}
"""

OWNER = make_template("K8sNeedsOwner", OWNER_REGO)


def pod(name: str, namespace: str = "prod", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"containers": [{"name": "app", "image": "corp.example/app:1"}]},
    }


def config_map(name: str, namespace: str = "prod", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
    }


def texts(result: ReviewResult) -> list[str]:
    return sorted(v.text for v in result.violations)


def review(system: ValidationSystem, obj: dict[str, Any], **kwargs: Any) -> ReviewResult:
    return system.review(review_from_object(obj), **kwargs)


def system_with(*templates: Template, constraints: Sequence[dict[str, Any]] = ()) -> ValidationSystem:
    system = ValidationSystem()
    for template in templates:
        assert system.add_template(template) == []
    for constraint in constraints:
        system.add_constraint(constraint)
    return system


# --- match --------------------------------------------------------------------------------------------------------


def test_match_by_namespace_and_kind() -> None:
    system = system_with(
        OWNER,
        constraints=[
            make_constraint(
                "K8sNeedsOwner",
                "prod-pods",
                match={"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}], "namespaces": ["prod", "stage-*"]},
            )
        ],
    )
    assert texts(review(system, pod("web"))) == ["[prod-pods] Pod web has no owner label"]
    assert texts(review(system, pod("web", "stage-eu"))) == ["[prod-pods] Pod web has no owner label"]
    assert review(system, pod("web", "dev")).violations == []
    assert review(system, config_map("cfg")).violations == []
    assert review(system, pod("web", labels={"owner": "me"})).violations == []


def test_match_by_label_selector() -> None:
    system = system_with(
        OWNER,
        constraints=[
            make_constraint(
                "K8sNeedsOwner",
                "enforced-only",
                match={
                    "labelSelector": {
                        "matchLabels": {"policy": "enforced"},
                        "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["scratch"]}],
                    }
                },
            )
        ],
    )
    assert texts(review(system, pod("a", labels={"policy": "enforced"}))) == [
        "[enforced-only] Pod a has no owner label"
    ]
    assert review(system, pod("b", labels={"policy": "enforced", "tier": "scratch"})).violations == []
    assert review(system, pod("c", labels={"policy": "relaxed"})).violations == []
    assert review(system, pod("d")).violations == []


def test_match_by_namespace_selector_uses_the_namespace_object() -> None:
    system = system_with(
        OWNER,
        constraints=[
            make_constraint(
                "K8sNeedsOwner", "strict-ns", match={"namespaceSelector": {"matchLabels": {"strict": "true"}}}
            )
        ],
    )
    strict = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod", "labels": {"strict": "true"}}}
    relaxed = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}}
    assert texts(review(system, pod("a"), namespace_object=strict)) == ["[strict-ns] Pod a has no owner label"]
    assert review(system, pod("a"), namespace_object=relaxed).violations == []


def test_a_match_error_is_reported_and_other_constraints_still_run() -> None:
    system = system_with(
        OWNER,
        constraints=[
            make_constraint(
                "K8sNeedsOwner",
                "broken-selector",
                match={"labelSelector": {"matchExpressions": [{"key": "a", "operator": "Near", "values": ["b"]}]}},
            ),
            make_constraint("K8sNeedsOwner", "fine"),
        ],
    )
    result = review(system, pod("web"))
    assert texts(result) == ["[fine] Pod web has no owner label"]
    assert len(result.errors) == 1
    assert result.errors[0].startswith("[broken-selector] ")


def test_parameters_are_per_constraint() -> None:
    system = system_with(
        OWNER,
        constraints=[
            make_constraint("K8sNeedsOwner", "owner"),
            make_constraint("K8sNeedsOwner", "cost-center", parameters={"label": "cost-center"}),
        ],
    )
    result = review(system, pod("web", labels={"owner": "me"}))
    assert texts(result) == ["[cost-center] Pod web has no cost-center label"]
    assert result.violations[0].details == {"missing": "cost-center"}
    assert result.violations[0].message == "Pod web has no cost-center label"
    assert result.violations[0].constraint.name == "cost-center"


def test_no_constraints_no_violations() -> None:
    system = system_with(OWNER)
    assert review(system, pod("web")).violations == []
    assert review(system, pod("web")).errors == []


# --- enforcement actions ----------------------------------------------------------------------------------------


def test_violations_are_tagged_with_their_action() -> None:
    system = system_with(
        OWNER,
        constraints=[
            make_constraint("K8sNeedsOwner", "a-deny"),
            make_constraint("K8sNeedsOwner", "b-warn", enforcementAction="warn", parameters={"label": "team"}),
            make_constraint("K8sNeedsOwner", "c-dryrun", enforcementAction="dryrun", parameters={"label": "tier"}),
        ],
    )
    result = review(system, pod("web"))
    assert {v.constraint.name: v.actions for v in result.violations} == {
        "a-deny": ("deny",),
        "b-warn": ("warn",),
        "c-dryrun": ("dryrun",),
    }
    assert [v.text for v in result.with_action("deny")] == ["[a-deny] Pod web has no owner label"]
    assert [v.text for v in result.with_action("warn")] == ["[b-warn] Pod web has no team label"]
    assert [v.text for v in result.with_action("dryrun")] == ["[c-dryrun] Pod web has no tier label"]


def test_scoped_actions_follow_the_enforcement_point() -> None:
    system = system_with(
        OWNER,
        constraints=[
            make_constraint(
                "K8sNeedsOwner",
                "scoped",
                enforcementAction="scoped",
                scopedEnforcementActions=[
                    {"action": "warn", "enforcementPoints": [{"name": "validation.gatekeeper.sh"}]},
                    {"action": "deny", "enforcementPoints": [{"name": "gator.gatekeeper.sh"}]},
                ],
            )
        ],
    )
    assert [v.actions for v in review(system, pod("web")).violations] == [("warn",)]
    assert [v.actions for v in review(system, pod("web"), point=WEBHOOK_POINT).violations] == [("warn",)]
    assert [v.actions for v in review(system, pod("web"), point=GATOR_POINT).violations] == [("deny",)]
    assert review(system, pod("web"), point=AUDIT_POINT).violations == []  # no action at audit: not evaluated


# --- template and constraint life cycle ---------------------------------------------------------------------------


def test_constraint_added_before_its_template_becomes_active_when_it_arrives() -> None:
    system = ValidationSystem()
    resource = make_constraint("K8sNeedsOwner", "early")
    with contextlib.suppress(PolicyError):  # it may be reported as waiting; it must not be forgotten
        system.add_constraint(resource)
    assert review(system, pod("web")).violations == []
    assert system.add_template(OWNER) == []
    assert texts(review(system, pod("web"))) == ["[early] Pod web has no owner label"]
    assert [c.name for c in system.constraints()] == ["early"]


def test_remove_template_deactivates_its_constraints_until_it_comes_back() -> None:
    other = make_template(
        "K8sNoLatest",
        'package k8snolatest\nviolation[{"msg": "latest"}] {\n'
        '  endswith(input.review.object.spec.containers[_].image, ":latest")\n}\n',
    )
    system = system_with(
        OWNER,
        other,
        constraints=[make_constraint("K8sNeedsOwner", "owner"), make_constraint("K8sNoLatest", "no-latest")],
    )
    latest = pod("web")
    latest["spec"]["containers"][0]["image"] = "x:latest"
    assert texts(review(system, latest)) == ["[no-latest] latest", "[owner] Pod web has no owner label"]

    system.remove_template("K8sNeedsOwner")
    assert "K8sNeedsOwner" not in system.templates
    assert texts(review(system, latest)) == ["[no-latest] latest"]
    assert [c.name for c in system.constraints()] == ["no-latest"]

    system.add_template(OWNER)
    assert texts(review(system, latest)) == ["[no-latest] latest", "[owner] Pod web has no owner label"]


def test_remove_constraint() -> None:
    system = system_with(
        OWNER, constraints=[make_constraint("K8sNeedsOwner", "a"), make_constraint("K8sNeedsOwner", "b")]
    )
    assert texts(review(system, pod("web"))) == ["[a] Pod web has no owner label", "[b] Pod web has no owner label"]
    system.remove_constraint("K8sNeedsOwner", "a")
    assert texts(review(system, pod("web"))) == ["[b] Pod web has no owner label"]


def test_constraint_of_an_unknown_kind_is_not_active() -> None:
    system = system_with(OWNER)
    with contextlib.suppress(PolicyError):
        system.add_constraint(make_constraint("K8sNoSuchKind", "ghost"))
    assert review(system, pod("web")).violations == []
    assert system.constraints() == []


REPLICAS_V1 = """package k8smaxreplicas

violation[{"msg": msg}] {
  input.review.object.spec.replicas > to_number(input.parameters.max)
  msg := sprintf("%v replicas, max %v", [input.review.object.spec.replicas, input.parameters.max])
}
"""

REPLICAS_V2 = """package k8smaxreplicas

violation[{"msg": msg}] {
  input.review.object.spec.replicas > input.parameters.max
  msg := sprintf("v2: too many replicas (%v > %v)", [input.review.object.spec.replicas, input.parameters.max])
}
"""


def deployment(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "prod"},
        "spec": {"replicas": replicas},
    }


def test_replacing_a_template_revalidates_its_constraints() -> None:
    int_or_string = {"type": "object", "properties": {"max": {"x-kubernetes-int-or-string": True}}}
    integer = {"type": "object", "properties": {"max": {"type": "integer"}}}
    system = system_with(
        make_template("K8sMaxReplicas", REPLICAS_V1, schema=int_or_string),
        constraints=[
            make_constraint("K8sMaxReplicas", "as-number", parameters={"max": 3}),
            make_constraint("K8sMaxReplicas", "as-string", parameters={"max": "4"}),
        ],
    )
    assert texts(review(system, deployment(5))) == ["[as-number] 5 replicas, max 3", "[as-string] 5 replicas, max 4"]

    rejected = system.add_template(make_template("K8sMaxReplicas", REPLICAS_V2, schema=integer))
    assert [(r["metadata"]["name"], str(err).split(":")[0]) for r, err in rejected] == [
        ("as-string", "spec.parameters.max")
    ]
    assert isinstance(rejected[0][1], PolicyError)
    # the new Rego runs, for the constraint that is still valid only
    assert texts(review(system, deployment(5))) == ["[as-number] v2: too many replicas (5 > 3)"]
    assert [c.name for c in system.constraints()] == ["as-number"]


# --- DELETE -------------------------------------------------------------------------------------------------------

PROTECTED_REGO = """package k8sprotected

violation[{"msg": msg}] {
  input.review.operation == "DELETE"
  msg := sprintf("%v is protected", [input.review.oldObject.metadata.name])
}
"""


def test_delete_matches_and_evaluates_on_the_old_object() -> None:
    system = system_with(
        make_template("K8sProtected", PROTECTED_REGO),
        constraints=[
            make_constraint(
                "K8sProtected",
                "keep-protected",
                match={
                    "kinds": [{"apiGroups": [""], "kinds": ["ConfigMap"]}],
                    "namespaces": ["prod"],
                    "labelSelector": {"matchLabels": {"protected": "yes"}},
                },
            )
        ],
    )
    old = config_map("settings", labels={"protected": "yes"})
    request = {
        "uid": "0f7c1b9e-2c55-4c5e-9d0e-1b3b8f1d0c11",
        "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "name": "settings",
        "namespace": "prod",
        "operation": "DELETE",
        "userInfo": {"username": "alice"},
        "object": None,
        "oldObject": old,
    }
    assert texts(system.review(request)) == ["[keep-protected] settings is protected"]
    # the old object decides the match: another namespace, or no label, and nothing happens
    elsewhere = {**request, "namespace": "dev", "oldObject": config_map("settings", "dev", {"protected": "yes"})}
    assert system.review(elsewhere).violations == []
    unlabelled = {**request, "oldObject": config_map("settings")}
    assert system.review(unlabelled).violations == []
    # a CREATE of the same object is not a violation of this template
    assert system.review(review_from_object(old)).violations == []


# --- evaluation errors ------------------------------------------------------------------------------------------

NUMERIC_REGO = """package k8snumericlimit

violation[{"msg": "over the limit"}] {
  input.review.object.spec.replicas > to_number(input.parameters.limit)
}
"""


def test_evaluation_error_is_reported_and_does_not_stop_other_constraints() -> None:
    system = system_with(
        make_template("K8sNumericLimit", NUMERIC_REGO),
        OWNER,
        constraints=[
            make_constraint("K8sNumericLimit", "bad-limit", parameters={"limit": "lots"}),
            make_constraint("K8sNeedsOwner", "owner"),
        ],
    )
    result = review(system, deployment(5))
    assert texts(result) == ["[owner] Deployment api has no owner label"]
    assert len(result.errors) == 1
    assert result.errors[0].startswith("[bad-limit] ")
    assert "Stack backtrace" not in result.errors[0]

    # the system keeps working after the error
    system.remove_constraint("K8sNumericLimit", "bad-limit")
    system.add_constraint(make_constraint("K8sNumericLimit", "good-limit", parameters={"limit": "2"}))
    result = review(system, deployment(5))
    assert result.errors == []
    assert texts(result) == ["[good-limit] over the limit", "[owner] Deployment api has no owner label"]


# --- Rego features through the system (v0 and v1 side by side, libs, shims) --------------------------------------

MULTI_REGO = """package k8sworkloadimage

import data.lib.images

containers(obj) = c {
  obj.kind == "Pod"
  c := obj.spec.containers
} {
  obj.kind == "Deployment"
  c := obj.spec.template.spec.containers
}

violation[{"msg": msg}] {
  img := containers(input.review.object)[_].image
  images.untagged(img)
  msg := sprintf("image %v has no tag", [img])
}
"""

IMAGES_LIB = """package lib.images

untagged(img) {
  not re_match(":[^/]+$", img)
}
"""

V1_REGO = """package k8snoprivileged

violation contains {"msg": msg} if {
  some c in input.review.object.spec.containers
  c.securityContext.privileged
  msg := sprintf("container %v is privileged", [c.name])
}
"""


def test_v0_template_with_a_lib_a_multi_body_rule_and_a_deprecated_builtin() -> None:
    system = system_with(
        make_template("K8sWorkloadImage", MULTI_REGO, libs=[IMAGES_LIB]),
        constraints=[make_constraint("K8sWorkloadImage", "tagged")],
    )
    bad_pod = pod("web")
    bad_pod["spec"]["containers"] = [
        {"name": "app", "image": "corp.example:5000/app"},
        {"name": "sidecar", "image": "corp.example/proxy:2"},
    ]
    result = review(system, bad_pod)
    assert result.errors == []
    assert texts(result) == ["[tagged] image corp.example:5000/app has no tag"]
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "prod"},
        "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "busybox"}]}}},
    }
    assert texts(review(system, deploy)) == ["[tagged] image busybox has no tag"]


def test_v1_template_next_to_a_v0_template() -> None:
    system = system_with(
        make_template("K8sWorkloadImage", MULTI_REGO, libs=[IMAGES_LIB]),
        make_template("K8sNoPrivileged", V1_REGO, v1=True),
        constraints=[make_constraint("K8sWorkloadImage", "tagged"), make_constraint("K8sNoPrivileged", "unprivileged")],
    )
    bad_pod = pod("web")
    bad_pod["spec"]["containers"] = [
        {"name": "app", "image": "corp.example:5000/app", "securityContext": {"privileged": True}},
        {"name": "sidecar", "image": "corp.example/proxy:2"},
    ]
    result = review(system, bad_pod)
    assert result.errors == []
    assert texts(result) == [
        "[tagged] image corp.example:5000/app has no tag",
        "[unprivileged] container app is privileged",
    ]
    assert review(system, pod("fine")).violations == []


# --- inventory ------------------------------------------------------------------------------------------------------

UNIQUE_HOST_REGO = """package k8suniqueingresshost

violation[{"msg": msg}] {
  host := input.review.object.spec.rules[_].host
  other := data.inventory.namespace[ns][apiversion]["Ingress"][name]
  startswith(apiversion, "networking.k8s.io/")
  other.spec.rules[_].host == host
  not self(ns, name)
  msg := sprintf("host %v is already used by ingress %v/%v", [host, ns, name])
}

violation[{"msg": msg}] {
  ns := input.review.object.metadata.namespace
  data.inventory.cluster["v1"]["Namespace"][ns].metadata.labels.frozen == "true"
  msg := sprintf("namespace %v is frozen", [ns])
}

self(ns, name) {
  ns == input.review.object.metadata.namespace
  name == input.review.object.metadata.name
}
"""


def ingress(name: str, namespace: str, host: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"rules": [{"host": host}]},
    }


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def test_inventory_changes_are_seen_without_recompiling() -> None:
    system = system_with(
        make_template("K8sUniqueIngressHost", UNIQUE_HOST_REGO),
        constraints=[make_constraint("K8sUniqueIngressHost", "unique-host")],
    )
    template = system.templates["K8sUniqueIngressHost"]
    assert template.uses_inventory
    program = template.program
    new = ingress("shop", "web", "shop.example.com")

    assert review(system, new).violations == []
    bundles = system.prepare()

    system.inventory.add(ingress("legacy-shop", "old", "shop.example.com"))
    assert texts(review(system, new)) == [
        "[unique-host] host shop.example.com is already used by ingress old/legacy-shop"
    ]

    system.inventory.add(new)  # the object itself (an UPDATE) is not a duplicate of itself
    system.inventory.remove(ingress("legacy-shop", "old", "shop.example.com"))
    assert review(system, new).violations == []

    system.inventory.add(namespace("web", {"frozen": "true"}))
    assert texts(review(system, new)) == ["[unique-host] namespace web is frozen"]

    # a whole new Inventory object is picked up as well
    system.inventory = Inventory([ingress("other", "blog", "shop.example.com")])
    assert texts(review(system, new)) == ["[unique-host] host shop.example.com is already used by ingress blog/other"]

    assert system.templates["K8sUniqueIngressHost"] is template
    assert system.templates["K8sUniqueIngressHost"].program is program
    assert system.prepare() is bundles  # nor was the shared engine rebuilt


def test_inventory_data_layout() -> None:
    inventory = Inventory([namespace("web"), ingress("a", "web", "h"), config_map("c", "web")])
    assert len(inventory) == 3
    assert set(inventory.cluster) == {"v1"}
    assert set(inventory.cluster["v1"]["Namespace"]) == {"web"}
    assert set(inventory.namespace["web"]) == {"networking.k8s.io/v1", "v1"}
    assert set(inventory.namespace["web"]["v1"]["ConfigMap"]) == {"c"}
    before = inventory.version
    inventory.remove(config_map("c", "web"))
    assert inventory.version != before
    assert "v1" not in inventory.namespace["web"]
    unchanged = inventory.version
    inventory.remove(config_map("never-added", "web"))
    assert inventory.version == unchanged
    assert Inventory().version != Inventory().version
    with pytest.raises(ValueError):
        inventory.add({"kind": "ConfigMap", "metadata": {}})
