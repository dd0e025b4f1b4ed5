"""Fuzz the real server: random, truncated and mistyped AdmissionReview bodies to every admission endpoint.

Every answer must be a 200 with a well-formed AdmissionReview or a 400 with a JSON ``reason``; never a 5xx,
never a traceback, never the in-band "internal error" answer; the server stays up, and valid reviews sent in
between still get the right answers. The seed is fixed (``MUTATOR_FUZZ_SEED`` overrides it) and printed.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonpatch
import pytest

from mutator.webhook.admission import MAX_BODY_BYTES, review_for

from .server import ALWAYS_PULL, Server, running_server

SEED = int(os.environ.get("MUTATOR_FUZZ_SEED", "20261123"))
TOTAL = 400
ENDPOINTS = ("/v1/mutate", "/v1/admit", "/v1/admitlabel")


TEMPLATE = """
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: fuzznolatest
spec:
  crd:
    spec:
      names:
        kind: FuzzNoLatest
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package fuzznolatest

        violation[{"msg": msg}] {
          c := input.review.object.spec.containers[_]
          endswith(c.image, ":latest")
          msg := sprintf("container %v uses a latest tag", [c.name])
        }
"""

CONSTRAINT = """
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: FuzzNoLatest
metadata:
  name: no-latest
spec:
  match:
    kinds:
      - apiGroups: [""]
        kinds: ["Pod"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fuzz")
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "assign.yaml").write_text(ALWAYS_PULL)
    (policies / "template.yaml").write_text(TEMPLATE)
    (policies / "constraint.yaml").write_text(CONSTRAINT)
    with running_server(tmp, policies) as srv:
        yield srv


def _pod(image: str = "nginx:latest") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": image, "imagePullPolicy": "IfNotPresent"}]},
    }


def _namespace(labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "labels": labels}}


# --------------------------------------------------------------------------- bodies

_JUNK: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**64,
    1.5e308,
    -0.0,
    "",
    "x",
    "CREATE",
    "AdmissionReview",
    "ü日本🙂\u0000\ud7ff",
    [],
    [1, "a", None],
    {},
    {"kind": "Pod"},
    {"group": 1, "version": [], "kind": {}},
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside a JSON tree (the root excluded)."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield (*prefix, i)
            yield from _paths(child, (*prefix, i))


def _set(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(tree)
    parent = out
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return out


def _valid_reviews() -> list[dict[str, Any]]:
    return [
        review_for(_pod(), uid="pod-latest"),
        review_for(_pod("nginx:1.27"), uid="pod-pinned", operation="UPDATE"),
        review_for(_namespace({"admission.gatekeeper.sh/ignore": "yes"}), uid="ns-ignore"),
        review_for(_namespace({"team": "a"}), uid="ns-plain"),
        {**review_for(_pod(), uid="pod-delete", operation="DELETE"), "request": {"uid": "d", "operation": "DELETE"}},
    ]


def _nested(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def _with_object(raw_object: str, uid: str = "nested") -> bytes:
    """A review whose ``request.object`` is the given raw JSON text."""
    review = review_for(_pod(), uid=uid)
    marker = '"__OBJECT__"'
    review["request"]["object"] = "__OBJECT__"
    return json.dumps(review).replace(marker, raw_object, 1).encode()


def _fuzz_body(rng: random.Random) -> bytes:
    valid = rng.choice(_valid_reviews())
    encoded = json.dumps(valid).encode()
    choice = rng.randrange(9)
    if choice == 0:  # random bytes
        return rng.randbytes(rng.randrange(0, 2048))
    if choice == 1:  # a valid review cut at a random point
        return encoded[: rng.randrange(0, len(encoded))]
    if choice in (2, 3, 4):  # one field replaced by a value of another type
        path = rng.choice(list(_paths(valid)))
        return json.dumps(_set(valid, path, copy.deepcopy(rng.choice(_JUNK)))).encode()
    if choice == 5:  # the envelope itself of the wrong type, or fields removed
        variant = rng.randrange(4)
        if variant == 0:
            return json.dumps(rng.choice(_JUNK)).encode()
        if variant == 1:
            return json.dumps({**valid, "request": [valid["request"]]}).encode()
        broken = copy.deepcopy(valid)
        victim = broken["request"] if variant == 2 else broken
        victim.pop(rng.choice(list(victim)), None)
        return json.dumps(broken).encode()
    if choice == 6:  # huge nesting, in the object or as the whole body
        raw = _nested(rng.choice([10, 500, 1000, 1100, 10_000]), rng.choice(["list", "dict"]))
        where = rng.random()
        if where < 0.4:
            return _with_object(raw)
        if where < 0.8:  # under spec of an otherwise ordinary Pod, where the mutation walks
            pod = json.dumps({**_pod(), "spec": "__SPEC__"}).replace('"__SPEC__"', raw, 1)
            return _with_object(pod)
        return raw.encode()
    if choice == 7:  # long strings and odd unicode
        text = rng.choice(["a", "é", "🙂", "\u202e", "\\u0000"]) * rng.choice([1000, 100_000, 1_000_000])
        path = rng.choice(list(_paths(valid)))
        return json.dumps(_set(valid, path, text), ensure_ascii=rng.random() < 0.5).encode()
    # unknown operation, odd uids and kinds
    request = dict(valid["request"])
    request["operation"] = rng.choice(["CONNECT", "PATCH", "", "create", "DELETE", None, 7])
    request["uid"] = rng.choice([request.get("uid") or "u", "🙂", "x" * 10_000])
    return json.dumps({**valid, "request": request}).encode()


# --------------------------------------------------------------------------- checks


def _check_answer(r: httpx.Response, body: bytes, endpoint: str = "") -> dict[str, Any] | None:
    context = f"{endpoint} with seed {SEED}, body {body[:300]!r} ({len(body)} bytes)"
    assert r.status_code < 500, f"{r.status_code} {r.text[:500]} for {context}"
    assert "Traceback" not in r.text, context
    if r.status_code != 200:
        assert r.status_code == 400, f"{r.status_code} for {context}"
        payload = r.json()
        assert isinstance(payload.get("reason"), str) and payload["reason"], f"{r.text[:300]} for {context}"
        return None
    payload = r.json()
    response = payload["response"]
    assert isinstance(response["allowed"], bool), context
    status = response.get("status") or {}
    assert "internal error" not in str(status.get("message")), f"internal error answer {response} for {context}"
    return response


def _check_valid(server: Server, rng: random.Random) -> None:
    """A valid review on a random endpoint gets the right answer."""
    endpoint = rng.choice(ENDPOINTS)
    pod = _pod()
    if endpoint == "/v1/mutate":
        r = server.post(endpoint, review_for(pod, uid="m"))
        response = _check_answer(r, b"valid mutate")
        assert response is not None and response["uid"] == "m" and response["allowed"] is True
        patch = json.loads(base64.b64decode(response["patch"]))
        assert jsonpatch.apply_patch(pod, patch)["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    elif endpoint == "/v1/admit":
        r = server.post(endpoint, review_for(pod, uid="a"))
        response = _check_answer(r, b"valid admit")
        assert response is not None and response["uid"] == "a" and response["allowed"] is False
        assert response["status"]["message"] == "[no-latest] container app uses a latest tag"
        r = server.post(endpoint, review_for(_pod("nginx:1.27"), uid="a2"))
        assert r.json()["response"] == {"uid": "a2", "allowed": True}
    else:
        r = server.post(endpoint, review_for(_namespace({"admission.gatekeeper.sh/ignore": "1"}), uid="l"))
        response = _check_answer(r, b"valid admitlabel")
        assert response is not None and response["allowed"] is False and response["status"]["code"] == 403
        r = server.post(endpoint, review_for(_namespace({}), uid="l2"))
        assert r.json()["response"] == {"uid": "l2", "allowed": True}


def test_fuzzed_reviews_never_break_the_server(server: Server) -> None:
    print(f"fuzz seed: {SEED} (set MUTATOR_FUZZ_SEED to reproduce another)")
    rng = random.Random(SEED)
    start = time.monotonic()
    counts: dict[int, int] = {}
    problems: list[str] = []
    for i in range(TOTAL):
        if i % 10 == 0:
            _check_valid(server, rng)
            continue
        body = _fuzz_body(rng)
        endpoint = rng.choice(ENDPOINTS)
        try:
            r = server.client.post(endpoint, content=body, headers={"Content-Type": "application/json"})
        except httpx.TransportError as err:
            pytest.fail(f"request {i} to {endpoint} failed ({err!r}); seed {SEED}, body {body[:300]!r}")
        counts[r.status_code] = counts.get(r.status_code, 0) + 1
        try:
            _check_answer(r, body, endpoint)
        except AssertionError as err:  # collect them all: one run reports every reproducer
            problems.append(f"request {i}: {err}")
    print(f"{TOTAL} requests in {time.monotonic() - start:.1f} s, statuses {counts}")
    assert not problems, f"{len(problems)} bad answers:\n" + "\n".join(problems)
    assert server.proc.poll() is None, server.log.read_text()[-3000:]
    health = server.client.get("/healthz")
    assert health.status_code == 200 and health.text == "ok"
    assert "internal error while answering" not in server.log.read_text()
    _check_valid(server, rng)


def test_oversized_body_is_a_400_with_a_reason(server: Server) -> None:
    body = _with_object(json.dumps({"data": "x" * (MAX_BODY_BYTES + 10)}))
    r = server.client.post("/v1/mutate", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "byte limit" in r.json()["reason"]
    assert server.client.get("/healthz").text == "ok"
