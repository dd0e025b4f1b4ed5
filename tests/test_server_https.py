"""The real server: `mutator serve` as a subprocess, certificates from `mutator certs`, a real HTTPS client."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest

from mutator.webhook.admission import MAX_BODY_BYTES, review_for

from .server import Server, running_server, wait_for

ALWAYS_PULL = """
apiVersion: mutations.gatekeeper.sh/v1
kind: Assign
metadata:
  name: always-pull
spec:
  applyTo:
    - groups: [""]
      kinds: ["Pod"]
      versions: ["v1"]
  match:
    excludedNamespaces: ["kube-system"]
  location: "spec.containers[name:*].imagePullPolicy"
  parameters:
    assign:
      value: Always
"""

TEAM_LABEL = """
apiVersion: mutations.gatekeeper.sh/v1
kind: AssignMetadata
metadata:
  name: team-label
spec:
  match:
    namespaces: ["reload-*"]
  location: metadata.labels.team
  parameters:
    assign:
      value: payments
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("server")
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "always-pull.yaml").write_text(ALWAYS_PULL)
    with running_server(tmp, policies) as srv:
        yield srv


def _pod(namespace: str, name: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "web"}},
        "spec": {
            "containers": [
                {"name": "app", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent"},
                {"name": "sidecar", "image": "busybox:1.36"},
            ]
        },
    }


def _apply(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(obj, patch)


def test_pod_gets_always_on_both_containers(server: Server) -> None:
    pod = _pod("default")
    r = server.post("/v1/mutate", review_for(pod, uid="uid-1"))
    assert r.status_code == 200
    review = r.json()
    assert review["kind"] == "AdmissionReview"
    assert review["apiVersion"] == "admission.k8s.io/v1"
    response = review["response"]
    assert response["uid"] == "uid-1"
    assert response["allowed"] is True
    mutated = _apply(pod, response)
    assert [c["imagePullPolicy"] for c in mutated["spec"]["containers"]] == ["Always", "Always"]
    # nothing else changed
    for c in mutated["spec"]["containers"]:
        c.pop("imagePullPolicy")
    original = _pod("default")
    for c in original["spec"]["containers"]:
        c.pop("imagePullPolicy", None)
    assert mutated == original


def test_excluded_namespace_gets_no_patch(server: Server) -> None:
    r = server.post("/v1/mutate", review_for(_pod("kube-system"), uid="uid-2"))
    assert r.status_code == 200
    response = r.json()["response"]
    assert response == {"uid": "uid-2", "allowed": True}


def test_namespace_taken_from_request_when_object_has_none(server: Server) -> None:
    pod = _pod("kube-system")
    del pod["metadata"]["namespace"]
    review = review_for(pod, uid="uid-3", namespace="kube-system")
    assert server.post("/v1/mutate", review).json()["response"] == {"uid": "uid-3", "allowed": True}
    review = review_for(pod, uid="uid-4", namespace="default")
    response = server.post("/v1/mutate", review).json()["response"]
    patch = json.loads(base64.b64decode(response["patch"]))
    assert all("namespace" not in op["path"] for op in patch)  # never patches what it borrowed


def test_own_resources_and_deletes_are_never_mutated(server: Server) -> None:
    assign = {
        "apiVersion": "mutations.gatekeeper.sh/v1",
        "kind": "Assign",
        "metadata": {"name": "x"},
        "spec": {"containers": [{"name": "a"}]},
    }
    assert server.post("/v1/mutate", review_for(assign, uid="u5")).json()["response"] == {
        "uid": "u5",
        "allowed": True,
    }
    delete = review_for(_pod("default"), uid="u6", operation="DELETE")
    assert server.post("/v1/mutate", delete).json()["response"] == {"uid": "u6", "allowed": True}


def test_mutation_error_is_denied_with_the_reason(server: Server) -> None:
    pod = _pod("default")
    pod["spec"]["containers"] = {"app": {"image": "nginx"}}  # an object where the path says list
    r = server.post("/v1/mutate", review_for(pod, uid="u7"))
    assert r.status_code == 200
    response = r.json()["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 500
    assert "mismatch between path entry (type: List)" in response["status"]["message"]
    assert "Traceback" not in r.text


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "request body is not valid JSON"),
        (b"", "request body is empty"),
        (b"[1, 2]", "expected an AdmissionReview object, got a JSON list"),
        (
            json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "Pod", "request": {"uid": "a"}}).encode(),
            "kind must be AdmissionReview, got 'Pod'",
        ),
        (
            json.dumps({"apiVersion": "v1", "kind": "AdmissionReview", "request": {"uid": "a"}}).encode(),
            "apiVersion must be one of admission.k8s.io/v1, admission.k8s.io/v1beta1, got 'v1'",
        ),
        (
            json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
            "request: required, must be an object",
        ),
        (
            json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "request": {"operation": "CREATE", "object": {}},
                }
            ).encode(),
            "request.uid: required, must be a non-empty string",
        ),
        (
            json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "request": {"uid": "", "operation": "CREATE", "object": {}},
                }
            ).encode(),
            "request.uid: required, must be a non-empty string",
        ),
        (
            json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "request": {"uid": "a", "operation": "CREATE"},
                }
            ).encode(),
            "request.object: required for CREATE, must be an object",
        ),
    ],
    ids=[
        "malformed-json",
        "empty",
        "not-an-object",
        "wrong-kind",
        "wrong-apiversion",
        "no-request",
        "missing-uid",
        "empty-uid",
        "missing-object",
    ],
)
def test_bad_input_is_a_400_with_a_reason(server: Server, body: bytes, reason: str) -> None:
    r = server.post("/v1/mutate", body)
    assert r.status_code == 400
    assert r.json()["reason"].startswith(reason), r.json()
    assert "Traceback" not in r.text


def test_oversized_body_is_a_400(server: Server) -> None:
    pod = _pod("default")
    pod["metadata"]["annotations"] = {"big": "x" * (MAX_BODY_BYTES + 10)}
    r = server.post("/v1/mutate", review_for(pod, uid="big"))
    assert r.status_code == 400
    assert f"over the {MAX_BODY_BYTES} byte limit" in r.json()["reason"]


def test_oversized_body_without_content_length_is_a_400(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b" " * (1024 * 1024)

    r = server.client.post("/v1/mutate", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "byte limit" in r.json()["reason"]


def test_writing_after_connection_close_is_one_log_line_not_a_traceback(server: Server) -> None:
    body = json.dumps(review_for(_pod("default"), uid="late")).encode()
    request = (
        b"POST /v1/mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    port = int(server.base.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(server.ca))
    before = server.log.read_text()
    for _ in range(2):
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(request)
            time.sleep(0.05)  # the server has answered and closed (close_notify) by now
            with contextlib.suppress(OSError):
                tls.sendall(request)  # a client that ignores "Connection: close"
                tls.sendall(request)
    assert wait_for(lambda: "a client wrote on a connection after it was closed" in server.log.read_text())
    added = server.log.read_text()[len(before) :]
    assert "Traceback" not in added
    assert " ERROR " not in added
    assert server.post("/v1/mutate", review_for(_pod("default"), uid="after")).status_code == 200


def test_health_endpoints_after_bad_input(server: Server) -> None:
    for _ in range(3):
        server.post("/v1/mutate", b"\x00\xff garbage")
    assert server.client.get("/healthz").text == "ok"
    assert server.client.get("/readyz").status_code == 200
    assert server.proc.poll() is None


def test_policies_reload_without_restart_and_bad_policy_is_isolated(server: Server) -> None:
    pod = _pod("reload-a")
    pid = server.proc.pid

    def labelled() -> bool:
        response = server.post("/v1/mutate", review_for(pod, uid="r1")).json()["response"]
        return (
            "patch" in response and _apply(_pod("reload-a"), response)["metadata"]["labels"].get("team") == "payments"
        )

    assert not labelled()
    (server.policies / "bad.yaml").write_text(
        "apiVersion: mutations.gatekeeper.sh/v1\nkind: Assign\nmetadata: {name: broken}\n"
        "spec: {location: 'spec..x', applyTo: [{groups: [''], versions: [v1], kinds: [Pod]}],"
        " parameters: {assign: {value: 1}}}\n"
    )
    (server.policies / "team.yaml").write_text(TEAM_LABEL)
    assert wait_for(labelled), server.log.read_text()
    assert server.proc.pid == pid and server.proc.poll() is None
    # the rejected policy is in the log with its field and reason; the others still work
    log = server.log.read_text()
    assert "bad.yaml" in log and "spec.location: invalid location format" in log
    response = server.post("/v1/mutate", review_for(_pod("default"), uid="r2")).json()["response"]
    assert [c["imagePullPolicy"] for c in _apply(_pod("default"), response)["spec"]["containers"]] == [
        "Always",
        "Always",
    ]
    # removing the file removes the mutator
    (server.policies / "team.yaml").unlink()
    assert wait_for(lambda: not labelled())
