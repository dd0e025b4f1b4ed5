"""Loading policies from files and directories, and reloading them (mutator.policy, mutator.resources)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mutator.mutation import Mutable
from mutator.policy import DirectorySource, PolicySet, build_policy_set, load_paths
from mutator.resources import Document, DocumentError, parse_documents

# --------------------------------------------------------------------------- fixtures of our own

PULL_ALWAYS = """\
apiVersion: mutations.gatekeeper.sh/v1
kind: Assign
metadata:
  name: pull-always
spec:
  applyTo:
    - groups: [""]
      versions: ["v1"]
      kinds: ["Pod"]
  location: "spec.containers[name: *].imagePullPolicy"
  parameters:
    assign:
      value: Always
"""

OWNER_LABEL = """\
apiVersion: mutations.gatekeeper.sh/v1
kind: AssignMetadata
metadata:
  name: owner-label
spec:
  location: metadata.labels.owner
  parameters:
    assign:
      value: {owner}
"""

DROP_NET_RAW = """\
apiVersion: mutations.gatekeeper.sh/v1beta1
kind: ModifySet
metadata:
  name: drop-net-raw
spec:
  applyTo:
    - groups: [""]
      versions: ["v1"]
      kinds: ["Pod"]
  location: "spec.containers[name: *].securityContext.capabilities.add"
  parameters:
    operation: prune
    values:
      fromList: [NET_RAW]
"""

MIRROR_JSON = """\
{
  "apiVersion": "mutations.gatekeeper.sh/v1alpha1",
  "kind": "AssignImage",
  "metadata": {"name": "mirror"},
  "spec": {
    "applyTo": [{"groups": [""], "versions": ["v1"], "kinds": ["Pod"]}],
    "location": "spec.containers[name: *].image",
    "parameters": {"assignDomain": "mirror.example.com"}
  }
}
"""

BAD_LOCATION = """\
apiVersion: mutations.gatekeeper.sh/v1
kind: Assign
metadata:
  name: broken-location
spec:
  applyTo:
    - groups: [""]
      versions: ["v1"]
      kinds: ["Pod"]
  location: "spec.containers[name: web*].image"
  parameters:
    assign:
      value: nginx
"""

NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: payments
  labels:
    env: prod
"""

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: api
  namespace: payments
spec:
  containers:
    - name: api
      image: payments/api:1.0
      securityContext:
        capabilities:
          add: [NET_RAW, NET_ADMIN]
"""


def write(path: Path, text: str) -> Path:
    """Write a file and make sure its mtime differs from before, so a change is always seen."""
    previous = path.stat().st_mtime_ns if path.exists() else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp = max(previous + 1_000_000_000, path.stat().st_mtime_ns)
    os.utime(path, ns=(stamp, stamp))
    return path


def names(policies: PolicySet) -> list[str]:
    return [m.name for m in policies.mutation.mutators()]


def pod_obj() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "api", "namespace": "payments"},
        "spec": {"containers": [{"name": "api", "image": "payments/api:1.0"}]},
    }


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    d = tmp_path / "policies"
    write(d / "10-pull.yaml", PULL_ALWAYS + "---\n" + OWNER_LABEL.format(owner="payments"))
    write(d / "20-capabilities.yml", DROP_NET_RAW)
    write(d / "nested" / "30-mirror.json", MIRROR_JSON)
    write(d / "README.md", "# not a policy\nkind: Assign\n")
    return d


# --------------------------------------------------------------------------- load_paths


def test_load_paths_reads_every_yaml_and_json_file(policy_dir: Path) -> None:
    policies = load_paths([policy_dir])
    assert policies.errors == []
    assert policies.conflicts == []
    assert names(policies) == ["pull-always", "mirror", "owner-label", "drop-net-raw"]
    assert policies.objects == []


def test_load_paths_keeps_other_objects_when_asked(policy_dir: Path, tmp_path: Path) -> None:
    objects = write(tmp_path / "objects.yaml", NAMESPACE + "---\n" + POD)
    policies = load_paths([policy_dir, objects], keep_objects=True)
    assert [(d.kind, d.name) for d in policies.objects] == [("Namespace", "payments"), ("Pod", "api")]
    assert policies.objects[1].source == f"{objects}#1"
    assert policies.namespace("payments")["metadata"]["labels"] == {"env": "prod"}


def test_namespace_lookup_falls_back_to_a_label_less_stand_in(policy_dir: Path) -> None:
    policies = load_paths([policy_dir])
    assert policies.namespace("unknown") == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "unknown"}}


def test_a_bad_mutator_is_rejected_and_the_others_load(policy_dir: Path) -> None:
    bad = write(policy_dir / "40-bad.yaml", BAD_LOCATION)
    policies = load_paths([policy_dir])
    assert names(policies) == ["pull-always", "mirror", "owner-label", "drop-net-raw"]
    assert len(policies.errors) == 1
    error = policies.errors[0]
    assert str(bad) in error.source
    assert "broken-location" in error.source
    assert error.message.startswith("spec.location:")
    assert str(error).startswith(f"{bad}#0 (Assign broken-location): spec.location:")


def test_a_bad_document_in_a_multi_document_file_names_its_index(tmp_path: Path) -> None:
    f = write(tmp_path / "mixed.yaml", PULL_ALWAYS + "---\n" + BAD_LOCATION)
    policies = load_paths([f])
    assert names(policies) == ["pull-always"]
    assert policies.errors[0].source.startswith(f"{f}#1 ")


def test_invalid_yaml_file_is_an_error_and_the_others_load(policy_dir: Path) -> None:
    broken = write(policy_dir / "50-broken.yaml", "kind: Assign\nmetadata: {name: [unclosed\n")
    policies = load_paths([policy_dir])
    assert len(policies.mutation) == 4
    assert len(policies.errors) == 1
    assert policies.errors[0].source == str(broken)
    assert "invalid YAML" in policies.errors[0].message


def test_a_scalar_document_is_an_error(tmp_path: Path) -> None:
    f = write(tmp_path / "scalar.yaml", PULL_ALWAYS + "---\njust a string\n")
    policies = load_paths([f])
    assert len(policies.mutation) == 0  # the whole file is rejected
    assert "must be a mapping" in policies.errors[0].message


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="no such file"):
        load_paths([tmp_path / "nope"])


def test_duplicate_mutators_are_reported_and_the_last_wins(tmp_path: Path) -> None:
    first = write(tmp_path / "a.yaml", OWNER_LABEL.format(owner="first"))
    second = write(tmp_path / "b.yaml", OWNER_LABEL.format(owner="second"))
    policies = load_paths([first, second])
    assert len(policies.mutation) == 1
    assert len(policies.errors) == 1
    assert "duplicate" in policies.errors[0].message
    assert str(second) in policies.errors[0].source
    obj = pod_obj()
    policies.mutation.mutate(Mutable(obj))
    assert obj["metadata"]["labels"] == {"owner": "second"}


def test_conflicts_are_recorded(tmp_path: Path) -> None:
    conflicting = PULL_ALWAYS.replace("pull-always", "pull-by-image").replace("[name: *]", "[image: *]")
    f = write(tmp_path / "c.yaml", PULL_ALWAYS + "---\n" + conflicting)
    policies = load_paths([f])
    assert len(policies.mutation) == 2
    assert len(policies.conflicts) == 1
    assert "conflicting schemas" in policies.conflicts[0].message
    assert len(policies.mutation.conflicting()) == 2


def test_list_documents_are_flattened() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: v1
        kind: List
        items:
          - {apiVersion: v1, kind: Namespace, metadata: {name: a}}
          - {apiVersion: v1, kind: Namespace, metadata: {name: b}}
        """
    )
    docs = parse_documents(text, "list.yaml")
    assert [d.name for d in docs] == ["a", "b"]
    assert docs[1].source == "list.yaml#0.items[1]"


def test_empty_documents_are_skipped() -> None:
    docs = parse_documents("---\n---\n" + NAMESPACE + "---\n", "ns.yaml")
    assert [(d.kind, d.name, d.source) for d in docs] == [("Namespace", "payments", "ns.yaml#1")]


def test_build_policy_set_from_documents() -> None:
    docs = parse_documents(PULL_ALWAYS + "---\n" + NAMESPACE, "inline.yaml")
    policies = build_policy_set(docs)
    assert names(policies) == ["pull-always"]
    assert set(policies.namespaces) == {"payments"}
    assert policies.objects == []
    assert build_policy_set(docs, keep_objects=True).objects == [docs[1]]


def test_document_describe() -> None:
    assert Document({"kind": "Pod", "metadata": {"name": "x"}}, "f.yaml#0").describe() == "f.yaml#0 (Pod x)"
    assert Document({}, "f.yaml#3").describe() == "f.yaml#3 (? ?)"


# --------------------------------------------------------------------------- DirectorySource


def image_pull_policy(source: DirectorySource) -> str | None:
    obj = pod_obj()
    source.current.mutation.mutate(Mutable(obj))
    return obj["spec"]["containers"][0].get("imagePullPolicy")


def test_first_reload_loads_and_unchanged_reload_is_a_no_op(policy_dir: Path) -> None:
    source = DirectorySource([policy_dir])
    assert not source.loaded.is_set()
    assert source.reload() is True
    assert source.loaded.is_set()
    assert source.generation == 1
    current = source.current
    assert names(current) == ["pull-always", "mirror", "owner-label", "drop-net-raw"]
    assert source.reload() is False
    assert source.current is current
    assert source.generation == 1


def test_reload_picks_up_a_changed_file(policy_dir: Path) -> None:
    source = DirectorySource([policy_dir])
    source.reload()
    assert image_pull_policy(source) == "Always"
    write(policy_dir / "10-pull.yaml", PULL_ALWAYS.replace("value: Always", "value: IfNotPresent"))
    assert source.reload() is True
    assert source.generation == 2
    assert image_pull_policy(source) == "IfNotPresent"
    assert "owner-label" not in names(source.current)  # that document left the file too


def test_reload_picks_up_a_new_file(policy_dir: Path) -> None:
    source = DirectorySource([policy_dir])
    source.reload()
    write(policy_dir / "60-late.yaml", OWNER_LABEL.format(owner="late").replace("owner-label", "late-label"))
    assert source.reload() is True
    assert "late-label" in names(source.current)


def test_reload_drops_a_removed_file(policy_dir: Path) -> None:
    source = DirectorySource([policy_dir])
    source.reload()
    (policy_dir / "10-pull.yaml").unlink()
    assert source.reload() is True
    assert names(source.current) == ["mirror", "drop-net-raw"]
    assert image_pull_policy(source) is None


def test_invalid_yaml_keeps_the_last_good_documents(policy_dir: Path) -> None:
    source = DirectorySource([policy_dir])
    source.reload()
    pull = policy_dir / "10-pull.yaml"
    write(pull, "apiVersion: [this is not\n  valid: yaml")
    assert source.reload() is True
    assert names(source.current) == ["pull-always", "mirror", "owner-label", "drop-net-raw"]
    assert image_pull_policy(source) == "Always"
    assert len(source.current.errors) == 1
    error = source.current.errors[0]
    assert error.source == str(pull)
    assert "invalid YAML" in error.message
    assert "keeping the 2 documents loaded before" in error.message

    write(pull, PULL_ALWAYS.replace("value: Always", "value: Never"))
    assert source.reload() is True
    assert source.current.errors == []
    assert image_pull_policy(source) == "Never"
    assert "owner-label" not in names(source.current)


def test_a_file_invalid_from_the_start_has_nothing_to_keep(policy_dir: Path) -> None:
    write(policy_dir / "00-broken.yaml", "{unclosed: [")
    source = DirectorySource([policy_dir])
    source.reload()
    assert len(source.current.mutation) == 4
    assert len(source.current.errors) == 1
    assert "keeping" not in source.current.errors[0].message


def test_a_mutator_that_becomes_invalid_is_rejected_alone(policy_dir: Path) -> None:
    source = DirectorySource([policy_dir])
    source.reload()
    write(policy_dir / "20-capabilities.yml", DROP_NET_RAW.replace("operation: prune", "operation: replace"))
    source.reload()
    assert names(source.current) == ["pull-always", "mirror", "owner-label"]
    assert len(source.current.errors) == 1
    assert "spec.parameters.operation" in source.current.errors[0].message
    assert "drop-net-raw" in source.current.errors[0].source


def test_reload_swaps_a_new_policy_set_and_leaves_the_old_one_untouched(policy_dir: Path) -> None:
    source = DirectorySource([policy_dir])
    source.reload()
    old = source.current
    old_mutators = old.mutation.mutators()
    old_errors = list(old.errors)

    write(policy_dir / "10-pull.yaml", PULL_ALWAYS.replace("value: Always", "value: IfNotPresent"))
    (policy_dir / "20-capabilities.yml").unlink()
    write(policy_dir / "40-bad.yaml", BAD_LOCATION)
    source.reload()

    assert source.current is not old
    assert source.current.mutation is not old.mutation
    assert old.mutation.mutators() == old_mutators
    assert old.errors == old_errors
    obj = pod_obj()
    old.mutation.mutate(Mutable(obj))
    assert obj["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    assert names(source.current) == ["pull-always", "mirror"]
    assert len(source.current.errors) == 1


def test_directory_source_on_single_files(tmp_path: Path) -> None:
    f = write(tmp_path / "only.yaml", PULL_ALWAYS)
    source = DirectorySource([f])
    source.reload()
    assert names(source.current) == ["pull-always"]
    f.unlink()
    source.reload()  # the named file is gone: nothing left, and no crash
    assert names(source.current) == []
