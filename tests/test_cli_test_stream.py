"""`mutator test` streams (and with --jobs, checks in worker processes) yet prints what the whole-list run printed.

The reference is ``check_manifests`` (every document and report held, as `mutator test` always worked) formatted
as the command formatted it before it streamed; the command runs as a real subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from mutator.manifests import check_manifests, format_table

FIXTURES = Path(__file__).parent / "fixtures" / "validation"

INVENTORY_TEMPLATE = """\
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: testuniqueapp
spec:
  crd:
    spec:
      names:
        kind: TestUniqueApp
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package testuniqueapp

        violation[{"msg": msg}] {
          app := input.review.object.metadata.labels.app
          other := data.inventory.namespace[_][_]["Pod"][name]
          name != input.review.object.metadata.name
          other.metadata.labels.app == app
          msg := sprintf("app %v is also %v", [app, name])
        }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: TestUniqueApp
metadata:
  name: unique-app
spec:
  match:
    kinds: [{apiGroups: [""], kinds: ["Pod"]}]
"""


def _pod(name: str, namespace: str, image: str, app: str = "web") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app, "on": "yes"}},
        "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]},
    }


def _workload(root: Path) -> list[Path]:
    """Object files: a long stream (with a List, an empty document, a comment-only head, YAML 1.1 scalars that
    must stay PyYAML's), a JSON file, and a file whose last document does not parse."""
    pods = [
        _pod(
            f"p{i}",
            ["prod", "staging", "dev"][i % 3],
            ["registry.example.com/a:1", "docker.io/b:2"][i % 2],
            f"a{i % 4}",
        )
        for i in range(40)
    ]
    stream = root / "pods.yaml"
    parts = ["# objects under test\n"]
    for i, pod in enumerate(pods):
        parts.append("---\n" + yaml.safe_dump(pod, sort_keys=False))
        if i == 5:
            parts.append("---\n# nothing here\n")
        if i == 9:
            parts.append("---\n" + yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": pods[:2]}))
        if i == 12:
            parts.append("---\nenabled: yes\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: prod}\n")
    stream.write_text("".join(parts))
    as_json = root / "more.json"
    # 1e3: a number in JSON (orjson reads .json files), the string "1e3" in YAML: the title says which was used
    as_json.write_text(orjson.dumps(_pod("j", "prod", "docker.io/j:1")).decode().replace('"prod"', "1e3"))
    broken = root / "broken.yaml"
    broken.write_text(yaml.safe_dump(_pod("b", "prod", "docker.io/b:1")) + "---\nkey: [unclosed\n")
    return [stream, as_json, broken]


def _expected(paths: list[Path], output: str) -> tuple[int, str, str]:
    run = check_manifests(paths)
    results = [r.as_dict() for r in run.reports]
    if output == "json":
        out = orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n"
    elif output == "yaml":
        out = yaml.safe_dump(results, sort_keys=False)
    else:
        out = format_table(run)
    code = 1 if run.denied else (2 if run.policy_errors else 0)
    return code, out, "".join(f"error: rejected: {err}\n" for err in run.policy_errors)


def _run(paths: list[Path], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mutator.cli", "test", "-f", *map(str, paths), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("output", ["json", "yaml", "table"])
def test_streamed_output_is_the_whole_list_output(tmp_path: Path, output: str, jobs: str) -> None:
    paths = [FIXTURES, *_workload(tmp_path)]
    code, out, errors = _expected(paths, output)
    assert "broken.yaml" in errors and "Pod 1000.0/j" in out  # the file that does not parse is reported, its Pod is not
    proc = _run(paths, "-o", output, "--jobs", jobs)
    assert proc.stdout == out
    assert proc.returncode == code == 1
    assert proc.stderr == errors


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_no_objects_and_no_violations_print_as_before(tmp_path: Path, jobs: str) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(_pod("fine", "prod", "registry.example.com/x:1")).replace("app: web", "app: x"))
    for paths in ([FIXTURES], [FIXTURES, ok]):
        for output in ("json", "yaml", "table"):
            code, out, errors = _expected(paths, output)
            proc = _run(paths, "-o", output, "--jobs", jobs)
            assert (proc.returncode, proc.stdout, proc.stderr) == (code, out, errors)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_template_reading_the_inventory_sees_every_object(tmp_path: Path, jobs: str) -> None:
    policy = tmp_path / "unique.yaml"
    policy.write_text(INVENTORY_TEMPLATE)
    pods = tmp_path / "pods.yaml"
    pods.write_text(
        yaml.safe_dump_all([_pod("first", "prod", "x", app="shared"), _pod("solo", "prod", "x", app="solo")])
        + "---\n"
        + yaml.safe_dump(_pod("last", "dev", "x", app="shared"))
    )
    code, out, errors = _expected([policy, pods], "json")
    reports = orjson.loads(out)
    assert [len(r["violations"]) for r in reports] == [1, 0, 1]  # the first Pod already sees the last one
    proc = _run([policy, pods], "-o", "json", "--jobs", jobs)
    assert (proc.returncode, proc.stdout, proc.stderr) == (code, out, errors)


def test_an_object_file_that_turns_out_not_to_parse_keeps_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(_pod("b", "prod", "registry.example.com/b:1")) + "---\na: [\n")
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(_pod("ok", "dev", "registry.example.com/b:1", app="ok")))
    code, out, errors = _expected([FIXTURES, broken, ok], "table")
    proc = _run([FIXTURES, broken, ok], "--jobs", "2")
    assert (proc.returncode, proc.stdout, proc.stderr) == (code, out, errors)
    assert code == 2 and out == "1 objects checked, no violations\n"


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_reports_written_before_the_workers_start_are_printed_once(tmp_path: Path, output: str) -> None:
    first = tmp_path / "a.yaml"  # the word Namespace: read with the policies, reported before the workers fork
    first.write_text(yaml.safe_dump(_pod("first", "prod", "docker.io/x:1", app="Namespace")))
    more = tmp_path / "b.yaml"
    more.write_text(yaml.safe_dump_all([_pod(f"m{i}", "prod", "docker.io/y:1", app=f"m{i}") for i in range(30)]))
    code, out, errors = _expected([FIXTURES, first, more], output)
    proc = _run([FIXTURES, first, more], "-o", output, "--jobs", "2")
    assert (proc.returncode, proc.stdout, proc.stderr) == (code, out, errors)
