"""Checks on the generated CRDs in assign-crds/ (mutators, ConstraintTemplate, Config, *PodStatus)."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = REPO / "assign-crds"
GENERATOR = CRD_DIR / "generate.py"
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "gatekeeper-crds"

# `kubectl apply -f DIR` reads the files with these suffixes (and nothing else) from DIR.
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

ALL_VERSIONS = ["v1", "v1beta1", "v1alpha1"]
OPERATIONS = ["*", "CREATE", "DELETE", "UPDATE", "CONNECT"]


@dataclass(frozen=True)
class Expected:
    group: str
    kind: str
    plural: str
    singular: str
    scope: str
    versions: list[str]  # served versions in file order; the first one is the storage version
    reference: str  # file name in REFERENCE_DIR
    spec: set[str] | None  # fields of spec; None: the kind has no spec
    status: set[str]  # fields of status
    by_pod: set[str] | None = None  # fields of status.byPod[]; None: no byPod
    status_subresource: bool = True
    name_limit: bool = False  # metadata.name is limited to 63 characters

    @property
    def name(self) -> str:
        return f"{self.plural}.{self.group}"


def mutator(kind: str, versions: list[str], apply_to: bool = True) -> Expected:
    return Expected(
        group="mutations.gatekeeper.sh",
        kind=kind,
        plural=kind.lower(),
        singular=kind.lower(),
        scope="Cluster",
        versions=versions,
        reference=f"{kind.lower()}-customresourcedefinition.yaml",
        spec={"match", "location", "parameters"} | ({"applyTo"} if apply_to else set()),
        status={"byPod"},
        by_pod={"id", "observedGeneration", "operations", "enforced", "errors", "mutatorUID"},
        name_limit=True,
    )


def pod_status(kind: str, plural: str, status: set[str]) -> Expected:
    return Expected(
        group="status.gatekeeper.sh",
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        scope="Namespaced",
        versions=["v1beta1"],
        reference=f"{kind.lower()}-customresourcedefinition.yaml",
        spec=None,
        status=status,
        status_subresource=False,
    )


POD_STATUS = {"id", "observedGeneration", "operations", "errors"}

EXPECTED: dict[str, Expected] = {
    "assign.yaml": mutator("Assign", ALL_VERSIONS),
    "assignmetadata.yaml": mutator("AssignMetadata", ALL_VERSIONS, apply_to=False),
    "modifyset.yaml": mutator("ModifySet", ALL_VERSIONS),
    "assignimage.yaml": mutator("AssignImage", ["v1alpha1"]),
    "constrainttemplate.yaml": Expected(
        group="templates.gatekeeper.sh",
        kind="ConstraintTemplate",
        plural="constrainttemplates",
        singular="constrainttemplate",
        scope="Cluster",
        versions=ALL_VERSIONS,
        reference="constrainttemplate-customresourcedefinition.yaml",
        spec={"crd", "targets"},
        status={"byPod", "created"},
        by_pod=POD_STATUS | {"templateUID", "vapGenerationStatus"},
    ),
    "config.yaml": Expected(
        group="config.gatekeeper.sh",
        kind="Config",
        plural="configs",
        singular="config",
        scope="Namespaced",
        versions=["v1alpha1"],
        reference="config-customresourcedefinition.yaml",
        spec={"match", "sync", "validation", "readiness"},
        status={"byPod"},
        by_pod=POD_STATUS | {"configUID"},
    ),
    "constraintpodstatus.yaml": pod_status(
        "ConstraintPodStatus",
        "constraintpodstatuses",
        POD_STATUS | {"constraintUID", "enforced", "enforcementPointsStatus"},
    ),
    "constrainttemplatepodstatus.yaml": pod_status(
        "ConstraintTemplatePodStatus",
        "constrainttemplatepodstatuses",
        POD_STATUS | {"templateUID", "vapGenerationStatus"},
    ),
    "mutatorpodstatus.yaml": pod_status(
        "MutatorPodStatus",
        "mutatorpodstatuses",
        POD_STATUS | {"enforced", "mutatorUID"},
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
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
)

# Where we knowingly declare other keywords than Gatekeeper: (file, version, path) -> ours.
# Gatekeeper's ConstraintTemplate v1alpha1 has the operations enum on the list instead of on its
# items, so a real API server rejects every non-empty `operations` list in that version; we put
# the enum on the items, as Gatekeeper does in v1 and v1beta1.
DEVIATIONS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("constrainttemplate.yaml", "v1alpha1", "spec.targets[].operations"): {"type": "array"},
    ("constrainttemplate.yaml", "v1alpha1", "spec.targets[].operations[]"): {"type": "string", "enum": OPERATIONS},
}

FILES = sorted(EXPECTED)


def load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    assert len(docs) == 1, f"{path}: expected exactly one YAML document, got {len(docs)}"
    return docs[0]


def schemas(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]}


def manifests(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix in MANIFEST_SUFFIXES)


@pytest.fixture(params=FILES)
def crd_file(request: pytest.FixtureRequest) -> str:
    return request.param


def generate(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(GENERATOR), "--out", str(out), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


# --------------------------------------------------------------------------- metadata


def test_no_unexpected_files() -> None:
    assert manifests(CRD_DIR) == FILES


def test_every_manifest_is_a_generated_crd(tmp_path: Path) -> None:
    """`kubectl apply -f assign-crds/` must install exactly the generated CRDs and nothing else."""
    assert generate(tmp_path).returncode == 0
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert manifests(CRD_DIR) == generated, "every .yaml/.yml/.json file here must come from generate.py"
    names = []
    for name in generated:
        crd = load(CRD_DIR / name)
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1", name
        assert crd["kind"] == "CustomResourceDefinition", name
        names.append(crd["metadata"]["name"])
    assert len(set(names)) == len(names), "two files define the same CRD"


def test_crd_header(crd_file: str) -> None:
    exp = EXPECTED[crd_file]
    crd = load(CRD_DIR / crd_file)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == exp.name
    assert crd["metadata"]["labels"] == {"gatekeeper.sh/system": "yes"}
    spec = crd["spec"]
    assert spec["group"] == exp.group
    assert spec["scope"] == exp.scope
    assert spec["names"] == {
        "kind": exp.kind,
        "listKind": f"{exp.kind}List",
        "plural": exp.plural,
        "singular": exp.singular,
    }
    assert spec.get("preserveUnknownFields", False) is False

    got = spec["versions"]
    assert [v["name"] for v in got] == exp.versions
    assert all(v["served"] is True for v in got)
    storage_versions = [v["name"] for v in got if v["storage"]]
    assert storage_versions == exp.versions[:1], "exactly one storage version, listed first"
    for v in got:
        assert v.get("subresources") == ({"status": {}} if exp.status_subresource else None), v["name"]


def test_metadata_schema(crd_file: str) -> None:
    exp = EXPECTED[crd_file]
    expected: dict[str, Any] = {"type": "object"}
    if exp.name_limit:
        expected["properties"] = {"name": {"type": "string", "maxLength": 63}}
    for version, schema in schemas(load(CRD_DIR / crd_file)).items():
        assert schema["properties"]["metadata"] == expected, version


def test_top_level_fields(crd_file: str) -> None:
    exp = EXPECTED[crd_file]
    for version, schema in schemas(load(CRD_DIR / crd_file)).items():
        sections = {"apiVersion", "kind", "metadata", "status"} | ({"spec"} if exp.spec is not None else set())
        assert set(schema["properties"]) == sections, version
        if exp.spec is not None:
            assert set(schema["properties"]["spec"]["properties"]) == exp.spec, version
        status = schema["properties"]["status"]["properties"]
        assert set(status) == exp.status, version
        if exp.by_pod is not None:
            assert set(status["byPod"]["items"]["properties"]) == exp.by_pod, version


def without_legacy_schema_default(schema: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(schema)
    validation = out["properties"]["spec"]["properties"]["crd"]["properties"]["spec"]["properties"]["validation"]
    del validation["default"]
    del validation["properties"]["legacySchema"]["default"]
    return out


def test_versions_share_one_schema(crd_file: str) -> None:
    by_version = schemas(load(CRD_DIR / crd_file))
    if EXPECTED[crd_file].kind == "ConstraintTemplate":  # only legacySchema's default differs
        by_version = {v: without_legacy_schema_default(s) for v, s in by_version.items()}
    first = next(iter(by_version.values()))
    assert all(s == first for s in by_version.values())


def test_constraint_template_legacy_schema_default() -> None:
    """v1 defaults legacySchema to false, the older versions to true (as Gatekeeper does)."""
    for version, schema in schemas(load(CRD_DIR / "constrainttemplate.yaml")).items():
        crd_spec = schema["properties"]["spec"]["properties"]["crd"]["properties"]["spec"]
        validation = crd_spec["properties"]["validation"]
        legacy = version != "v1"
        assert validation["default"] == {"legacySchema": legacy}, version
        assert validation["properties"]["legacySchema"]["default"] is legacy, version


def test_constraint_template_operations_enum_is_on_the_items() -> None:
    for version, schema in schemas(load(CRD_DIR / "constrainttemplate.yaml")).items():
        target = schema["properties"]["spec"]["properties"]["targets"]["items"]
        operations = target["properties"]["operations"]
        assert "enum" not in operations, version
        assert operations["items"]["enum"] == OPERATIONS, version


# --------------------------------------------------------------------------- structural schema

SCALAR_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool}


def type_mismatch(value: Any, node: dict[str, Any]) -> str | None:
    """Why `value` does not fit the type of `node` (and, for objects, of its declared properties)."""
    typ = node.get("type")
    if typ in SCALAR_TYPES:
        ok = isinstance(value, SCALAR_TYPES[typ]) and (typ == "boolean" or not isinstance(value, bool))
        return None if ok else f"{value!r} is not a {typ}"
    if typ == "array":
        return None if isinstance(value, list) else f"{value!r} is not an array"
    if typ == "object":
        if not isinstance(value, dict):
            return f"{value!r} is not an object"
        properties = node.get("properties", {})
        for key, item in value.items():
            if key in properties:
                if problem := type_mismatch(item, properties[key]):
                    return f"{key}: {problem}"
            elif "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                return f"{key!r} is not declared (it would be pruned)"
    return None


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
    if "default" in node and (problem := type_mismatch(node["default"], node)):
        yield f"{path}: default {problem}"
    for name in node.get("required", []):
        if name not in node.get("properties", {}):
            yield f"{path}: required field {name!r} is not declared"
    yield from list_semantics(node, path)
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.<value>")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def list_semantics(node: dict[str, Any], path: str) -> Iterator[str]:
    """The API server's rules for x-kubernetes-list-type and x-kubernetes-list-map-keys."""
    list_type = node.get("x-kubernetes-list-type")
    keys = node.get("x-kubernetes-list-map-keys")
    if list_type is not None and node.get("type") != "array":
        yield f"{path}: x-kubernetes-list-type on a non-array"
    if list_type not in (None, "atomic", "set", "map"):
        yield f"{path}: unknown x-kubernetes-list-type {list_type!r}"
    if keys is not None and list_type != "map":
        yield f"{path}: x-kubernetes-list-map-keys without x-kubernetes-list-type: map"
    if list_type == "map":
        items = node.get("items", {})
        if items.get("type") != "object":
            yield f"{path}: a map list must have object items"
        if not keys:
            yield f"{path}: a map list needs x-kubernetes-list-map-keys"
        for key in keys or []:
            prop = items.get("properties", {}).get(key)
            if prop is None:
                yield f"{path}: map key {key!r} is not a property of the items"
            elif key not in items.get("required", []) and "default" not in prop:
                yield f"{path}: map key {key!r} must be required or have a default"
            elif prop.get("type") not in SCALAR_TYPES:
                yield f"{path}: map key {key!r} must be a scalar"
    if list_type == "set" and node.get("items", {}).get("type") not in SCALAR_TYPES:
        yield f"{path}: a set list must have scalar items"


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
            "f": {"type": "boolean", "default": "yes"},
            "g": {
                "type": "object",
                "properties": {"x": {"type": "boolean"}},
                "default": {"x": True, "y": 1},
            },
        },
    }
    problems = list(walk(bad, "root"))
    assert problems == [
        "root.a: has no type",
        "root.b: array without items",
        "root.c: properties on a non-object",
        "root.f: default 'yes' is not a boolean",
        "root.g: default 'y' is not declared (it would be pruned)",
    ]


def test_walk_flags_bad_list_semantics() -> None:
    def map_list(item_properties: dict[str, Any], required: list[str], keys: list[str] | None) -> dict[str, Any]:
        node: dict[str, Any] = {
            "type": "array",
            "items": {"type": "object", "properties": item_properties, "required": required},
            "x-kubernetes-list-type": "map",
        }
        if keys is not None:
            node["x-kubernetes-list-map-keys"] = keys
        return node

    scalar = {"type": "string"}
    bad = {
        "type": "object",
        "properties": {
            "ok": map_list({"k": scalar}, ["k"], ["k"]),
            "nokeys": map_list({"k": scalar}, ["k"], None),
            "undeclared": map_list({"k": scalar}, ["k"], ["z"]),
            "optional": map_list({"k": scalar}, [], ["k"]),
            "keysonly": {"type": "array", "items": scalar, "x-kubernetes-list-map-keys": ["k"]},
            "set": {"type": "array", "items": {"type": "object"}, "x-kubernetes-list-type": "set"},
        },
    }
    problems = list(walk(bad, "root"))
    assert problems == [
        "root.nokeys: a map list needs x-kubernetes-list-map-keys",
        "root.undeclared: map key 'z' is not a property of the items",
        "root.optional: map key 'k' must be required or have a default",
        "root.keysonly: x-kubernetes-list-map-keys without x-kubernetes-list-type: map",
        "root.set: a set list must have scalar items",
    ]


# --------------------------------------------------------------------------- generator


def test_generator_reproduces_committed_files(tmp_path: Path) -> None:
    result = generate(tmp_path)
    assert result.returncode == 0, result.stderr
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == FILES
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (CRD_DIR / name).read_bytes(), (
            f"{name} is stale: run `python assign-crds/generate.py`"
        )


def test_generator_check_mode(tmp_path: Path) -> None:
    def check(out: Path) -> subprocess.CompletedProcess[str]:
        return generate(out, "--check")

    assert check(CRD_DIR).returncode == 0
    assert check(tmp_path).returncode == 1
    assert list(tmp_path.iterdir()) == [], "--check must not write"

    assert generate(tmp_path).returncode == 0
    assert check(tmp_path).returncode == 0
    (tmp_path / "notes.txt").write_text("kubectl ignores this\n")
    assert check(tmp_path).returncode == 0
    (tmp_path / "extra.yml").write_text("kind: ConfigMap\n")
    result = check(tmp_path)
    assert result.returncode == 1, "a manifest that is not generated must fail --check"
    assert "extra.yml" in result.stderr


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
    exp = EXPECTED[crd_file]
    ref = load(reference_dir / exp.reference)
    ours = load(CRD_DIR / crd_file)

    assert ref["metadata"]["name"] == ours["metadata"]["name"]
    assert ref["metadata"]["labels"] == ours["metadata"]["labels"]
    for key in ("group", "names", "scope"):
        assert ref["spec"][key] == ours["spec"][key], key
    ref_versions = {v["name"]: v for v in ref["spec"]["versions"]}
    our_versions = {v["name"]: v for v in ours["spec"]["versions"]}
    assert sorted(ref_versions) == sorted(our_versions)
    assert [n for n, v in ref_versions.items() if v["storage"]] == [exp.versions[0]]
    assert {n: v["served"] for n, v in ref_versions.items()} == {n: v["served"] for n, v in our_versions.items()}

    problems: list[str] = []
    for version, ref_version in ref_versions.items():
        if ref_version.get("subresources") != our_versions[version].get("subresources"):
            problems.append(f"{version}: subresources differ")
        # The whole object: apiVersion, kind, metadata, spec and status.
        theirs = flatten(ref_version["schema"]["openAPIV3Schema"])
        mine = flatten(our_versions[version]["schema"]["openAPIV3Schema"])
        for path, keywords in theirs.items():
            expected = DEVIATIONS.get((crd_file, version, path), keywords)
            if path not in mine:
                problems.append(f"{version}: {path or '<root>'} is missing")
            elif mine[path] != expected:
                problems.append(f"{version}: {path or '<root>'}: ours {mine[path]} != Gatekeeper's {keywords}")
    assert not problems, "\n".join(problems)


def test_deviations_from_gatekeeper_are_still_needed(reference_dir: Path) -> None:
    """Each entry of DEVIATIONS must name a path where Gatekeeper really declares something else."""
    for (crd_file, version, path), ours in DEVIATIONS.items():
        ref = load(reference_dir / EXPECTED[crd_file].reference)
        ref_schema = next(v for v in ref["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
        theirs = flatten(ref_schema)
        assert path in theirs, (crd_file, version, path)
        assert theirs[path] != ours, f"{crd_file} {version} {path}: Gatekeeper agrees now; drop the deviation"
