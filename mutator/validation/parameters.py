"""Constraint parameters checked against the template's ``openAPIV3Schema`` (with jsonschema).

OpenAPI v3 schemas are JSON Schema with a few Kubernetes words; those are translated once, when the
template loads: ``nullable``, ``x-kubernetes-int-or-string`` and ``x-kubernetes-preserve-unknown-fields``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import SchemaError

from ..match import PolicyError


def _translate(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_translate(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: _translate(v) for k, v in value.items()} if isinstance(value, Mapping) else value
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = _translate(value)
        elif key in ("nullable", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields"):
            continue
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


class ParameterSchema:
    """A compiled parameter schema; ``validate`` names the offending parameter."""

    __slots__ = ("_validator",)

    def __init__(self, schema: Any, field: str) -> None:
        if schema is None:
            self._validator = None
            return
        if not isinstance(schema, Mapping):
            raise PolicyError(f"{field}: must be an object")
        translated = _translate(schema)
        try:
            Draft7Validator.check_schema(translated)
        except SchemaError as err:
            raise PolicyError(f"{field}: invalid schema: {err.message}") from err
        self._validator = Draft7Validator(translated)

    def validate(self, parameters: Any, field: str = "spec.parameters") -> None:
        if self._validator is None or parameters is None:
            return
        errors = sorted(self._validator.iter_errors(parameters), key=lambda e: list(e.absolute_path))
        if errors:
            err = errors[0]
            where = field + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
            raise PolicyError(f"{where}: {err.message}")
