"""POST /v1/admitlabel over real HTTPS: only an exempt namespace may carry admission.gatekeeper.sh/ignore."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mutator.webhook.admission import ValidationOptions, admitlabel_review, review_for

from .server import Server, running_server

IGNORE = "admission.gatekeeper.sh/ignore"
MESSAGE = "Only exempt namespace can have the admission.gatekeeper.sh/ignore label"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("admitlabel")
    policies = tmp / "policies"
    policies.mkdir()
    with running_server(
        tmp, policies, "--exempt-namespace", "gatekeeper-system", "--exempt-namespace", "team-*"
    ) as srv:
        yield srv


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def admitlabel(server: Server, review: dict[str, Any]) -> dict[str, Any]:
    r = server.post("/v1/admitlabel", review)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "AdmissionReview" and body["apiVersion"] == review["apiVersion"]
    assert body["response"]["uid"] == review["request"]["uid"]
    return body["response"]


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
def test_a_namespace_with_the_ignore_label_is_denied(server: Server, operation: str) -> None:
    review = review_for(namespace("payments", {IGNORE: "true", "team": "payments"}), operation=operation, uid="l-1")
    response = admitlabel(server, review)
    assert response["allowed"] is False
    assert response["status"] == {"code": 403, "reason": "Forbidden", "message": MESSAGE}


def test_the_label_value_does_not_matter(server: Server) -> None:
    assert admitlabel(server, review_for(namespace("payments", {IGNORE: ""})))["allowed"] is False


@pytest.mark.parametrize("name", ["gatekeeper-system", "team-a"])
def test_an_exempt_namespace_may_carry_it(server: Server, name: str) -> None:
    assert admitlabel(server, review_for(namespace(name, {IGNORE: "true"})))["allowed"] is True


@pytest.mark.parametrize("labels", [None, {}, {"team": "payments"}])
def test_a_namespace_without_it_is_allowed(server: Server, labels: dict[str, str] | None) -> None:
    response = admitlabel(server, review_for(namespace("payments", labels)))
    assert response["allowed"] is True and "status" not in response


def test_deleting_a_labelled_namespace_is_allowed(server: Server) -> None:
    review = review_for(namespace("payments", {IGNORE: "true"}), operation="DELETE")
    review["request"]["oldObject"], review["request"]["object"] = review["request"]["object"], None
    assert admitlabel(server, review)["allowed"] is True


def test_other_kinds_are_not_checked(server: Server) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "payments"}}
    pod["metadata"]["labels"] = {IGNORE: "true"}
    assert admitlabel(server, review_for(pod))["allowed"] is True
    # a Namespace kind from another API group is not the core Namespace
    other = {"apiVersion": "example.com/v1", "kind": "Namespace", "metadata": {"name": "x", "labels": {IGNORE: "1"}}}
    assert admitlabel(server, review_for(other))["allowed"] is True


def test_a_malformed_review_is_a_bad_request(server: Server) -> None:
    r = server.post("/v1/admitlabel", b"[]")
    assert r.status_code == 400
    assert "AdmissionReview" in r.json()["reason"]


def test_admitlabel_is_not_counted_as_validation(server: Server) -> None:
    admitlabel(server, review_for(namespace("payments", {IGNORE: "true"})))
    lines = [
        line
        for line in server.client.get("/metrics").text.splitlines()
        if line.startswith("gatekeeper_validation_request_count{")
    ]
    assert lines and all(line.endswith(" 0.0") for line in lines)


def test_admitlabel_review_without_options_exempts_nothing() -> None:
    response = admitlabel_review(review_for(namespace("gatekeeper-system", {IGNORE: "true"})))
    assert response.response["allowed"] is False
    options = ValidationOptions(exempt_namespaces=("gatekeeper-*",))
    assert admitlabel_review(review_for(namespace("gatekeeper-system", {IGNORE: "true"})), options).response["allowed"]
