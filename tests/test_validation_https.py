"""Validation over real HTTPS: deny with Gatekeeper's message format, warn, dryrun, bad templates isolated."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mutator.webhook.admission import review_for

from .server import Server, running_server, wait_for

FIXTURES = Path(__file__).parent / "fixtures" / "validation"
BAD_REGO_TEMPLATE = (Path(__file__).parent / "fixtures" / "broken" / "template.yaml").read_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("validation")
    policies = tmp / "policies"
    shutil.copytree(FIXTURES, policies)
    with running_server(tmp, policies) as srv:
        yield srv


def _pod(namespace: str, image: str = "nginx:1.27", name: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "app", "image": image, "imagePullPolicy": "Always"}]},
    }


def _admit(server: Server, obj: dict[str, Any], uid: str = "v-1") -> dict[str, Any]:
    r = server.post("/v1/admit", review_for(obj, uid=uid))
    assert r.status_code == 200, r.text
    return r.json()["response"]


def test_deny_reads_like_gatekeeper(server: Server) -> None:
    response = _admit(server, _pod("prod"))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["message"] == (
        '[prod-registries] image nginx:1.27 of container app is not from ["registry.example.com/"]'
    )


def test_several_denials_are_joined_by_newlines(server: Server) -> None:
    pod = _pod("prod")
    pod["spec"]["containers"].append({"name": "side", "image": "busybox"})
    message = _admit(server, pod)["status"]["message"]
    assert sorted(message.split("\n")) == [
        '[prod-registries] image busybox of container side is not from ["registry.example.com/"]',
        '[prod-registries] image nginx:1.27 of container app is not from ["registry.example.com/"]',
        "[pull-always] container side must set imagePullPolicy: Always",
    ]


def test_allowed_image_passes(server: Server) -> None:
    assert _admit(server, _pod("prod", "registry.example.com/web:1"), uid="ok") == {"uid": "ok", "allowed": True}


def test_warn_returns_the_warning_and_allows(server: Server) -> None:
    response = _admit(server, _pod("staging"))
    assert response["allowed"] is True
    assert response["warnings"] == [
        '[staging-registries] image nginx:1.27 of container app is not from ["registry.example.com/"]'
    ]


def test_dryrun_allows_without_warning(server: Server) -> None:
    assert _admit(server, _pod("dev"), uid="d") == {"uid": "d", "allowed": True}


def test_mutation_then_validation_in_the_api_server_order(server: Server) -> None:
    """The API server calls /v1/mutate, then /v1/admit with the mutated object."""
    import base64
    import json

    import jsonpatch

    pod = _pod("qa", "registry.example.com/web:1")
    del pod["spec"]["containers"][0]["imagePullPolicy"]
    assert _admit(server, pod)["allowed"] is False  # without mutation it lacks Always
    mutated_response = server.post("/v1/mutate", review_for(pod, uid="m")).json()["response"]
    mutated = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(mutated_response["patch"])))
    assert _admit(server, mutated, uid="after") == {"uid": "after", "allowed": True}


def test_bad_template_is_rejected_with_the_line_and_others_keep_answering(server: Server) -> None:
    (server.policies / "broken.yaml").write_text(BAD_REGO_TEMPLATE)
    assert wait_for(lambda: "testbroken" in server.log.read_text()), server.log.read_text()
    log = server.log.read_text()
    assert "spec.targets[0].rego" in log and "testbroken.rego:" in log
    assert _admit(server, _pod("prod"))["status"]["message"].startswith("[prod-registries] ")
    # the same template sent to the webhook (as kubectl apply would) is refused with the engine's message
    template = yaml.safe_load(BAD_REGO_TEMPLATE)
    response = _admit(server, template, uid="t")
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert "testbroken.rego:" in response["status"]["message"]


def test_constraint_with_a_bad_parameter_is_refused_naming_it(server: Server) -> None:
    constraint = {
        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": "TestRegistries",
        "metadata": {"name": "typo"},
        "spec": {"parameters": {"registries": "registry.example.com/"}},
    }
    response = _admit(server, constraint, uid="c")
    assert response["allowed"] is False
    assert response["status"]["message"].startswith("spec.parameters.registries: ")
    assert "is not of type 'array'" in response["status"]["message"]
