"""deploy/ against a real kube-apiserver: the kustomize base passes server-side validation, the ClusterRole
grants what mutator needs and nothing it must not have (the API server's own RBAC decisions), and
`mutator certs --patch-webhooks` puts the CA into webhook configurations made from deploy/base/webhooks.yaml.

Objects get unique names (and harmless rules) so that nothing here meets the other e2e modules' objects.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mutator.certs import patch_webhook_configurations

from .cluster import Cluster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "base"
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}


def base_docs(cluster: Cluster) -> list[dict[str, Any]]:
    """The base as kustomize builds it (with the cluster's kubectl), else the files themselves."""
    r = cluster.kubectl("kustomize", str(BASE))
    if r.returncode == 0:
        return [d for d in yaml.safe_load_all(r.stdout) if d]
    docs: list[dict[str, Any]] = []
    for name in yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]:
        docs += [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]
    return docs


def served_versions(cluster: Cluster) -> set[str]:
    return set(cluster.kubectl("api-versions", check=True).stdout.split())


def test_base_passes_server_side_validation(cluster: Cluster, namespace: str) -> None:
    """Every object, renamed into a fresh namespace, is accepted by a server-side dry run (nothing is stored)."""
    suffix = secrets.token_hex(3)
    served = served_versions(cluster)
    docs, skipped = [], []
    for doc in base_docs(cluster):
        if doc["apiVersion"] not in served:  # policy/v1 PodDisruptionBudget is served from Kubernetes 1.21
            skipped.append(f"{doc['kind']} {doc['apiVersion']}")
            continue
        doc = copy.deepcopy(doc)
        if doc["kind"] in CLUSTER_SCOPED:
            doc["metadata"]["name"] = f"e2e-{suffix}-{doc['metadata']['name']}"
        else:
            doc["metadata"]["namespace"] = namespace
        docs.append(doc)
    r = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("(server dry run)") == len(docs), r.stdout
    if skipped:
        print(f"not served by this API server, not checked: {', '.join(skipped)}")


@pytest.fixture
def bound_service_account(cluster: Cluster, namespace: str) -> Iterator[str]:
    """deploy/base's ClusterRole (under a unique name), bound to a service account; yields its user name."""
    suffix = secrets.token_hex(3)
    docs = {(d["kind"], d["metadata"]["name"]): d for d in base_docs(cluster)}
    role = copy.deepcopy(docs[("ClusterRole", "mutator-manager-role")])
    binding = copy.deepcopy(docs[("ClusterRoleBinding", "mutator-manager-rolebinding")])
    role["metadata"]["name"] = binding["roleRef"]["name"] = f"e2e-{suffix}-mutator-manager-role"
    binding["metadata"]["name"] = f"e2e-{suffix}-mutator-manager-rolebinding"
    binding["subjects"] = [{"kind": "ServiceAccount", "name": "mutator-admin", "namespace": namespace}]
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "mutator-admin", "namespace": namespace}}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([sa, role, binding]), check=True)
    try:
        yield f"system:serviceaccount:{namespace}:mutator-admin"
    finally:
        cluster.kubectl("delete", "clusterrolebinding", binding["metadata"]["name"], "--ignore-not-found")
        cluster.kubectl("delete", "clusterrole", role["metadata"]["name"], "--ignore-not-found")


Ask = tuple[str, str, str, dict[str, str]]  # verb, group, resource[/subresource], namespace/name


def can(api: Any, user: str, ask: Ask) -> bool:
    """The API server's RBAC decision (a SubjectAccessReview) for a service account; the resource's group
    need not be served (no CRDs are needed for the question)."""
    from kubernetes import client

    verb, group, resource, where = ask
    plain, _, subresource = resource.partition("/")
    sa_namespace = user.split(":")[2]
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, group=group, resource=plain, subresource=subresource, **where
            ),
        )
    )
    return bool(client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed)


ADMISSION = "admissionregistration.k8s.io"
CRDS = "apiextensions.k8s.io"
RBAC = "rbac.authorization.k8s.io"
ALLOWED: list[Ask] = [
    ("list", "", "pods", {}),
    ("watch", "apps", "deployments", {}),
    ("get", "", "secrets", {"namespace": "kube-system"}),  # audit and sync read any kind, as in Gatekeeper
    ("create", CRDS, "customresourcedefinitions", {}),
    ("delete", CRDS, "customresourcedefinitions", {"name": "k8srequiredlabels.constraints.gatekeeper.sh"}),
    ("update", "templates.gatekeeper.sh", "constrainttemplates/status", {}),
    ("create", "constraints.gatekeeper.sh", "k8srequiredlabels", {}),
    ("patch", "constraints.gatekeeper.sh", "k8srequiredlabels/status", {}),
    ("patch", "mutations.gatekeeper.sh", "assign/status", {}),
    ("create", "config.gatekeeper.sh", "configs", {"namespace": "mutator-system"}),
    ("create", "status.gatekeeper.sh", "constraintpodstatuses", {"namespace": "mutator-system"}),
    ("patch", ADMISSION, "validatingwebhookconfigurations", {"name": "mutator-validating-webhook-configuration"}),
    ("update", ADMISSION, "mutatingwebhookconfigurations", {"name": "mutator-mutating-webhook-configuration"}),
    ("list", ADMISSION, "validatingwebhookconfigurations", {}),
    ("create", "", "events", {"namespace": "default"}),
]
DENIED: list[Ask] = [
    ("create", "", "pods", {"namespace": "default"}),
    ("delete", "", "pods", {}),
    ("create", "", "pods/exec", {"namespace": "default"}),
    ("update", "", "secrets", {"namespace": "kube-system"}),
    ("create", "", "secrets", {"namespace": "mutator-system"}),
    ("patch", "", "configmaps", {"namespace": "default"}),
    ("delete", "", "namespaces", {}),
    ("create", "", "serviceaccounts/token", {"namespace": "default"}),
    ("update", "apps", "deployments", {"namespace": "default"}),
    ("create", RBAC, "clusterrolebindings", {}),
    ("escalate", RBAC, "clusterroles", {}),
    ("patch", ADMISSION, "validatingwebhookconfigurations", {"name": "someone-elses"}),
    ("delete", ADMISSION, "mutatingwebhookconfigurations", {"name": "mutator-mutating-webhook-configuration"}),
    ("impersonate", "", "users", {}),
]


def test_rbac_as_the_api_server_decides(cluster: Cluster, bound_service_account: str) -> None:
    with cluster.api_client() as api:
        wrong = [a for a in ALLOWED if not can(api, bound_service_account, a)]
        wrong += [d for d in DENIED if can(api, bound_service_account, d)]
    assert not wrong, f"RBAC decisions not as intended: {wrong}"


@pytest.fixture
def webhook_configurations(cluster: Cluster) -> Iterator[dict[str, str]]:
    """deploy/base/webhooks.yaml under unique names, with rules matching nothing that exists (so the API
    server never calls them). Yields kind -> name."""
    suffix = secrets.token_hex(3)
    docs = [d for d in yaml.safe_load_all((BASE / "webhooks.yaml").read_text()) if d]
    names: dict[str, str] = {}
    for doc in docs:
        doc["metadata"]["name"] = f"e2e-{suffix}-{doc['metadata']['name']}"
        names[doc["kind"]] = doc["metadata"]["name"]
        for hook in doc["webhooks"]:
            hook["rules"] = [
                {
                    "apiGroups": ["e2e.mutator.example"],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["nothings"],
                }
            ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), check=True)
    try:
        yield names
    finally:
        for kind, name in names.items():
            cluster.kubectl("delete", kind.lower(), name, "--ignore-not-found")


def get(cluster: Cluster, kind: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl("get", kind.lower(), name, "-o", "json", check=True).stdout)
    return out


def without_bundles(obj: dict[str, Any]) -> list[dict[str, Any]]:
    hooks = copy.deepcopy(obj["webhooks"])
    for hook in hooks:
        hook["clientConfig"].pop("caBundle", None)
    return hooks


def test_mutator_certs_patch_webhooks(cluster: Cluster, webhook_configurations: dict[str, str], tmp_path: Path) -> None:
    before = {kind: get(cluster, kind, name) for kind, name in webhook_configurations.items()}
    certs = tmp_path / "certs"
    cmd = [sys.executable, "-m", "mutator.cli", "certs", "--out", str(certs), "--patch-webhooks"]
    cmd += ["--kubeconfig", str(cluster.kubeconfig)]
    cmd += ["--validating-webhook-name", webhook_configurations["ValidatingWebhookConfiguration"]]
    cmd += ["--mutating-webhook-name", webhook_configurations["MutatingWebhookConfiguration"]]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("(patched in the cluster)") == 2
    bundle = base64.b64encode((certs / "ca.crt").read_bytes()).decode()
    for kind, name in webhook_configurations.items():
        after = get(cluster, kind, name)
        assert [h["clientConfig"]["caBundle"] for h in after["webhooks"]] == [bundle] * len(after["webhooks"])
        assert without_bundles(after) == without_bundles(before[kind])  # nothing else changed

    # the library function, with another bundle, on the official client
    other = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nnot checked by the API server\n").decode()
    with cluster.api_client() as api:
        done = patch_webhook_configurations(api, webhook_configurations, other)
    assert sorted(done) == sorted(f"{k}/{n}" for k, n in webhook_configurations.items())
    for kind, name in webhook_configurations.items():
        assert {h["clientConfig"]["caBundle"] for h in get(cluster, kind, name)["webhooks"]} == {other}


def test_mutator_certs_patch_webhooks_missing_object(cluster: Cluster, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "mutator.cli", "certs", "--out", str(tmp_path / "certs"), "--patch-webhooks"]
    cmd += ["--kubeconfig", str(cluster.kubeconfig), "--mutating-webhook-name", ""]
    cmd += ["--validating-webhook-name", f"e2e-absent-{secrets.token_hex(3)}"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 1
    assert "--patch-webhooks: 404" in r.stderr
