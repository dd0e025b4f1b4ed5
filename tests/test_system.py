"""The mutation system: order, passes until convergence, schema conflicts (mutator.mutation.system)."""

from __future__ import annotations

from typing import Any

import pytest

from mutator.mutation import (
    Assign,
    Mutable,
    MutationError,
    MutationResult,
    MutationSystem,
    Mutator,
    mutator_from_resource,
)
from mutator.mutation.core import deep_copy

GROUP = "mutations.gatekeeper.sh"
POD_V1 = [{"groups": [""], "versions": ["v1"], "kinds": ["Pod"]}]
DEPLOYMENT_V1 = [{"groups": ["apps"], "versions": ["v1"], "kinds": ["Deployment"]}]

# --------------------------------------------------------------------------- fixtures of our own


def doc(
    kind: str,
    name: str,
    location: str,
    parameters: dict[str, Any],
    *,
    namespace: str | None = None,
    apply_to: list[dict[str, Any]] | None = None,
    match: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"location": location, "parameters": parameters}
    if kind != "AssignMetadata":
        spec["applyTo"] = apply_to or POD_V1
    if match is not None:
        spec["match"] = match
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    version = "v1alpha1" if kind == "AssignImage" else "v1"
    return {"apiVersion": f"{GROUP}/{version}", "kind": kind, "metadata": meta, "spec": spec}


def assign(name: str, location: str, value: Any, **kw: Any) -> Mutator:
    params: dict[str, Any] = {"assign": {"value": value}}
    if "tests" in kw:
        params["pathTests"] = [{"subPath": s, "condition": c} for s, c in kw.pop("tests")]
    return mutator_from_resource(doc("Assign", name, location, params, **kw))


def assign_metadata(name: str, location: str, value: str, **kw: Any) -> Mutator:
    return mutator_from_resource(doc("AssignMetadata", name, location, {"assign": {"value": value}}, **kw))


def modify_set(name: str, location: str, values: list[Any], operation: str = "merge", **kw: Any) -> Mutator:
    params = {"operation": operation, "values": {"fromList": values}}
    return mutator_from_resource(doc("ModifySet", name, location, params, **kw))


def assign_image(name: str, location: str, **parts: str) -> Mutator:
    return mutator_from_resource(doc("AssignImage", name, location, dict(parts)))


def system_of(*mutators: Mutator) -> MutationSystem:
    system = MutationSystem()
    for m in mutators:
        assert system.upsert(m) is None
    return system


def payments_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "payments-api-0", "namespace": "payments", "labels": {"app": "payments-api"}},
        "spec": {
            "containers": [
                {"name": "api", "image": "payments/api:4.2.0", "ports": [{"containerPort": 8443}]},
                {"name": "vault-agent", "image": "hashicorp/vault:1.16"},
            ]
        },
    }


def api_deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "payments", "labels": {"app": "api"}},
        "spec": {
            "replicas": 3,
            "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {
                    "containers": [
                        {"name": "api", "image": "payments/api:4.2.0", "args": ["--listen=:8443"]},
                        {"name": "proxy", "image": "docker.io/envoyproxy/envoy:v1.30.1"},
                    ]
                },
            },
        },
    }


def run(system: MutationSystem, obj: dict[str, Any], namespace: dict[str, Any] | None = None) -> MutationResult:
    return system.mutate(Mutable(obj, namespace))


# --------------------------------------------------------------------------- order


def test_mutators_are_kept_in_id_order() -> None:
    system = system_of(
        modify_set("a-args", "spec.containers[name: *].args", ["--v=1"]),
        assign_metadata("a-owner", "metadata.labels.owner", "payments"),
        assign("b-policy", "spec.containers[name: *].imagePullPolicy", "Always"),
        assign_image("a-mirror", "spec.containers[name: *].image", assignDomain="mirror.example.com"),
        assign("a-priority", "spec.priorityClassName", "high"),
    )
    assert [(m.kind, m.name) for m in system.mutators()] == [
        ("Assign", "a-priority"),
        ("Assign", "b-policy"),
        ("AssignImage", "a-mirror"),
        ("AssignMetadata", "a-owner"),
        ("ModifySet", "a-args"),
    ]


def test_namespace_orders_before_name() -> None:
    system = system_of(
        assign("aaa", "spec.x", 1, namespace="team-b"),
        assign("zzz", "spec.y", 1, namespace="team-a"),
        assign("mmm", "spec.z", 1),
    )
    assert [(m.id.namespace, m.name) for m in system.mutators()] == [("", "mmm"), ("team-a", "zzz"), ("team-b", "aaa")]


def test_the_later_mutator_of_two_on_one_field_wins() -> None:
    if_not_present = assign("a-pull-if-not-present", "spec.containers[name: *].imagePullPolicy", "IfNotPresent")
    always = assign("b-pull-always", "spec.containers[name: *].imagePullPolicy", "Always")
    obj = payments_pod()
    result = run(system_of(always, if_not_present), obj)
    assert [c["imagePullPolicy"] for c in obj["spec"]["containers"]] == ["Always", "Always"]
    # the pass that rewrites the field to the same final value counts as no change
    assert result == MutationResult(changed=True, passes=2)

    renamed = assign("c-pull-if-not-present", "spec.containers[name: *].imagePullPolicy", "IfNotPresent")
    obj = payments_pod()
    run(system_of(always, renamed), obj)
    assert [c["imagePullPolicy"] for c in obj["spec"]["containers"]] == ["IfNotPresent", "IfNotPresent"]


def test_kind_orders_before_name() -> None:
    # AssignImage "a-..." still runs after Assign "z-...": kinds sort first.
    pin = assign("z-pin-api-image", "spec.containers[name: api].image", "payments/api:4.1.9")
    mirror = assign_image("a-mirror", "spec.containers[name: *].image", assignDomain="mirror.example.com")
    obj = payments_pod()
    run(system_of(mirror, pin), obj)
    assert [c["image"] for c in obj["spec"]["containers"]] == [
        "mirror.example.com/payments/api:4.1.9",
        "mirror.example.com/hashicorp/vault:1.16",
    ]


def test_modify_set_runs_after_assign() -> None:
    reset = assign("z-reset-args", "spec.containers[name: api].args", ["--listen=:8443"])
    extra = modify_set("a-add-flag", "spec.containers[name: api].args", ["--metrics"])
    obj = payments_pod()
    run(system_of(extra, reset), obj)
    assert obj["spec"]["containers"][0]["args"] == ["--listen=:8443", "--metrics"]


# --------------------------------------------------------------------------- passes and convergence


def test_no_matching_change_is_zero_passes() -> None:
    system = system_of(assign("replicas", "spec.replicas", 3, apply_to=DEPLOYMENT_V1))
    obj = api_deployment()
    before = deep_copy(obj)
    assert run(system, obj) == MutationResult(changed=False, passes=0)
    assert obj == before


def test_empty_system_changes_nothing() -> None:
    obj = payments_pod()
    assert run(MutationSystem(), obj) == MutationResult(changed=False, passes=0)


def test_a_single_change_takes_two_passes() -> None:
    system = system_of(assign("replicas", "spec.replicas", 5, apply_to=DEPLOYMENT_V1))
    obj = api_deployment()
    assert run(system, obj) == MutationResult(changed=True, passes=2)
    assert obj["spec"]["replicas"] == 5


def test_mutation_is_in_place() -> None:
    system = system_of(assign("sa", "spec.serviceAccountName", "payments"))
    obj = payments_pod()
    mutable = Mutable(obj)
    system.mutate(mutable)
    assert mutable.object is obj
    assert obj["spec"]["serviceAccountName"] == "payments"


def test_a_dependency_on_a_later_mutator_takes_an_extra_pass() -> None:
    # "a-..." needs the securityContext that "b-..." creates later in the same pass.
    needs_context = assign(
        "a-non-root",
        "spec.containers[name: *].securityContext.runAsNonRoot",
        True,
        tests=[("spec.containers[name: *].securityContext", "MustExist")],
    )
    creates_context = assign("b-read-only", "spec.containers[name: api].securityContext.readOnlyRootFilesystem", True)
    obj = payments_pod()
    result = run(system_of(needs_context, creates_context), obj)
    assert result == MutationResult(changed=True, passes=3)
    api, vault = obj["spec"]["containers"]
    assert api["securityContext"] == {"readOnlyRootFilesystem": True, "runAsNonRoot": True}
    assert "securityContext" not in vault


def test_label_chain_converges_at_the_pass_limit() -> None:
    # "a-tier" only matches once "b-team" has labelled the object, one pass later: n + 1 = 3 passes.
    tier = assign_metadata(
        "a-tier",
        "metadata.labels.tier",
        "backend",
        match={"labelSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]}},
    )
    team = assign_metadata("b-team", "metadata.labels.team", "payments")
    obj = payments_pod()
    result = run(system_of(tier, team), obj)
    assert result == MutationResult(changed=True, passes=3)
    assert obj["metadata"]["labels"] == {"app": "payments-api", "team": "payments", "tier": "backend"}


class CountingAssign(Assign):
    """A test-only Assign whose value counts up by one on every application, up to ``limit``.

    No real mutator kind behaves like this (each is idempotent, and the pass comparison absorbs two
    mutators rewriting each other's field), which is what makes it a clean probe of the pass limit."""

    limit = 1_000_000

    def set_value(self, parent: dict[str, Any], key: str, ctx: Any) -> bool:
        current = parent.get(key, 0)
        if current >= self.limit:
            return False
        parent[key] = current + 1
        return True


def counting(name: str, limit: int) -> CountingAssign:
    m = CountingAssign(doc("Assign", name, "metadata2.revision", {"assign": {"value": 0}}))
    m.limit = limit
    return m


def test_not_converging_is_an_error() -> None:
    system = system_of(counting("restless", 10**9))
    obj = payments_pod()
    with pytest.raises(MutationError) as info:
        run(system, obj)
    message = str(info.value)
    assert "not converging" in message
    assert "v1 Pod payments/payments-api-0" in message
    assert "after 2 passes" in message
    assert "Assign.mutations.gatekeeper.sh /restless" in message


@pytest.mark.parametrize(("idle", "limit", "converges"), [(0, 1, True), (0, 2, False), (2, 3, True), (2, 4, False)])
def test_pass_limit_is_number_of_mutators_plus_one(idle: int, limit: int, converges: bool) -> None:
    mutators: list[Mutator] = [counting("counter", limit)]
    mutators += [assign(f"idle-{i}", f"spec.idle{i}", "x", apply_to=DEPLOYMENT_V1) for i in range(idle)]
    system = system_of(*mutators)
    obj = payments_pod()
    if converges:
        assert run(system, obj) == MutationResult(changed=True, passes=limit + 1)
        assert obj["metadata2"]["revision"] == limit
    else:
        with pytest.raises(MutationError, match=f"not converging .* after {idle + 2} passes"):
            run(system, obj)


def test_mutators_that_rewrite_each_other_still_converge() -> None:
    # ModifySet merge then prune of the same value, both every pass: the pass result is stable.
    merge = modify_set("a-merge", "spec.containers[name: api].args", ["--debug"])
    prune = modify_set("b-prune", "spec.containers[name: api].args", ["--debug"], "prune")
    obj = payments_pod()
    obj["spec"]["containers"][0]["args"] = ["--debug", "--listen=:8443"]
    result = run(system_of(merge, prune), obj)
    assert result == MutationResult(changed=True, passes=2)
    assert obj["spec"]["containers"][0]["args"] == ["--listen=:8443"]


# --------------------------------------------------------------------------- errors during a request


def test_type_clash_is_reported_with_the_mutator_and_object() -> None:
    system = system_of(assign("bad-shape", "spec.containers.image", "nginx"))
    with pytest.raises(MutationError) as info:
        run(system, payments_pod())
    message = str(info.value)
    assert "Assign.mutations.gatekeeper.sh /bad-shape" in message
    assert "payments/payments-api-0" in message
    assert "mismatch" in message


def test_match_error_is_a_mutation_error() -> None:
    system = system_of(
        assign("needs-ns", "spec.priorityClassName", "high", match={"namespaceSelector": {"matchLabels": {"a": "b"}}})
    )
    with pytest.raises(MutationError, match="failed to run Match criteria"):
        run(system, payments_pod(), namespace=None)
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments", "labels": {"a": "b"}}}
    obj = payments_pod()
    assert run(system, obj, namespace=ns).changed
    assert obj["spec"]["priorityClassName"] == "high"


def test_non_matching_mutators_are_skipped() -> None:
    system = system_of(
        assign("deploy-only", "spec.replicas", 1, apply_to=DEPLOYMENT_V1),
        assign("other-ns", "spec.priorityClassName", "low", match={"namespaces": ["kube-*"]}),
    )
    obj = payments_pod()
    before = deep_copy(obj)
    assert run(system, obj) == MutationResult(changed=False, passes=0)
    assert obj == before


# --------------------------------------------------------------------------- membership


def test_upsert_get_contains_remove() -> None:
    first = assign("sa", "spec.serviceAccountName", "one")
    system = system_of(first)
    assert len(system) == 1
    assert first.id in system
    assert system.get(first.id) is first

    replacement = assign("sa", "spec.serviceAccountName", "two")
    assert system.upsert(replacement) is None
    assert len(system) == 1
    assert system.get(first.id) is replacement
    obj = payments_pod()
    run(system, obj)
    assert obj["spec"]["serviceAccountName"] == "two"

    system.remove(first.id)
    assert len(system) == 0
    assert first.id not in system
    assert system.get(first.id) is None
    system.remove(first.id)  # removing twice is harmless
    assert system.mutators() == []


# --------------------------------------------------------------------------- schema conflicts


def env_by_name() -> Mutator:
    return assign("log-level-by-name", "spec.containers[name: api].env[name: LOG_LEVEL].value", "debug")


def env_by_key() -> Mutator:
    # a mistake: env entries are keyed by name, not key
    return assign("log-level-by-key", "spec.containers[name: api].env[key: LOG_LEVEL].value", "info")


def test_conflicting_key_fields_disable_both() -> None:
    system = MutationSystem()
    by_name, by_key = env_by_name(), env_by_key()
    unrelated = assign("priority", "spec.priorityClassName", "high")
    assert system.upsert(by_name) is None
    assert system.upsert(unrelated) is None
    message = system.upsert(by_key)
    assert message is not None
    assert "conflicting schemas" in message
    assert "Assign.mutations.gatekeeper.sh /log-level-by-name" in message
    assert "Assign.mutations.gatekeeper.sh /log-level-by-key" in message
    assert system.conflicting() == {by_name.id, by_key.id}

    obj = payments_pod()
    result = run(system, obj)
    assert result.changed
    assert obj["spec"]["priorityClassName"] == "high"  # the others still apply
    assert "env" not in obj["spec"]["containers"][0]  # neither of the two did

    system.remove(by_key.id)
    assert system.conflicting() == set()
    obj = payments_pod()
    run(system, obj)
    assert obj["spec"]["containers"][0]["env"] == [{"name": "LOG_LEVEL", "value": "debug"}]


def test_fixing_a_mutator_in_place_lifts_the_conflict() -> None:
    system = MutationSystem()
    system.upsert(env_by_name())
    assert system.upsert(env_by_key()) is not None
    fixed = assign("log-level-by-key", "spec.containers[name: api].env[name: LOG_FORMAT].value", "json")
    assert system.upsert(fixed) is None
    assert system.conflicting() == set()
    obj = payments_pod()
    run(system, obj)
    # "log-level-by-key" sorts before "log-level-by-name", so its element is appended first
    assert obj["spec"]["containers"][0]["env"] == [
        {"name": "LOG_FORMAT", "value": "json"},
        {"name": "LOG_LEVEL", "value": "debug"},
    ]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(
            ("Assign", "spec.containers[name: *].imagePullPolicy", {"assign": {"value": "Always"}}),
            ("Assign", "spec.containers.api.imagePullPolicy", {"assign": {"value": "Always"}}),
            id="list-vs-object",
        ),
        pytest.param(
            ("Assign", "spec.tolerations[key: dedicated].operator", {"assign": {"value": "Exists"}}),
            ("ModifySet", "spec.tolerations", {"values": {"fromList": [{"key": "dedicated"}]}}),
            id="keyed-list-vs-set",
        ),
        pytest.param(
            ("AssignImage", "spec.containers[name: *].image", {"assignTag": ":v1"}),
            ("ModifySet", "spec.containers[name: *].image", {"values": {"fromList": ["x"]}}),
            id="string-vs-set",
        ),
        pytest.param(
            ("ModifySet", "spec.containers[name: *].args", {"values": {"fromList": ["--x"]}}),
            ("Assign", "spec.containers[name: *].args.first", {"assign": {"value": "--x"}}),
            id="set-vs-object",
        ),
    ],
)
def test_shape_conflicts(first: tuple[str, str, dict[str, Any]], second: tuple[str, str, dict[str, Any]]) -> None:
    a = mutator_from_resource(doc(first[0], "first", *first[1:]))
    b = mutator_from_resource(doc(second[0], "second", *second[1:]))
    system = MutationSystem()
    assert system.upsert(a) is None
    assert system.upsert(b) is not None
    assert system.conflicting() == {a.id, b.id}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(
            ("Assign", "spec.containers[name: api].image", {"assign": {"value": "x"}}),
            ("Assign", "spec.containers[name: proxy].image", {"assign": {"value": "y"}}),
            id="same-key-field-other-values",
        ),
        pytest.param(
            ("Assign", "spec.containers[name: *].image", {"assign": {"value": "x"}}),
            ("AssignImage", "spec.containers[name: *].image", {"assignTag": ":v1"}),
            id="assign-terminal-is-any",
        ),
        pytest.param(
            ("Assign", "spec.containers[name: *].securityContext", {"assign": {"value": {}}}),
            ("Assign", "spec.containers[name: *].securityContext.runAsUser", {"assign": {"value": 1000}}),
            id="assign-terminal-vs-deeper-object",
        ),
        pytest.param(
            ("Assign", "spec.containers[name: *].args", {"assign": {"value": ["--x"]}}),
            ("ModifySet", "spec.containers[name: *].args", {"values": {"fromList": ["--y"]}}),
            id="assign-terminal-vs-set",
        ),
    ],
)
def test_compatible_shapes(first: tuple[str, str, dict[str, Any]], second: tuple[str, str, dict[str, Any]]) -> None:
    system = system_of(
        mutator_from_resource(doc(first[0], "first", *first[1:])),
        mutator_from_resource(doc(second[0], "second", *second[1:])),
    )
    assert system.conflicting() == set()


def test_conflicts_are_per_kind() -> None:
    on_pods = assign("pods", "spec.volumes[name: data].emptyDir.medium", "Memory")
    on_deployments = assign("deployments", "spec.volumes.data.emptyDir.medium", "Memory", apply_to=DEPLOYMENT_V1)
    system = system_of(on_pods, on_deployments)
    assert system.conflicting() == set()


def test_assign_metadata_never_conflicts() -> None:
    system = system_of(
        assign_metadata("owner", "metadata.labels.owner", "payments"),
        assign("template-labels", "spec.template.metadata.labels.owner", "payments", apply_to=DEPLOYMENT_V1),
    )
    assert system.conflicting() == set()


# --------------------------------------------------------------------------- idempotence


def baseline_policies() -> list[Mutator]:
    both = POD_V1 + DEPLOYMENT_V1
    return [
        assign("pull-always", "spec.containers[name: *].imagePullPolicy", "Always"),
        assign(
            "template-pull-always",
            "spec.template.spec.containers[name: *].imagePullPolicy",
            "Always",
            apply_to=DEPLOYMENT_V1,
        ),
        assign(
            "no-escalation",
            "spec.template.spec.containers[name: *].securityContext.allowPrivilegeEscalation",
            False,
            apply_to=DEPLOYMENT_V1,
            tests=[("spec.template.spec.containers[name: *].securityContext.allowPrivilegeEscalation", "MustNotExist")],
        ),
        assign(
            "log-shipper",
            "spec.template.spec.containers[name: log-shipper].image",
            "fluent/fluent-bit:3.0",
            apply_to=DEPLOYMENT_V1,
        ),
        assign_image("mirror", "spec.containers[name: *].image", assignDomain="mirror.example.com"),
        assign_metadata("owner", "metadata.labels.owner", "payments-team"),
        modify_set(
            "drop-all",
            "spec.template.spec.containers[name: *].securityContext.capabilities.drop",
            ["ALL"],
            apply_to=both,
        ),
        modify_set("no-debug", "spec.template.spec.containers[name: *].args", ["--debug"], "prune", apply_to=both),
    ]


@pytest.mark.parametrize("make", [payments_pod, api_deployment], ids=["pod", "deployment"])
def test_mutating_the_result_again_changes_nothing(make: Any) -> None:
    system = system_of(*baseline_policies())
    obj = make()
    first = run(system, obj)
    assert first.changed
    assert obj != make()
    once = deep_copy(obj)
    assert run(system, obj) == MutationResult(changed=False, passes=0)
    assert obj == once


def test_baseline_policies_result() -> None:
    system = system_of(*baseline_policies())
    obj = api_deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["args"].append("--debug")
    run(system, obj)
    api, proxy, shipper = obj["spec"]["template"]["spec"]["containers"]
    assert obj["metadata"]["labels"] == {"app": "api", "owner": "payments-team"}
    assert api["args"] == ["--listen=:8443"]
    assert shipper["name"] == "log-shipper"
    for container in (api, proxy, shipper):
        assert container["imagePullPolicy"] == "Always"
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert proxy["image"] == "docker.io/envoyproxy/envoy:v1.30.1"  # the Pod-only mirror did not apply
