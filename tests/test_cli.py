"""The ``mutator`` command, run as a real subprocess on temporary files (mutator.cli)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

# --------------------------------------------------------------------------- fixtures of our own

POLICIES = """\
apiVersion: mutations.gatekeeper.sh/v1
kind: Assign
metadata:
  name: pull-always
spec:
  applyTo:
    - groups: [""]
      versions: ["v1"]
      kinds: ["Pod"]
  match:
    excludedNamespaces: ["kube-*"]
  location: "spec.containers[name: *].imagePullPolicy"
  parameters:
    assign:
      value: Always
---
apiVersion: mutations.gatekeeper.sh/v1
kind: AssignMetadata
metadata:
  name: cost-center
spec:
  match:
    namespaceSelector:
      matchLabels:
        billing: enabled
  location: "metadata.labels.cost-center"
  parameters:
    assign:
      value: cc-1234
"""

NAMESPACES = """\
apiVersion: v1
kind: Namespace
metadata:
  name: storefront
  labels:
    billing: enabled
"""

STOREFRONT_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: storefront-web
  namespace: storefront
spec:
  containers:
    - name: web
      image: storefront/web:7.1
      imagePullPolicy: IfNotPresent
    - name: cache
      image: redis:7.2
"""

SANDBOX_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: scratch
  namespace: sandbox
spec:
  containers:
    - name: shell
      image: busybox:1.36
"""

CONFIG_MAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: storefront
data:
  mode: production
"""

REJECTED_POLICY = """\
apiVersion: mutations.gatekeeper.sh/v1
kind: ModifySet
metadata:
  name: wrong-operation
spec:
  applyTo:
    - groups: [""]
      versions: ["v1"]
      kinds: ["Pod"]
  location: "spec.containers[name: *].args"
  parameters:
    operation: append
    values:
      fromList: ["--verbose"]
"""

CLASHING_POLICY = """\
apiVersion: mutations.gatekeeper.sh/v1
kind: Assign
metadata:
  name: run-as-non-root
spec:
  applyTo:
    - groups: [""]
      versions: ["v1"]
      kinds: ["Pod"]
  location: "spec.securityContext.runAsNonRoot"
  parameters:
    assign:
      value: true
"""

MALFORMED_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: odd
  namespace: sandbox
spec:
  securityContext: ["not", "an", "object"]
  containers:
    - name: shell
      image: busybox:1.36
"""


def mutator(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mutator.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write(tmp_path / "policies" / "baseline.yaml", POLICIES)
    write(tmp_path / "objects" / "namespaces.yaml", NAMESPACES)
    write(tmp_path / "objects" / "pods.yaml", STOREFRONT_POD + "---\n" + SANDBOX_POD)
    write(tmp_path / "objects" / "config.yaml", CONFIG_MAP)
    return tmp_path


def by_name(docs: list[Any]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if isinstance(d, dict) and "metadata" in d}


# --------------------------------------------------------------------------- mutate: objects


def test_mutate_prints_mutated_objects_as_yaml(workdir: Path) -> None:
    result = mutator("mutate", "-f", "policies", "objects", cwd=workdir)
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    objects = by_name(docs)
    assert set(objects) == {"storefront", "storefront-web", "scratch", "settings"}

    web = objects["storefront-web"]
    assert [c["imagePullPolicy"] for c in web["spec"]["containers"]] == ["Always", "Always"]
    assert web["metadata"]["labels"] == {"cost-center": "cc-1234"}  # its Namespace is labelled billing=enabled

    scratch = objects["scratch"]
    assert scratch["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    assert "labels" not in scratch["metadata"]  # sandbox has no Namespace document: no labels

    settings = yaml.safe_load(CONFIG_MAP)
    settings["metadata"]["labels"] = {"cost-center": "cc-1234"}  # AssignMetadata needs no applyTo
    assert objects["settings"] == settings
    assert objects["storefront"]["metadata"]["labels"] == {"billing": "enabled", "cost-center": "cc-1234"}


def test_mutate_does_not_print_the_policies(workdir: Path) -> None:
    result = mutator("mutate", "-f", "policies", "objects", cwd=workdir)
    kinds = {d["kind"] for d in yaml.safe_load_all(result.stdout)}
    assert kinds == {"Namespace", "Pod", "ConfigMap"}


def test_mutate_json_output(workdir: Path) -> None:
    result = mutator("mutate", "-f", "policies", "objects/pods.yaml", "-o", "json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    docs = json.loads(result.stdout)
    assert isinstance(docs, list)
    assert [d["metadata"]["name"] for d in docs] == ["storefront-web", "scratch"]
    assert docs[1]["spec"]["containers"][0]["imagePullPolicy"] == "Always"


def test_mutate_json_single_object_is_not_wrapped(workdir: Path) -> None:
    single = write(workdir / "one.yaml", SANDBOX_POD)
    result = mutator("mutate", "-f", "policies", single, "-o", "json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["kind"] == "Pod"
    assert doc["spec"]["containers"][0] == {"name": "shell", "image": "busybox:1.36", "imagePullPolicy": "Always"}


def test_mutate_repeated_filename_flags_add_up(workdir: Path) -> None:
    result = mutator("mutate", "-f", "policies", "-f", "objects/pods.yaml", "-o", "json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 2


# --------------------------------------------------------------------------- mutate: patches


def test_mutate_patch_output_applies_to_the_original(workdir: Path) -> None:
    patches = mutator("mutate", "-f", "policies", "objects", "--patch", "-o", "json", cwd=workdir)
    objects = mutator("mutate", "-f", "policies", "objects", "-o", "json", cwd=workdir)
    assert patches.returncode == 0, patches.stderr
    entries = json.loads(patches.stdout)
    mutated = by_name(json.loads(objects.stdout))
    assert {e["name"] for e in entries} == set(mutated)

    originals = by_name(
        list(yaml.safe_load_all(NAMESPACES))
        + list(yaml.safe_load_all(STOREFRONT_POD + "---\n" + SANDBOX_POD))
        + [yaml.safe_load(CONFIG_MAP)]
    )
    for entry in entries:
        assert set(entry) == {"source", "kind", "name", "patch"}
        assert entry["source"].startswith("objects")
        patched = jsonpatch.apply_patch(originals[entry["name"]], entry["patch"])
        assert patched == mutated[entry["name"]]


def test_mutate_patch_is_an_rfc6902_patch(workdir: Path) -> None:
    result = mutator("mutate", "-f", "policies", "objects/pods.yaml", "--patch", "-o", "json", cwd=workdir)
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    scratch = entries["scratch"]
    assert scratch["kind"] == "Pod"
    assert scratch["source"].endswith("pods.yaml#1")
    assert scratch["patch"] == [{"op": "add", "path": "/spec/containers/0/imagePullPolicy", "value": "Always"}]
    ops = {(op["op"], op["path"]) for op in entries["storefront-web"]["patch"]}
    assert ("replace", "/spec/containers/0/imagePullPolicy") in ops
    assert ("add", "/spec/containers/1/imagePullPolicy") in ops


def test_mutate_patch_is_empty_for_untouched_objects(workdir: Path) -> None:
    result = mutator("mutate", "-f", "policies", "objects/config.yaml", "--patch", cwd=workdir)
    assert result.returncode == 0, result.stderr
    (entry,) = list(yaml.safe_load_all(result.stdout))
    assert entry["name"] == "settings"
    assert entry["patch"] == []


# --------------------------------------------------------------------------- exit codes


def test_rejected_policy_exits_2_and_the_rest_still_applies(workdir: Path) -> None:
    bad = write(workdir / "policies" / "zz-rejected.yaml", REJECTED_POLICY)
    result = mutator("mutate", "-f", "policies", "objects/pods.yaml", "-o", "json", cwd=workdir)
    assert result.returncode == 2
    assert "rejected: " in result.stderr
    assert bad.name in result.stderr
    assert "wrong-operation" in result.stderr
    assert "spec.parameters.operation" in result.stderr
    docs = json.loads(result.stdout)
    assert all(c.get("imagePullPolicy") == "Always" for d in docs for c in d["spec"]["containers"])
    assert not any("args" in c for d in docs for c in d["spec"]["containers"])


def test_mutation_failure_exits_1_and_other_objects_are_printed(workdir: Path) -> None:
    write(workdir / "policies" / "non-root.yaml", CLASHING_POLICY)
    write(workdir / "objects" / "odd.yaml", MALFORMED_POD)
    result = mutator("mutate", "-f", "policies", "objects/odd.yaml", "objects/pods.yaml", "-o", "json", cwd=workdir)
    assert result.returncode == 1
    assert "error:" in result.stderr
    assert "odd" in result.stderr
    assert "mismatch" in result.stderr
    docs = json.loads(result.stdout)
    assert [d["metadata"]["name"] for d in docs] == ["storefront-web", "scratch"]
    assert all(d["spec"]["securityContext"] == {"runAsNonRoot": True} for d in docs)


def test_rejected_policy_wins_over_a_mutation_failure(workdir: Path) -> None:
    write(workdir / "policies" / "non-root.yaml", CLASHING_POLICY)
    write(workdir / "policies" / "zz-rejected.yaml", REJECTED_POLICY)
    write(workdir / "objects" / "odd.yaml", MALFORMED_POD)
    result = mutator("mutate", "-f", "policies", "objects/odd.yaml", cwd=workdir)
    assert result.returncode == 2


def test_missing_input_exits_2(workdir: Path) -> None:
    result = mutator("mutate", "-f", "policies", "does-not-exist.yaml", cwd=workdir)
    assert result.returncode == 2
    assert "does-not-exist.yaml" in result.stderr
    assert result.stdout == ""


def test_mutate_requires_filenames(workdir: Path) -> None:
    result = mutator("mutate", cwd=workdir)
    assert result.returncode == 2
    assert "-f" in result.stderr


def test_conflicting_policies_warn_but_exit_0(workdir: Path) -> None:
    conflicting = POLICIES.split("---")[0].replace("pull-always", "pull-by-image").replace("[name: *]", "[image: *]")
    write(workdir / "policies" / "conflict.yaml", conflicting)
    result = mutator("mutate", "-f", "policies", "objects/pods.yaml", "-o", "json", cwd=workdir)
    assert result.returncode == 0
    assert "warning:" in result.stderr
    assert "conflicting schemas" in result.stderr
    docs = json.loads(result.stdout)
    # both imagePullPolicy mutators are disabled; the pods keep what they had
    assert docs[0]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert "imagePullPolicy" not in docs[1]["spec"]["containers"][0]


# --------------------------------------------------------------------------- certs


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certs_writes_a_ca_signed_serving_certificate(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = mutator("certs", "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("ca.crt", "tls.crt", "tls.key"):
        assert (out / name).is_file(), name

    ca = load_cert(out / "ca.crt")
    cert = load_cert(out / "tls.crt")

    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    dns = san.get_values_for_type(x509.DNSName)
    assert "localhost" in dns
    assert "mutator-webhook-service.mutator-system.svc" in dns

    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)  # raises if the signature does not verify
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in list(eku)

    key = serialization.load_pem_private_key((out / "tls.key").read_bytes(), password=None)
    assert key.public_key() == cert.public_key()
    assert (out / "tls.key").stat().st_mode & 0o077 == 0


def test_certs_extra_hosts_and_service(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = mutator(
        "certs",
        "--out",
        out,
        "--service",
        "webhook",
        "--namespace",
        "policy",
        "--host",
        "10.0.0.7",
        "--host",
        "mutator.example.com",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    san = load_cert(out / "tls.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.0.0.7") in san.get_values_for_type(x509.IPAddress)
    dns = san.get_values_for_type(x509.DNSName)
    assert {"mutator.example.com", "webhook.policy.svc", "webhook.policy.svc.cluster.local"} <= set(dns)


def test_certs_keeps_the_ca_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    assert mutator("certs", "--out", out, cwd=tmp_path).returncode == 0
    first_ca = (out / "ca.crt").read_bytes()
    first_leaf = (out / "tls.crt").read_bytes()

    assert mutator("certs", "--out", out, cwd=tmp_path).returncode == 0
    assert (out / "ca.crt").read_bytes() == first_ca
    assert (out / "tls.crt").read_bytes() != first_leaf
    load_cert(out / "tls.crt").verify_directly_issued_by(load_cert(out / "ca.crt"))

    assert mutator("certs", "--out", out, "--new-ca", cwd=tmp_path).returncode == 0
    assert (out / "ca.crt").read_bytes() != first_ca
    load_cert(out / "tls.crt").verify_directly_issued_by(load_cert(out / "ca.crt"))
