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
        # leave the shared cluster as we found it for the other e2e modules
        for kind in ("assign", "assignmetadata", "modifyset", "assignimage", "constrainttemplates"):
            cluster.kubectl("delete", kind, "--all", "--wait=false")
        cluster.kubectl("delete", "config", "--all", "-n", "mutator-system", "--wait=false")
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


def template(kind: str, rego: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    crd: dict[str, Any] = {"spec": {"names": {"kind": kind}}}
    if schema:
        crd["spec"]["validation"] = {"openAPIV3Schema": schema}
    return {
        "apiVersion": "templates.gatekeeper.sh/v1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": kind.lower()},
        "spec": {"crd": crd, "targets": [{"target": "admission.k8s.gatekeeper.sh", "rego": rego}]},
    }


def constraint(kind: str, name: str, namespaces: list[str], action: str, **parameters: Any) -> dict[str, Any]:
    return {
        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {
            "enforcementAction": action,
            "match": {"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}], "namespaces": namespaces},
            "parameters": parameters,
        },
    }


REPOS = template(
    "E2eRepos",
    """package e2erepos
violation[{"msg": msg}] {
  c := input.review.object.spec.containers[_]
  not startswith(c.image, input.parameters.repo)
  msg := sprintf("container <%v> image <%v> is not from <%v>", [c.name, c.image, input.parameters.repo])
}
""",
    {"type": "object", "properties": {"repo": {"type": "string"}}},
)


def _constraint_served(cluster: Cluster, kind: str) -> bool:
    return cluster.kubectl("get", kind.lower()).returncode == 0


def _denied_with(cluster: Cluster, p: dict[str, Any], text: str) -> bool:
    out = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(p))
    return out.returncode != 0 and text in out.stderr


def test_constraints_deny_warn_and_allow(cluster: Cluster, mutator: Mutator, namespace: str) -> None:
    apply(cluster, REPOS)
    assert wait_for(lambda: _constraint_served(cluster, "E2eRepos"), 60), mutator.log.read_text()[-3000:]
    apply(cluster, constraint("E2eRepos", "prod-repos", [namespace], "deny", repo="registry.example.com/"))
    bad = pod("bad", namespace, image="docker.io/nginx:1")
    message = (
        'admission webhook "validation.gatekeeper.sh" denied the request: [prod-repos] container <app> '
        "image <docker.io/nginx:1> is not from <registry.example.com/>"
    )
    assert wait_for(lambda: _denied_with(cluster, bad, message), 60), mutator.log.read_text()[-3000:]
    out = apply(cluster, bad, check=False)
    assert out.returncode != 0 and message in out.stderr
    assert apply(cluster, pod("good", namespace)).returncode == 0

    warn_ns = f"{namespace}-warn"
    cluster.kubectl("create", "namespace", warn_ns, check=True)
    apply(cluster, constraint("E2eRepos", "warn-repos", [warn_ns], "warn", repo="registry.example.com/"))

    def warned() -> bool:
        p = pod(f"w-{time.monotonic_ns()}", warn_ns, image="docker.io/nginx:1")
        out = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(p))
        return out.returncode == 0 and "Warning: [warn-repos] container <app> image <docker.io/nginx:1>" in out.stderr

    assert wait_for(warned, 60), mutator.log.read_text()[-3000:]
    out = apply(cluster, pod("warned", warn_ns, image="docker.io/nginx:1"))
    assert "Warning: [warn-repos] container <app>" in out.stderr
    status = get(cluster, "e2erepos", "prod-repos")["status"]["byPod"][0]
    assert status["enforced"] is True
    assert get(cluster, "constrainttemplate", "e2erepos")["status"]["created"] is True


def test_dryrun_constraint_audit_reports_existing_pod(cluster: Cluster, mutator: Mutator, namespace: str) -> None:
    apply(cluster, REPOS)
    assert wait_for(lambda: _constraint_served(cluster, "E2eRepos"), 60)
    apply(cluster, pod("old-bad", namespace, image="quay.io/old:1"))  # before the constraint exists
    apply(cluster, constraint("E2eRepos", "audit-repos", [namespace], "dryrun", repo="registry.example.com/"))

    def audited() -> dict[str, Any] | None:
        status = get(cluster, "e2erepos", "audit-repos").get("status") or {}
        return status if status.get("totalViolations") else None

    status = wait_for(audited, 60)
    assert status, mutator.log.read_text()[-3000:]
    assert status["totalViolations"] == 1
    assert status["violations"] == [
        {
            "enforcementAction": "dryrun",
            "group": "",
            "version": "v1",
            "kind": "Pod",
            "name": "old-bad",
            "namespace": namespace,
            "message": "container <app> image <quay.io/old:1> is not from <registry.example.com/>",
        }
    ]
    assert status["auditTimestamp"].endswith("Z")
    # dryrun never denies
    assert apply(cluster, pod("new-bad", namespace, image="quay.io/new:1")).returncode == 0


UNIQUE_HOST = template(
    "E2eUniqueHost",
    """package e2euniquehost
violation[{"msg": msg}] {
  input.review.kind.kind == "Ingress"
  host := input.review.object.spec.rules[_].host
  other := data.inventory.namespace[ns][_]["Ingress"][name]
  not same(other, input.review.object)
  other.spec.rules[_].host == host
  msg := sprintf("ingress host <%v> is already used by %v/%v", [host, ns, name])
}
same(a, b) {
  a.metadata.namespace == b.metadata.namespace
  a.metadata.name == b.metadata.name
}
""",
)


def ingress(name: str, namespace: str, host: str) -> dict[str, Any]:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    path = {"path": "/", "pathType": "Prefix", "backend": backend}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"rules": [{"host": host, "http": {"paths": [path]}}]},
    }


def test_config_sync_feeds_referential_constraints(cluster: Cluster, mutator: Mutator, namespace: str) -> None:
    config = {
        "apiVersion": "config.gatekeeper.sh/v1alpha1",
        "kind": "Config",
        "metadata": {"name": "config", "namespace": "mutator-system"},
        "spec": {"sync": {"syncOnly": [{"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"}]}},
    }
    apply(cluster, config, UNIQUE_HOST)
    assert wait_for(lambda: _constraint_served(cluster, "E2eUniqueHost"), 60)
    unique = {
        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": "E2eUniqueHost",
        "metadata": {"name": "unique-host"},
        "spec": {"match": {"kinds": [{"apiGroups": ["networking.k8s.io"], "kinds": ["Ingress"]}]}},
    }
    apply(cluster, unique)
    apply(cluster, ingress("first", namespace, f"{namespace}.example.com"))
    second = ingress("second", namespace, f"{namespace}.example.com")
    message = f"[unique-host] ingress host <{namespace}.example.com> is already used by {namespace}/first"
    assert wait_for(lambda: _denied_with(cluster, second, message), 60), mutator.log.read_text()[-3000:]
    assert apply(cluster, ingress("third", namespace, f"other-{namespace}.example.com")).returncode == 0


def test_config_excludes_namespaces_per_process(cluster: Cluster, mutator: Mutator, namespace: str) -> None:
    apply(cluster, REPOS)
    assert wait_for(lambda: _constraint_served(cluster, "E2eRepos"), 60)
    apply(cluster, constraint("E2eRepos", "excluded-repos", [namespace], "deny", repo="registry.example.com/"))
    bad = pod("bad", namespace, image="docker.io/nginx:1")
    assert wait_for(lambda: _denied_with(cluster, bad, "[excluded-repos] container <app>"), 60)
    config = {
        "apiVersion": "config.gatekeeper.sh/v1alpha1",
        "kind": "Config",
        "metadata": {"name": "config", "namespace": "mutator-system"},
        "spec": {
            "match": [{"excludedNamespaces": [namespace], "processes": ["webhook"]}],
            "sync": {"syncOnly": [{"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"}]},
        },
    }
    apply(cluster, config)

    def allowed() -> bool:
        out = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(bad))
        return out.returncode == 0

    assert wait_for(allowed, 60), mutator.log.read_text()[-3000:]
    # mutation is another process: still on
    p = pod("probe", namespace)
    out = cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(p), check=True)
    assert json.loads(out.stdout)["spec"]["containers"][0]["imagePullPolicy"] == "Always"


BROKEN = {
    "apiVersion": "templates.gatekeeper.sh/v1",
    "kind": "ConstraintTemplate",
    "metadata": {"name": "e2ebroken"},
    "spec": {
        "crd": {"spec": {"names": {"kind": "E2eBroken"}}},
        "targets": [
            {"target": "admission.k8s.gatekeeper.sh", "rego": "package e2ebroken\nviolation[{}] {\n  x := \n}\n"}
        ],
    },
}


def test_broken_template_status_shows_the_error(cluster: Cluster, mutator: Mutator, namespace: str) -> None:
    # the validating webhook refuses it (mutator checks its own kinds) ...
    out = apply(cluster, BROKEN, check=False)
    assert out.returncode != 0 and "e2ebroken.rego:" in out.stderr
    # ... so it can only be in the cluster if it got there while the webhook was not looking: write it with
    # the webhook out of the way, and see the error in its status while the other constraints keep enforcing
    cluster.kubectl("delete", "validatingwebhookconfiguration", "mutator-validating-webhook-configuration", check=True)
    apply(cluster, BROKEN)
    bundle = base64.b64encode(mutator.ca.read_bytes()).decode()
    apply(cluster, webhook_configurations(mutator.port, bundle)[1])

    def error() -> str:
        status = get(cluster, "constrainttemplate", "e2ebroken").get("status") or {}
        errors = [e for p in status.get("byPod") or [] for e in p.get("errors") or []]
        return errors[0]["message"] if errors else ""

    message = wait_for(error, 60)
    assert "e2ebroken.rego:" in message, mutator.log.read_text()[-3000:]
    apply(cluster, REPOS)
    apply(cluster, constraint("E2eRepos", "still-enforced", [namespace], "deny", repo="registry.example.com/"))
    bad = pod("bad", namespace, image="docker.io/nginx:1")
    assert wait_for(lambda: _denied_with(cluster, bad, "[still-enforced] container <app>"), 60)


def test_enforcement_survives_an_api_server_restart(cluster: Cluster, mutator: Mutator, namespace: str) -> None:
    if cluster.mode == "kubeconfig":
        pytest.skip("restarting the API server needs a cluster this harness started, not MUTATOR_E2E_KUBECONFIG")
    apply(cluster, REPOS)
    assert wait_for(lambda: _constraint_served(cluster, "E2eRepos"), 60)
    apply(cluster, constraint("E2eRepos", "after-restart", [namespace], "deny", repo="registry.example.com/"))
    bad = pod("bad", namespace, image="docker.io/nginx:1")
    assert wait_for(lambda: _denied_with(cluster, bad, "[after-restart] container <app>"), 60)
    cluster.restart_apiserver(down_seconds=2)
    # a policy created after the restart is seen too: the watches resumed
    apply(cluster, constraint("E2eRepos", "new-after-restart", [namespace], "deny", repo="registry.example.com/"))
    assert wait_for(lambda: _denied_with(cluster, bad, "[new-after-restart] container <app>"), 90), (
        mutator.log.read_text()[-3000:]
    )
    assert _denied_with(cluster, bad, "[after-restart] container <app>")
    assert mutator.proc.poll() is None


def test_metrics_count_what_happened(cluster: Cluster, mutator: Mutator) -> None:
    """Runs last in this module: the requests, audits and syncs above are in /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(mutator.metrics())
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        names = (name, f"{name}_total")  # the parser reads a counter's samples as <name>_total
        return sum(v for (n, ls), v in samples.items() if n in names and set(labels.items()) <= set(ls))

    assert value("gatekeeper_validation_request_count", admission_status="deny") >= 3
    assert value("gatekeeper_validation_request_count", admission_status="allow") >= 3
    assert value("gatekeeper_mutation_request_count", mutation_status="success") >= 3
    assert value("gatekeeper_audit_last_run_time") > 0
    assert value("gatekeeper_violations", enforcement_action="dryrun") >= 1
    assert value("gatekeeper_constraint_templates", status="active") >= 1
    assert value("gatekeeper_sync", kind="Ingress", status="active") >= 1
