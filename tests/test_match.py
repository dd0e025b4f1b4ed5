"""Match criteria (``spec.match``) and ``applyTo`` (mutator.match)."""

from __future__ import annotations

from typing import Any

import pytest

from mutator.match import (
    ApplyTo,
    Match,
    Matchable,
    MatchError,
    PolicyError,
    applies_to,
    gvk_of,
    wildcard_matches,
)

# --------------------------------------------------------------------------- fixtures of our own


def pod(
    name: str = "checkout-7d9f",
    namespace: str = "shop",
    labels: dict[str, str] | None = None,
    generate_name: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": namespace}
    if name:
        meta["name"] = name
    if generate_name is not None:
        meta["generateName"] = generate_name
    if labels is not None:
        meta["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/shop/checkout:2.4.1"}]},
    }


def deployment(namespace: str = "shop", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": namespace, "labels": labels or {}},
        "spec": {"replicas": 3},
    }


def namespace_obj(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def cluster_role(name: str = "shop-reader", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels or {}},
        "rules": [],
    }


def matches(spec: dict[str, Any] | None, obj: dict[str, Any], **kwargs: Any) -> bool:
    return Match.from_spec(spec).matches(Matchable(obj, **kwargs))


# --------------------------------------------------------------------------- wildcards


@pytest.mark.parametrize(
    ("pattern", "candidate", "expected"),
    [
        ("kube-system", "kube-system", True),
        ("kube-system", "kube-system2", False),
        ("kube-*", "kube-system", True),
        ("kube-*", "kube-", True),
        ("kube-*", "my-kube-system", False),
        ("*-system", "mutator-system", True),
        ("*-system", "system", False),
        ("*-system", "mutator-system-2", False),
        ("*sys*", "kube-system", True),
        ("*sys*", "sys", True),
        ("*sys*", "kube-public", False),
        ("*", "", True),
        ("*", "anything", True),
        ("team.a-*", "team.a-prod", True),
        ("team.a-*", "teamxa-prod", False),
    ],
)
def test_wildcard_matches(pattern: str, candidate: str, expected: bool) -> None:
    assert wildcard_matches(pattern, candidate) is expected


# --------------------------------------------------------------------------- empty match


@pytest.mark.parametrize("obj", [pod(), deployment(), namespace_obj("shop"), cluster_role()])
def test_no_criteria_matches_everything(obj: dict[str, Any]) -> None:
    assert matches(None, obj)
    assert matches({}, obj)


# --------------------------------------------------------------------------- kinds


def test_kinds_exact_group_and_kind() -> None:
    spec = {"kinds": [{"apiGroups": ["apps"], "kinds": ["Deployment"]}]}
    assert matches(spec, deployment())
    assert not matches(spec, pod())


def test_kinds_core_group_is_the_empty_string() -> None:
    spec = {"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]}
    assert matches(spec, pod())
    fake_pod = {**pod(), "apiVersion": "example.com/v1"}
    assert not matches(spec, fake_pod)


def test_kinds_star_and_empty_lists_mean_all() -> None:
    assert matches({"kinds": [{"apiGroups": ["*"], "kinds": ["Pod"]}]}, pod())
    assert matches({"kinds": [{"apiGroups": ["apps"], "kinds": ["*"]}]}, deployment())
    assert matches({"kinds": [{"apiGroups": ["apps"]}]}, deployment())
    assert not matches({"kinds": [{"apiGroups": ["apps"]}]}, pod())
    assert matches({"kinds": [{"kinds": ["Deployment"]}]}, deployment())
    assert matches({"kinds": [{}]}, cluster_role())


def test_kinds_any_entry_may_match() -> None:
    spec = {
        "kinds": [
            {"apiGroups": ["batch"], "kinds": ["Job", "CronJob"]},
            {"apiGroups": ["apps"], "kinds": ["StatefulSet", "Deployment"]},
        ]
    }
    assert matches(spec, deployment())
    assert not matches(spec, pod())


def test_kinds_group_and_kind_must_match_in_the_same_entry() -> None:
    spec = {"kinds": [{"apiGroups": ["apps"], "kinds": ["Job"]}, {"apiGroups": ["batch"], "kinds": ["Deployment"]}]}
    assert not matches(spec, deployment())


# --------------------------------------------------------------------------- scope


@pytest.mark.parametrize(
    ("scope", "obj", "expected"),
    [
        ("Namespaced", pod(), True),
        ("Namespaced", cluster_role(), False),
        ("Namespaced", namespace_obj("shop"), False),
        ("Cluster", pod(), False),
        ("Cluster", cluster_role(), True),
        ("Cluster", namespace_obj("shop"), True),
        ("*", pod(), True),
        ("*", cluster_role(), True),
        ("*", namespace_obj("shop"), True),
    ],
)
def test_scope(scope: str, obj: dict[str, Any], expected: bool) -> None:
    assert matches({"scope": scope}, obj) is expected


# --------------------------------------------------------------------------- namespaces / excludedNamespaces


@pytest.mark.parametrize(
    ("patterns", "namespace", "expected"),
    [
        (["shop"], "shop", True),
        (["shop"], "shopping", False),
        (["kube-*"], "kube-system", True),
        (["kube-*"], "default", False),
        (["*-system"], "mutator-system", True),
        (["*-system"], "system-tools", False),
        (["*prod*"], "eu-prod-1", True),
        (["*prod*"], "staging", False),
        (["staging", "*-prod"], "shop-prod", True),
    ],
)
def test_namespaces_globs(patterns: list[str], namespace: str, expected: bool) -> None:
    assert matches({"namespaces": patterns}, pod(namespace=namespace)) is expected


@pytest.mark.parametrize(
    ("patterns", "namespace", "expected"),
    [
        (["kube-system"], "kube-system", False),
        (["kube-*"], "kube-public", False),
        (["kube-*"], "shop", True),
        (["*-system"], "gatekeeper-system", False),
        (["*-system"], "system", True),
        (["*sys*"], "my-sys-ns", False),
        (["*sys*"], "shop", True),
    ],
)
def test_excluded_namespaces_globs(patterns: list[str], namespace: str, expected: bool) -> None:
    assert matches({"excludedNamespaces": patterns}, pod(namespace=namespace)) is expected


def test_namespace_objects_match_namespaces_by_their_own_name() -> None:
    assert matches({"namespaces": ["kube-*"]}, namespace_obj("kube-system"))
    assert not matches({"namespaces": ["kube-*"]}, namespace_obj("shop"))
    assert not matches({"excludedNamespaces": ["kube-*"]}, namespace_obj("kube-system"))
    assert matches({"excludedNamespaces": ["kube-*"]}, namespace_obj("shop"))


def test_cluster_scoped_objects_pass_namespace_criteria() -> None:
    assert matches({"namespaces": ["shop"]}, cluster_role())
    assert matches({"excludedNamespaces": ["*"]}, cluster_role())


def test_empty_namespace_lists_do_not_restrict() -> None:
    assert matches({"namespaces": []}, pod(namespace="anywhere"))
    assert matches({"excludedNamespaces": []}, pod(namespace="anywhere"))


def test_excluded_wins_over_included() -> None:
    spec = {"namespaces": ["shop-*"], "excludedNamespaces": ["*-legacy"]}
    assert matches(spec, pod(namespace="shop-eu"))
    assert not matches(spec, pod(namespace="shop-legacy"))


# --------------------------------------------------------------------------- labelSelector


def test_label_selector_match_labels() -> None:
    spec = {"labelSelector": {"matchLabels": {"app": "checkout", "tier": "backend"}}}
    assert matches(spec, pod(labels={"app": "checkout", "tier": "backend", "extra": "x"}))
    assert not matches(spec, pod(labels={"app": "checkout"}))
    assert not matches(spec, pod(labels={"app": "checkout", "tier": "frontend"}))
    assert not matches(spec, pod())


@pytest.mark.parametrize(
    ("expression", "labels", "expected"),
    [
        ({"key": "env", "operator": "In", "values": ["prod", "staging"]}, {"env": "prod"}, True),
        ({"key": "env", "operator": "In", "values": ["prod", "staging"]}, {"env": "dev"}, False),
        ({"key": "env", "operator": "In", "values": ["prod"]}, {}, False),
        ({"key": "env", "operator": "NotIn", "values": ["dev"]}, {"env": "prod"}, True),
        ({"key": "env", "operator": "NotIn", "values": ["dev"]}, {"env": "dev"}, False),
        ({"key": "env", "operator": "NotIn", "values": ["dev"]}, {}, True),
        ({"key": "owner", "operator": "Exists"}, {"owner": ""}, True),
        ({"key": "owner", "operator": "Exists"}, {"other": "x"}, False),
        ({"key": "owner", "operator": "DoesNotExist"}, {"other": "x"}, True),
        ({"key": "owner", "operator": "DoesNotExist"}, {"owner": "team-a"}, False),
    ],
)
def test_label_selector_expressions(expression: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    spec = {"labelSelector": {"matchExpressions": [expression]}}
    assert matches(spec, pod(labels=labels)) is expected


def test_label_selector_requirements_are_anded() -> None:
    spec = {
        "labelSelector": {
            "matchLabels": {"app": "checkout"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }
    }
    assert matches(spec, pod(labels={"app": "checkout", "env": "prod"}))
    assert not matches(spec, pod(labels={"app": "checkout", "env": "prod", "canary": "true"}))
    assert not matches(spec, pod(labels={"app": "cart", "env": "prod"}))


def test_empty_label_selector_matches_everything() -> None:
    assert matches({"labelSelector": {}}, pod())
    assert matches({"labelSelector": {}}, cluster_role())


INVALID_SELECTORS = [
    pytest.param(
        {"matchExpressions": [{"key": "env", "operator": "Equals", "values": ["prod"]}]}, id="unknown-operator"
    ),
    pytest.param({"matchExpressions": [{"key": "env", "operator": "In", "values": []}]}, id="in-without-values"),
    pytest.param({"matchExpressions": [{"key": "env", "operator": "NotIn"}]}, id="notin-without-values"),
    pytest.param(
        {"matchExpressions": [{"key": "env", "operator": "Exists", "values": ["prod"]}]}, id="exists-with-values"
    ),
    pytest.param(
        {"matchExpressions": [{"key": "env", "operator": "DoesNotExist", "values": ["x"]}]},
        id="doesnotexist-with-values",
    ),
    pytest.param({"matchExpressions": [{"operator": "Exists"}]}, id="missing-key"),
    # Kubernetes validates label keys and values when it builds a selector (labels.NewRequirement), and
    # Gatekeeper builds it at match time with metav1.LabelSelectorAsSelector.
    pytest.param({"matchLabels": {"bad key!": "x"}}, id="invalid-label-key"),
    pytest.param({"matchLabels": {"app": "not a valid value"}}, id="invalid-label-value"),
    pytest.param({"matchExpressions": [{"key": "-leading-dash", "operator": "Exists"}]}, id="invalid-expression-key"),
]


@pytest.mark.parametrize("selector", INVALID_SELECTORS)
def test_invalid_label_selector_is_a_match_time_error(selector: dict[str, Any]) -> None:
    match = Match.from_spec({"labelSelector": selector})  # loading succeeds, as in Gatekeeper
    with pytest.raises(MatchError):
        match.matches(Matchable(pod(labels={"env": "prod", "app": "checkout"})))


def test_invalid_operator_error_names_the_operator() -> None:
    match = Match.from_spec({"labelSelector": {"matchExpressions": [{"key": "env", "operator": "Equals"}]}})
    with pytest.raises(MatchError, match="Equals"):
        match.matches(Matchable(pod()))


def test_invalid_selector_is_not_reached_when_an_earlier_criterion_fails() -> None:
    spec = {
        "kinds": [{"apiGroups": ["apps"], "kinds": ["Deployment"]}],
        "labelSelector": {"matchExpressions": [{"key": "env", "operator": "Bogus"}]},
    }
    assert not matches(spec, pod())


# --------------------------------------------------------------------------- namespaceSelector


def test_namespace_selector_uses_the_namespace_labels() -> None:
    spec = {"namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}}}
    labelled = namespace_obj("shop", {"istio-injection": "enabled"})
    plain = namespace_obj("shop", {"team": "payments"})
    assert matches(spec, pod(), namespace=labelled)
    assert not matches(spec, pod(), namespace=plain)
    assert not matches(spec, pod(labels={"istio-injection": "enabled"}), namespace=plain)


def test_namespace_selector_on_a_namespace_uses_its_own_labels() -> None:
    spec = {"namespaceSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["critical"]}]}}
    assert matches(spec, namespace_obj("payments", {"tier": "critical"}))
    assert not matches(spec, namespace_obj("sandbox", {"tier": "best-effort"}))
    # a Namespace object needs no separate Namespace to be matched
    assert matches(spec, namespace_obj("payments", {"tier": "critical"}), namespace=None)


def test_namespace_selector_passes_cluster_scoped_objects() -> None:
    spec = {"namespaceSelector": {"matchLabels": {"never": "there"}}}
    assert matches(spec, cluster_role())


def test_namespace_selector_without_the_namespace_is_an_error() -> None:
    spec = {"namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}}}
    with pytest.raises(MatchError, match="missing Namespace"):
        matches(spec, pod())


def test_namespace_selector_invalid_is_a_match_time_error() -> None:
    match = Match.from_spec({"namespaceSelector": {"matchExpressions": [{"key": "x", "operator": "Nope"}]}})
    with pytest.raises(MatchError):
        match.matches(Matchable(pod(), namespace_obj("shop")))


# --------------------------------------------------------------------------- name


def test_name_exact_and_glob() -> None:
    assert matches({"name": "checkout-7d9f"}, pod())
    assert not matches({"name": "checkout"}, pod())
    assert matches({"name": "checkout-*"}, pod())
    assert matches({"name": "*-7d9f"}, pod())
    assert not matches({"name": "cart-*"}, pod())


def test_name_matches_generate_name_with_a_trailing_glob() -> None:
    generated = pod(name="", generate_name="checkout-")
    assert matches({"name": "checkout-*"}, generated)
    assert matches({"name": "check*"}, generated)
    assert not matches({"name": "cart-*"}, generated)
    assert not matches({"name": "checkout-"}, generated)  # no glob: the final name is unknown
    assert not matches({"name": "checkout-web-*"}, generated)


def test_name_prefers_the_name_over_generate_name() -> None:
    both = pod(name="cart-1", generate_name="checkout-")
    assert not matches({"name": "checkout-*"}, both)
    assert matches({"name": "cart-*"}, both)


def test_name_criterion_fails_without_any_name() -> None:
    assert not matches({"name": "*"}, pod(name=""))


def test_name_applies_to_cluster_scoped_objects() -> None:
    assert matches({"name": "shop-*"}, cluster_role("shop-reader"))
    assert not matches({"name": "shop-*"}, cluster_role("system:auth"))


# --------------------------------------------------------------------------- source


@pytest.mark.parametrize(
    ("criterion", "source", "expected"),
    [
        ("All", "Original", True),
        ("All", "Generated", True),
        ("Original", "Original", True),
        ("Original", "Generated", False),
        ("Generated", "Generated", True),
        ("Generated", "Original", False),
    ],
)
def test_source(criterion: str, source: str, expected: bool) -> None:
    assert matches({"source": criterion}, pod(), source=source) is expected


def test_source_defaults_to_original() -> None:
    assert matches({"source": "Original"}, pod())
    assert not matches({"source": "Generated"}, pod())


def test_missing_source_is_an_error_unless_all() -> None:
    with pytest.raises(MatchError, match="source"):
        matches({"source": "Original"}, pod(), source="")
    assert matches({"source": "All"}, pod(), source="")
    assert matches({}, pod(), source="")


# --------------------------------------------------------------------------- all criteria together


def test_every_criterion_must_hold() -> None:
    spec = {
        "kinds": [{"apiGroups": [""], "kinds": ["Pod"]}],
        "scope": "Namespaced",
        "namespaces": ["shop*"],
        "excludedNamespaces": ["shop-legacy"],
        "labelSelector": {"matchLabels": {"app": "checkout"}},
        "namespaceSelector": {"matchLabels": {"env": "prod"}},
        "name": "checkout-*",
        "source": "Original",
    }
    prod = namespace_obj("shop", {"env": "prod"})
    good = pod(labels={"app": "checkout"})
    assert matches(spec, good, namespace=prod)

    assert not matches(spec, deployment(labels={"app": "checkout"}), namespace=prod)
    assert not matches(spec, pod(namespace="cart", labels={"app": "checkout"}), namespace=prod)
    assert not matches(spec, pod(namespace="shop-legacy", labels={"app": "checkout"}), namespace=prod)
    assert not matches(spec, pod(labels={"app": "cart"}), namespace=prod)
    assert not matches(spec, good, namespace=namespace_obj("shop", {"env": "dev"}))
    assert not matches(spec, pod(name="cart-1", labels={"app": "checkout"}), namespace=prod)
    assert not matches(spec, good, namespace=prod, source="Generated")


# --------------------------------------------------------------------------- loading errors


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("not-a-map", "spec.match"),
        ({"kinds": {"apiGroups": ["apps"]}}, "spec.match.kinds"),
        ({"kinds": ["Pod"]}, "spec.match.kinds[0]"),
        ({"kinds": [{"apiGroups": "apps"}]}, "spec.match.kinds[0].apiGroups"),
        ({"kinds": [{"kinds": [1]}]}, "spec.match.kinds[0].kinds"),
        ({"scope": ["Cluster"]}, "spec.match.scope"),
        ({"name": 7}, "spec.match.name"),
        ({"source": "Mirrored"}, "spec.match.source"),
        ({"namespaces": "shop"}, "spec.match.namespaces"),
        ({"excludedNamespaces": [1, 2]}, "spec.match.excludedNamespaces"),
        ({"labelSelector": ["app"]}, "spec.match.labelSelector"),
        ({"labelSelector": {"matchLabels": ["app"]}}, "spec.match.labelSelector.matchLabels"),
        ({"labelSelector": {"matchExpressions": {"key": "x"}}}, "spec.match.labelSelector.matchExpressions"),
        ({"namespaceSelector": "env=prod"}, "spec.match.namespaceSelector"),
    ],
)
def test_malformed_match_is_a_policy_error_naming_the_field(spec: Any, field: str) -> None:
    with pytest.raises(PolicyError) as info:
        Match.from_spec(spec)
    assert str(info.value).startswith(field + ":")


def test_match_field_prefix_is_configurable() -> None:
    with pytest.raises(PolicyError, match=r"^spec\.parameters\.match\.source:"):
        Match.from_spec({"source": "Nope"}, field="spec.parameters.match")


# --------------------------------------------------------------------------- applyTo


def test_gvk_of() -> None:
    assert gvk_of(pod()) == ("", "v1", "Pod")
    assert gvk_of(deployment()) == ("apps", "v1", "Deployment")
    assert gvk_of(cluster_role()) == ("rbac.authorization.k8s.io", "v1", "ClusterRole")
    assert gvk_of({}) == ("", "", "")


def test_apply_to_is_exact_on_group_version_and_kind() -> None:
    entries = ApplyTo.parse_list([{"groups": ["apps"], "versions": ["v1"], "kinds": ["Deployment", "StatefulSet"]}])
    assert applies_to(entries, deployment())
    assert not applies_to(entries, pod())
    assert not applies_to(entries, {**deployment(), "apiVersion": "apps/v1beta1"})
    assert not applies_to(entries, {**deployment(), "apiVersion": "extensions/v1"})


def test_apply_to_has_no_wildcards() -> None:
    entries = ApplyTo.parse_list([{"groups": ["*"], "versions": ["*"], "kinds": ["*"]}])
    assert not applies_to(entries, pod())


def test_apply_to_any_entry() -> None:
    entries = ApplyTo.parse_list(
        [
            {"groups": [""], "versions": ["v1"], "kinds": ["Pod"]},
            {"groups": ["apps"], "versions": ["v1"], "kinds": ["Deployment"]},
        ]
    )
    assert applies_to(entries, pod())
    assert applies_to(entries, deployment())
    assert not applies_to(entries, cluster_role())


def test_apply_to_gvks_cross_product() -> None:
    (entry,) = ApplyTo.parse_list([{"groups": ["", "apps"], "versions": ["v1"], "kinds": ["Pod", "Deployment"]}])
    assert sorted(entry.gvks()) == [
        ("", "v1", "Deployment"),
        ("", "v1", "Pod"),
        ("apps", "v1", "Deployment"),
        ("apps", "v1", "Pod"),
    ]


def test_apply_to_missing_is_empty() -> None:
    assert ApplyTo.parse_list(None) == ()
    assert not applies_to((), pod())


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"groups": [""]}, "spec.applyTo"),
        (["Pod"], "spec.applyTo[0]"),
        ([{"groups": "", "versions": ["v1"], "kinds": ["Pod"]}], "spec.applyTo[0].groups"),
        ([{"groups": [""], "versions": [1], "kinds": ["Pod"]}], "spec.applyTo[0].versions"),
        ([{}, {"groups": [""], "versions": ["v1"], "kinds": "Pod"}], "spec.applyTo[1].kinds"),
    ],
)
def test_malformed_apply_to_names_the_field(value: Any, field: str) -> None:
    with pytest.raises(PolicyError) as info:
        ApplyTo.parse_list(value)
    assert str(info.value).startswith(field + ":")
