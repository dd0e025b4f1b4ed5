"""Each mutator kind, built from its resource and applied to realistic objects (mutator.mutation)."""

from __future__ import annotations

from typing import Any

import pytest

from mutator.match import PolicyError
from mutator.mutation import (
    Assign,
    AssignImage,
    AssignMetadata,
    ModifySet,
    Mutable,
    MutationError,
    Mutator,
    MutatorID,
    is_mutator_resource,
    mutator_from_resource,
)
from mutator.mutation.core import deep_copy, go_repr, json_equal

GROUP = "mutations.gatekeeper.sh"
POD_V1 = [{"groups": [""], "versions": ["v1"], "kinds": ["Pod"]}]
DEPLOYMENT_V1 = [{"groups": ["apps"], "versions": ["v1"], "kinds": ["Deployment"]}]
DIGEST = "sha256:" + "3f" * 32

# --------------------------------------------------------------------------- fixtures of our own


def resource(
    kind: str,
    location: str,
    parameters: dict[str, Any] | None = None,
    *,
    name: str = "test-mutator",
    apply_to: Any = None,
    match: dict[str, Any] | None = None,
    api_version: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"location": location}
    if parameters is not None:
        spec["parameters"] = parameters
    if kind != "AssignMetadata":
        spec["applyTo"] = POD_V1 if apply_to is None else apply_to
    elif apply_to is not None:
        spec["applyTo"] = apply_to
    if match is not None:
        spec["match"] = match
    version = api_version or ("v1alpha1" if kind == "AssignImage" else "v1")
    return {"apiVersion": f"{GROUP}/{version}", "kind": kind, "metadata": {"name": name}, "spec": spec}


def assign(location: str, value: Any = None, *, tests: list[tuple[str, str]] | None = None, **kw: Any) -> Mutator:
    params: dict[str, Any] = {"assign": {"value": value}}
    if tests:
        params["pathTests"] = [{"subPath": s, "condition": c} for s, c in tests]
    return mutator_from_resource(resource("Assign", location, params, **kw))


def modify_set(location: str, values: list[Any], operation: str | None = None, **kw: Any) -> Mutator:
    params: dict[str, Any] = {"values": {"fromList": values}}
    if operation is not None:
        params["operation"] = operation
    return mutator_from_resource(resource("ModifySet", location, params, **kw))


def assign_image(location: str, **parts: str) -> Mutator:
    return mutator_from_resource(resource("AssignImage", location, dict(parts)))


def assign_metadata(location: str, value: Any, **kw: Any) -> Mutator:
    return mutator_from_resource(resource("AssignMetadata", location, {"assign": {"value": value}}, **kw))


def apply(mutator: Mutator, obj: dict[str, Any], namespace: dict[str, Any] | None = None) -> bool:
    return mutator.mutate(Mutable(obj, namespace))


def checkout_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "checkout-5c8d", "namespace": "shop", "labels": {"app": "checkout"}},
        "spec": {
            "serviceAccountName": "checkout",
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example.com/shop/checkout:2.4.1",
                    "args": ["--port=8080"],
                    "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
                    "securityContext": {"runAsUser": 1000},
                },
                {
                    "name": "envoy",
                    "image": "envoyproxy/envoy:v1.30.1",
                    "securityContext": {
                        "allowPrivilegeEscalation": True,
                        "capabilities": {"add": ["NET_ADMIN", "NET_RAW", "SYS_TIME", "NET_RAW"]},
                    },
                },
            ],
        },
    }


def web_deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "frontend"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]},
            },
        },
    }


def containers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in obj["spec"]["containers"]}


# --------------------------------------------------------------------------- loading


def test_mutator_from_resource_builds_each_kind() -> None:
    assert isinstance(assign("spec.priority", 10), Assign)
    assert isinstance(assign_metadata("metadata.labels.team", "shop"), AssignMetadata)
    assert isinstance(modify_set("spec.containers[name: *].args", ["--x"]), ModifySet)
    assert isinstance(assign_image("spec.containers[name: *].image", assignTag=":v1"), AssignImage)


def test_mutator_id_and_order_key() -> None:
    m = assign("spec.priority", 10, name="set-priority")
    assert m.id == MutatorID(GROUP, "Assign", "", "set-priority")
    assert str(m.id) == "Assign.mutations.gatekeeper.sh /set-priority"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (resource("Assign", "spec.x", {"assign": {"value": 1}}), True),
        (resource("AssignImage", "spec.x", {"assignTag": ":v1"}), True),
        ({"apiVersion": "mutations.gatekeeper.sh/v1", "kind": "Mutation"}, False),
        ({"apiVersion": "v1", "kind": "Assign"}, False),
        ({"apiVersion": "templates.gatekeeper.sh/v1", "kind": "ConstraintTemplate"}, False),
    ],
)
def test_is_mutator_resource(doc: dict[str, Any], expected: bool) -> None:
    assert is_mutator_resource(doc) is expected


@pytest.mark.parametrize(
    ("kind", "version"),
    [("Assign", "v1beta1"), ("Assign", "v1alpha1"), ("ModifySet", "v1beta1"), ("AssignMetadata", "v1alpha1")],
)
def test_older_served_versions_load(kind: str, version: str) -> None:
    params = {"values": {"fromList": ["x"]}} if kind == "ModifySet" else {"assign": {"value": "x"}}
    location = "metadata.labels.x" if kind == "AssignMetadata" else "spec.x"
    assert mutator_from_resource(resource(kind, location, params, api_version=version)).kind == kind


# --------------------------------------------------------------------------- Assign


def test_assign_creates_missing_parents() -> None:
    m = assign("spec.template.spec.securityContext.seccompProfile.type", "RuntimeDefault", apply_to=DEPLOYMENT_V1)
    obj = web_deployment()
    assert apply(m, obj)
    assert obj["spec"]["template"]["spec"]["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert obj["spec"]["template"]["spec"]["containers"] == [{"name": "nginx", "image": "nginx:1.27"}]


def test_assign_overwrites_a_terminal_field() -> None:
    m = assign("spec.replicas", 5, apply_to=DEPLOYMENT_V1)
    obj = web_deployment()
    assert apply(m, obj)
    assert obj["spec"]["replicas"] == 5


def test_assign_reports_no_change_when_the_value_is_already_there() -> None:
    m = assign("spec.replicas", 2, apply_to=DEPLOYMENT_V1)
    obj = web_deployment()
    before = deep_copy(obj)
    assert not apply(m, obj)
    assert obj == before


def test_assign_equal_numbers_are_no_change_but_booleans_are_not_numbers() -> None:
    obj = web_deployment()
    assert not apply(assign("spec.replicas", 2.0, apply_to=DEPLOYMENT_V1), obj)
    obj["spec"]["paused"] = 1
    assert apply(assign("spec.paused", True, apply_to=DEPLOYMENT_V1), obj)
    assert obj["spec"]["paused"] is True


def test_assign_object_value_replaces_the_whole_field() -> None:
    m = assign("spec.containers[name: app].securityContext", {"runAsNonRoot": True})
    obj = checkout_pod()
    assert apply(m, obj)
    assert containers(obj)["app"]["securityContext"] == {"runAsNonRoot": True}


def test_assign_keyed_element_descends_only_the_matching_element() -> None:
    m = assign("spec.containers[name: app].resources.limits.memory", "512Mi")
    obj = checkout_pod()
    assert apply(m, obj)
    assert containers(obj)["app"]["resources"] == {"limits": {"memory": "512Mi"}}
    assert "resources" not in containers(obj)["envoy"]


def test_assign_keyed_element_is_appended_when_missing() -> None:
    m = assign("spec.containers[name: log-shipper].image", "fluent/fluent-bit:3.0")
    obj = checkout_pod()
    assert apply(m, obj)
    assert [c["name"] for c in obj["spec"]["containers"]] == ["app", "envoy", "log-shipper"]
    assert obj["spec"]["containers"][-1] == {"name": "log-shipper", "image": "fluent/fluent-bit:3.0"}
    assert not apply(m, obj)
    assert len(obj["spec"]["containers"]) == 3


def test_assign_keyed_element_creates_the_list_when_missing() -> None:
    m = assign("spec.template.spec.tolerations[key: dedicated].operator", "Exists", apply_to=DEPLOYMENT_V1)
    obj = web_deployment()
    assert apply(m, obj)
    assert obj["spec"]["template"]["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]


def test_assign_int_key_matches_only_ints() -> None:
    obj = checkout_pod()
    by_int = assign("spec.containers[name: app].ports[containerPort: 8080].protocol", "TCP")
    assert apply(by_int, obj)
    ports = containers(obj)["app"]["ports"]
    assert ports[0] == {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    assert len(ports) == 2

    by_str = assign('spec.containers[name: app].ports[containerPort: "9090"].protocol', "UDP")
    assert apply(by_str, obj)
    ports = containers(obj)["app"]["ports"]
    assert ports[1] == {"name": "metrics", "containerPort": 9090}
    assert ports[2] == {"containerPort": "9090", "protocol": "UDP"}


def test_assign_glob_descends_every_element() -> None:
    m = assign("spec.containers[name: *].imagePullPolicy", "Always")
    obj = checkout_pod()
    assert apply(m, obj)
    assert [c["imagePullPolicy"] for c in obj["spec"]["containers"]] == ["Always", "Always"]


def test_assign_glob_never_creates_a_list_or_an_element() -> None:
    m = assign("spec.initContainers[name: *].imagePullPolicy", "Always")
    obj = checkout_pod()
    before = deep_copy(obj)
    assert not apply(m, obj)
    assert obj == before
    assert "initContainers" not in obj["spec"]

    obj["spec"]["initContainers"] = []
    assert not apply(m, obj)
    assert obj["spec"]["initContainers"] == []


def test_assign_glob_does_not_create_parents_of_the_list() -> None:
    m = assign("spec.template.spec.initContainers[name: *].securityContext.runAsNonRoot", True, apply_to=DEPLOYMENT_V1)
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bare"}, "spec": {}}
    assert not apply(m, obj)
    assert obj["spec"] == {}


def test_assign_terminal_keyed_element_is_replaced_whole_in_place() -> None:
    value = {"name": "app", "image": "registry.example.com/shop/checkout:3.0.0"}
    m = assign("spec.containers[name: app]", value)
    obj = checkout_pod()
    assert apply(m, obj)
    assert obj["spec"]["containers"][0] == value  # args, ports, securityContext are gone
    assert obj["spec"]["containers"][1]["name"] == "envoy"
    assert not apply(m, obj)


def test_assign_terminal_keyed_element_is_appended_when_missing() -> None:
    value = {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}
    m = assign('spec.tolerations[key: "node.kubernetes.io/not-ready"]', value)
    obj = checkout_pod()
    obj["spec"]["tolerations"] = [{"key": "dedicated", "operator": "Equal", "value": "shop"}]
    assert apply(m, obj)
    assert obj["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "shop"}, value]


def test_assign_value_is_copied_per_object() -> None:
    m = assign("spec.securityContext", {"sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]})
    first, second = checkout_pod(), checkout_pod()
    apply(m, first)
    first["spec"]["securityContext"]["sysctls"].append({"name": "evil", "value": "1"})
    apply(m, second)
    assert second["spec"]["securityContext"] == {"sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]}


def test_assign_applies_inside_a_deployment_template() -> None:
    m = assign(
        "spec.template.spec.containers[name: *].securityContext.readOnlyRootFilesystem", True, apply_to=DEPLOYMENT_V1
    )
    obj = web_deployment()
    assert apply(m, obj)
    assert obj["spec"]["template"]["spec"]["containers"][0]["securityContext"] == {"readOnlyRootFilesystem": True}


# --------------------------------------------------------------------------- pathTests


def test_path_test_must_not_exist_keeps_explicit_values() -> None:
    location = "spec.containers[name: *].securityContext.allowPrivilegeEscalation"
    m = assign(location, False, tests=[(location, "MustNotExist")])
    obj = checkout_pod()
    assert apply(m, obj)
    by_name = containers(obj)
    assert by_name["app"]["securityContext"] == {"runAsUser": 1000, "allowPrivilegeEscalation": False}
    assert by_name["envoy"]["securityContext"]["allowPrivilegeEscalation"] is True


def test_path_test_must_exist_on_a_parent() -> None:
    m = assign(
        "spec.containers[name: *].securityContext.capabilities.drop",
        ["ALL"],
        tests=[("spec.containers[name: *].securityContext.capabilities", "MustExist")],
    )
    obj = checkout_pod()
    assert apply(m, obj)
    by_name = containers(obj)
    assert by_name["envoy"]["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "capabilities" not in by_name["app"]["securityContext"]


def test_path_test_must_exist_on_the_whole_location() -> None:
    m = assign("spec.serviceAccountName", "restricted", tests=[("spec.serviceAccountName", "MustExist")])
    obj = checkout_pod()
    assert apply(m, obj)
    assert obj["spec"]["serviceAccountName"] == "restricted"
    del obj["spec"]["serviceAccountName"]
    assert not apply(m, obj)
    assert "serviceAccountName" not in obj["spec"]


def test_path_test_must_not_exist_on_a_keyed_element() -> None:
    m = assign(
        "spec.containers[name: envoy].image",
        "envoyproxy/envoy:v1.31.0",
        tests=[("spec.containers[name: envoy]", "MustNotExist")],
    )
    obj = checkout_pod()
    before = deep_copy(obj)
    assert not apply(m, obj)
    assert obj == before

    del obj["spec"]["containers"][1]
    assert apply(m, obj)
    assert obj["spec"]["containers"][-1] == {"name": "envoy", "image": "envoyproxy/envoy:v1.31.0"}


def test_path_test_must_exist_on_a_keyed_element_forbids_appending() -> None:
    m = assign("spec.containers[name: debug].stdin", True, tests=[("spec.containers[name: debug]", "MustExist")])
    obj = checkout_pod()
    assert not apply(m, obj)
    assert [c["name"] for c in obj["spec"]["containers"]] == ["app", "envoy"]


def test_path_test_must_not_exist_on_a_parent_forbids_descending() -> None:
    m = assign(
        "spec.template.spec.securityContext.runAsNonRoot",
        True,
        tests=[("spec.template.spec.securityContext", "MustNotExist")],
        apply_to=DEPLOYMENT_V1,
    )
    obj = web_deployment()
    assert apply(m, obj)
    assert obj["spec"]["template"]["spec"]["securityContext"] == {"runAsNonRoot": True}
    obj["spec"]["template"]["spec"]["securityContext"] = {"fsGroup": 2000}
    assert not apply(m, obj)
    assert obj["spec"]["template"]["spec"]["securityContext"] == {"fsGroup": 2000}


def test_path_test_must_not_exist_on_a_terminal_keyed_element() -> None:
    value = {"name": "app", "image": "busybox"}
    m = assign("spec.containers[name: app]", value, tests=[("spec.containers[name: app]", "MustNotExist")])
    obj = checkout_pod()
    assert not apply(m, obj)
    assert obj["spec"]["containers"][0]["image"] == "registry.example.com/shop/checkout:2.4.1"


# --------------------------------------------------------------------------- fromMetadata


def test_from_metadata_namespace_and_name() -> None:
    by_ns = mutator_from_resource(
        resource(
            "Assign",
            "spec.containers[name: app].env[name: POD_NAMESPACE].value",
            {"assign": {"fromMetadata": {"field": "namespace"}}},
        )
    )
    by_name = mutator_from_resource(
        resource("Assign", "spec.hostname", {"assign": {"fromMetadata": {"field": "name"}}}, name="hostname")
    )
    obj = checkout_pod()
    assert apply(by_ns, obj)
    assert apply(by_name, obj)
    assert containers(obj)["app"]["env"] == [{"name": "POD_NAMESPACE", "value": "shop"}]
    assert obj["spec"]["hostname"] == "checkout-5c8d"
    assert not apply(by_ns, obj)
    assert not apply(by_name, obj)


def test_from_metadata_missing_field_gives_an_empty_string() -> None:
    m = mutator_from_resource(resource("Assign", "spec.hostname", {"assign": {"fromMetadata": {"field": "namespace"}}}))
    obj = checkout_pod()
    del obj["metadata"]["namespace"]
    assert apply(m, obj)
    assert obj["spec"]["hostname"] == ""


# --------------------------------------------------------------------------- AssignMetadata


def test_assign_metadata_adds_a_label() -> None:
    m = assign_metadata("metadata.labels.cost-center", "cc-4711")
    obj = checkout_pod()
    assert apply(m, obj)
    assert obj["metadata"]["labels"] == {"app": "checkout", "cost-center": "cc-4711"}


def test_assign_metadata_never_overwrites() -> None:
    m = assign_metadata("metadata.labels.app", "something-else")
    obj = checkout_pod()
    assert not apply(m, obj)
    assert obj["metadata"]["labels"]["app"] == "checkout"


def test_assign_metadata_never_overwrites_an_empty_value() -> None:
    m = assign_metadata("metadata.annotations.owner", "platform")
    obj = checkout_pod()
    obj["metadata"]["annotations"] = {"owner": ""}
    assert not apply(m, obj)
    assert obj["metadata"]["annotations"] == {"owner": ""}


def test_assign_metadata_creates_the_annotations_map_with_a_quoted_key() -> None:
    m = assign_metadata('metadata.annotations."example.com/owner"', "team-shop")
    obj = checkout_pod()
    assert apply(m, obj)
    assert obj["metadata"]["annotations"] == {"example.com/owner": "team-shop"}


def test_assign_metadata_needs_no_apply_to_and_applies_to_any_kind() -> None:
    m = assign_metadata("metadata.labels.managed", "yes")
    assert m.apply_to == ()
    obj = web_deployment()
    assert m.matches(Mutable(obj))
    assert apply(m, obj)
    assert obj["metadata"]["labels"] == {"managed": "yes"}


def test_assign_metadata_from_metadata_namespace() -> None:
    m = mutator_from_resource(
        resource("AssignMetadata", "metadata.labels.namespace", {"assign": {"fromMetadata": {"field": "namespace"}}})
    )
    obj = checkout_pod()
    assert apply(m, obj)
    assert obj["metadata"]["labels"]["namespace"] == "shop"


# --------------------------------------------------------------------------- ModifySet


def test_modify_set_merge_appends_missing_values_in_order() -> None:
    m = modify_set("spec.containers[name: app].args", ["--log-level=info", "--port=8080", "--tracing"])
    obj = checkout_pod()
    assert apply(m, obj)
    assert containers(obj)["app"]["args"] == ["--port=8080", "--log-level=info", "--tracing"]
    assert not apply(m, obj)


def test_modify_set_operation_defaults_to_merge() -> None:
    m = modify_set("spec.containers[name: app].args", ["--tracing"])
    assert isinstance(m, ModifySet)
    assert m.operation == "merge"


def test_modify_set_merge_creates_the_list() -> None:
    m = modify_set("spec.containers[name: *].securityContext.capabilities.drop", ["ALL"], "merge")
    obj = checkout_pod()
    assert apply(m, obj)
    by_name = containers(obj)
    assert by_name["app"]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert by_name["envoy"]["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_modify_set_merge_keeps_existing_duplicates() -> None:
    m = modify_set("spec.containers[name: envoy].securityContext.capabilities.add", ["NET_RAW", "CHOWN"])
    obj = checkout_pod()
    assert apply(m, obj)
    assert containers(obj)["envoy"]["securityContext"]["capabilities"]["add"] == [
        "NET_ADMIN",
        "NET_RAW",
        "SYS_TIME",
        "NET_RAW",
        "CHOWN",
    ]


def test_modify_set_merge_of_repeated_values_is_the_same_for_a_missing_and_an_empty_list() -> None:
    # fromList holding a value twice: creating the list and merging into [] must agree (Gatekeeper copies
    # fromList when the list is missing and appends every value not found in the existing list).
    m = modify_set("spec.containers[name: app].command", ["/entrypoint", "/entrypoint"])
    missing = checkout_pod()
    empty = checkout_pod()
    containers(empty)["app"]["command"] = []
    apply(m, missing)
    apply(m, empty)
    assert containers(empty)["app"]["command"] == containers(missing)["app"]["command"]


def test_modify_set_prune_removes_every_copy_and_keeps_order() -> None:
    m = modify_set("spec.containers[name: *].securityContext.capabilities.add", ["NET_RAW", "SYS_ADMIN"], "prune")
    obj = checkout_pod()
    assert apply(m, obj)
    assert containers(obj)["envoy"]["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "SYS_TIME"]
    assert not apply(m, obj)


def test_modify_set_prune_never_creates_the_list() -> None:
    m = modify_set("spec.containers[name: app].command", ["sh"], "prune")
    obj = checkout_pod()
    before = deep_copy(obj)
    assert not apply(m, obj)
    assert obj == before


def test_modify_set_prune_creates_missing_parents_but_not_the_list() -> None:
    # Like Gatekeeper's walk: missing object fields on the way are created, the set itself is not.
    m = modify_set("spec.containers[name: app].securityContext.capabilities.add", ["NET_RAW"], "prune")
    obj = checkout_pod()
    apply(m, obj)
    assert containers(obj)["app"]["securityContext"] == {"runAsUser": 1000, "capabilities": {}}


def test_modify_set_prune_to_empty_leaves_an_empty_list() -> None:
    m = modify_set("spec.containers[name: app].args", ["--port=8080"], "prune")
    obj = checkout_pod()
    assert apply(m, obj)
    assert containers(obj)["app"]["args"] == []


TOLERATION = {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}


def test_modify_set_merge_object_members_by_deep_equality() -> None:
    m = modify_set("spec.tolerations", [TOLERATION])
    obj = checkout_pod()
    obj["spec"]["tolerations"] = [{"effect": "NoSchedule", "value": "gpu", "operator": "Equal", "key": "dedicated"}]
    assert not apply(m, obj)  # same object, other key order
    assert len(obj["spec"]["tolerations"]) == 1

    obj["spec"]["tolerations"] = [{**TOLERATION, "tolerationSeconds": 60}]
    assert apply(m, obj)
    assert obj["spec"]["tolerations"] == [{**TOLERATION, "tolerationSeconds": 60}, TOLERATION]


def test_modify_set_prune_object_members_needs_full_equality() -> None:
    m = modify_set("spec.tolerations", [TOLERATION], "prune")
    obj = checkout_pod()
    near = {**TOLERATION, "value": "cpu"}
    obj["spec"]["tolerations"] = [TOLERATION, near, dict(TOLERATION)]
    assert apply(m, obj)
    assert obj["spec"]["tolerations"] == [near]


def test_modify_set_values_compare_as_json() -> None:
    m = modify_set("spec.template.spec.containers[name: nginx].ports", [80, True], apply_to=DEPLOYMENT_V1)
    obj = web_deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["ports"] = [80.0, 1, "True"]
    assert apply(m, obj)
    assert obj["spec"]["template"]["spec"]["containers"][0]["ports"] == [80.0, 1, "True", True]


def test_modify_set_prune_compares_as_json() -> None:
    m = modify_set("spec.template.spec.containers[name: nginx].ports", [True, 80], "prune", apply_to=DEPLOYMENT_V1)
    obj = web_deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["ports"] = [1, True, "80", 80.0, 0, False]
    assert apply(m, obj)
    assert obj["spec"]["template"]["spec"]["containers"][0]["ports"] == [1, "80", 0, False]


def test_modify_set_merged_values_are_copies() -> None:
    m = modify_set("spec.tolerations", [TOLERATION])
    first, second = checkout_pod(), checkout_pod()
    apply(m, first)
    first["spec"]["tolerations"][0]["value"] = "changed"
    apply(m, second)
    assert second["spec"]["tolerations"] == [TOLERATION]


def test_modify_set_on_a_non_list_is_a_mutation_error() -> None:
    m = modify_set("spec.serviceAccountName", ["x"])
    with pytest.raises(MutationError, match="not a list"):
        apply(m, checkout_pod())
    prune = modify_set("spec.serviceAccountName", ["x"], "prune")
    with pytest.raises(MutationError, match="not a list"):
        apply(prune, checkout_pod())


# --------------------------------------------------------------------------- AssignImage


@pytest.mark.parametrize(
    ("image", "parts", "expected"),
    [
        ("nginx:1.27", {"assignDomain": "mirror.example.com"}, "mirror.example.com/nginx:1.27"),
        (
            "docker.io/library/nginx:1.27",
            {"assignDomain": "mirror.example.com"},
            "mirror.example.com/library/nginx:1.27",
        ),
        ("library/nginx", {"assignDomain": "mirror.example.com"}, "mirror.example.com/library/nginx"),
        ("localhost/app:dev", {"assignDomain": "registry.example.com"}, "registry.example.com/app:dev"),
        (
            "localhost:5000/team/app:v1",
            {"assignDomain": "registry.example.com:443"},
            "registry.example.com:443/team/app:v1",
        ),
        ("ghcr.io/acme/api:2.0", {"assignDomain": "localhost:5000"}, "localhost:5000/acme/api:2.0"),
        ("ghcr.io/acme/api:2.0", {"assignPath": "acme/api-hardened"}, "ghcr.io/acme/api-hardened:2.0"),
        ("api:2.0", {"assignPath": "acme/api"}, "acme/api:2.0"),
        ("ghcr.io/acme/api:2.0", {"assignTag": ":2.1"}, "ghcr.io/acme/api:2.1"),
        ("ghcr.io/acme/api", {"assignTag": ":2.1"}, "ghcr.io/acme/api:2.1"),
        ("ghcr.io/acme/api:2.0", {"assignTag": "@" + DIGEST}, "ghcr.io/acme/api@" + DIGEST),
        ("ghcr.io/acme/api@" + DIGEST, {"assignTag": ":latest"}, "ghcr.io/acme/api:latest"),
        ("registry.example.com:5000/api:1", {"assignTag": ":2"}, "registry.example.com:5000/api:2"),
        (
            "ghcr.io/acme/api:2.0",
            {"assignDomain": "mirror.example.com", "assignPath": "mirror/api", "assignTag": ":3.0"},
            "mirror.example.com/mirror/api:3.0",
        ),
    ],
)
def test_assign_image_replaces_only_the_given_parts(image: str, parts: dict[str, str], expected: str) -> None:
    m = assign_image("spec.containers[name: app].image", **parts)
    obj = checkout_pod()
    containers(obj)["app"]["image"] = image
    assert apply(m, obj)
    assert containers(obj)["app"]["image"] == expected
    assert not apply(m, obj)  # idempotent


def test_assign_image_glob_over_containers() -> None:
    m = assign_image("spec.containers[name: *].image", assignDomain="mirror.example.com")
    obj = checkout_pod()
    assert apply(m, obj)
    assert [c["image"] for c in obj["spec"]["containers"]] == [
        "mirror.example.com/shop/checkout:2.4.1",
        "mirror.example.com/envoyproxy/envoy:v1.30.1",
    ]


def test_assign_image_unchanged_when_already_right() -> None:
    m = assign_image("spec.containers[name: app].image", assignDomain="registry.example.com", assignTag=":2.4.1")
    obj = checkout_pod()
    assert not apply(m, obj)


def test_assign_image_on_a_non_string_is_a_mutation_error() -> None:
    m = assign_image("spec.containers[name: app].image", assignTag=":v1")
    obj = checkout_pod()
    containers(obj)["app"]["image"] = {"repository": "nginx"}
    with pytest.raises(MutationError, match="not a string"):
        apply(m, obj)


# --------------------------------------------------------------------------- type clashes


def test_object_step_on_a_list_is_a_mutation_error() -> None:
    m = assign("spec.containers.image", "nginx")
    with pytest.raises(MutationError, match="mismatch between path entry") as info:
        apply(m, checkout_pod())
    assert "type: object" in str(info.value)


def test_list_step_on_an_object_is_a_mutation_error() -> None:
    m = assign("spec.securityContext[name: x].value", "y")
    obj = checkout_pod()
    obj["spec"]["securityContext"] = {"runAsUser": 0}
    with pytest.raises(MutationError, match="type: List"):
        apply(m, obj)


def test_object_step_on_a_scalar_is_a_mutation_error() -> None:
    m = assign("spec.serviceAccountName.name", "x")
    with pytest.raises(MutationError, match="mismatch"):
        apply(m, checkout_pod())


# --------------------------------------------------------------------------- matches: applyTo and match


def test_apply_to_limits_the_kinds_a_mutator_touches() -> None:
    m = assign("spec.priority", 100)
    assert m.matches(Mutable(checkout_pod()))
    assert not m.matches(Mutable(web_deployment()))
    old_pod = {**checkout_pod(), "apiVersion": "v1beta1"}
    assert not m.matches(Mutable(old_pod))


def test_match_criteria_are_applied() -> None:
    m = assign(
        "spec.priority", 100, match={"namespaces": ["shop"], "labelSelector": {"matchLabels": {"app": "checkout"}}}
    )
    assert m.matches(Mutable(checkout_pod()))
    elsewhere = checkout_pod()
    elsewhere["metadata"]["namespace"] = "cart"
    assert not m.matches(Mutable(elsewhere))
    unlabelled = checkout_pod()
    unlabelled["metadata"]["labels"] = {}
    assert not m.matches(Mutable(unlabelled))


def test_match_uses_the_mutables_namespace_and_source() -> None:
    m = assign(
        "spec.priority", 100, match={"namespaceSelector": {"matchLabels": {"env": "prod"}}, "source": "Generated"}
    )
    prod = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"env": "prod"}}}
    assert m.matches(Mutable(checkout_pod(), prod, source="Generated"))
    assert not m.matches(Mutable(checkout_pod(), prod, source="Original"))


# --------------------------------------------------------------------------- construction errors


def _error(doc: dict[str, Any]) -> str:
    with pytest.raises(PolicyError) as info:
        mutator_from_resource(doc)
    return str(info.value)


CONSTRUCTION_ERRORS = [
    pytest.param(
        resource("Assign", "spec.containers[name: app*]", {"assign": {"value": 1}}), "spec.location", id="bad-location"
    ),
    pytest.param(resource("Assign", "spec.", {"assign": {"value": 1}}), "spec.location", id="trailing-dot"),
    pytest.param(
        resource("Assign", "metadata.labels.x", {"assign": {"value": "y"}}), "spec.location", id="assign-metadata-root"
    ),
    pytest.param(
        resource("Assign", "spec.containers[name: app].name", {"assign": {"value": "x"}}),
        "spec.location",
        id="assign-changes-key",
    ),
    pytest.param(
        resource("Assign", "spec.containers[name: *]", {"assign": {"value": {"name": "x"}}}),
        "spec.location",
        id="assign-glob-terminal",
    ),
    pytest.param(
        resource("Assign", "spec.containers[name: app]", {"assign": {"value": {"name": "web"}}}),
        "spec.parameters.assign.value",
        id="assign-element-key-differs",
    ),
    pytest.param(
        resource("Assign", "spec.containers[name: app]", {"assign": {"value": {"image": "x"}}}),
        "spec.parameters.assign.value",
        id="assign-element-key-missing",
    ),
    pytest.param(
        resource("Assign", "spec.containers[name: app]", {"assign": {"value": "nginx"}}),
        "spec.parameters.assign.value",
        id="assign-element-not-object",
    ),
    pytest.param(
        resource("Assign", "spec.containers[name: app]", {"assign": {"fromMetadata": {"field": "name"}}}),
        "spec.parameters.assign.fromMetadata",
        id="assign-element-from-metadata",
    ),
    pytest.param(resource("Assign", "spec.priority", {}), "spec.parameters.assign", id="assign-no-value"),
    pytest.param(
        resource("Assign", "spec.priority", {"assign": {"value": 1, "fromMetadata": {"field": "name"}}}),
        "spec.parameters.assign",
        id="assign-two-sources",
    ),
    pytest.param(
        resource("Assign", "spec.priority", {"assign": {"fromMetadata": {"field": "uid"}}}),
        "spec.parameters.assign.fromMetadata.field",
        id="from-metadata-unknown-field",
    ),
    pytest.param(
        resource("Assign", "spec.priority", {"assign": {"externalData": {"provider": "p"}}}),
        "spec.parameters.assign.externalData",
        id="external-data",
    ),
    pytest.param(
        {
            **resource("Assign", "spec.priority", {"assign": {"value": 1}}),
            "spec": {"location": "spec.priority", "parameters": {"assign": {"value": 1}}},
        },
        "spec.applyTo",
        id="assign-no-apply-to",
    ),
    pytest.param(
        resource("Assign", "spec.priority", {"assign": {"value": 1}}, apply_to=[]),
        "spec.applyTo",
        id="assign-empty-apply-to",
    ),
    pytest.param(
        resource("Assign", "spec.priority", {"assign": {"value": 1}}, apply_to={"groups": [""]}),
        "spec.applyTo",
        id="apply-to-not-list",
    ),
    pytest.param(
        resource(
            "Assign",
            "spec.priority",
            {"assign": {"value": 1}, "pathTests": [{"subPath": "spec.containers", "condition": "MustExist"}]},
        ),
        "spec.parameters.pathTests",
        id="path-test-not-prefix",
    ),
    pytest.param(
        resource(
            "Assign",
            "spec.priority",
            {"assign": {"value": 1}, "pathTests": [{"subPath": "spec", "condition": "ShouldExist"}]},
        ),
        "spec.parameters.pathTests",
        id="path-test-bad-condition",
    ),
    pytest.param(
        resource(
            "Assign",
            "spec.a.b",
            {
                "assign": {"value": 1},
                "pathTests": [
                    {"subPath": "spec.a", "condition": "MustNotExist"},
                    {"subPath": "spec.a.b", "condition": "MustExist"},
                ],
            },
        ),
        "spec.parameters.pathTests",
        id="path-test-contradiction",
    ),
    pytest.param(
        resource(
            "Assign",
            "spec.priority",
            {"assign": {"value": 1}, "pathTests": [{"subPath": "spec.", "condition": "MustExist"}]},
        ),
        "spec.parameters.pathTests[0].subPath",
        id="path-test-bad-subpath",
    ),
    pytest.param(
        resource("Assign", "spec.priority", {"assign": {"value": 1}}, match={"source": "Everywhere"}),
        "spec.match.source",
        id="bad-match",
    ),
    pytest.param(
        resource("AssignMetadata", "metadata.name", {"assign": {"value": "x"}}), "spec.location", id="am-not-label"
    ),
    pytest.param(
        resource("AssignMetadata", "metadata.labels", {"assign": {"value": "x"}}), "spec.location", id="am-labels-map"
    ),
    pytest.param(
        resource("AssignMetadata", "spec.labels.x", {"assign": {"value": "x"}}), "spec.location", id="am-not-metadata"
    ),
    pytest.param(
        resource("AssignMetadata", "metadata.labels.replicas", {"assign": {"value": 3}}),
        "spec.parameters.assign.value",
        id="am-not-string",
    ),
    pytest.param(
        resource("ModifySet", "metadata.finalizers", {"values": {"fromList": ["x"]}}), "spec.location", id="ms-metadata"
    ),
    pytest.param(
        resource("ModifySet", "spec.containers[name: app]", {"values": {"fromList": ["x"]}}),
        "spec.location",
        id="ms-keyed-terminal",
    ),
    pytest.param(
        resource("ModifySet", "spec.args", {"operation": "replace", "values": {"fromList": ["x"]}}),
        "spec.parameters.operation",
        id="ms-bad-operation",
    ),
    pytest.param(
        resource("ModifySet", "spec.args", {"values": {"fromList": "x"}}),
        "spec.parameters.values.fromList",
        id="ms-fromlist-not-list",
    ),
    pytest.param(
        resource("ModifySet", "spec.args", {"values": ["x"]}), "spec.parameters.values", id="ms-values-not-object"
    ),
    pytest.param(
        {**resource("ModifySet", "spec.args", {"values": {"fromList": ["x"]}}), "spec": {"location": "spec.args"}},
        "spec.applyTo",
        id="ms-no-apply-to",
    ),
    pytest.param(resource("AssignImage", "spec.image", {}), "spec.parameters", id="ai-no-parts"),
    pytest.param(resource("AssignImage", "spec.image", {"assignTag": "v1"}), "spec.parameters", id="ai-tag-no-colon"),
    pytest.param(
        resource("AssignImage", "spec.image", {"assignTag": "@sha256:short"}), "spec.parameters", id="ai-bad-digest"
    ),
    pytest.param(
        resource("AssignImage", "spec.image", {"assignDomain": "no_underscores.example.com"}),
        "spec.parameters",
        id="ai-bad-domain",
    ),
    pytest.param(
        resource("AssignImage", "spec.image", {"assignDomain": "registry"}), "spec.parameters", id="ai-domain-not-fqdn"
    ),
    pytest.param(
        resource("AssignImage", "spec.image", {"assignPath": "Acme/API"}), "spec.parameters", id="ai-bad-path"
    ),
    pytest.param(
        resource("AssignImage", "spec.image", {"assignPath": "ghcr.io/acme/api"}),
        "spec.parameters",
        id="ai-path-looks-like-domain",
    ),
    pytest.param(
        resource("AssignImage", "metadata.annotations.image", {"assignTag": ":v1"}), "spec.location", id="ai-metadata"
    ),
    pytest.param(
        resource("AssignImage", "spec.containers[name: app]", {"assignTag": ":v1"}),
        "spec.location",
        id="ai-list-terminal",
    ),
    pytest.param(
        resource("AssignImage", "spec.image", {"assignTag": ":v1"}, api_version="v1"),
        "apiVersion",
        id="ai-not-served-v1",
    ),
    pytest.param(
        {"apiVersion": f"{GROUP}/v1", "kind": "AssignEverything", "metadata": {"name": "x"}}, "kind", id="bad-kind"
    ),
    pytest.param(
        {"apiVersion": f"{GROUP}/v1", "kind": "Assign", "spec": {"location": "spec.x"}}, "metadata", id="no-metadata"
    ),
    pytest.param(resource("Assign", "spec.x", {"assign": {"value": 1}}, name=""), "metadata.name", id="no-name"),
    pytest.param(
        resource("Assign", "spec.x", {"assign": {"value": 1}}, name="n" * 64), "metadata.name", id="name-too-long"
    ),
    pytest.param(
        {**resource("Assign", "spec.x", {"assign": {"value": 1}}), "spec": ["location"]}, "spec", id="spec-not-object"
    ),
    pytest.param(
        {**resource("Assign", "spec.x"), "spec": {"location": 5, "applyTo": POD_V1}},
        "spec.location",
        id="location-not-string",
    ),
    pytest.param(
        {**resource("Assign", "spec.x"), "spec": {"location": "spec.x", "applyTo": POD_V1, "parameters": ["assign"]}},
        "spec.parameters",
        id="parameters-not-object",
    ),
]


@pytest.mark.parametrize(("doc", "field"), CONSTRUCTION_ERRORS)
def test_construction_errors_name_the_field(doc: dict[str, Any], field: str) -> None:
    message = _error(doc)
    assert message.startswith(field + ":"), message


def test_location_error_message_quotes_the_location_and_mutator() -> None:
    message = _error(resource("Assign", "spec..x", {"assign": {"value": 1}}, name="bad-one"))
    assert "`spec..x`" in message
    assert "bad-one" in message


def test_apply_to_error_names_the_mutator() -> None:
    doc = resource("Assign", "spec.x", {"assign": {"value": 1}}, name="needs-apply-to")
    del doc["spec"]["applyTo"]
    assert "needs-apply-to" in _error(doc)


def test_name_of_63_characters_is_fine() -> None:
    assert mutator_from_resource(resource("Assign", "spec.x", {"assign": {"value": 1}}, name="n" * 63)).name == "n" * 63


def test_assign_metadata_rejects_list_and_deeper_locations() -> None:
    assert "spec.location" in _error(resource("AssignMetadata", "metadata.labels.a.b", {"assign": {"value": "x"}}))
    assert "spec.location" in _error(resource("AssignMetadata", "metadata.labels[k: v]", {"assign": {"value": "x"}}))


def test_metadata_below_the_root_is_allowed() -> None:
    m = assign("spec.template.metadata.labels.sidecar", "injected", apply_to=DEPLOYMENT_V1)
    obj = web_deployment()
    assert apply(m, obj)
    assert obj["spec"]["template"]["metadata"]["labels"] == {"app": "web", "sidecar": "injected"}


# --------------------------------------------------------------------------- helpers of core


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (3000, 3000.0, True),
        (True, 1, False),
        (False, 0, False),
        ("1", 1, False),
        (None, None, True),
        (None, {}, False),
        ({"a": [1, {"b": "c"}]}, {"a": [1, {"b": "c"}]}, True),
        ({"a": [1, 2]}, {"a": [2, 1]}, False),
        ({"a": 1}, {"a": 1, "b": None}, False),
        ([], {}, False),
    ],
)
def test_json_equal(a: Any, b: Any, expected: bool) -> None:
    assert json_equal(a, b) is expected
    assert json_equal(b, a) is expected


def test_deep_copy_is_independent() -> None:
    original = {"spec": {"containers": [{"name": "app", "args": ["a"]}]}}
    copy = deep_copy(original)
    copy["spec"]["containers"][0]["args"].append("b")
    assert original == {"spec": {"containers": [{"name": "app", "args": ["a"]}]}}


@pytest.mark.parametrize(
    ("value", "rendered"),
    [(None, "<nil>"), (True, "true"), ({"b": 1, "a": [1, "x"]}, "map[a:[1 x] b:1]"), ("s", "s")],
)
def test_go_repr(value: Any, rendered: str) -> None:
    assert go_repr(value) == rendered
