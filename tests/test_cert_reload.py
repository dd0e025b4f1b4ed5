"""Certificate rotation without a restart: the real server, `mutator certs` rotating the files it serves.

Also `mutator certs --patch-files` (caBundle in local manifests), which needs no cluster.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from mutator.certs import ca_bundle, patch_manifest_text, set_ca_bundle
from mutator.webhook.admission import review_for

from .server import ALWAYS_PULL, Server, running_server, wait_for

REPO = Path(__file__).resolve().parents[1]


def _mutator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mutator.cli", *args], capture_output=True, text=True, check=False)


def served_serial(srv: Server) -> int:
    """The serial of the certificate a fresh TLS handshake gets (verified against the CA, for 127.0.0.1)."""
    host, port = srv.base.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(srv.ca))
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def file_serial(path: Path) -> int:
    return int(x509.load_pem_x509_certificate(path.read_bytes()).serial_number)


def mutate_ok(srv: Server) -> bool:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]},
    }
    # a new client: a new TLS handshake, verified with the CA (kept by the rotation)
    import httpx

    with httpx.Client(verify=ssl.create_default_context(cafile=str(srv.ca)), timeout=10) as client:
        r = client.post(srv.base + "/v1/mutate", json=review_for(pod))
    body: dict[str, Any] = r.json()
    return r.status_code == 200 and body["response"]["allowed"] is True and "patch" in body["response"]


@pytest.fixture
def server(tmp_path: Path) -> Any:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "always-pull.yaml").write_text(ALWAYS_PULL)
    with running_server(tmp_path, policies) as srv:
        yield srv


def test_rotated_certificate_is_served_without_restart(server: Server) -> None:
    certs = server.ca.parent
    pid = server.proc.pid
    first = served_serial(server)
    assert first == file_serial(certs / "tls.crt")
    ca_before = (certs / "ca.crt").read_bytes()
    # a keep-alive connection made before the rotation
    assert server.client.get("/healthz").status_code == 200

    r = _mutator("certs", "--out", str(certs))
    assert r.returncode == 0, r.stderr
    assert (certs / "ca.crt").read_bytes() == ca_before  # the CA is kept: clients need no new caBundle
    second = file_serial(certs / "tls.crt")
    assert second != first

    assert wait_for(lambda: served_serial(server) == second, timeout=20), server.log.read_text()
    assert server.proc.poll() is None and server.proc.pid == pid  # the same process, never restarted
    assert mutate_ok(server)
    assert server.client.get("/healthz").status_code == 200  # the old connection still works
    assert "serving certificate reloaded" in server.log.read_text()
    assert f"serial {second:x}" in server.log.read_text()


def test_broken_pair_keeps_the_old_certificate(server: Server) -> None:
    certs = server.ca.parent
    serving = served_serial(server)
    good_key = (certs / "tls.key").read_bytes()

    # a key that does not belong to the certificate (another rotation's key), then garbage
    other = certs.parent / "other"
    assert _mutator("certs", "--out", str(other)).returncode == 0
    tmp = certs / "tls.key.new"
    tmp.write_bytes((other / "tls.key").read_bytes())
    os.replace(tmp, certs / "tls.key")
    assert wait_for(lambda: "certificate reload failed" in server.log.read_text(), timeout=20), server.log.read_text()
    assert served_serial(server) == serving
    assert mutate_ok(server)
    assert server.log.read_text().count("certificate reload failed") == 1  # said once, not every check

    tmp.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    os.replace(tmp, certs / "tls.key")
    assert wait_for(lambda: server.log.read_text().count("certificate reload failed") == 2, timeout=20)
    assert served_serial(server) == serving
    assert mutate_ok(server)

    # the good key back: nothing to reload (the served pair), and a real rotation is picked up again
    tmp.write_bytes(good_key)
    os.replace(tmp, certs / "tls.key")
    assert _mutator("certs", "--out", str(certs)).returncode == 0
    rotated = file_serial(certs / "tls.crt")
    assert wait_for(lambda: served_serial(server) == rotated, timeout=20), server.log.read_text()
    assert server.proc.poll() is None
    assert mutate_ok(server)


# --- caBundle in local manifests ------------------------------------------------------------------------------

WEBHOOKS = """\
# a comment that must survive
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: v
webhooks:
  - name: validation.gatekeeper.sh
    clientConfig:
      caBundle: ""  # set by mutator certs --patch-files
      service: {name: s, namespace: n, path: /v1/admit}
    admissionReviewVersions: [v1]
    sideEffects: None
---
apiVersion: v1
kind: Service
metadata:
  name: s
  annotations:
    note: "caBundle: is not touched here"
"""


def test_patch_files_sets_ca_bundle_keeping_comments(tmp_path: Path) -> None:
    manifest = tmp_path / "webhooks.yaml"
    manifest.write_text(WEBHOOKS)
    certs = tmp_path / "certs"
    r = _mutator("certs", "--out", str(certs), "--patch-files", str(manifest))
    assert r.returncode == 0, r.stderr
    assert f"{manifest} (patched)" in r.stdout
    bundle = ca_bundle(certs / "ca.crt")
    assert base64.b64decode(bundle) == (certs / "ca.crt").read_bytes()
    text = manifest.read_text()
    assert text.startswith("# a comment that must survive\n")
    docs = list(yaml.safe_load_all(text))
    assert docs[0]["webhooks"][0]["clientConfig"]["caBundle"] == bundle
    assert docs[1]["metadata"]["annotations"]["note"] == "caBundle: is not touched here"
    # again, same CA: nothing to change
    r = _mutator("certs", "--out", str(certs), "--patch-files", str(manifest))
    assert f"{manifest} (unchanged)" in r.stdout
    assert manifest.read_text() == text


def test_patch_manifest_without_ca_bundle_lines_is_rewritten() -> None:
    text = WEBHOOKS.replace('      caBundle: ""  # set by mutator certs --patch-files\n', "")
    out = patch_manifest_text(text, "QUJD")
    docs = list(yaml.safe_load_all(out))
    assert docs[0]["webhooks"][0]["clientConfig"] == {
        "service": {"name": "s", "namespace": "n", "path": "/v1/admit"},
        "caBundle": "QUJD",
    }
    assert docs[1] == list(yaml.safe_load_all(WEBHOOKS))[1]


def test_set_ca_bundle_is_pure_and_only_touches_webhook_configurations() -> None:
    doc = list(yaml.safe_load_all(WEBHOOKS))[0]
    out = set_ca_bundle(doc, "QUJD")
    assert out["webhooks"][0]["clientConfig"]["caBundle"] == "QUJD"
    assert doc["webhooks"][0]["clientConfig"]["caBundle"] == ""  # the input is not changed
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}
    assert set_ca_bundle(service, "QUJD") is service


def test_ca_bundle_refuses_a_non_certificate(tmp_path: Path) -> None:
    bad = tmp_path / "ca.crt"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not a PEM certificate"):
        ca_bundle(bad)


def test_deploy_webhooks_patchable(tmp_path: Path) -> None:
    """The shipped deploy/base/webhooks.yaml takes the bundle on its caBundle lines (layout kept)."""
    source = (REPO / "deploy" / "base" / "webhooks.yaml").read_text()
    out = patch_manifest_text(source, "QUJD")
    assert out.count("caBundle: QUJD") == sum(
        len(d["webhooks"]) for d in yaml.safe_load_all(source) if d and d["kind"].endswith("WebhookConfiguration")
    )
    assert len(out.splitlines()) == len(source.splitlines())
