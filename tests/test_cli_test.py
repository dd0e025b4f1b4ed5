"""`mutator test`: mutation runs before validation, exit codes, output formats — as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

FIXTURES = Path(__file__).parent / "fixtures" / "validation"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mutator.cli", "test", *args], capture_output=True, text=True, timeout=120
    )


def _pod(path: Path, name: str, namespace: str, image: str, pull: str | None = None) -> Path:
    container = {"name": "app", "image": image, **({"imagePullPolicy": pull} if pull else {})}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [container]},
    }
    path.write_text(yaml.safe_dump(pod))
    return path


def test_pod_lacking_pull_policy_passes_because_mutation_runs_first(tmp_path: Path) -> None:
    pod = _pod(tmp_path / "pod.yaml", "web", "prod", "registry.example.com/web:1")
    proc = _run("-f", str(FIXTURES), "-f", str(pod))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "1 objects checked, no violations\n"


def test_same_pod_without_the_mutator_is_denied(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    for f in FIXTURES.glob("*.yaml"):
        if not f.name.startswith("assign"):
            (policies / f.name).write_text(f.read_text())
    pod = _pod(tmp_path / "pod.yaml", "web", "prod", "registry.example.com/web:1")
    proc = _run("-f", str(policies), str(pod))
    assert proc.returncode == 1
    assert "TestPullAlways/pull-always  deny    container app must set imagePullPolicy: Always" in proc.stdout


def test_disallowed_repo_fails_with_exit_1_and_a_table(tmp_path: Path) -> None:
    pod = _pod(tmp_path / "pod.yaml", "bad", "prod", "docker.io/nginx:1")
    proc = _run("-f", str(FIXTURES), str(pod))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["OBJECT", "CONSTRAINT", "ACTION", "MESSAGE"]
    assert lines[1].startswith("Pod prod/bad")
    assert "TestRegistries/prod-registries" in lines[1] and "deny" in lines[1]
    assert len(lines) == 2


def test_warn_and_dryrun_do_not_fail_and_json_output(tmp_path: Path) -> None:
    warn = _pod(tmp_path / "warn.yaml", "w", "staging", "docker.io/nginx:1")
    dry = _pod(tmp_path / "dry.yaml", "d", "dev", "docker.io/nginx:1")
    proc = _run("-f", str(FIXTURES), str(warn), str(dry), "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reports = {r["object"]: r for r in json.loads(proc.stdout)}
    assert [v["enforcementAction"] for v in reports["Pod staging/w"]["violations"]] == ["warn"]
    assert [v["enforcementAction"] for v in reports["Pod dev/d"]["violations"]] == ["dryrun"]
    assert reports["Pod dev/d"]["mutated"] is True
    assert reports["Pod dev/d"]["violations"][0]["details"] == {"image": "docker.io/nginx:1"}


def test_rejected_policy_is_reported_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad-constraint.yaml"
    bad.write_text(
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: TestRegistries\nmetadata: {name: typo}\n"
        "spec: {parameters: {registries: 5}}\n"
    )
    pod = _pod(tmp_path / "pod.yaml", "web", "prod", "registry.example.com/web:1")
    proc = _run("-f", str(FIXTURES), str(bad), str(pod), "-o", "yaml")
    assert proc.returncode == 2
    assert (
        "bad-constraint.yaml" in proc.stderr and "spec.parameters.registries: 5 is not of type 'array'" in proc.stderr
    )
    assert yaml.safe_load(proc.stdout)[0]["violations"] == []
