"""A runaway policy over real HTTPS: cut off at the deadline, answered per the failure policy with the reason,
while the server keeps answering everything else (the engines run in a child process of the worker)."""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mutator.webhook.admission import review_for

from .server import ALWAYS_PULL, Server, running_server

# Evaluating K8sRunaway for a Pod named "runaway" takes many seconds; any other Pod is fast.
RUNAWAY_TEMPLATE = yaml.safe_load((Path(__file__).parent / "fixtures" / "slow" / "runaway.yaml").read_text())
NAMED_REGO = """package k8sforbiddenname
violation[{"msg": msg}] {
  input.review.object.metadata.name == "forbidden"
  msg := "that name is forbidden"
}
"""
NAMED_TEMPLATE = {
    "apiVersion": "templates.gatekeeper.sh/v1",
    "kind": "ConstraintTemplate",
    "metadata": {"name": "k8sforbiddenname"},
    "spec": {
        "crd": {"spec": {"names": {"kind": "K8sForbiddenName"}}},
        "targets": [{"target": "admission.k8s.gatekeeper.sh", "rego": NAMED_REGO}],
    },
}


def _constraint(kind: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": kind, "metadata": {"name": name}, "spec": {}}


def _write_policies(directory: Path) -> Path:
    directory.mkdir()
    docs = [
        RUNAWAY_TEMPLATE,
        NAMED_TEMPLATE,
        _constraint("K8sRunaway", "runaway"),
        _constraint("K8sForbiddenName", "no"),
    ]
    (directory / "validation.yaml").write_text(yaml.safe_dump_all(docs))
    (directory / "mutation.yaml").write_text(ALWAYS_PULL)
    return directory


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "nginx", "imagePullPolicy": "IfNotPresent"}]},
    }


def _admit(server: Server, name: str) -> tuple[dict[str, Any], float]:
    start = time.monotonic()
    r = server.post("/v1/admit", review_for(_pod(name), uid=f"uid-{name}"))
    assert r.status_code == 200, r.text
    return r.json()["response"], time.monotonic() - start


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("cutoff-closed")
    with running_server(tmp, _write_policies(tmp / "policies"), "--validation-timeout", "0.5") as srv:
        yield srv


@pytest.fixture(scope="module")
def open_(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("cutoff-open")
    with running_server(tmp, _write_policies(tmp / "policies"), "--validation-timeout", "0.5", "--fail-open") as srv:
        yield srv


def test_the_runaway_policy_really_runs_away(tmp_path: Path) -> None:
    # without isolation nothing can stop it: the worker answers only when the evaluation ends, seconds late
    with running_server(
        tmp_path, _write_policies(tmp_path / "policies"), "--validation-timeout", "0.5", "--no-isolate-validation"
    ) as srv:
        response, seconds = _admit(srv, "runaway")
    assert seconds > 2.0
    assert response["allowed"] is False
    assert response["status"]["message"].startswith("[runaway] counted 9000000")


def test_cut_off_at_the_deadline_and_denied_with_the_reason(closed: Server) -> None:
    response, seconds = _admit(closed, "runaway")
    assert seconds < 2.0  # the deadline is 0.5 s; the evaluation alone takes several seconds
    assert response["allowed"] is False
    assert response["status"]["code"] == 500
    message = response["status"]["message"]
    assert "validation cut off at the webhook's deadline while evaluating template K8sRunaway" in message
    assert "validation failed for request uid-runaway" in closed.log.read_text()
    metrics = closed.client.get("/metrics").text
    counted = [line for line in metrics.splitlines() if line.startswith("mutator_validation_cut_offs_total ")]
    assert counted and float(counted[0].split()[1]) >= 1.0


def test_fail_open_allows_with_the_reason_as_a_warning(open_: Server) -> None:
    response, seconds = _admit(open_, "runaway")
    assert seconds < 2.0
    assert response["allowed"] is True
    assert any("cut off at the webhook's deadline" in w and "K8sRunaway" in w for w in response["warnings"])


def test_after_a_cut_off_the_next_review_is_evaluated_and_no_runaway_is_left(closed: Server) -> None:
    _admit(closed, "runaway")
    response, _ = _admit(closed, "forbidden")
    assert response["allowed"] is False
    assert response["status"]["message"] == "[no] that name is forbidden"
    assert _admit(closed, "fine")[0]["allowed"] is True
    # the killed child is gone (and reaped); only the fresh evaluating process remains
    assert len(_children(closed.proc.pid)) == 1


def test_the_server_keeps_answering_while_an_evaluation_runs_away(closed: Server) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(_admit, closed, "runaway")
        time.sleep(0.1)  # the runaway evaluation has started
        start = time.monotonic()
        assert closed.client.get("/healthz").status_code == 200
        mutated = closed.post("/v1/mutate", review_for(_pod("web"), uid="m-1"))
        during = time.monotonic() - start
        response, _ = slow.result(timeout=10)
    assert mutated.status_code == 200 and mutated.json()["response"]["patchType"] == "JSONPatch"
    assert during < 0.4  # answered while the child was still evaluating (it is cut off at 0.5 s)
    assert response["status"]["code"] == 500


def test_a_review_queued_behind_a_runaway_one_is_answered_by_its_own_deadline(closed: Server) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(_admit, closed, "runaway")
        time.sleep(0.1)
        second = pool.submit(_admit, closed, "forbidden")
        first_response, _ = first.result(timeout=10)
        second_response, second_seconds = second.result(timeout=10)
    assert "cut off" in first_response["status"]["message"]
    # it does not wait for the runaway review's cut-off: after 50 ms of waiting it gets a child of its own
    assert second_response["status"]["message"] == "[no] that name is forbidden"
    assert second_seconds < 0.35
