"""Soak and load under change (``make stress``; not part of ``make test``): bounded loops on 127.0.0.1.

- soak: a steady stream of mutate and admit requests for ``MUTATOR_SOAK_SECONDS`` (600 by default); the
  server's resident memory, sampled every 30 s after a warm-up minute, must stay flat (growth under 15 MB);
- change under load: while requests flow, policy files are replaced and certificates rotated; no request
  fails and every answer comes from one complete policy set (two mutators from the same file agree).
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mutator.webhook.admission import review_for

from ..server import Server, running_server

pytestmark = pytest.mark.stress

SOAK_SECONDS = float(os.environ.get("MUTATOR_SOAK_SECONDS", "600"))

POLICY = """
apiVersion: mutations.gatekeeper.sh/v1
kind: Assign
metadata: {{name: pull-policy}}
spec:
  applyTo: [{{groups: [""], kinds: ["Pod"], versions: ["v1"]}}]
  location: "spec.containers[name:*].imagePullPolicy"
  parameters: {{assign: {{value: {value}}}}}
---
apiVersion: mutations.gatekeeper.sh/v1
kind: Assign
metadata: {{name: policy-env}}
spec:
  applyTo: [{{groups: [""], kinds: ["Pod"], versions: ["v1"]}}]
  location: "spec.containers[name:*].env[name: PULL_POLICY].value"
  parameters: {{assign: {{value: {value}}}}}
---
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {{name: soakpull}}
spec:
  crd: {{spec: {{names: {{kind: SoakPull}}}}}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package soakpull
        violation[{{"msg": msg}}] {{
          c := input.review.object.spec.containers[_]
          c.imagePullPolicy != "{value}"
          msg := sprintf("container %v must pull {value}", [c.name])
        }}
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: SoakPull
metadata: {{name: soak-pull}}
spec:
  match: {{kinds: [{{apiGroups: [""], kinds: ["Pod"]}}]}}
"""


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _children_rss_mb(pid: int) -> float:
    """RSS of the server's children (the evaluating process of ``--isolate-validation``)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                total += _rss_mb(int(entry))
        except (OSError, AssertionError):
            continue
    return total


def _pod(pull: str | None = None) -> dict:
    container = {"name": "app", "image": "registry.example.com/app:1"}
    if pull:
        container["imagePullPolicy"] = pull
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "soak", "namespace": "default"},
            "spec": {"containers": [container]}}  # fmt: skip


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "policy.yaml").write_text(POLICY.format(value="Always"))
    with running_server(tmp_path, policies) as srv:
        yield srv


def test_memory_stays_flat(server: Server) -> None:
    samples: list[float] = []
    child_samples: list[float] = []
    start = time.monotonic()
    next_sample = start + min(60.0, SOAK_SECONDS / 3)
    requests = 0
    while time.monotonic() - start < SOAK_SECONDS:
        assert server.post("/v1/mutate", review_for(_pod(), uid="m")).status_code == 200
        assert server.post("/v1/admit", review_for(_pod("Always"), uid="a")).status_code == 200
        requests += 2
        if time.monotonic() >= next_sample:
            samples.append(_rss_mb(server.proc.pid))
            child_samples.append(_children_rss_mb(server.proc.pid))
            next_sample += min(30.0, SOAK_SECONDS / 10)
    print(f"\n{requests} requests in {SOAK_SECONDS:.0f} s; RSS samples (MB): {[round(s, 1) for s in samples]}")
    print(f"evaluating child RSS samples (MB): {[round(s, 1) for s in child_samples]}")
    assert len(samples) >= 2
    assert samples[-1] - samples[0] < 15.0, samples
    assert child_samples[0] > 0  # the evaluating child exists (validation is isolated by default)
    assert child_samples[-1] - child_samples[0] < 15.0, child_samples


def test_policy_replacement_and_cert_rotation_under_load(server: Server, tmp_path: Path) -> None:
    failures: list[str] = []
    stop = threading.Event()
    counts = {"n": 0}

    def load() -> None:
        import httpx

        context = ssl.create_default_context(cafile=str(server.ca))
        with httpx.Client(base_url=server.base, verify=context, timeout=10) as client:
            while not stop.is_set():
                try:
                    mutate = client.post("/v1/mutate", json=review_for(_pod(), uid="m")).json()["response"]
                    import base64
                    import json

                    import jsonpatch

                    container = jsonpatch.apply_patch(_pod(), json.loads(base64.b64decode(mutate["patch"])))[
                        "spec"]["containers"][0]  # fmt: skip
                    # one request sees one complete policy set: both mutators from the same file agree
                    if container["env"][0]["value"] != container["imagePullPolicy"]:
                        failures.append(f"half-loaded policy set: {container}")
                    admit = client.post("/v1/admit", json=review_for(_pod("Always"), uid="a"))
                    if admit.status_code != 200 or "response" not in admit.json():
                        failures.append(f"admit answered {admit.status_code}: {admit.text[:200]}")
                    elif admit.json()["response"].get("status", {}).get("code") == 500:
                        # an evaluation error (a child replaced mid-review, a half-loaded set): never expected
                        failures.append(f"admit failed: {admit.json()['response']['status']['message']}")
                    counts["n"] += 2
                except Exception as err:  # noqa: BLE001 - every failure is reported
                    failures.append(repr(err))

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + min(60.0, SOAK_SECONDS)
    flip = 0
    while time.monotonic() < deadline:
        flip += 1
        value = "Always" if flip % 2 else "IfNotPresent"
        tmp = server.policies / ".policy.yaml.tmp"
        tmp.write_text(POLICY.format(value=value))
        os.replace(tmp, server.policies / "policy.yaml")  # atomic, as a GitOps sync writes
        if flip % 3 == 0:
            subprocess.run([sys.executable, "-m", "mutator.cli", "certs", "--out", str(server.ca.parent)],
                           check=True, capture_output=True)  # fmt: skip
        time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(30)
    print(f"\n{counts['n']} requests, {flip} policy replacements, {flip // 3} certificate rotations")
    assert failures == []
    assert counts["n"] > 100
