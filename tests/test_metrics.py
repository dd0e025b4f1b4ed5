"""Prometheus metrics under Gatekeeper's names: request counters over real HTTPS, policy gauges, audit/sync."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mutator.metrics import CONTENT_TYPE, Metrics
from mutator.mutation import MutationSystem
from mutator.policy import LoadError, PolicySet, load_paths
from mutator.webhook.admission import MutationOutcome, ValidationOutcome, mutate_review, review_for

from .server import ALWAYS_PULL, Server, running_server, wait_for

PULL_ALWAYS = ALWAYS_PULL.replace("name: always-pull", "name: pull-always")

# rejected: an Assign may not change metadata
BAD_ASSIGN = """
apiVersion: mutations.gatekeeper.sh/v1
kind: Assign
metadata:
  name: bad-assign
spec:
  applyTo:
    - groups: [""]
      kinds: ["Pod"]
      versions: ["v1"]
  location: "metadata.labels.team"
  parameters:
    assign:
      value: payments
"""

NO_LATEST = """
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: testnolatest
spec:
  crd:
    spec:
      names:
        kind: TestNoLatest
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package testnolatest

        violation[{"msg": msg}] {
          c := input.review.object.spec.containers[_]
          endswith(c.image, ":latest")
          msg := sprintf("container %v uses a :latest image", [c.name])
        }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: TestNoLatest
metadata:
  name: no-latest
spec:
  match:
    kinds: [{apiGroups: [""], kinds: ["Pod"]}]
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: TestNoLatest
metadata:
  name: no-latest-audit-only
spec:
  enforcementAction: dryrun
  match:
    kinds: [{apiGroups: [""], kinds: ["Pod"]}]
    namespaces: ["nowhere"]
"""

BROKEN_TEMPLATE = (Path(__file__).parent / "fixtures" / "broken" / "template.yaml").read_text()

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(server: Server) -> Samples:
    r = server.client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == CONTENT_TYPE
    return parse(r.text)


def write_policies(policies: Path) -> None:
    policies.mkdir()
    (policies / "assign.yaml").write_text(PULL_ALWAYS)
    (policies / "bad-assign.yaml").write_text(BAD_ASSIGN)
    (policies / "no-latest.yaml").write_text(NO_LATEST)
    (policies / "broken.yaml").write_text(BROKEN_TEMPLATE)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("metrics")
    write_policies(tmp / "policies")
    with running_server(tmp, tmp / "policies") as srv:
        yield srv


def pod(image: str = "nginx:1.27", pull: str | None = None, namespace: str = "default") -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": image}
    if pull:
        container["imagePullPolicy"] = pull
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"containers": [container]},
    }


def delta(before: Samples, after: Samples) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The request series that moved (durations' sums and buckets aside)."""
    moved = {}
    for key, new in after.items():
        name = key[0]
        if not name.startswith(("gatekeeper_validation_request", "gatekeeper_mutation_")):
            continue
        if name.endswith(("_sum", "_bucket")):
            continue
        if new != before.get(key, 0.0):
            moved[key] = new - before.get(key, 0.0)
    return moved


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_metrics_text_uses_gatekeepers_names(server: Server) -> None:
    text = server.client.get("/metrics").text
    assert "# TYPE gatekeeper_validation_request_count counter\n" in text
    assert "# TYPE gatekeeper_mutation_request_count counter\n" in text
    assert "gatekeeper_validation_request_count_total" not in text
    assert "_created" not in text
    for name in (
        "gatekeeper_validation_request_duration_seconds",
        "gatekeeper_mutation_request_duration_seconds",
        "gatekeeper_mutation_system_iterations",
        "gatekeeper_audit_duration_seconds",
        "gatekeeper_sync_duration_seconds",
    ):
        assert f"# TYPE {name} histogram\n" in text
    for name in (
        "gatekeeper_violations",
        "gatekeeper_audit_last_run_time",
        "gatekeeper_constraints",
        "gatekeeper_constraint_templates",
        "gatekeeper_mutators",
        "gatekeeper_mutator_conflicting_count",
        "gatekeeper_sync",
        "gatekeeper_sync_last_run_time",
    ):
        assert f"# TYPE {name} gauge\n" in text


def test_mutation_requests_are_counted_by_outcome(server: Server) -> None:
    before = scrape(server)
    r = server.post("/v1/mutate", review_for(pod(pull="IfNotPresent"), uid="m-1"))  # patched in 2 passes
    assert r.status_code == 200 and r.json()["response"]["patchType"] == "JSONPatch"
    r = server.post("/v1/mutate", review_for(pod(pull="Always"), uid="m-2"))  # already as wanted: no patch
    assert r.status_code == 200 and "patch" not in r.json()["response"]
    r = server.post("/v1/mutate", review_for(pod(), operation="DELETE", uid="m-3"))  # not mutated at all
    assert r.status_code == 200 and r.json()["response"]["allowed"] is True
    broken = pod()
    broken["spec"]["containers"] = {"app": "not a list"}  # the mutator cannot apply
    r = server.post("/v1/mutate", review_for(broken, uid="m-4"))
    assert r.status_code == 200 and r.json()["response"]["allowed"] is False
    assert server.post("/v1/mutate", b"{not json").status_code == 400
    after = scrape(server)

    assert delta(before, after) == {
        key("gatekeeper_mutation_request_count_total", mutation_status="success"): 2,
        key("gatekeeper_mutation_request_duration_seconds_count", mutation_status="success"): 2,
        key("gatekeeper_mutation_request_count_total", mutation_status="skip"): 1,
        key("gatekeeper_mutation_request_duration_seconds_count", mutation_status="skip"): 1,
        key("gatekeeper_mutation_request_count_total", mutation_status="error"): 2,
        key("gatekeeper_mutation_request_duration_seconds_count", mutation_status="error"): 2,
        key("gatekeeper_mutation_system_iterations_count", success="true"): 1,
    }
    iterations = "gatekeeper_mutation_system_iterations_sum"
    assert value(after, iterations, success="true") - value(before, iterations, success="true") == 2
    seconds = "gatekeeper_mutation_request_duration_seconds_sum"
    assert value(after, seconds, mutation_status="success") > value(before, seconds, mutation_status="success")
    bucket = "gatekeeper_mutation_system_iterations_bucket"
    assert value(after, bucket, success="true", le="2.0") - value(before, bucket, success="true", le="2.0") == 1


def test_validation_requests_are_counted_by_outcome_and_dryrun(server: Server) -> None:
    before = scrape(server)
    r = server.post("/v1/admit", review_for(pod("nginx:latest"), uid="v-1"))
    assert r.status_code == 200 and r.json()["response"]["allowed"] is False
    r = server.post("/v1/admit", review_for(pod(), uid="v-2"))
    assert r.status_code == 200 and r.json()["response"]["allowed"] is True
    dry = review_for(pod(), uid="v-3")
    dry["request"]["dryRun"] = True
    r = server.post("/v1/admit", dry)
    assert r.status_code == 200 and r.json()["response"]["allowed"] is True
    wrong_kind = {**review_for(pod(), uid="v-4"), "kind": "Pod"}
    assert server.post("/v1/admit", wrong_kind).status_code == 400
    after = scrape(server)

    count, seconds = "gatekeeper_validation_request_count_total", "gatekeeper_validation_request_duration_seconds_count"
    assert delta(before, after) == {
        key(count, admission_status="deny", admission_dryrun="false"): 1,
        key(seconds, admission_status="deny", admission_dryrun="false"): 1,
        key(count, admission_status="allow", admission_dryrun="false"): 1,
        key(seconds, admission_status="allow", admission_dryrun="false"): 1,
        key(count, admission_status="allow", admission_dryrun="true"): 1,
        key(seconds, admission_status="allow", admission_dryrun="true"): 1,
        key(count, admission_status="error", admission_dryrun="false"): 1,
        key(seconds, admission_status="error", admission_dryrun="false"): 1,
    }


def test_policy_gauges_reflect_the_loaded_policies(server: Server) -> None:
    samples = scrape(server)
    assert value(samples, "gatekeeper_constraints", enforcement_action="deny", status="active") == 1
    assert value(samples, "gatekeeper_constraints", enforcement_action="dryrun", status="active") == 1
    assert value(samples, "gatekeeper_constraints", enforcement_action="warn", status="active") == 0
    assert ("gatekeeper_constraints", (("enforcement_action", "warn"), ("status", "error"))) in samples
    assert value(samples, "gatekeeper_constraint_templates", status="active") == 1
    assert value(samples, "gatekeeper_constraint_templates", status="error") == 1
    assert value(samples, "gatekeeper_mutators", status="active") == 1
    assert value(samples, "gatekeeper_mutators", status="error") == 1
    assert value(samples, "gatekeeper_mutator_conflicting_count", status="active") == 0
    assert value(samples, "gatekeeper_violations", enforcement_action="deny") == 0


def test_policy_gauges_follow_a_reload(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    write_policies(policies)
    with running_server(tmp_path, policies) as srv:
        assert value(scrape(srv), "gatekeeper_mutators", status="active") == 1
        (policies / "broken.yaml").unlink()
        (policies / "second.yaml").write_text(PULL_ALWAYS.replace("name: pull-always", "name: pull-always-2"))

        def reloaded() -> Samples | None:
            samples = scrape(srv)
            return samples if value(samples, "gatekeeper_mutators", status="active") == 2 else None

        samples = wait_for(reloaded)
        assert samples, srv.log.read_text()
        assert value(samples, "gatekeeper_constraint_templates", status="error") == 0
        assert value(samples, "gatekeeper_constraint_templates", status="active") == 1


# --------------------------------------------------------------------------- the Metrics object itself


def test_audit_and_sync_metrics() -> None:
    metrics = Metrics(process=False)
    metrics.set_audit_violations({"deny": 3, "warn": 1})
    metrics.observe_audit(12.5, started=1_700_000_000.0)
    metrics.set_sync({"Namespace": 4, "Pod": 10}, errors={"Pod": 1})
    metrics.observe_sync(0.002, finished=1_700_000_100.0)
    samples = parse(metrics.render().decode())
    assert value(samples, "gatekeeper_violations", enforcement_action="deny") == 3
    assert value(samples, "gatekeeper_violations", enforcement_action="warn") == 1
    assert ("gatekeeper_violations", (("enforcement_action", "dryrun"),)) in samples
    assert value(samples, "gatekeeper_audit_duration_seconds_count") == 1
    assert value(samples, "gatekeeper_audit_duration_seconds_sum") == 12.5
    assert value(samples, "gatekeeper_audit_duration_seconds_bucket", le="30.0") == 1
    assert value(samples, "gatekeeper_audit_duration_seconds_bucket", le="10.0") == 0
    assert value(samples, "gatekeeper_audit_last_run_time") == 1_700_000_000.0
    assert value(samples, "gatekeeper_audit_last_run_end_time") == 1_700_000_012.5
    assert value(samples, "gatekeeper_sync", kind="Namespace", status="active") == 4
    assert value(samples, "gatekeeper_sync", kind="Pod", status="active") == 10
    assert value(samples, "gatekeeper_sync", kind="Pod", status="error") == 1
    assert value(samples, "gatekeeper_sync_duration_seconds_count") == 1
    assert value(samples, "gatekeeper_sync_last_run_time") == 1_700_000_100.0

    # the next audit and sync replace the numbers; a kind no longer synced disappears
    metrics.set_audit_violations({"dryrun": 2})
    metrics.set_sync({"Namespace": 5})
    samples = parse(metrics.render().decode())
    assert value(samples, "gatekeeper_violations", enforcement_action="deny") == 0
    assert value(samples, "gatekeeper_violations", enforcement_action="dryrun") == 2
    assert value(samples, "gatekeeper_sync", kind="Namespace", status="active") == 5
    assert ("gatekeeper_sync", (("kind", "Pod"), ("status", "active"))) not in samples


def test_each_metrics_has_its_own_registry() -> None:
    first, second = Metrics(process=False), Metrics(process=False)
    first.observe_validation(review_for(pod()), ValidationOutcome({"uid": "x", "allowed": True}), 0.01)
    count = "gatekeeper_validation_request_count_total"
    labels = {"admission_status": "allow", "admission_dryrun": "false"}
    assert value(parse(first.render().decode()), count, **labels) == 1
    assert value(parse(second.render().decode()), count, **labels) == 0


def test_validation_errors_count_as_error_even_when_failing_open() -> None:
    metrics = Metrics(process=False)
    fail_open = ValidationOutcome({"uid": "x", "allowed": True}, errors=["rego blew up"])
    metrics.observe_validation(review_for(pod()), fail_open, 0.01)
    metrics.observe_validation(review_for(pod()), None, 0.01)  # the answer raised
    samples = parse(metrics.render().decode())
    labels = {"admission_status": "error", "admission_dryrun": "false"}
    assert value(samples, "gatekeeper_validation_request_count_total", **labels) == 2


def test_a_mutation_that_does_not_converge_is_recorded_as_such() -> None:
    from .test_system import counting, system_of

    system: MutationSystem = system_of(counting("restless", 10**9))
    outcome = mutate_review(review_for(pod()), system, lambda name: None)
    assert "not converging" in outcome.error
    assert outcome.passes == 2  # every pass the system was allowed: one mutator, plus one
    metrics = Metrics(process=False)
    metrics.observe_mutation(outcome, 0.01)
    metrics.observe_mutation(MutationOutcome({"uid": "x", "allowed": True}, skipped="DELETE"), 0.01)
    samples = parse(metrics.render().decode())
    assert value(samples, "gatekeeper_mutation_system_iterations_count", success="false") == 1
    assert value(samples, "gatekeeper_mutation_system_iterations_sum", success="false") == 2
    assert value(samples, "gatekeeper_mutation_system_iterations_count", success="true") == 0
    assert value(samples, "gatekeeper_mutation_request_count_total", mutation_status="error") == 1
    assert value(samples, "gatekeeper_mutation_request_count_total", mutation_status="skip") == 1


def test_rejected_policies_are_counted_by_kind(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(NO_LATEST + "---\n" + BROKEN_TEMPLATE + "---\n" + BAD_ASSIGN)
    (tmp_path / "unreadable.yaml").write_text("key: [unclosed\n")
    current = load_paths([tmp_path])
    # a constraint whose template is missing, and a LoadError that names its kind and action outright
    current.errors.append(LoadError("x.yaml (TestMissing orphan)", "no template"))
    kinded = SimpleNamespace(source="cluster", message="bad", kind="TestNoLatest", enforcement_action="warn")
    current.errors.append(kinded)  # type: ignore[arg-type]
    metrics = Metrics(lambda: current, process=False)
    samples = parse(metrics.render().decode())
    assert value(samples, "gatekeeper_constraint_templates", status="error") == 1
    assert value(samples, "gatekeeper_mutators", status="error") == 1
    assert value(samples, "gatekeeper_constraints", enforcement_action="unknown", status="error") == 1
    assert value(samples, "gatekeeper_constraints", enforcement_action="warn", status="error") == 1
    assert value(samples, "gatekeeper_constraints", enforcement_action="deny", status="active") == 1


def test_no_policy_gauges_without_a_policy_set() -> None:
    samples = parse(Metrics(process=False).render().decode())
    assert not any(name == "gatekeeper_constraints" for name, _ in samples)
    current = PolicySet()
    samples = parse(Metrics(lambda: current, process=False).render().decode())
    assert value(samples, "gatekeeper_constraint_templates", status="active") == 0
    assert ("gatekeeper_mutators", (("status", "active"),)) in samples
