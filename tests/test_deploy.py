"""The cluster manifests in deploy/: the kustomize base read as the API server would get it, checked for what
an admission controller must get right (security context, probes, resources, webhook failure behaviour, least
privilege), the Helm chart checked against the base, and `kubectl kustomize` when a kubectl is at hand.

The real API server's view of the same manifests (server-side dry run, RBAC decisions, caBundle patching) is
in tests/e2e/test_deploy_e2e.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mutator.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
BASE = DEPLOY / "base"
CHART = DEPLOY / "helm" / "mutator"
NAMESPACE = "mutator-system"
IGNORE_LABEL = "admission.gatekeeper.sh/ignore"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "impersonate"}

Doc = dict[str, Any]


def load_base() -> list[Doc]:
    docs: list[Doc] = []
    for path in sorted(BASE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                doc["__file__"] = path.name
                docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def base() -> list[Doc]:
    return load_base()


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def deployments(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] == "Deployment"]


def containers(deployment: Doc) -> Iterator[Doc]:
    spec = deployment["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


# --- the files ------------------------------------------------------------------------------------------------


def test_every_document_is_a_kubernetes_object(base: list[Doc]) -> None:
    assert base
    for doc in base:
        assert isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str), doc["__file__"]
        assert doc["metadata"]["name"], doc["__file__"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "mutator", doc["__file__"]
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in base]
    assert len(names) == len(set(names)), "duplicate objects"


def test_kustomization_lists_every_file() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    on_disk = {p.name for p in BASE.iterdir() if p.is_file() and p.name != "kustomization.yaml"}
    assert set(listed) == on_disk


def test_kinds_present(base: list[Doc]) -> None:
    kinds = {d["kind"] for d in base}
    assert kinds == {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }


def test_namespace_is_ignored_by_the_webhooks(base: list[Doc]) -> None:
    ns = one(base, "Namespace", NAMESPACE)
    assert ns["metadata"]["labels"][IGNORE_LABEL] == "no-self-managing"
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"} | {
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
    for doc in base:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"]["namespace"] == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"
        else:
            assert "namespace" not in doc["metadata"]


# --- Deployments ------------------------------------------------------------------------------------------------


def test_pods_run_locked_down(base: list[Doc]) -> None:
    assert len(deployments(base)) == 2
    for dep in deployments(base):
        pod = dep["spec"]["template"]["spec"]
        where = dep["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] != 0, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), where
        for c in containers(dep):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc.get("privileged", False) is False, where
            assert sc["runAsNonRoot"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            for kind in ("requests", "limits"):
                assert set(c["resources"][kind]) == {"cpu", "memory"}, f"{where}: resources.{kind}"
            assert c["image"] == "mutator:latest"


def test_probes_and_certificate(base: list[Doc]) -> None:
    for dep in deployments(base):
        pod = dep["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8443, "scheme": "HTTPS"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8443, "scheme": "HTTPS"}
        assert {p["containerPort"] for p in c["ports"]} == {8443}
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts["cert"] == {"name": "cert", "mountPath": "/certs", "readOnly": True}
        assert volumes["cert"]["secret"]["secretName"] == "mutator-webhook-server-cert"
        assert volumes["cert"]["secret"]["defaultMode"] == 0o440
        # subPath mounts never see a rotated Secret: the reload needs the whole directory
        assert all("subPath" not in m for m in c["volumeMounts"])
        # the only writable place is an emptyDir
        for m in c["volumeMounts"]:
            if not m.get("readOnly"):
                assert "emptyDir" in volumes[m["name"]], m
        assert pod["serviceAccountName"] == "mutator-admin"
        env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
        assert env["POD_NAME"] == "metadata.name"


def _serve_args(dep: Doc) -> Any:
    """The container's args read by mutator's own parser: every flag used exists, with a valid value."""
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(c["args"])
    assert args.command == "serve"
    assert (args.host, args.port, args.certs_dir, args.policy_source) == ("0.0.0.0", 8443, "/certs", "kubernetes")
    assert args.namespace == NAMESPACE
    return args


def test_webhook_deployment(base: list[Doc]) -> None:
    dep = one(base, "Deployment", "mutator-controller-manager")
    assert dep["spec"]["replicas"] == 2
    args = _serve_args(dep)
    assert set(args.operation.split(",")) == {"webhook", "mutation-webhook"}
    assert NAMESPACE in args.exempt_namespace
    assert args.own_username == [f"system:serviceaccount:{NAMESPACE}:mutator-admin"]
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]

    pdb = one(base, "PodDisruptionBudget", "mutator-controller-manager")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


def test_audit_deployment(base: list[Doc]) -> None:
    dep = one(base, "Deployment", "mutator-audit")
    assert dep["spec"]["replicas"] == 1
    args = _serve_args(dep)
    assert set(args.operation.split(",")) == {"audit", "status"}
    assert args.audit_interval == 60


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_service_reaches_only_the_webhook_pods(base: list[Doc]) -> None:
    svc = one(base, "Service", "mutator-webhook-service")
    (port,) = svc["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (443, 8443)
    webhook = one(base, "Deployment", "mutator-controller-manager")
    audit = one(base, "Deployment", "mutator-audit")
    assert _selects(svc["spec"]["selector"], webhook["spec"]["template"]["metadata"]["labels"])
    assert not _selects(svc["spec"]["selector"], audit["spec"]["template"]["metadata"]["labels"])
    for dep in (webhook, audit):  # each Deployment's selector matches its own pods only
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert _selects(dep["spec"]["selector"]["matchLabels"], labels)
    assert not _selects(webhook["spec"]["selector"]["matchLabels"], audit["spec"]["template"]["metadata"]["labels"])


# --- webhook configurations ---------------------------------------------------------------------------------


def _excludes_ignored_namespaces(selector: Doc) -> bool:
    return {"key": IGNORE_LABEL, "operator": "DoesNotExist"} in selector.get("matchExpressions", [])


def _common_webhook_checks(base: list[Doc], hook: Doc, path: str, timeout: int) -> None:
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None"
    assert hook["failurePolicy"] == "Ignore"
    assert hook["timeoutSeconds"] == timeout
    service = hook["clientConfig"]["service"]
    assert service == {"name": "mutator-webhook-service", "namespace": NAMESPACE, "path": path, "port": 443}
    one(base, "Service", service["name"])
    assert "caBundle" in hook["clientConfig"]  # the line mutator certs --patch-files fills in


def test_validating_webhook_configuration(base: list[Doc]) -> None:
    config = one(base, "ValidatingWebhookConfiguration", "mutator-validating-webhook-configuration")
    hooks = {h["name"]: h for h in config["webhooks"]}
    assert set(hooks) == {"validation.gatekeeper.sh", "check-ignore-label.gatekeeper.sh"}

    validation = hooks["validation.gatekeeper.sh"]
    _common_webhook_checks(base, validation, "/v1/admit", 3)
    assert _excludes_ignored_namespaces(validation["namespaceSelector"])
    (rule,) = validation["rules"]
    assert rule == {
        "apiGroups": ["*"],
        "apiVersions": ["*"],
        "operations": ["CREATE", "UPDATE"],
        "resources": ["*"],
    }

    label = hooks["check-ignore-label.gatekeeper.sh"]
    _common_webhook_checks(base, label, "/v1/admitlabel", 3)
    # it must see namespaces that carry the label, or it could never refuse one
    assert not _excludes_ignored_namespaces(label.get("namespaceSelector", {}))
    (rule,) = label["rules"]
    assert rule["apiGroups"] == [""] and rule["resources"] == ["namespaces"]
    assert rule["operations"] == ["CREATE", "UPDATE"]


def test_mutating_webhook_configuration(base: list[Doc]) -> None:
    config = one(base, "MutatingWebhookConfiguration", "mutator-mutating-webhook-configuration")
    (hook,) = config["webhooks"]
    assert hook["name"] == "mutation.gatekeeper.sh"
    _common_webhook_checks(base, hook, "/v1/mutate", 1)
    assert hook["reinvocationPolicy"] == "Never"
    assert _excludes_ignored_namespaces(hook["namespaceSelector"])
    (rule,) = hook["rules"]
    assert rule["apiGroups"] == ["*"] and rule["resources"] == ["*"]
    assert rule["operations"] == ["CREATE", "UPDATE"]


# --- RBAC ------------------------------------------------------------------------------------------------------


def _resource_matches(rule_resources: list[str], resource: str) -> bool:
    for r in rule_resources:
        if r in ("*", resource):
            return True
        if r.startswith("*/") and "/" in resource and resource.split("/", 1)[1] == r[2:]:
            return True
    return False


def allows(rules: list[Doc], group: str, resource: str, verb: str, name: str | None = None) -> bool:
    """RBAC's own matching (k8s.io/component-helpers/auth/rbac): '*' verbs, groups, resources; resourceNames."""
    for rule in rules:
        if not ({"*", verb} & set(rule["verbs"])):
            continue
        if not ({"*", group} & set(rule.get("apiGroups", []))):
            continue
        if not _resource_matches(rule.get("resources", []), resource):
            continue
        names = rule.get("resourceNames")
        if names and name not in names:
            continue
        return True
    return False


@pytest.fixture(scope="module")
def rules(base: list[Doc]) -> list[Doc]:
    role = one(base, "ClusterRole", "mutator-manager-role")
    binding = one(base, "ClusterRoleBinding", "mutator-manager-rolebinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mutator-admin", "namespace": NAMESPACE}]
    one(base, "ServiceAccount", "mutator-admin")
    result: list[Doc] = role["rules"]
    return result


def test_rbac_has_no_wildcard_verbs_and_no_core_writes(rules: list[Doc], base: list[Doc]) -> None:
    assert not [d for d in base if d["kind"] in ("Role", "RoleBinding")], "no namespaced grants are needed"
    for rule in rules:
        assert "*" not in rule["verbs"], rule
        writes = set(rule["verbs"]) & WRITE_VERBS
        if writes:
            assert "*" not in rule["apiGroups"], rule
            if "" in rule["apiGroups"]:
                assert rule["resources"] == ["events"], rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
    for group, resource in [
        ("", "pods"),
        ("", "secrets"),
        ("", "configmaps"),
        ("", "namespaces"),
        ("", "serviceaccounts"),
        ("", "serviceaccounts/token"),
        ("", "pods/exec"),
        ("apps", "deployments"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ]:
        for verb in sorted(WRITE_VERBS):
            assert not allows(rules, group, resource, verb), f"{verb} {group}/{resource} must not be granted"
    # the webhook configurations: only mutator's own two may change
    assert not allows(rules, "admissionregistration.k8s.io", "validatingwebhookconfigurations", "patch", "other")
    assert not allows(rules, "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "delete", "x")


def test_rbac_grants_what_mutator_needs(rules: list[Doc]) -> None:
    for group, resource in [("", "pods"), ("", "namespaces"), ("apps", "deployments"), ("example.com", "widgets")]:
        for verb in ("get", "list", "watch"):
            assert allows(rules, group, resource, verb), f"{verb} {group}/{resource}"
    gatekeeper = [
        ("templates.gatekeeper.sh", "constrainttemplates"),
        ("templates.gatekeeper.sh", "constrainttemplates/status"),
        ("constraints.gatekeeper.sh", "k8srequiredlabels"),
        ("constraints.gatekeeper.sh", "k8srequiredlabels/status"),
        ("mutations.gatekeeper.sh", "assign"),
        ("mutations.gatekeeper.sh", "assign/status"),
        ("config.gatekeeper.sh", "configs"),
        ("status.gatekeeper.sh", "constraintpodstatuses"),
    ]
    for group, resource in gatekeeper:
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
            assert allows(rules, group, resource, verb), f"{verb} {group}/{resource}"
    for verb in ("create", "get", "list", "watch", "update", "patch", "delete"):
        assert allows(rules, "apiextensions.k8s.io", "customresourcedefinitions", verb)
    for kind, name in [
        ("validatingwebhookconfigurations", "mutator-validating-webhook-configuration"),
        ("mutatingwebhookconfigurations", "mutator-mutating-webhook-configuration"),
    ]:
        for verb in ("get", "list", "watch", "update", "patch"):
            assert allows(rules, "admissionregistration.k8s.io", kind, verb, name), f"{verb} {kind}"
    assert allows(rules, "", "events", "create")


def test_rbac_resource_names_match_the_webhook_configurations(rules: list[Doc], base: list[Doc]) -> None:
    named = {n for rule in rules for n in rule.get("resourceNames", [])}
    configs = {
        d["metadata"]["name"]
        for d in base
        if d["kind"] in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
    }
    assert named == configs
    from mutator.certs import DEFAULT_MUTATING_WEBHOOK, DEFAULT_VALIDATING_WEBHOOK

    assert configs == {DEFAULT_VALIDATING_WEBHOOK, DEFAULT_MUTATING_WEBHOOK}  # what `mutator certs` patches


# --- kubectl kustomize ----------------------------------------------------------------------------------------


def _kubectl() -> str | None:
    cache = Path(os.environ.get("MUTATOR_E2E_CACHE") or Path.home() / ".cache" / "mutator-e2e") / "bin" / "kubectl"
    for candidate in (os.environ.get("KUBECTL_BIN"), str(cache), shutil.which("kubectl")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def test_kubectl_kustomize_builds_the_base(base: list[Doc]) -> None:
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip("no kubectl (KUBECTL_BIN, the e2e harness's ~/.cache/mutator-e2e/bin/kubectl, or PATH)")
    r = subprocess.run(
        [kubectl, "kustomize", str(BASE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if r.returncode != 0 and "unknown command" in r.stderr:
        pytest.skip(f"{kubectl} has no kustomize: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    built = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert {d["kind"] for d in built} == {d["kind"] for d in base}
    # only `resources:`: kustomize must give back exactly the objects in the files
    strip = [{k: v for k, v in d.items() if k != "__file__"} for d in base]
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(built, key=key) == sorted(strip, key=key)


# --- Helm chart (helm itself is not installed here: the chart is checked statically) ---------------------------

VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def _templates() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((CHART / "templates").iterdir())}


def _values() -> Doc:
    values: Doc = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def _leaf_paths(tree: Any, prefix: str = "") -> set[str]:
    if isinstance(tree, dict) and tree:
        return {p for k, v in tree.items() for p in _leaf_paths(v, f"{prefix}.{k}")}
    return {prefix}


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "mutator" and chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])


def test_chart_values_and_templates_agree() -> None:
    values = _values()
    referenced = {m.group(1) for text in _templates().values() for m in VALUES_REF.finditer(text)}
    for ref in referenced:
        node: Any = values
        for part in ref.strip(".").split("."):
            assert isinstance(node, dict) and part in node, f".Values{ref} is used but not in values.yaml"
            node = node[part]
    # and every value is used (a leaf, or a map a template reads whole, like resources)
    for leaf in _leaf_paths(values):
        assert any(leaf == r or leaf.startswith(r + ".") for r in referenced), f"values{leaf} is never used"


def test_chart_templates_have_balanced_actions_and_yaml_shape() -> None:
    for name, text in _templates().items():
        assert text.count("{{") == text.count("}}"), name
        if not name.endswith(".yaml"):
            continue
        # blocks open and close: if/with/range/define ... end
        opened = len(re.findall(r"\{\{-?\s*(?:if|with|range|define)\b", text))
        closed = len(re.findall(r"\{\{-?\s*end\s*-?\}\}", text))
        assert opened == closed, name
        # the static YAML around the actions parses: drop action-only lines, stub inline actions
        stubbed = "\n".join(
            re.sub(r"\{\{.*?\}\}", "X", line)
            for line in text.splitlines()
            if not re.fullmatch(r"\s*\{\{.*\}\}\s*", line)
        )
        for doc in yaml.safe_load_all(stubbed):
            assert doc is None or ("apiVersion" in doc and "kind" in doc), name


def test_chart_defaults_are_the_base() -> None:
    base = load_base()
    values = _values()
    webhook = one(base, "Deployment", "mutator-controller-manager")
    audit = one(base, "Deployment", "mutator-audit")
    assert values["replicas"] == webhook["spec"]["replicas"]
    assert values["resources"] == webhook["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert values["audit"]["resources"] == audit["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert f"{values['image']['repository']}:{values['image']['tag']}" == "mutator:latest"
    assert values["auditInterval"] == _serve_args(audit).audit_interval
    assert values["constraintViolationsLimit"] == _serve_args(audit).constraint_violations_limit
    assert values["tlsSecretName"] == "mutator-webhook-server-cert"
    assert values["priorityClassName"] == webhook["spec"]["template"]["spec"]["priorityClassName"]
    validating = one(base, "ValidatingWebhookConfiguration", "mutator-validating-webhook-configuration")
    mutating = one(base, "MutatingWebhookConfiguration", "mutator-mutating-webhook-configuration")
    hooks = {h["name"]: h for h in validating["webhooks"] + mutating["webhooks"]}
    assert values["failurePolicy"] == hooks["validation.gatekeeper.sh"]["failurePolicy"]
    assert values["failurePolicy"] == hooks["mutation.gatekeeper.sh"]["failurePolicy"]
    assert values["checkIgnoreLabelFailurePolicy"] == hooks["check-ignore-label.gatekeeper.sh"]["failurePolicy"]
    assert values["validatingWebhookTimeoutSeconds"] == hooks["validation.gatekeeper.sh"]["timeoutSeconds"]
    assert values["mutatingWebhookTimeoutSeconds"] == hooks["mutation.gatekeeper.sh"]["timeoutSeconds"]
    assert values["podDisruptionBudget"]["minAvailable"] == 1
    assert values["logLevel"] == "INFO"
    # the RBAC rules are the base's, word for word
    base_rules = one(base, "ClusterRole", "mutator-manager-role")["rules"]
    chart_rbac = (CHART / "templates" / "rbac.yaml").read_text()
    rules_text = chart_rbac.split("rules:\n", 1)[1].split("---", 1)[0]
    assert yaml.safe_load(rules_text) == base_rules


# --- the image ------------------------------------------------------------------------------------------------


def test_dockerfile_runs_as_the_deployments_user(base: list[Doc]) -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.MULTILINE)
    assert "pip install" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] != "0" and users[-1] != "root"
    uid = int(users[-1].split(":")[0])
    for dep in deployments(base):
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid
    assert re.search(r'^ENTRYPOINT \["mutator"\]', text, re.MULTILINE)
