"""Checks on the generated mutation CRDs in assign-crds/."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = REPO / "assign-crds"
GENERATOR = CRD_DIR / "generate.py"
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "gatekeeper-crds"

GROUP = "mutations.gatekeeper.sh"
ALL_VERSIONS = ["v1", "v1beta1", "v1alpha1"]

# file -> (kind, plural, served versions, storage version, reference file name)
EXPECTED: dict[str, tuple[str, str, list[str], str, str]] = {
    "assign.yaml": ("Assign", "assign", ALL_VERSIONS, "v1", "assign-customresourcedefinition.yaml"),
    "assignmetadata.yaml": (
        "AssignMetadata",
        "assignmetadata",
        ALL_VERSIONS,
        "v1",
        "assignmetadata-customresourcedefinition.yaml",
    ),
    "modifyset.yaml": (
        "ModifySet",
        "modifyset",
        ALL_VERSIONS,
        "v1",
        "modifyset-customresourcedefinition.yaml",
    ),
    "assignimage.yaml": (
        "AssignImage",
        "assignimage",
        ["v1alpha1"],
        "v1alpha1",
        "assignimage-customresourcedefinition.yaml",
    ),
}

# Schema keywords whose values must agree with Gatekeeper wherever Gatekeeper declares them.
COMPARED_KEYWORDS = (
    "type",
    "format",
    "enum",
    "default",
    "pattern",
    "maxLength",
    "required",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
)

FILES = sorted(EXPECTED)


def load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    assert len(docs) == 1, f"{path}: expected exactly one YAML document, got {len(docs)}"
    return docs[0]


def schemas(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]}


@pytest.fixture(params=FILES)
def crd_file(request: pytest.FixtureRequest) -> str:
    return request.param


# --------------------------------------------------------------------------- metadata


def test_no_unexpected_files() -> None:
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == FILES


def test_crd_header(crd_file: str) -> None:
    kind, plural, versions, storage, _ = EXPECTED[crd_file]
    crd = load(CRD_DIR / crd_file)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.{GROUP}"
    spec = crd["spec"]
    assert spec["group"] == GROUP
    assert spec["scope"] == "Cluster"
    assert spec["names"] == {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": plural}
    assert spec.get("preserveUnknownFields", False) is False

    got = spec["versions"]
    assert [v["name"] for v in got] == versions
    assert all(v["served"] is True for v in got)
    storage_versions = [v["name"] for v in got if v["storage"]]
    assert storage_versions == [storage], "exactly one storage version"
    for v in got:
        assert v["subresources"] == {"status": {}}, v["name"]


def test_metadata_name_length_is_limited(crd_file: str) -> None:
    for version, schema in schemas(load(CRD_DIR / crd_file)).items():
        metadata = schema["properties"]["metadata"]
        assert metadata == {"type": "object", "properties": {"name": {"type": "string", "maxLength": 63}}}, version


def test_top_level_fields(crd_file: str) -> None:
    kind = EXPECTED[crd_file][0]
    for version, schema in schemas(load(CRD_DIR / crd_file)).items():
        assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}, version
        spec = set(schema["properties"]["spec"]["properties"])
        expected = {"match", "location", "parameters"}
        if kind != "AssignMetadata":
            expected.add("applyTo")
        assert spec == expected, version
        by_pod = schema["properties"]["status"]["properties"]["byPod"]["items"]["properties"]
        assert set(by_pod) == {"id", "observedGeneration", "operations", "enforced", "errors", "mutatorUID"}


def test_versions_share_one_schema(crd_file: str) -> None:
    by_version = list(schemas(load(CRD_DIR / crd_file)).values())
    assert all(s == by_version[0] for s in by_version)


# --------------------------------------------------------------------------- structural schema


def walk(node: dict[str, Any], path: str) -> Iterator[str]:
    """Yield a message for every violation of the Kubernetes structural-schema rules below `node`."""
    if not isinstance(node, dict):
        yield f"{path}: schema node is not a mapping"
        return
    for forbidden in ("$ref", "allOf", "oneOf", "anyOf", "not", "definitions", "dependencies", "uniqueItems"):
        if forbidden in node:
            yield f"{path}: uses {forbidden!r}"
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if preserve is not None and preserve is not True:
        yield f"{path}: x-kubernetes-preserve-unknown-fields must be true when set"
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    typ = node.get("type")
    if typ is None and not (preserve or int_or_string):
        yield f"{path}: has no type"
    if typ is not None and typ not in ("object", "array", "string", "integer", "number", "boolean"):
        yield f"{path}: unknown type {typ!r}"
    if "properties" in node and typ != "object":
        yield f"{path}: properties on a non-object"
    if "additionalProperties" in node:
        if typ != "object":
            yield f"{path}: additionalProperties on a non-object"
        if "properties" in node:
            yield f"{path}: both properties and additionalProperties"
    if typ == "array" and "items" not in node:
        yield f"{path}: array without items"
    if "items" in node and typ != "array":
        yield f"{path}: items on a non-array"
    if "enum" in node and "default" in node and node["default"] not in node["enum"]:
        yield f"{path}: default {node['default']!r} not in enum"
    for name in node.get("required", []):
        if name not in node.get("properties", {}):
            yield f"{path}: required field {name!r} is not declared"
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.<value>")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def test_schemas_are_structural(crd_file: str) -> None:
    for version, schema in schemas(load(CRD_DIR / crd_file)).items():
        assert schema.get("type") == "object", version
        problems = list(walk(schema, version))
        # At the root, metadata may only restrict name and generateName.
        metadata = schema["properties"]["metadata"]
        extra = set(metadata.get("properties", {})) - {"name", "generateName"}
        if extra:
            problems.append(f"{version}.metadata: only name/generateName may be specified, got {extra}")
        assert not problems, "\n".join(problems)


def test_walk_flags_non_structural_nodes() -> None:
    bad = {
        "type": "object",
        "properties": {
            "a": {"description": "no type"},
            "b": {"type": "array"},
            "c": {"type": "string", "properties": {"x": {"type": "string"}}},
            "d": {"x-kubernetes-preserve-unknown-fields": True},
            "e": {"x-kubernetes-int-or-string": True},
        },
    }
    problems = list(walk(bad, "root"))
    assert problems == [
        "root.a: has no type",
        "root.b: array without items",
        "root.c: properties on a non-object",
    ]


# --------------------------------------------------------------------------- generator


def test_generator_reproduces_committed_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == FILES
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (CRD_DIR / name).read_bytes(), (
            f"{name} is stale: run `python assign-crds/generate.py`"
        )


def test_generator_check_mode(tmp_path: Path) -> None:
    def check(out: Path) -> int:
        cmd = [sys.executable, str(GENERATOR), "--out", str(out), "--check"]
        return subprocess.run(cmd, capture_output=True, check=False).returncode

    assert check(CRD_DIR) == 0
    assert check(tmp_path) == 1
    assert list(tmp_path.iterdir()) == [], "--check must not write"


# --------------------------------------------------------------------------- Gatekeeper reference


def flatten(schema: dict[str, Any], path: str = "") -> dict[str, dict[str, Any]]:
    """Map every property path below `schema` to the compared keywords of its node."""
    out = {path: {k: schema[k] for k in COMPARED_KEYWORDS if k in schema}}
    for name, child in schema.get("properties", {}).items():
        out.update(flatten(child, f"{path}.{name}" if path else name))
    if isinstance(schema.get("additionalProperties"), dict):
        out.update(flatten(schema["additionalProperties"], f"{path}.<value>"))
    if "items" in schema:
        out.update(flatten(schema["items"], f"{path}[]"))
    return out


@pytest.fixture
def reference_dir() -> Path:
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"Gatekeeper reference CRDs not found at {REFERENCE_DIR} (../shared is absent)")
    return REFERENCE_DIR


def test_matches_gatekeeper_reference(crd_file: str, reference_dir: Path) -> None:
    _, _, versions, storage, ref_name = EXPECTED[crd_file]
    ref = load(reference_dir / ref_name)
    ours = load(CRD_DIR / crd_file)

    assert ref["spec"]["group"] == ours["spec"]["group"]
    assert ref["spec"]["names"] == ours["spec"]["names"]
    assert ref["spec"]["scope"] == ours["spec"]["scope"]
    assert ref["spec"].get("names", {}).get("categories") == ours["spec"]["names"].get("categories")
    ref_versions = {v["name"]: v for v in ref["spec"]["versions"]}
    assert sorted(ref_versions) == sorted(versions)
    assert [n for n, v in ref_versions.items() if v["storage"]] == [storage]

    our_schemas = schemas(ours)
    problems: list[str] = []
    for version, ref_version in ref_versions.items():
        assert ref_version["subresources"] == {"status": {}}
        ref_schema = ref_version["schema"]["openAPIV3Schema"]
        for section in ("spec", "status"):
            theirs = flatten(ref_schema["properties"][section], section)
            mine = flatten(our_schemas[version]["properties"][section], section)
            for path, keywords in theirs.items():
                if path not in mine:
                    problems.append(f"{version}: {path} is missing")
                elif mine[path] != keywords:
                    problems.append(f"{version}: {path}: ours {mine[path]} != Gatekeeper's {keywords}")
    assert not problems, "\n".join(problems)
