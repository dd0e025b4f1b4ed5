"""What the validation system shares between constraints to stay fast, and must not let show:

- constraints of one kind with equal parameters are evaluated once per request, and every matched one of
  them still gets its own violations, actions and order;
- a request only runs the match criteria of constraints whose ``kinds`` accept its object, a choice
  remembered per (group, kind) and forgotten when the policies change.
"""

from __future__ import annotations

from typing import Any

import pytest

from mutator.validation.constraints import AUDIT_POINT, WEBHOOK_POINT
from mutator.validation.rego import reads_parameters
from mutator.validation.review import review_from_object
from mutator.validation.system import ReviewResult, ValidationSystem
from tests.test_validation_system import OWNER, config_map, make_constraint, make_template, pod, system_with

PER_CONTAINER_REGO = """package k8sdigests

violation[{"msg": msg, "details": {"container": c.name}}] {
  c := input.review.object.spec.containers[_]
  not contains(c.image, "@")
  msg := sprintf("%v: image %v has no digest (%v)", [c.name, c.image, input.parameters.why])
}
"""

DIGESTS = make_template("K8sDigests", PER_CONTAINER_REGO)


def two_container_pod(name: str, namespace: str = "prod") -> dict[str, Any]:
    obj = pod(name, namespace)
    obj["spec"]["containers"] = [
        {"name": "b-sidecar", "image": "corp.example/sidecar:2"},
        {"name": "a-app", "image": "corp.example/app:1"},
    ]
    return obj


def run(system: ValidationSystem, obj: dict[str, Any], **kwargs: Any) -> ReviewResult:
    return system.review(review_from_object(obj), **kwargs)


def listing(result: ReviewResult) -> list[tuple[str, str, Any, tuple[str, ...]]]:
    """The violations in the order the system gives them, with everything a caller reads."""
    return [(v.constraint.name, v.message, v.details, v.actions) for v in result.violations]


def test_equal_parameters_give_each_constraint_its_own_violations_and_action() -> None:
    system = system_with(
        OWNER,
        constraints=[
            make_constraint("K8sNeedsOwner", "b-dup", enforcementAction="warn", parameters={"label": "team"}),
            make_constraint("K8sNeedsOwner", "c-other", enforcementAction="dryrun", parameters={"label": "tier"}),
            make_constraint("K8sNeedsOwner", "a-dup", parameters={"label": "team"}),
        ],
    )
    assert listing(run(system, pod("web"))) == [
        ("a-dup", "Pod web has no team label", {"missing": "team"}, ("deny",)),
        ("b-dup", "Pod web has no team label", {"missing": "team"}, ("warn",)),
        ("c-other", "Pod web has no tier label", {"missing": "tier"}, ("dryrun",)),
    ]
    assert [v.constraint.name for v in run(system, pod("web", labels={"team": "x"})).violations] == ["c-other"]


def test_parameters_equal_but_written_in_another_key_order_are_equal() -> None:
    schema = {"type": "object", "properties": {"why": {"type": "string"}, "level": {"type": "integer"}}}
    digests = make_template("K8sDigests", PER_CONTAINER_REGO, schema=schema)
    system = system_with(
        digests,
        constraints=[
            make_constraint("K8sDigests", "one", parameters={"why": "policy", "level": 1}),
            make_constraint("K8sDigests", "two", parameters={"level": 1, "why": "policy"}),
        ],
    )
    result = run(system, two_container_pod("web"))
    assert [(name, message) for name, message, _, _ in listing(result)] == [
        ("one", "a-app: image corp.example/app:1 has no digest (policy)"),
        ("one", "b-sidecar: image corp.example/sidecar:2 has no digest (policy)"),
        ("two", "a-app: image corp.example/app:1 has no digest (policy)"),
        ("two", "b-sidecar: image corp.example/sidecar:2 has no digest (policy)"),
    ]
    assert [v.details for v in result.violations] == [{"container": "a-app"}, {"container": "b-sidecar"}] * 2


def test_violations_are_ordered_by_constraint_name_then_message_across_groups() -> None:
    system = system_with(
        DIGESTS,
        constraints=[
            make_constraint("K8sDigests", "z-shared", parameters={"why": "same"}),
            make_constraint("K8sDigests", "m-alone", parameters={"why": "other"}),
            make_constraint("K8sDigests", "a-shared", parameters={"why": "same"}),
        ],
    )
    assert [(name, message[:5]) for name, message, _, _ in listing(run(system, two_container_pod("web")))] == [
        ("a-shared", "a-app"),
        ("a-shared", "b-sid"),
        ("m-alone", "a-app"),
        ("m-alone", "b-sid"),
        ("z-shared", "a-app"),
        ("z-shared", "b-sid"),
    ]


def test_only_the_matched_constraints_of_a_shared_group_report() -> None:
    system = system_with(
        OWNER,
        constraints=[
            make_constraint("K8sNeedsOwner", "in-prod", match={"namespaces": ["prod"]}),
            make_constraint("K8sNeedsOwner", "in-dev", match={"namespaces": ["dev"]}),
        ],
    )
    assert [v.constraint.name for v in run(system, pod("web", "prod")).violations] == ["in-prod"]
    assert [v.constraint.name for v in run(system, pod("web", "dev")).violations] == ["in-dev"]
    assert run(system, pod("web", "test")).violations == []


def test_removing_or_changing_one_of_equal_constraints_leaves_the_other_as_it_was() -> None:
    system = system_with(
        OWNER,
        constraints=[make_constraint("K8sNeedsOwner", "first"), make_constraint("K8sNeedsOwner", "second")],
    )
    assert [v.constraint.name for v in run(system, pod("web")).violations] == ["first", "second"]
    system.remove_constraint("K8sNeedsOwner", "first")
    assert [v.text for v in run(system, pod("web")).violations] == ["[second] Pod web has no owner label"]
    system.add_constraint(make_constraint("K8sNeedsOwner", "first", parameters={"label": "team"}))
    assert [v.text for v in run(system, pod("web")).violations] == [
        "[first] Pod web has no team label",
        "[second] Pod web has no owner label",
    ]


def test_an_evaluation_error_is_reported_for_every_constraint_of_the_group() -> None:
    numeric = make_template(
        "K8sNumericLimit",
        """package k8snumericlimit

violation[{"msg": "over the limit"}] {
  input.review.object.spec.replicas > to_number(input.parameters.limit)
}
""",
    )
    system = system_with(
        numeric,
        constraints=[
            make_constraint("K8sNumericLimit", "bad-1", parameters={"limit": "lots"}),
            make_constraint("K8sNumericLimit", "bad-2", parameters={"limit": "lots"}),
        ],
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "prod"},
        "spec": {"replicas": 5},
    }
    result = run(system, deployment)
    assert result.violations == []
    assert [e.split(" ", 1)[0] for e in result.errors] == ["[bad-1]", "[bad-2]"]
    assert all("evaluation failed" in e for e in result.errors)


def test_past_the_deadline_every_constraint_of_a_group_is_named() -> None:
    system = system_with(
        OWNER,
        constraints=[make_constraint("K8sNeedsOwner", "first"), make_constraint("K8sNeedsOwner", "second")],
    )
    result = run(system, pod("web"), deadline=0.0)
    assert result.violations == []
    assert result.errors == [
        "[first] not evaluated: the review passed the webhook's deadline",
        "[second] not evaluated: the review passed the webhook's deadline",
    ]


def test_progress_names_each_template_before_it_runs() -> None:
    system = system_with(
        OWNER,
        DIGESTS,
        constraints=[
            make_constraint("K8sNeedsOwner", "owner"),
            make_constraint("K8sDigests", "digests", parameters={"why": "x"}),
        ],
    )
    seen: list[str] = []
    result = run(system, pod("web"), progress=seen.append)
    assert sorted(seen) == ["K8sDigests", "K8sNeedsOwner"]
    assert sorted(v.constraint.name for v in result.violations) == ["digests", "owner"]


# --- the kinds index ------------------------------------------------------------------------------------------------


def test_only_constraints_whose_kinds_accept_the_object_are_matched() -> None:
    system = system_with(
        OWNER,
        constraints=[
            make_constraint("K8sNeedsOwner", "pods", match={"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]}),
            make_constraint("K8sNeedsOwner", "any-kind", match={"kinds": [{"apiGroups": ["*"], "kinds": ["*"]}]}),
            make_constraint("K8sNeedsOwner", "no-kinds", match={"namespaces": ["prod"]}),
            make_constraint("K8sNeedsOwner", "apps-only", match={"kinds": [{"apiGroups": ["apps"], "kinds": ["Pod"]}]}),
            make_constraint("K8sNeedsOwner", "maps", match={"kinds": [{"apiGroups": [""], "kinds": ["ConfigMap"]}]}),
            make_constraint("K8sNeedsOwner", "all-core", match={"kinds": [{"apiGroups": [""]}]}),
        ],
    )
    names = [v.constraint.name for v in run(system, pod("web")).violations]
    assert names == ["all-core", "any-kind", "no-kinds", "pods"]
    names = [v.constraint.name for v in run(system, config_map("settings")).violations]
    assert names == ["all-core", "any-kind", "maps", "no-kinds"]
    # asked again, from what it remembered: the same answers
    assert [v.constraint.name for v in run(system, pod("api")).violations] == names[:2] + ["no-kinds", "pods"]


def test_the_kinds_index_follows_policy_changes() -> None:
    system = system_with(
        OWNER,
        constraints=[
            make_constraint("K8sNeedsOwner", "pods", match={"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]})
        ],
    )
    assert run(system, config_map("settings")).violations == []
    assert [v.constraint.name for v in run(system, pod("web")).violations] == ["pods"]
    system.add_constraint(
        make_constraint("K8sNeedsOwner", "maps", match={"kinds": [{"apiGroups": [""], "kinds": ["ConfigMap"]}]})
    )
    assert [v.constraint.name for v in run(system, config_map("settings")).violations] == ["maps"]
    system.remove_constraint("K8sNeedsOwner", "pods")
    assert run(system, pod("web")).violations == []
    system.remove_template("K8sNeedsOwner")
    assert run(system, config_map("settings")).violations == []
    system.add_template(OWNER)
    assert [v.constraint.name for v in run(system, config_map("settings")).violations] == ["maps"]


def test_the_constraints_acting_at_each_point_are_kept_apart() -> None:
    system = system_with(
        OWNER,
        constraints=[
            make_constraint(
                "K8sNeedsOwner",
                "audit-only",
                enforcementAction="scoped",
                scopedEnforcementActions=[{"action": "warn", "enforcementPoints": [{"name": AUDIT_POINT}]}],
            ),
            make_constraint("K8sNeedsOwner", "everywhere"),
        ],
    )
    assert [v.constraint.name for v in run(system, pod("web"), point=AUDIT_POINT).violations] == [
        "audit-only",
        "everywhere",
    ]
    assert [v.constraint.name for v in run(system, pod("web"), point=WEBHOOK_POINT).violations] == ["everywhere"]
    assert [v.constraint.name for v in run(system, pod("web"), point=AUDIT_POINT).violations] == [
        "audit-only",
        "everywhere",
    ]


POD_KINDS = [{"apiGroups": [""], "kinds": ["Pod"]}]


def test_criteria_besides_kinds_are_still_checked() -> None:
    system = system_with(
        OWNER,
        constraints=[
            make_constraint("K8sNeedsOwner", "kinds-only", match={"kinds": POD_KINDS}),
            make_constraint("K8sNeedsOwner", "scope-cluster", match={"kinds": POD_KINDS, "scope": "Cluster"}),
            make_constraint("K8sNeedsOwner", "scope-any", match={"kinds": POD_KINDS, "scope": "*"}),
            make_constraint("K8sNeedsOwner", "in-dev", match={"kinds": POD_KINDS, "namespaces": ["dev"]}),
            make_constraint("K8sNeedsOwner", "not-prod", match={"kinds": POD_KINDS, "excludedNamespaces": ["prod"]}),
            make_constraint(
                "K8sNeedsOwner", "labelled", match={"kinds": POD_KINDS, "labelSelector": {"matchLabels": {"a": "b"}}}
            ),
            make_constraint(
                "K8sNeedsOwner",
                "ns-labelled",
                match={"kinds": POD_KINDS, "namespaceSelector": {"matchLabels": {"env": "dev"}}},
            ),
            make_constraint("K8sNeedsOwner", "named", match={"kinds": POD_KINDS, "name": "api"}),
            make_constraint("K8sNeedsOwner", "generated", match={"kinds": POD_KINDS, "source": "Generated"}),
            make_constraint("K8sNeedsOwner", "all-sources", match={"kinds": POD_KINDS, "source": "All"}),
        ],
    )
    prod = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod", "labels": {"env": "prod"}}}
    result = run(system, pod("web", "prod"), namespace_object=prod)
    assert result.errors == []
    assert [v.constraint.name for v in result.violations] == ["all-sources", "kinds-only", "scope-any"]
    result = run(system, pod("web", "prod"), namespace_object=prod, source="Generated")
    assert [v.constraint.name for v in result.violations] == ["all-sources", "generated", "kinds-only", "scope-any"]


def test_a_match_error_behind_kinds_is_still_reported() -> None:
    system = system_with(
        OWNER,
        constraints=[
            make_constraint("K8sNeedsOwner", "kinds-only", match={"kinds": POD_KINDS}),
            make_constraint(
                "K8sNeedsOwner",
                "bad-selector",
                match={"kinds": POD_KINDS, "labelSelector": {"matchExpressions": [{"key": "a", "operator": "Nope"}]}},
            ),
            make_constraint(
                "K8sNeedsOwner", "needs-namespace", match={"kinds": POD_KINDS, "namespaceSelector": {"matchLabels": {}}}
            ),
        ],
    )
    result = run(system, pod("web"))
    assert [v.constraint.name for v in result.violations] == ["kinds-only"]
    assert [e.split(" ", 1)[0] for e in result.errors] == ["[bad-selector]", "[needs-namespace]"]
    assert all("failed to run match criteria" in e for e in result.errors)
    assert run(system, config_map("settings")).errors == []  # kinds decide first: no error for a ConfigMap


def test_large_and_small_parameters_of_one_kind_each_reach_their_constraint() -> None:
    # small parameters travel with the request's input, large ones are read from the engine's data
    long_reason = "because " + "x" * 600
    system = system_with(
        DIGESTS,
        constraints=[
            make_constraint("K8sDigests", "small", parameters={"why": "short"}),
            make_constraint("K8sDigests", "large", enforcementAction="warn", parameters={"why": long_reason}),
            make_constraint("K8sDigests", "large-too", parameters={"why": long_reason}),
        ],
    )
    result = run(system, two_container_pod("web"))
    assert [(name, message.split(" (")[1][:10], actions) for name, message, _, actions in listing(result)] == [
        ("large", "because xx", ("warn",)),
        ("large", "because xx", ("warn",)),
        ("large-too", "because xx", ("deny",)),
        ("large-too", "because xx", ("deny",)),
        ("small", "short)", ("deny",)),
        ("small", "short)", ("deny",)),
    ]
    assert result.violations[0].message == f"a-app: image corp.example/app:1 has no digest ({long_reason})"
    system.remove_constraint("K8sDigests", "small")
    assert [v.constraint.name for v in run(system, two_container_pod("web")).violations] == ["large"] * 2 + [
        "large-too"
    ] * 2


# --- the hook inside each template's package ------------------------------------------------------------------------

SYNTAXES = {
    "v0": (
        """package k8sbanned

violation[{"msg": msg}] {
  c := input.review.object.spec.containers[_]
  c.image == input.parameters.image
  msg := sprintf("%v is banned", [c.image])
}
""",
        False,
    ),
    "v0 with rego.v1": (
        """package k8sbanned
import rego.v1

violation contains {"msg": msg} if {
  some c in input.review.object.spec.containers
  c.image == input.parameters.image
  msg := sprintf("%v is banned", [c.image])
}
""",
        False,
    ),
    "v0 with future.keywords": (
        """package k8sbanned
import future.keywords.in

violation[{"msg": msg}] {
  some c in input.review.object.spec.containers
  c.image == input.parameters.image
  msg := sprintf("%v is banned", [c.image])
}
""",
        False,
    ),
    "v1": (
        """package k8sbanned

violation contains {"msg": msg} if {
  some c in input.review.object.spec.containers
  c.image == input.parameters.image
  msg := sprintf("%v is banned", [c.image])
}
""",
        True,
    ),
}


@pytest.mark.parametrize("syntax", list(SYNTAXES))
def test_every_rego_syntax_goes_through_the_shared_engine(syntax: str) -> None:
    rego, v1 = SYNTAXES[syntax]
    template = make_template("K8sBanned", rego, v1=v1)
    system = system_with(
        template,
        constraints=[
            make_constraint("K8sBanned", "app", parameters={"image": "corp.example/app:1"}),
            make_constraint("K8sBanned", "other", parameters={"image": "corp.example/other:1"}),
        ],
    )
    assert [kind for bundle in system.prepare() for kind in bundle.keys] == ["K8sBanned"]
    assert [v.text for v in run(system, pod("web")).violations] == ["[app] corp.example/app:1 is banned"]


def test_a_template_using_the_hooks_names_still_works_on_its_own() -> None:
    rego = """package k8shooked

gkhook__name := {"mine"}

violation[{"msg": msg}] {
  gkhook__name["mine"]
  msg := sprintf("%v: %v", [input.parameters.label, input.review.object.metadata.name])
}
"""
    system = system_with(
        make_template("K8sHooked", rego),
        OWNER,
        constraints=[
            make_constraint("K8sHooked", "hooked", parameters={"label": "x"}),
            make_constraint("K8sNeedsOwner", "owner"),
        ],
    )
    assert [kind for bundle in system.prepare() for kind in bundle.keys] == ["K8sNeedsOwner"]
    assert sorted(v.text for v in run(system, pod("web")).violations) == [
        "[hooked] x: web",
        "[owner] Pod web has no owner label",
    ]


# --- templates that never read their parameters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        ('violation[{"msg": "x"}] { input.review.object.spec.hostPID }', False),
        ('violation[{"msg": m}] { m := input.parameters.message }', True),
        ('violation[{"msg": m}] { m := input["parameters"].message }', True),
        ('violation[{"msg": m}] { m := object.get(input, "parameters", {}).message }', True),
        ('violation[{"msg": m}] { i := input; m := i.parameters.message }', True),
        ('violation[{"msg": "x"}] { input.reviewer }', True),
        ('violation[{"msg": "x"}] { input . parameters }', True),
        ('violation[{"msg": "x"}] { f with input as {} }\nf { true }', True),
        ('violation[{"msg": "x"}] { data.gkconstraints }', True),
        ('# input.parameters in a comment\nviolation[{"msg": "input.parameters"}] { input.review.kind }', False),
        ('violation[{"msg": `input.parameters`}] { input.review.kind }', False),
        ('violation[{"msg": "x"}] { data.input.parameters }', False),
    ],
)
def test_which_rego_may_read_its_parameters(source: str, reads: bool) -> None:
    assert reads_parameters([f"package p\n{source}\n"]) is reads


def test_a_lib_reading_the_parameters_counts() -> None:
    main = 'package p\nimport data.lib.q\nviolation[{"msg": "x"}] { q.f }\n'
    assert reads_parameters([main, "package lib.q\nf { input.parameters.on }\n"]) is True
    assert reads_parameters([main, "package lib.q\nf { input.review.kind.kind }\n"]) is False


HOST_PID_REGO = """package k8shostpid

violation[{"msg": "hostPID is not allowed", "details": {"pod": input.review.object.metadata.name}}] {
  input.review.object.spec.hostPID
}
"""

PARAMS_BY_OBJECT_GET_REGO = """package k8sobjectget

violation[{"msg": msg}] {
  input.review.object.spec.hostPID
  msg := sprintf("hostPID (%v)", [object.get(input, "parameters", {}).why])
}
"""


def test_constraints_of_a_template_that_ignores_its_parameters_each_get_their_violations() -> None:
    system = system_with(
        make_template("K8sHostPid", HOST_PID_REGO),
        constraints=[
            make_constraint("K8sHostPid", "b", enforcementAction="warn", parameters={"note": "one"}),
            make_constraint("K8sHostPid", "a", parameters={"note": "two"}),
            make_constraint("K8sHostPid", "c", parameters={"note": "x" * 400}),
            make_constraint("K8sHostPid", "elsewhere", match={"namespaces": ["dev"]}, parameters={"note": "three"}),
        ],
    )
    obj = pod("web")
    obj["spec"]["hostPID"] = True
    assert listing(run(system, obj)) == [
        ("a", "hostPID is not allowed", {"pod": "web"}, ("deny",)),
        ("b", "hostPID is not allowed", {"pod": "web"}, ("warn",)),
        ("c", "hostPID is not allowed", {"pod": "web"}, ("deny",)),
    ]
    assert run(system, pod("web")).violations == []


def test_parameters_read_in_another_way_are_still_per_constraint() -> None:
    system = system_with(
        make_template("K8sObjectGet", PARAMS_BY_OBJECT_GET_REGO),
        constraints=[
            make_constraint("K8sObjectGet", "one", parameters={"why": "first"}),
            make_constraint("K8sObjectGet", "two", parameters={"why": "second"}),
        ],
    )
    obj = pod("web")
    obj["spec"]["hostPID"] = True
    assert [v.text for v in run(system, obj).violations] == ["[one] hostPID (first)", "[two] hostPID (second)"]


def test_rules_named_like_the_hooks_variables_do_not_disturb_it() -> None:
    rego = """package k8snamed

name := input.review.object.metadata.name
params := {"not": "the parameters"}
v := "a rule"
out := "another rule"
object := {"get": "a rule too"}
default details := {}

violation[{"msg": msg, "details": {"label": input.parameters.label}}] {
  input.review.object.metadata.labels[input.parameters.label] != "yes"
  msg := sprintf("%v: %v is not yes (%v, %v, %v)", [name, input.parameters.label, params["not"], v, out])
}
"""
    system = system_with(
        make_template("K8sNamed", rego),
        constraints=[
            make_constraint("K8sNamed", "a", parameters={"label": "a"}),
            make_constraint("K8sNamed", "b", parameters={"label": "b"}),
        ],
    )
    assert [kind for bundle in system.prepare() for kind in bundle.keys] == ["K8sNamed"]
    result = run(system, pod("web", labels={"a": "no", "b": "no"}))
    assert result.errors == []
    assert [(v.text, v.details) for v in result.violations] == [
        ("[a] web: a is not yes (the parameters, a rule, another rule)", {"label": "a"}),
        ("[b] web: b is not yes (the parameters, a rule, another rule)", {"label": "b"}),
    ]
