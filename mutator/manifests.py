"""Checking manifests offline (``mutator test``): every object is mutated first, then validated.

The same two systems the webhook runs: ``mutate_review`` for mutation, ``ValidationSystem.review`` for
validation, with the objects under test as ``data.inventory`` (as gator does for referential policies).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonpatch

from .mutation.core import deep_copy
from .policy import LoadError, PolicySet, load_paths
from .validation.constraints import GATOR_POINT
from .validation.inventory import Inventory
from .validation.review import review_from_object
from .webhook.admission import mutate_review, review_for


@dataclass(slots=True)
class ObjectReport:
    source: str
    kind: str
    namespace: str
    name: str
    mutated: bool
    patch: list[dict[str, Any]]
    violations: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": self.title,
            "source": self.source,
            "mutated": self.mutated,
            "violations": self.violations,
            **({"errors": self.errors} if self.errors else {}),
        }


@dataclass(slots=True)
class ManifestRun:
    reports: list[ObjectReport]
    policy_errors: list[LoadError]

    @property
    def denied(self) -> bool:
        return any(v["enforcementAction"] == "deny" for r in self.reports for v in r.violations) or any(
            r.errors for r in self.reports
        )


def check_manifests(paths: Iterable[str | Path], *, enable_cel: bool = True) -> ManifestRun:
    policies: PolicySet = load_paths(paths, keep_objects=True, enable_cel=enable_cel)
    mutated: list[tuple[Any, dict[str, Any], ObjectReport]] = []
    for doc in policies.objects:
        meta = doc.body.get("metadata") if isinstance(doc.body.get("metadata"), dict) else {}
        report = ObjectReport(doc.source, doc.kind, str(meta.get("namespace") or ""), doc.name, False, [])
        outcome = mutate_review(review_for(doc.body), policies.mutation, policies.namespace)
        obj = deep_copy(doc.body)
        if outcome.error:
            report.errors.append(f"mutation: {outcome.error}")
        elif outcome.patch:
            obj = jsonpatch.apply_patch(obj, outcome.patch)
            report.mutated, report.patch = True, outcome.patch
        mutated.append((doc, obj, report))

    validation = policies.validation
    inventory = Inventory()
    for _, obj, _ in mutated:
        with contextlib.suppress(ValueError):  # an object without a name cannot be referred to
            inventory.add(obj)
    validation.inventory = inventory
    for _, obj, report in mutated:
        namespace = policies.namespace(report.namespace) if report.namespace else None
        result = validation.review(review_from_object(obj), namespace_object=namespace, point=GATOR_POINT)
        report.errors.extend(result.errors)
        for v in result.violations:
            for action in v.actions:
                report.violations.append(
                    {
                        "constraint": f"{v.constraint.kind}/{v.constraint.name}",
                        "enforcementAction": action,
                        "message": v.message,
                        **({"details": v.details} if v.details else {}),
                    }
                )
    return ManifestRun([r for _, _, r in mutated], policies.errors)


def format_table(run: ManifestRun) -> str:
    rows = [("OBJECT", "CONSTRAINT", "ACTION", "MESSAGE")]
    for report in run.reports:
        for v in report.violations:
            rows.append((report.title, v["constraint"], v["enforcementAction"], v["message"]))
        for err in report.errors:
            rows.append((report.title, "-", "error", err))
    if len(rows) == 1:
        return f"{len(run.reports)} objects checked, no violations\n"
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row)) for row in rows]
    return "\n".join(lines) + "\n"
