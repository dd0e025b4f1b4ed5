"""``mutator verify`` (mutator.verify): Gatekeeper Suite files written here, run in-process and through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mutator.validation.constraints import constraint_from_resource
from mutator.validation.system import Violation
from mutator.validation.templates import template_from_resource
from mutator.verify import CaseResult, RunFilter, check_assertions, find_suites, run_suite

# --- our own suite --------------------------------------------------------------------------------------------------

TEAM_TEMPLATE = """\
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8steamlabel
spec:
  crd:
    spec:
      names:
        kind: K8sTeamLabel
      validation:
        openAPIV3Schema:
          type: object
          properties:
            teams:
              type: array
              items:
                type: string
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8steamlabel

        violation[{"msg": msg}] {
          not input.review.object.metadata.labels.team
          msg := sprintf("%v %v has no team label", [input.review.kind.kind, input.review.object.metadata.name])
        }

        violation[{"msg": msg}] {
          team := input.review.object.metadata.labels.team
          not known(team)
          msg := sprintf("team %v is unknown", [team])
        }

        violation[{"msg": msg}] {
          input.review.operation == "UPDATE"
          old := input.review.oldObject.metadata.labels.team
          old != input.review.object.metadata.labels.team
          input.review.userInfo.username != "platform-admin"
          msg := sprintf("team label is immutable (was %v)", [old])
        }

        violation[{"msg": msg}] {
          c := input.review.object.spec.containers[_]
          endswith(c.image, ":latest")
          msg := sprintf("container %v uses a latest image", [c.name])
        }

        known(team) {
          input.parameters.teams[_] == team
        }
"""

TEAM_CONSTRAINT = """\
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sTeamLabel
metadata:
  name: team-label
spec:
  match:
    kinds:
      - apiGroups: [""]
        kinds: ["Pod"]
  parameters:
    teams: ["payments", "search"]
"""

OWNED_NS_TEMPLATE = """\
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8sownednamespace
spec:
  crd:
    spec:
      names:
        kind: K8sOwnedNamespace
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8sownednamespace

        violation[{"msg": msg}] {
          ns := input.review.object.metadata.namespace
          not data.inventory.cluster["v1"]["Namespace"][ns]
          msg := sprintf("namespace %v is not known", [ns])
        }

        violation[{"msg": msg}] {
          ns := input.review.object.metadata.namespace
          n := data.inventory.cluster["v1"]["Namespace"][ns]
          not n.metadata.labels.owner
          msg := sprintf("namespace %v has no owner", [ns])
        }

        violation[{"msg": msg}] {
          name := input.review.object.metadata.name
          other := data.inventory.namespace[ns]["v1"]["Pod"][name]
          ns != input.review.object.metadata.namespace
          msg := sprintf("pod name %v is also used in %v", [name, ns])
        }
"""

OWNED_NS_CONSTRAINT = """\
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sOwnedNamespace
metadata:
  name: owned-namespace
"""


def pod(name: str, labels: dict[str, str] | None = None, image: str = "corp.example/app:1") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop"}
    if labels is not None:
        meta["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


def admission_review(operation: str, new: dict[str, Any], old: dict[str, Any], username: str) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "6a1d3c2e-5b9f-4d47-8f0e-2b1c9e7a4d10",
            "operation": operation,
            "userInfo": {"username": username},
            "object": new,
            "oldObject": old,
        },
    }


TEAM_SUITE = """\
apiVersion: test.gatekeeper.sh/v1alpha1
kind: Suite
metadata:
  name: team-label
tests:
  - name: team-label
    template: template.yaml
    constraint: constraint.yaml
    cases:
      - name: labelled
        object: objects/labelled.yaml
        assertions:
          - violations: no
      - name: unlabelled
        object: objects/unlabelled.yaml
        assertions:
          - violations: yes
          - violations: 1
            message: has no team label
          - violations: 0
            message: unknown
      - name: unknown-team-and-latest
        object: objects/unknown-latest.yaml
        assertions:
          - violations: 2
          - violations: 1
            message: ^team \\w+ is unknown$
          - violations: 1
            message: container app
          - message: latest
      - name: update-changes-team
        object: objects/update.yaml
        assertions:
          - violations: 1
            message: immutable \\(was payments\\)
      - name: update-by-admin
        object: objects/update-admin.yaml
        assertions:
          - violations: no
"""

INVENTORY_SUITE = """\
apiVersion: test.gatekeeper.sh/v1alpha1
kind: Suite
metadata:
  name: owned-namespace
tests:
  - name: owned-namespace
    template: owned/template.yaml
    constraint: owned/constraint.yaml
    cases:
      - name: namespace-with-owner
        object: objects/labelled.yaml
        inventory:
          - owned/inventory.yaml
        assertions:
          - violations: no
      - name: namespace-missing
        object: objects/labelled.yaml
        assertions:
          - violations: 1
            message: namespace shop is not known
      - name: namespace-without-owner
        object: objects/labelled.yaml
        inventory:
          - owned/inventory-no-owner.yaml
        assertions:
          - violations: 1
            message: has no owner
      - name: duplicate-pod-name
        object: objects/labelled.yaml
        inventory:
          - owned/inventory.yaml
          - owned/other-pods.yaml
        assertions:
          - violations: 1
            message: pod name web is also used in blog
"""


def dump(path: Path, *docs: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def write_suites(root: Path) -> Path:
    """A directory with two suites: team-label/suite.yaml and team-label/owned-suite.yaml."""
    base = root / "team-label"
    objects = base / "objects"
    objects.mkdir(parents=True)
    (base / "template.yaml").write_text(TEAM_TEMPLATE)
    (base / "constraint.yaml").write_text(TEAM_CONSTRAINT)
    (base / "suite.yaml").write_text(TEAM_SUITE)
    dump(objects / "labelled.yaml", pod("web", {"team": "payments"}))
    dump(objects / "unlabelled.yaml", pod("web"))
    dump(objects / "unknown-latest.yaml", pod("web", {"team": "growth"}, image="corp.example/app:latest"))
    old = pod("web", {"team": "payments"})
    new = pod("web", {"team": "search"})
    dump(objects / "update.yaml", admission_review("UPDATE", new, old, "dev-alice"))
    dump(objects / "update-admin.yaml", admission_review("UPDATE", new, old, "platform-admin"))

    owned = base / "owned"
    owned.mkdir()
    (owned / "template.yaml").write_text(OWNED_NS_TEMPLATE)
    (owned / "constraint.yaml").write_text(OWNED_NS_CONSTRAINT)
    shop = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"owner": "ana"}}}
    blog = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "blog", "labels": {"owner": "bo"}}}
    dump(owned / "inventory.yaml", shop, blog)  # two documents in one inventory file
    dump(owned / "inventory-no-owner.yaml", {**shop, "metadata": {"name": "shop"}})
    other = pod("web", {"team": "search"})
    other["metadata"]["namespace"] = "blog"
    dump(owned / "other-pods.yaml", other)
    (base / "owned-suite.yaml").write_text(INVENTORY_SUITE)
    return base


def results_of(path: Path, run: str | None = None) -> dict[str, CaseResult]:
    found = run_suite(path, run=RunFilter.parse(run) if run else None)
    return {f"{r.test}/{r.case}": r for r in found}


# --- run_suite ------------------------------------------------------------------------------------------------------


def test_every_case_of_our_suite_passes(tmp_path: Path) -> None:
    base = write_suites(tmp_path)
    results = results_of(base / "suite.yaml")
    assert list(results) == [
        "team-label/labelled",
        "team-label/unlabelled",
        "team-label/unknown-team-and-latest",
        "team-label/update-changes-team",
        "team-label/update-by-admin",
    ]
    failures = {k: r.reason for k, r in results.items() if not r.passed}
    assert failures == {}
    assert [v.text for v in results["team-label/update-changes-team"].violations] == [
        "[team-label] team label is immutable (was payments)"
    ]
    assert sorted(v.message for v in results["team-label/unknown-team-and-latest"].violations) == [
        "container app uses a latest image",
        "team growth is unknown",
    ]
    assert results["team-label/labelled"].title == f"{base / 'suite.yaml'} team-label/labelled"


def test_inventory_files_feed_data_inventory(tmp_path: Path) -> None:
    base = write_suites(tmp_path)
    results = results_of(base / "owned-suite.yaml")
    assert {k: r.reason for k, r in results.items() if not r.passed} == {}
    assert len(results) == 4
    assert [v.message for v in results["owned-namespace/duplicate-pod-name"].violations] == [
        "pod name web is also used in blog"
    ]
    # each case has its own inventory: nothing leaks from the case before
    assert [v.message for v in results["owned-namespace/namespace-missing"].violations] == [
        "namespace shop is not known"
    ]


def test_failing_assertions_are_reported_with_the_reason(tmp_path: Path) -> None:
    base = write_suites(tmp_path)
    suite = yaml.safe_load(TEAM_SUITE)
    cases = suite["tests"][0]["cases"]
    cases[0]["assertions"] = [{"violations": "yes"}]  # labelled has none
    cases[1]["assertions"] = [{"violations": 3}]  # unlabelled has one
    cases[2]["assertions"] = [{"violations": 1, "message": "no such message"}]
    cases[3]["assertions"] = [{"violations": "no"}]
    (base / "wrong.yaml").write_text(yaml.safe_dump(suite))
    results = results_of(base / "wrong.yaml")
    assert [r.passed for r in results.values()] == [False, False, False, False, True]
    assert "expected violations, got none" in results["team-label/labelled"].reason
    assert "expected 3 violations, got 1" in results["team-label/unlabelled"].reason
    assert "[team-label] Pod web has no team label" in results["team-label/unlabelled"].reason
    assert "matching 'no such message'" in results["team-label/unknown-team-and-latest"].reason
    assert "expected no violations, got 1" in results["team-label/update-changes-team"].reason


def test_run_filter_selects_tests_and_cases(tmp_path: Path) -> None:
    base = write_suites(tmp_path)
    assert list(results_of(base / "suite.yaml", run="update")) == [
        "team-label/update-changes-team",
        "team-label/update-by-admin",
    ]
    assert list(results_of(base / "suite.yaml", run="admin$")) == ["team-label/update-by-admin"]
    assert len(results_of(base / "suite.yaml", run="^team-label$")) == 5  # the test's own name selects all
    assert results_of(base / "suite.yaml", run="nothing-matches") == {}


def test_run_filter_understands_gators_test_case_separator(tmp_path: Path) -> None:
    # gator verify --run "<test regex>//<case regex>" (pkg/gator/verify/filter.go)
    base = write_suites(tmp_path)
    assert list(results_of(base / "suite.yaml", run="team//^update")) == [
        "team-label/update-changes-team",
        "team-label/update-by-admin",
    ]
    assert list(results_of(base / "suite.yaml", run="//^labelled$")) == ["team-label/labelled"]
    assert results_of(base / "suite.yaml", run="other-test//") == {}


def test_setup_errors_fail_every_selected_case(tmp_path: Path) -> None:
    base = write_suites(tmp_path)
    (base / "constraint.yaml").write_text(TEAM_CONSTRAINT.replace('teams: ["payments", "search"]', "teams: 7"))
    results = results_of(base / "suite.yaml")
    assert len(results) == 5
    assert all(not r.passed for r in results.values())
    assert all(r.reason.startswith("setup: ") and "spec.parameters.teams" in r.reason for r in results.values())


def test_broken_template_fails_with_the_compile_error(tmp_path: Path) -> None:
    base = write_suites(tmp_path)
    (base / "template.yaml").write_text(TEAM_TEMPLATE.replace("known(team) {", "known(team) {{"))
    results = results_of(base / "suite.yaml", run="labelled")
    assert [r.passed for r in results.values()] == [False, False]
    assert all("k8steamlabel.rego:" in r.reason for r in results.values())


def test_missing_object_file_fails_only_that_case(tmp_path: Path) -> None:
    base = write_suites(tmp_path)
    (base / "objects" / "unlabelled.yaml").unlink()
    results = results_of(base / "suite.yaml")
    assert [k for k, r in results.items() if not r.passed] == ["team-label/unlabelled"]
    assert results["team-label/unlabelled"].reason.startswith("case: ")


def test_skipped_case(tmp_path: Path) -> None:
    base = write_suites(tmp_path)
    suite = yaml.safe_load(TEAM_SUITE)
    suite["tests"][0]["cases"][1]["skip"] = True
    suite["tests"][0]["cases"][1]["assertions"] = [{"violations": 99}]
    (base / "skip.yaml").write_text(yaml.safe_dump(suite))
    result = results_of(base / "skip.yaml")["team-label/unlabelled"]
    assert result.passed
    assert "skip" in result.reason


# --- find_suites ----------------------------------------------------------------------------------------------------


def test_find_suites(tmp_path: Path) -> None:
    base = write_suites(tmp_path)
    nested = tmp_path / "more" / "deeper"
    nested.mkdir(parents=True)
    (nested / "suite.yml").write_text(TEAM_SUITE)
    (tmp_path / "not-a-suite.yaml").write_text(TEAM_CONSTRAINT)
    assert find_suites(str(base)) == [base / "owned-suite.yaml", base / "suite.yaml"]
    assert find_suites(f"{tmp_path}/...") == [
        nested / "suite.yml",
        base / "owned-suite.yaml",
        base / "suite.yaml",
    ]
    assert find_suites(str(tmp_path)) == []  # a plain directory is not searched below its top
    assert find_suites(str(base / "suite.yaml")) == [base / "suite.yaml"]
    with pytest.raises(FileNotFoundError):
        find_suites(str(tmp_path / "absent"))


# --- check_assertions -------------------------------------------------------------------------------------------------


def _violations(*messages: str) -> list[Violation]:
    template = template_from_resource(yaml.safe_load(TEAM_TEMPLATE))
    constraint = constraint_from_resource(yaml.safe_load(TEAM_CONSTRAINT), template)
    return [Violation(constraint, m, {}, ("deny",)) for m in messages]


@pytest.mark.parametrize(
    ("assertions", "messages", "ok"),
    [
        ([], [], True),  # no assertions: expect no violations
        ([], ["x"], False),
        ([{"violations": True}], ["x"], True),
        ([{"violations": "yes"}], [], False),
        ([{"violations": False}], [], True),
        ([{"violations": "no"}], ["x"], False),
        ([{"violations": 2}], ["a", "b"], True),
        ([{"violations": "2"}], ["a", "b"], True),
        ([{"violations": 2}], ["a"], False),
        ([{"violations": 0}], [], True),
        ([{"message": "^b"}], ["a", "bb"], True),  # violations defaults to yes
        ([{"message": "^b"}], ["a", "ab"], False),
        ([{"violations": 1, "message": "b"}], ["ab", "bc"], False),
        ([{"violations": 2, "message": "b"}], ["ab", "bc", "cd"], True),
        ([{"violations": "no", "message": "z"}], ["ab"], True),
        ([{"violations": "maybe"}], [], False),
    ],
)
def test_check_assertions(assertions: list[Any], messages: list[str], ok: bool) -> None:
    reason = check_assertions(assertions, _violations(*messages))
    assert (reason == "") is ok, reason


# --- the CLI ----------------------------------------------------------------------------------------------------------


def verify_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mutator.cli", "verify", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_runs_every_suite_below_a_directory(tmp_path: Path) -> None:
    write_suites(tmp_path)
    proc = verify_cli(f"{tmp_path}/...")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "9 passed, 0 failed"
    passes = [line for line in lines if line.startswith("PASS ")]
    assert len(passes) == 9
    assert f"PASS {tmp_path / 'team-label' / 'suite.yaml'} team-label/update-changes-team" in lines
    assert not any(line.startswith("FAIL") for line in lines)


def test_cli_quiet_prints_only_the_summary_when_all_pass(tmp_path: Path) -> None:
    write_suites(tmp_path)
    proc = verify_cli(f"{tmp_path}/...", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == ["9 passed, 0 failed"]


def test_cli_run_filter(tmp_path: Path) -> None:
    write_suites(tmp_path)
    proc = verify_cli(f"{tmp_path}/...", "--run", "namespace-(missing|with-owner)$")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "2 passed, 0 failed"
    assert sorted(line.rsplit("/", 1)[-1] for line in lines[:-1]) == ["namespace-missing", "namespace-with-owner"]


def test_cli_failure_exits_1_with_fail_lines(tmp_path: Path) -> None:
    base = write_suites(tmp_path)
    suite = yaml.safe_load(TEAM_SUITE)
    suite["tests"][0]["cases"][3]["assertions"] = [{"violations": 1, "message": "was search"}]
    (base / "suite.yaml").write_text(yaml.safe_dump(suite))
    proc = verify_cli(f"{tmp_path}/...")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[-1] == "8 passed, 1 failed"
    fails = [line for line in lines if line.startswith("FAIL ")]
    assert len(fails) == 1
    assert fails[0].startswith(f"FAIL {base / 'suite.yaml'} team-label/update-changes-team: ")
    assert "matching 'was search'" in fails[0]
    assert "[team-label] team label is immutable (was payments)" in fails[0]
    # --quiet keeps the failure and the summary
    quiet = verify_cli(f"{tmp_path}/...", "-q")
    assert quiet.returncode == 1
    assert quiet.stdout.splitlines() == [fails[0], "8 passed, 1 failed"]


def test_cli_single_suite_file_and_plain_directory(tmp_path: Path) -> None:
    base = write_suites(tmp_path)
    proc = verify_cli(str(base / "owned-suite.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "4 passed, 0 failed"
    proc = verify_cli(str(base))
    assert proc.stdout.splitlines()[-1] == "9 passed, 0 failed"


def test_cli_missing_path(tmp_path: Path) -> None:
    proc = verify_cli(str(tmp_path / "absent"))
    assert proc.returncode == 2
    assert "absent" in proc.stderr
