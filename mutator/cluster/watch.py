"""List + watch one kind with the official client, resuming after disconnects and API server restarts.

A :class:`Watcher` runs in its own thread (the client's streams block) and puts events on a queue that
the serving event loop drains: the loop owns every policy object, because the Rego and CEL engines may
only be used on the thread that built them.  On start and after any break it lists the kind again
(chunks of 500) and sends the whole list as one ``SYNC`` event, then watches from that list's
resourceVersion; a ``410 Gone`` or a dropped connection means list again, after a short backoff.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

log = logging.getLogger("mutator.cluster.watch")

LIST_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Kind:
    api_version: str  # "templates.gatekeeper.sh/v1", "v1", "networking.k8s.io/v1"
    kind: str

    def __str__(self) -> str:
        return f"{self.api_version} {self.kind}"


@dataclass(slots=True)
class Event:
    kind: Kind
    type: str  # SYNC (objects = the whole list), ADDED, MODIFIED, DELETED
    objects: list[dict[str, Any]] = field(default_factory=list)


def list_all(resource: Any, *, namespace: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """Every object of a resource, in chunks (limit/continue), and the list's resourceVersion."""
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": LIST_CHUNK}
        if token:
            kwargs["_continue"] = token
        if namespace:
            kwargs["namespace"] = namespace
        page = resource.get(**kwargs).to_dict()
        items.extend(page.get("items") or [])
        meta = page.get("metadata") or {}
        token = meta.get("continue")
        if not token:
            return items, str(meta.get("resourceVersion") or "")


class Watcher(threading.Thread):
    def __init__(
        self,
        client: DynamicClient,
        kind: Kind,
        events: queue.Queue[Event],
        *,
        namespace: str | None = None,
        timeout_seconds: int = 240,
    ) -> None:
        super().__init__(name=f"watch {kind}", daemon=True)
        self.client = client
        self.kind = kind
        self.events = events
        self.namespace = namespace
        self.timeout_seconds = timeout_seconds
        self.stopping = threading.Event()
        self.synced = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                resource = self.client.resources.get(api_version=self.kind.api_version, kind=self.kind.kind)
                items, version = list_all(resource, namespace=self.namespace)
                for item in items:  # list items carry no apiVersion/kind
                    item.setdefault("apiVersion", self.kind.api_version)
                    item.setdefault("kind", self.kind.kind)
                self.events.put(Event(self.kind, "SYNC", items))
                self.synced.set()
                backoff = 0.5
                self._watch(resource, version)
            except (ResourceNotFoundError, NotFoundError):
                # the kind is not served (yet): a CRD being created, or a sync kind that does not exist
                self.events.put(Event(self.kind, "SYNC", []))
                self.synced.set()
                self._sleep(max(backoff, 2.0))
            except Exception as err:  # connection refused, API server restarting, 410 Gone, ...
                if self.stopping.is_set():
                    return
                log.warning("watch %s interrupted (%s); listing again in %.1fs", self.kind, err, backoff)
                self._sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def _sleep(self, seconds: float) -> None:
        self.stopping.wait(seconds)

    def _watch(self, resource: Any, version: str) -> None:
        while not self.stopping.is_set():
            kwargs: dict[str, Any] = {"resource_version": version, "timeout": self.timeout_seconds}
            if self.namespace:
                kwargs["namespace"] = self.namespace
            for raw in self.client.watch(resource, **kwargs):
                if self.stopping.is_set():
                    return
                kind = raw.get("type")
                obj = raw.get("raw_object") or {}
                if kind == "ERROR":
                    raise RuntimeError(f"watch error: {obj.get('message', obj)}")
                if kind == "BOOKMARK":
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    continue
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    self.events.put(Event(self.kind, str(kind), [obj]))
            # the server ended the watch (timeout): go on from the last version seen
            time.sleep(0)
