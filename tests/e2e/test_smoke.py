"""Smoke test of the e2e harness: the API server answers kubectl and the Python client, and takes our CRDs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client

from .cluster import Cluster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "assign-crds"
MUTATION_CRDS = [
    "assign.mutations.gatekeeper.sh",
    "assignmetadata.mutations.gatekeeper.sh",
    "modifyset.mutations.gatekeeper.sh",
    "assignimage.mutations.gatekeeper.sh",
]


def test_server_version(cluster: Cluster) -> None:
    r = cluster.kubectl("version", "-o", "json", check=True)
    server = json.loads(r.stdout)["serverVersion"]
    assert server["major"] == "1"
    with cluster.api_client() as api:
        assert client.VersionApi(api).get_code().git_version == server["gitVersion"]


def test_configmap_from_kubectl_read_by_python_client(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "smoke", "-n", namespace, "--from-literal=greeting=hello", check=True)
    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        assert core.read_namespace(namespace).status.phase == "Active"
        cm = core.read_namespaced_config_map("smoke", namespace)
    assert cm.data == {"greeting": "hello"}
    assert cm.metadata.namespace == namespace


def test_assign_crds_apply_and_list_empty(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", str(CRDS), check=True)
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in MUTATION_CRDS), check=True
    )
    r = cluster.kubectl("get", "assign", check=True)
    assert r.stdout == ""
    assert "No resources found" in r.stderr
    listed = json.loads(cluster.kubectl("get", "assign", "-o", "json", check=True).stdout)
    assert listed["kind"] == "List"
    assert listed["items"] == []
    for kind in ("assignmetadata", "modifyset", "assignimage"):
        assert json.loads(cluster.kubectl("get", kind, "-o", "json", check=True).stdout)["items"] == []
