"""Status like Gatekeeper's: every template, constraint and mutator gets ``status.byPod[]`` with this pod's
id, the observed generation, whether it is enforced, and the errors (a template whose Rego does not compile
shows the engine's message there).  Only what changed is written, through the status subresource."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

from kubernetes.dynamic import DynamicClient

from .source import MUTATOR_KINDS, TEMPLATES, Kind, KubernetesSource

log = logging.getLogger("mutator.cluster.status")


def pod_id() -> str:
    return os.environ.get("POD_NAME") or socket.gethostname()


class StatusWriter:
    def __init__(self, dynamic: DynamicClient, *, operations: list[str]) -> None:
        self.dynamic = dynamic
        self.operations = operations
        self.pod = pod_id()
        self._written: dict[tuple[str, str, str], Any] = {}

    def __call__(self, source: KubernetesSource) -> None:
        """Plan in the loop (it reads the source), write in a worker thread (it waits on the API server)."""
        plan = self.plan(source)
        try:
            asyncio.get_running_loop().run_in_executor(None, self.write_all, plan)
        except RuntimeError:  # no running loop: write now
            self.write_all(plan)

    def write_all(self, plan: list[tuple[Kind, dict[str, Any], dict[str, Any]]]) -> None:
        for kind, obj, status in plan:
            self.write(kind, obj, status)

    def plan(self, source: KubernetesSource) -> list[tuple[Kind, dict[str, Any], dict[str, Any]]]:
        out: list[tuple[Kind, dict[str, Any], dict[str, Any]]] = []
        policies = source.current
        errors: dict[tuple[str, str], list[str]] = {}
        for err in policies.errors:
            errors.setdefault((err.kind, err.name), []).append(err.message)
        conflicts: dict[tuple[str, str], list[str]] = {}
        for err in policies.conflicts:
            conflicts.setdefault((err.kind, err.name), []).append(err.message)
        active_constraints = {(c.kind, c.name) for c in policies.validation.constraints()}
        for kind, store in source.policy_docs.items():
            for obj in store.values():
                meta = obj.get("metadata") or {}
                name = str(meta.get("name") or "")
                key = (kind.kind, name)
                entry: dict[str, Any] = {
                    "id": self.pod,
                    "observedGeneration": meta.get("generation", 0),
                    "operations": self.operations,
                }
                messages = errors.get(key, [])
                if kind == TEMPLATES:
                    entry["templateUID"] = meta.get("uid", "")
                    if messages:
                        entry["errors"] = [{"code": "ingest_error", "message": m} for m in messages]
                    status: dict[str, Any] = {"created": not messages, "byPod": [entry]}
                elif kind in MUTATOR_KINDS:
                    entry["mutatorUID"] = meta.get("uid", "")
                    problems = [{"message": m} for m in messages] + [
                        {"message": m, "type": "schema_conflict"} for m in conflicts.get(key, [])
                    ]
                    entry["enforced"] = not problems
                    if problems:
                        entry["errors"] = problems
                    status = {"byPod": [entry]}
                else:  # a constraint
                    entry["constraintUID"] = meta.get("uid", "")
                    entry["enforced"] = key in active_constraints
                    if messages:
                        entry["errors"] = [{"message": m} for m in messages]
                    status = {"byPod": [entry]}
                out.append((kind, obj, status))
        return out

    def write(self, kind: Kind, obj: Mapping[str, Any], status: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        ident = (str(kind), str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        current = {k: (obj.get("status") or {}).get(k) for k in status}
        if self._written.get(ident) == status and current == status:
            return
        try:
            resource = self.dynamic.resources.get(api_version=kind.api_version, kind=kind.kind)
            resource.status.patch(
                body={"status": status},
                name=ident[2],
                namespace=ident[1] or None,
                content_type="application/merge-patch+json",
            )
            self._written[ident] = status
        except Exception as err:  # a deleted object, a conflict: the next change writes again
            log.warning("cannot write status of %s %s: %s", kind.kind, ident[2], err)


def patch_status(dynamic: DynamicClient, kind: Kind, name: str, status: dict[str, Any]) -> None:
    resource = dynamic.resources.get(api_version=kind.api_version, kind=kind.kind)
    resource.status.patch(body={"status": status}, name=name, content_type="application/merge-patch+json")
