"""ConstraintTemplates: a constraint kind, its parameter schema and its compiled program (Rego or CEL).

Which code runs follows Gatekeeper: the legacy ``targets[].rego`` wins over a ``code`` entry with
``engine: Rego``; among ``code`` entries ``K8sNativeValidation`` (CEL) wins when CEL is enabled.
Everything is compiled here, once; a template that does not compile is rejected with the engine's message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..match import PolicyError
from .parameters import ParameterSchema
from .rego import RegoCompileError, RegoProgram, RegoSource

TARGET = "admission.k8s.gatekeeper.sh"
API_VERSIONS = ("templates.gatekeeper.sh/v1", "templates.gatekeeper.sh/v1beta1", "templates.gatekeeper.sh/v1alpha1")
ENGINE_REGO = "Rego"
ENGINE_CEL = "K8sNativeValidation"


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    kind: str
    engine: str  # ENGINE_REGO or ENGINE_CEL
    program: Any  # RegoProgram or CelProgram
    parameters: ParameterSchema
    resource: Mapping[str, Any]

    @property
    def uses_inventory(self) -> bool:
        return bool(getattr(self.program, "uses_inventory", False))


def is_template_resource(doc: Mapping[str, Any]) -> bool:
    return doc.get("kind") == "ConstraintTemplate" and str(doc.get("apiVersion", "")).startswith(
        "templates.gatekeeper.sh/"
    )


def _require_mapping(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PolicyError(f"{field}: required, must be an object")
    return value


def _string_list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{field}: must be a list of strings")
    return value


def _compile_rego(rego: str, libs: list[str], v1: bool, name: str, field: str) -> RegoProgram:
    try:
        return RegoProgram(RegoSource(rego, tuple(libs), v1), name=name)
    except RegoCompileError as err:
        raise PolicyError(f"{field}: {err}") from err


def _compile_cel(source: Any, field: str) -> Any:
    from .cel import CelCompileError, CelProgram

    try:
        return CelProgram.compile(_require_mapping(source, f"{field}.source"))
    except CelCompileError as err:
        raise PolicyError(f"{field}.source: {err}") from err


def template_from_resource(resource: Mapping[str, Any], *, enable_cel: bool = True) -> Template:
    """Build, validate and compile a ConstraintTemplate; raises PolicyError naming the field."""
    api_version = resource.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise PolicyError(f"apiVersion: {api_version!r} is not one of {', '.join(API_VERSIONS)}")
    meta = _require_mapping(resource.get("metadata"), "metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise PolicyError("metadata.name: required")
    if len(name) > 63:
        raise PolicyError("metadata.name: maximum name length is 63 characters")
    spec = _require_mapping(resource.get("spec"), "spec")
    names = _require_mapping(
        _require_mapping(_require_mapping(spec.get("crd"), "spec.crd").get("spec"), "spec.crd.spec").get("names"),
        "spec.crd.spec.names",
    )
    kind = names.get("kind")
    if not isinstance(kind, str) or not kind:
        raise PolicyError("spec.crd.spec.names.kind: required")
    if name != kind.lower():
        raise PolicyError(
            f"metadata.name: the ConstraintTemplate's name {name!r} must equal the lowercase of "
            f"spec.crd.spec.names.kind ({kind.lower()!r})"
        )
    validation = spec["crd"]["spec"].get("validation") or {}
    schema = validation.get("openAPIV3Schema") if isinstance(validation, Mapping) else None
    parameters = ParameterSchema(schema, "spec.crd.spec.validation.openAPIV3Schema")

    targets = spec.get("targets")
    if not isinstance(targets, list) or len(targets) != 1:
        raise PolicyError("spec.targets: exactly one target is required")
    target = _require_mapping(targets[0], "spec.targets[0]")
    if target.get("target") != TARGET:
        raise PolicyError(f"spec.targets[0].target: must be {TARGET!r}, got {target.get('target')!r}")

    rego = target.get("rego")
    libs = _string_list(target.get("libs"), "spec.targets[0].libs")
    code = target.get("code") or []
    if not isinstance(code, list):
        raise PolicyError("spec.targets[0].code: must be a list")
    entries: dict[str, tuple[int, Mapping[str, Any]]] = {}
    for i, entry in enumerate(code):
        entry = _require_mapping(entry, f"spec.targets[0].code[{i}]")
        engine = entry.get("engine")
        if engine not in (ENGINE_REGO, ENGINE_CEL):
            continue  # an engine we do not run; Gatekeeper ignores unknown engines as well
        entries.setdefault(engine, (i, entry))

    if enable_cel and ENGINE_CEL in entries:
        i, entry = entries[ENGINE_CEL]
        program = _compile_cel(entry.get("source"), f"spec.targets[0].code[{i}]")
        return Template(name, kind, ENGINE_CEL, program, parameters, resource)
    if isinstance(rego, str) and rego.strip():
        program = _compile_rego(rego, libs, False, name, "spec.targets[0].rego")
        return Template(name, kind, ENGINE_REGO, program, parameters, resource)
    if ENGINE_REGO in entries:
        i, entry = entries[ENGINE_REGO]
        field = f"spec.targets[0].code[{i}].source"
        source = _require_mapping(entry.get("source"), field)
        code_rego = source.get("rego")
        if not isinstance(code_rego, str) or not code_rego.strip():
            raise PolicyError(f"{field}.rego: required")
        version = source.get("version", "v0")
        if version not in ("v0", "v1"):
            raise PolicyError(f"{field}.version: must be v0 or v1, got {version!r}")
        program = _compile_rego(
            code_rego, _string_list(source.get("libs"), f"{field}.libs"), version == "v1", name, f"{field}.rego"
        )
        return Template(name, kind, ENGINE_REGO, program, parameters, resource)
    if ENGINE_CEL in entries:
        raise PolicyError("spec.targets[0].code: only a K8sNativeValidation entry, and CEL is disabled")
    raise PolicyError("spec.targets[0]: no rego and no code entry with a supported engine")
