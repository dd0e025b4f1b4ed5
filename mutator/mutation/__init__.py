"""Mutation: Gatekeeper's Assign, AssignMetadata, ModifySet and AssignImage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..match import PolicyError
from .core import MutationError
from .image import AssignImage
from .mutators import Assign, AssignMetadata, ModifySet, Mutable, Mutator, MutatorID
from .system import MutationResult, MutationSystem

KINDS: dict[str, type[Mutator]] = {cls.kind: cls for cls in (Assign, AssignMetadata, ModifySet, AssignImage)}
VERSIONS: dict[str, tuple[str, ...]] = {
    "Assign": ("v1", "v1beta1", "v1alpha1"),
    "AssignMetadata": ("v1", "v1beta1", "v1alpha1"),
    "ModifySet": ("v1", "v1beta1", "v1alpha1"),
    "AssignImage": ("v1alpha1",),
}


def is_mutator_resource(doc: Mapping[str, Any]) -> bool:
    api_version = doc.get("apiVersion")
    return (
        isinstance(api_version, str) and api_version.startswith("mutations.gatekeeper.sh/") and doc.get("kind") in KINDS
    )


def mutator_from_resource(doc: Mapping[str, Any]) -> Mutator:
    """Build and validate a mutator from its resource; raises PolicyError naming the field."""
    kind = doc.get("kind")
    api_version = doc.get("apiVersion", "")
    if kind not in KINDS:
        raise PolicyError(f"kind: {kind!r} is not a mutator kind (one of {', '.join(KINDS)})")
    version = api_version.partition("/")[2] if isinstance(api_version, str) else ""
    if version not in VERSIONS[kind]:
        raise PolicyError(
            f"apiVersion: {api_version!r} is not served for {kind} "
            f"(mutations.gatekeeper.sh/{{{','.join(VERSIONS[kind])}}})"
        )
    return KINDS[kind](doc)


__all__ = [
    "Assign",
    "AssignImage",
    "AssignMetadata",
    "KINDS",
    "ModifySet",
    "Mutable",
    "MutationError",
    "MutationResult",
    "MutationSystem",
    "Mutator",
    "MutatorID",
    "PolicyError",
    "is_mutator_resource",
    "mutator_from_resource",
]
