"""The cluster side against a real kube-apiserver: mutator serves the API server's admission webhooks with
policies it watches in the cluster, writes status, audits and syncs data — everything through kubectl."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .cluster import Cluster

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float = 30.0, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every)


class Mutator:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path, port: int, ca: Path) -> None:
        self.proc, self.log, self.port, self.ca = proc, log, port, ca

    def metrics(self) -> str:
        import ssl
        import urllib.request

        ctx = ssl.create_default_context(cafile=str(self.ca))
        with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/metrics", context=ctx, timeout=10) as r:
            return r.read().decode()


def webhook_configurations(port: int, ca_bundle: str) -> list[dict[str, Any]]:
    selector = {"matchExpressions": [{"key": "admission.gatekeeper.sh/ignore", "operator": "DoesNotExist"}]}
    rules = [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["*"]}]
    common = {
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Ignore",
        "namespaceSelector": selector,
        "rules": rules,
    }
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "mutator-mutating-webhook-configuration"},
            "webhooks": [
                {
                    **common,
                    "name": "mutation.gatekeeper.sh",
                    "timeoutSeconds": 1,
                    "reinvocationPolicy": "Never",
                    "clientConfig": {"url": f"https://127.0.0.1:{port}/v1/mutate", "caBundle": ca_bundle},
                }
            ],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "mutator-validating-webhook-configuration"},
            "webhooks": [
                {
                    **common,
                    "name": "validation.gatekeeper.sh",
                    "timeoutSeconds": 3,
                    "clientConfig": {"url": f"https://127.0.0.1:{port}/v1/admit", "caBundle": ca_bundle},
                }
            ],
        },
    ]


def apply(cluster: Cluster, *docs: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), check=check)


@pytest.fixture(scope="module")
def mutator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mutator]:
    tmp = tmp_path_factory.mktemp("mutator-e2e")
    cluster.kubectl("apply", "-f", str(REPO / "assign-crds"), check=True)
    cluster.kubectl("create", "namespace", "mutator-system", check=False)
    certs = tmp / "certs"
    subprocess.run([sys.executable, "-m", "mutator.cli", "certs", "--out", str(certs)], check=True)
    port = _free_port()
    log = tmp / "mutator.log"
    args = [
        sys.executable, "-m", "mutator.cli", "serve", "--policy-source", "kubernetes",
        "--kubeconfig", str(cluster.kubeconfig), "--certs-dir", str(certs), "--port", str(port),
        "--audit-interval", "2",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    m = Mutator(proc, log, port, certs / "ca.crt")
    try:
        import ssl
        import urllib.request

        ctx = ssl.create_default_context(cafile=str(m.ca))

        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"mutator exited:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=ctx, timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        assert wait_for(ready, 60), log.read_text()
        bundle = base64.b64encode((certs / "ca.crt").read_bytes()).decode()
        apply(cluster, *webhook_configurations(port, bundle))
        yield m
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", "mutator-mutating-webhook-configuration")
        cluster.kubectl("delete", "validatingwebhookconfiguration", "mutator-validating-webhook-configuration")
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(log.read_text()[-4000:], file=sys.stderr)


def pod(name: str, namespace: str, image: str = "registry.example.com/web:1", pull: str = "IfNotPresent") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "app", "image": image, "imagePullPolicy": pull}]},
    }


def get(cluster: Cluster, *args: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", *args, "-o", "json", check=True).stdout)


ALWAYS_PULL = {
    "apiVersion": "mutations.gatekeeper.sh/v1",
    "kind": "Assign",
    "metadata": {"name": "always-pull"},
    "spec": {
        "applyTo": [{"groups": [""], "kinds": ["Pod"], "versions": ["v1"]}],
        "match": {"excludedNamespaces": ["kube-system"]},
        "location": "spec.containers[name:*].imagePullPolicy",
        "parameters": {"assign": {"value": "Always"}},
    },
}


def test_assign_mutates_pods_except_in_excluded_namespaces(cluster: Cluster, mutator: Mutator, namespace: str) -> None:
    apply(cluster, ALWAYS_PULL)

    def mutated() -> bool:
        p = pod("probe", namespace)
        out = cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(p))
        return out.returncode == 0 and json.loads(out.stdout)["spec"]["containers"][0]["imagePullPolicy"] == "Always"

    assert wait_for(mutated, 60), mutator.log.read_text()[-3000:]
    apply(cluster, pod("web", namespace))
    assert get(cluster, "pod", "web", "-n", namespace)["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    apply(cluster, pod(f"web-{namespace}", "kube-system"))
    stored = get(cluster, "pod", f"web-{namespace}", "-n", "kube-system")
    assert stored["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    status = get(cluster, "assign", "always-pull")["status"]["byPod"][0]
    assert status["enforced"] is True and status["observedGeneration"] >= 1
