"""A slow policy: constraints not evaluated by the webhook's deadline are answered per the failure policy,
with the reason (the slow evaluation itself cannot be interrupted: the engines give no way to)."""

from __future__ import annotations

import time
from typing import Any

from mutator.policy import build_policy_set
from mutator.resources import Document
from mutator.webhook.admission import ValidationOptions, review_for, validate_review

SLOW = """package aslow
violation[{"msg": "slow"}] {
  count([x | x := numbers.range(1, 400000)[_]; x % 7 == 0]) < 0
}
"""
FAST = """package bfast
violation[{"msg": "fast says no"}] { input.review.object.metadata.name == "web" }
"""


def _template(kind: str, rego: str) -> dict[str, Any]:
    return {
        "apiVersion": "templates.gatekeeper.sh/v1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": kind.lower()},
        "spec": {
            "crd": {"spec": {"names": {"kind": kind}}},
            "targets": [{"target": "admission.k8s.gatekeeper.sh", "rego": rego}],
        },
    }


def _constraint(kind: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": kind, "metadata": {"name": name}, "spec": {}}


def _policies() -> Any:
    docs = [
        _template("ASlow", SLOW),
        _template("BFast", FAST),
        _constraint("ASlow", "slow"),
        _constraint("BFast", "fast"),
    ]
    policies = build_policy_set(Document(d, "test") for d in docs)
    assert not policies.errors, policies.errors
    return policies


POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"}, "spec": {}}


def _slow_seconds(policies: Any) -> float:
    start = time.monotonic()
    validate_review(review_for(POD, uid="t"), policies.validation, policies.namespace, ValidationOptions())
    return time.monotonic() - start


def test_without_a_deadline_every_constraint_is_evaluated() -> None:
    policies = _policies()
    response = validate_review(review_for(POD, uid="t"), policies.validation, policies.namespace).response
    assert response["allowed"] is False
    assert response["status"]["message"] == "[fast] fast says no"


def test_past_the_deadline_the_rest_is_an_error_denied_with_the_reason() -> None:
    policies = _policies()
    assert _slow_seconds(policies) > 0.02  # the slow template really is slow
    options = ValidationOptions(timeout=0.005)
    response = validate_review(review_for(POD, uid="t"), policies.validation, policies.namespace, options).response
    assert response["allowed"] is False
    assert response["status"]["code"] == 500
    assert "[fast] not evaluated: the review passed the webhook's deadline" in response["status"]["message"]


def test_past_the_deadline_fail_open_allows_with_a_warning() -> None:
    policies = _policies()
    options = ValidationOptions(timeout=0.005, fail_open=True)
    response = validate_review(review_for(POD, uid="t"), policies.validation, policies.namespace, options).response
    assert response["allowed"] is True
    assert any("the review passed the webhook's deadline" in w for w in response["warnings"])
