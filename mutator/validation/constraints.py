"""Constraints: an instance of a template's kind with ``match``, ``parameters`` and ``enforcementAction``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..match import Match, PolicyError
from .templates import Template

GROUP = "constraints.gatekeeper.sh"
API_VERSIONS = (f"{GROUP}/v1beta1", f"{GROUP}/v1", f"{GROUP}/v1alpha1")
ACTIONS = ("deny", "dryrun", "warn")
SCOPED = "scoped"
WEBHOOK_POINT = "validation.gatekeeper.sh"
AUDIT_POINT = "audit.gatekeeper.sh"
GATOR_POINT = "gator.gatekeeper.sh"


@dataclass(frozen=True, slots=True)
class Constraint:
    kind: str
    name: str
    match: Match
    parameters: Any
    enforcement_action: str
    scoped_actions: tuple[tuple[str, tuple[str, ...]], ...]  # (action, enforcement point names)
    resource: Mapping[str, Any]

    def actions_for(self, point: str) -> list[str]:
        """The actions this constraint takes at an enforcement point (webhook, audit, gator)."""
        if self.enforcement_action != SCOPED:
            return [self.enforcement_action]
        out = []
        for action, points in self.scoped_actions:
            if (point in points or "*" in points) and action not in out:
                out.append(action)
        return out

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.name


def is_constraint_resource(doc: Mapping[str, Any]) -> bool:
    api_version = doc.get("apiVersion")
    return isinstance(api_version, str) and api_version.startswith(GROUP + "/")


def constraint_from_resource(resource: Mapping[str, Any], template: Template | None) -> Constraint:
    """Validate a constraint against its template; raises PolicyError naming the field."""
    kind = resource.get("kind")
    if template is None:
        raise PolicyError(f"kind: no ConstraintTemplate defines the constraint kind {kind!r}")
    api_version = resource.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise PolicyError(f"apiVersion: {api_version!r} is not one of {', '.join(API_VERSIONS)}")
    meta = resource.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        raise PolicyError("metadata.name: required")
    if len(name) > 63:
        raise PolicyError("metadata.name: maximum name length is 63 characters")
    spec = resource.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise PolicyError("spec: must be an object")
    match = Match.from_spec(spec.get("match"))
    parameters = spec.get("parameters")
    template.parameters.validate(parameters)
    action = spec.get("enforcementAction") or "deny"
    if action not in (*ACTIONS, SCOPED):
        raise PolicyError(f"spec.enforcementAction: must be one of deny, dryrun, warn, scoped; got {action!r}")
    scoped: list[tuple[str, tuple[str, ...]]] = []
    if action == SCOPED:
        raw = spec.get("scopedEnforcementActions")
        if not isinstance(raw, list) or not raw:
            raise PolicyError("spec.scopedEnforcementActions: required when enforcementAction is scoped")
        for i, entry in enumerate(raw):
            field = f"spec.scopedEnforcementActions[{i}]"
            if not isinstance(entry, Mapping) or entry.get("action") not in ACTIONS:
                raise PolicyError(f"{field}.action: must be one of deny, dryrun, warn")
            points = entry.get("enforcementPoints") or []
            if not isinstance(points, list):
                raise PolicyError(f"{field}.enforcementPoints: must be a list")
            names = tuple(p.get("name", "") for p in points if isinstance(p, Mapping))
            scoped.append((entry["action"], names))
    return Constraint(template.kind, name, match, parameters, action, tuple(scoped), resource)
