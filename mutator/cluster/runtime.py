"""Wiring for ``mutator serve --policy-source kubernetes``: the client, the source and the loops that run
in the serving event loop, chosen by ``--operation`` (webhook, mutation-webhook, audit, status)."""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from .audit import Auditor, AuditResult
from .client import api_client
from .source import KubernetesSource
from .status import StatusWriter

log = logging.getLogger("mutator.cluster")

OPERATIONS = ("webhook", "mutation-webhook", "audit", "status")


@dataclass(slots=True)
class ClusterSettings:
    kubeconfig: str | None = None
    namespace: str = "mutator-system"
    operations: list[str] = field(default_factory=lambda: ["webhook", "mutation-webhook", "audit", "status"])
    audit_interval: float = 60.0
    violations_limit: int = 20
    enable_cel: bool = True


class ClusterRuntime:
    def __init__(self, settings: ClusterSettings, *, on_audit: Any = None, on_sync: Any = None) -> None:
        unknown = [op for op in settings.operations if op not in OPERATIONS]
        if unknown:
            raise ValueError(f"--operation: unknown {', '.join(unknown)} (one of {', '.join(OPERATIONS)})")
        self.settings = settings
        self.source = KubernetesSource(
            api_client(settings.kubeconfig), namespace=settings.namespace, enable_cel=settings.enable_cel
        )
        self.source.on_sync = on_sync
        if "status" in settings.operations:
            self.source.on_change.append(StatusWriter(self.source.dynamic, operations=settings.operations))
        self.auditor: Auditor | None = None
        if "audit" in settings.operations:
            self.auditor = Auditor(self.source, violations_limit=settings.violations_limit, on_result=on_audit)

    def coroutines(self) -> list[Coroutine[Any, Any, None]]:
        out = [self.source.run()]
        if self.auditor is not None:
            out.append(self.auditor.run(self.settings.audit_interval))
        return out


__all__ = ["AuditResult", "ClusterRuntime", "ClusterSettings", "OPERATIONS", "api_client"]
