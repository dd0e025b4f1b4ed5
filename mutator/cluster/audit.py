"""Audit: every interval, list the resources the constraints can match (in chunks of 500), evaluate every
constraint, and write ``status.violations`` (capped), ``status.totalViolations`` and ``status.auditTimestamp``
on each constraint, as Gatekeeper does.  Listing runs in a worker thread; evaluation runs in the serving loop
(the engines are bound to it) and yields to requests between objects."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.dynamic import DynamicClient

from ..match import gvk_of
from ..validation.constraints import AUDIT_POINT
from ..validation.review import review_from_object
from .source import CONSTRAINT_VERSION, Kind, KubernetesSource
from .status import patch_status
from .watch import list_all

log = logging.getLogger("mutator.cluster.audit")

MESSAGE_LIMIT = 256
SKIPPED_KINDS = {("", "Event"), ("events.k8s.io", "Event")}


@dataclass(slots=True)
class AuditResult:
    started: float
    duration: float = 0.0
    objects: int = 0
    totals: dict[tuple[str, str], int] = field(default_factory=dict)
    violations: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    by_action: dict[str, int] = field(default_factory=dict)


def _resources(dynamic: DynamicClient, selectors: list[tuple[tuple[str, ...], tuple[str, ...]]]) -> list[Any]:
    """The listable resources the constraints' kinds can match, one version per group/kind."""
    everything = any(not kinds or "*" in kinds for _, kinds in selectors) or not selectors
    found: dict[tuple[str, str], Any] = {}
    if everything:
        candidates = dynamic.resources.search()
    else:
        candidates = [r for _, kinds in selectors for k in kinds for r in dynamic.resources.search(kind=k)]
    for resource in candidates:
        group = getattr(resource, "group", "") or ""
        kind = getattr(resource, "kind", "")
        verbs = getattr(resource, "verbs", None) or []
        if "/" in (getattr(resource, "name", "") or "") or "list" not in verbs or (group, kind) in SKIPPED_KINDS:
            continue
        if not everything and not any(
            (not groups or "*" in groups or group in groups) and (not kinds or "*" in kinds or kind in kinds)
            for groups, kinds in selectors
        ):
            continue
        preferred = getattr(resource, "preferred", False)
        if (group, kind) not in found or preferred:
            found[(group, kind)] = resource
    return list(found.values())


class Auditor:
    def __init__(
        self,
        source: KubernetesSource,
        *,
        violations_limit: int = 20,
        on_result: Callable[[AuditResult], None] | None = None,
    ) -> None:
        self.source = source
        self.dynamic = source.dynamic
        self.violations_limit = violations_limit
        self.on_result = on_result
        self.last: AuditResult | None = None

    async def run_once(self) -> AuditResult:
        policies = self.source.current
        validation = policies.validation
        constraints = validation.constraints()
        result = AuditResult(started=time.time())
        selectors = [(k.api_groups, k.kinds) for c in constraints for k in c.match.kinds] if constraints else []
        if any(not c.match.kinds for c in constraints):
            selectors.append(((), ()))
        loop = asyncio.get_running_loop()
        resources = await loop.run_in_executor(None, _resources, self.dynamic, selectors) if constraints else []
        for resource in resources:
            try:
                items, _ = await loop.run_in_executor(None, list_all, resource)
            except Exception as err:
                log.warning("audit: cannot list %s: %s", getattr(resource, "kind", resource), err)
                continue
            api_version = resource.group_version
            for obj in items:
                obj.setdefault("apiVersion", api_version)
                obj.setdefault("kind", resource.kind)
                namespace = str((obj.get("metadata") or {}).get("namespace") or "")
                if namespace and self.source.excluded(namespace, "audit"):
                    continue
                ns_obj = self.source.namespace_object(namespace) if namespace else None
                review = validation.review(
                    review_from_object(obj, operation="", namespace_object=ns_obj),
                    namespace_object=ns_obj,
                    point=AUDIT_POINT,
                )
                result.objects += 1
                for v in review.violations:
                    key = (v.constraint.kind, v.constraint.name)
                    result.totals[key] = result.totals.get(key, 0) + 1
                    action = v.actions[0]
                    result.by_action[action] = result.by_action.get(action, 0) + 1
                    found = result.violations.setdefault(key, [])
                    if len(found) < self.violations_limit:
                        group, version, kind = gvk_of(obj)
                        meta = obj.get("metadata") or {}
                        entry = {
                            "enforcementAction": action,
                            "group": group,
                            "version": version,
                            "kind": kind,
                            "name": meta.get("name", ""),
                            "message": v.message[:MESSAGE_LIMIT],
                        }
                        if meta.get("namespace"):
                            entry["namespace"] = meta["namespace"]
                        found.append(entry)
                if result.objects % 50 == 0:
                    await asyncio.sleep(0)  # let requests through
        result.duration = time.time() - result.started
        stamp = dt.datetime.fromtimestamp(result.started, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for constraint in constraints:
            key = (constraint.kind, constraint.name)
            status = {
                "auditTimestamp": stamp,
                "totalViolations": result.totals.get(key, 0),
                "violations": result.violations.get(key, []),
            }
            kind = Kind(f"constraints.gatekeeper.sh/{CONSTRAINT_VERSION}", constraint.kind)
            try:
                await loop.run_in_executor(None, patch_status, self.dynamic, kind, constraint.name, status)
            except Exception as err:
                log.warning("audit: cannot write status of %s %s: %s", constraint.kind, constraint.name, err)
        log.info(
            "audit: %d objects, %d violations, %.2fs", result.objects, sum(result.totals.values()), result.duration
        )
        self.last = result
        if self.on_result is not None:
            self.on_result(result)
        return result

    async def run(self, interval: float) -> None:
        await self.source.loaded.wait()
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("audit run failed")
            await asyncio.sleep(interval)
