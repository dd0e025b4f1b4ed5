"""Policies from the Kubernetes API: templates, constraints, mutators, Config, Namespaces and synced data.

Watchers (threads) feed a queue; :meth:`KubernetesSource.apply_events` drains it in the serving event
loop, keeps the resources, creates a constraint CRD for every template (group ``constraints.gatekeeper.sh``,
one kind per template) and watches that kind, and rebuilds the :class:`PolicySet` whenever a policy changed
— compiling only the templates that changed.  Synced kinds (Config ``spec.sync.syncOnly``) go into the
shared ``data.inventory`` without any rebuild.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient

from ..match import wildcard_matches
from ..policy import PolicySet, TemplateCache, build_policy_set, log_loaded
from ..resources import Document, as_json
from ..validation.inventory import Inventory
from .watch import Event, Kind, Watcher

log = logging.getLogger("mutator.cluster")

TEMPLATES = Kind("templates.gatekeeper.sh/v1", "ConstraintTemplate")
MUTATOR_KINDS = [
    Kind("mutations.gatekeeper.sh/v1", "Assign"),
    Kind("mutations.gatekeeper.sh/v1", "AssignMetadata"),
    Kind("mutations.gatekeeper.sh/v1", "ModifySet"),
    Kind("mutations.gatekeeper.sh/v1alpha1", "AssignImage"),
]
CONFIG = Kind("config.gatekeeper.sh/v1alpha1", "Config")
NAMESPACES = Kind("v1", "Namespace")
CONSTRAINT_VERSION = "v1beta1"


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def constraint_crd(template: Mapping[str, Any]) -> dict[str, Any]:
    """The CRD Gatekeeper generates for a template's constraint kind."""
    names = template["spec"]["crd"]["spec"]["names"]
    kind = names["kind"]
    plural = kind.lower()
    validation = template["spec"]["crd"]["spec"].get("validation") or {}
    parameters = validation.get("openAPIV3Schema") or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    parameters = {**parameters, "x-kubernetes-preserve-unknown-fields": True}
    schema = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "properties": {
                    "enforcementAction": {"type": "string"},
                    "scopedEnforcementActions": {
                        "type": "array",
                        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    },
                    "match": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "parameters": parameters,
                },
            },
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    version = {
        "served": True,
        "storage": False,
        "schema": {"openAPIV3Schema": schema},
        "subresources": {"status": {}},
        "additionalPrinterColumns": [
            {"name": "enforcement-action", "type": "string", "jsonPath": ".spec.enforcementAction"},
            {"name": "total-violations", "type": "integer", "jsonPath": ".status.totalViolations"},
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.constraints.gatekeeper.sh",
            "labels": {"gatekeeper.sh/constraint": "yes", "gatekeeper.sh/system": "yes"},
        },
        "spec": {
            "group": "constraints.gatekeeper.sh",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": plural,
                "categories": ["constraint", "constraints"],
                **({"shortNames": names["shortNames"]} if names.get("shortNames") else {}),
            },
            "scope": "Cluster",
            "versions": [
                {**version, "name": "v1beta1", "storage": True},
                {**version, "name": "v1"},
                {**version, "name": "v1alpha1"},
            ],
        },
    }


class KubernetesSource:
    """The policy source of a server running in (or against) a cluster."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        namespace: str = "mutator-system",
        enable_cel: bool = True,
        create_crds: bool = True,
    ) -> None:
        self.api_client = api_client
        self.dynamic = DynamicClient(api_client)
        self.namespace = namespace
        self.enable_cel = enable_cel
        self.create_crds = create_crds
        self.events: queue.Queue[Event] = queue.Queue()
        self.watchers: dict[Kind, Watcher] = {}
        self.policy_docs: dict[Kind, dict[tuple[str, str], dict[str, Any]]] = {}
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.inventory = Inventory()
        self.synced_kinds: set[Kind] = set()
        self.config: dict[str, Any] = {}
        self.cache = TemplateCache()
        self.current = PolicySet()
        self.generation = 0
        self.loaded = asyncio.Event()
        self._crds_made: dict[str, str] = {}  # CRD name -> the template's resourceVersion it was made from
        self.on_change: list[Any] = []  # callbacks after a rebuild (status writers)
        self.on_sync: Any = None  # called with ({kind: objects replicated}, seconds) after sync events

    # -- watchers

    def _watch(self, kind: Kind, *, namespace: str | None = None) -> None:
        if kind not in self.watchers:
            watcher = Watcher(self.dynamic, kind, self.events, namespace=namespace)
            self.watchers[kind] = watcher
            watcher.start()

    def _unwatch(self, kind: Kind) -> None:
        watcher = self.watchers.pop(kind, None)
        if watcher is not None:
            watcher.stop()

    def start(self) -> None:
        for kind in (TEMPLATES, *MUTATOR_KINDS, NAMESPACES):
            self._watch(kind)
        self._watch(CONFIG, namespace=self.namespace)

    def stop(self) -> None:
        for watcher in self.watchers.values():
            watcher.stop()

    def namespace_object(self, name: str) -> Mapping[str, Any] | None:
        found = self.namespaces.get(name)
        if found is not None:
            return found
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}

    def excluded(self, namespace: str, process: str) -> bool:
        """Config ``spec.match[].excludedNamespaces`` for a process (audit, webhook, sync, mutation-webhook)."""
        for entry in (self.config.get("spec") or {}).get("match") or []:
            processes = entry.get("processes") or ["*"]
            applies = "*" in processes or process in processes
            if applies and any(wildcard_matches(p, namespace) for p in entry.get("excludedNamespaces") or []):
                return True
        return False

    # -- events (in the event loop)

    def apply_events(self) -> bool:
        """Apply every queued event; rebuild the policy set if a policy changed. Returns True if rebuilt."""
        policies_changed = False
        synced = False
        started = time.perf_counter()
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            synced |= event.kind in self.synced_kinds
            policies_changed |= self._apply(event)
        if synced and self.on_sync is not None:
            counts = {k.kind: len(self._inventory_objects(k)) for k in self.synced_kinds}
            self.on_sync(counts, time.perf_counter() - started)
        ready = all(w.synced.is_set() for k, w in self.watchers.items() if k not in self.synced_kinds)
        if policies_changed or (ready and not self.loaded.is_set()):
            self._rebuild()
        if ready:
            self.loaded.set()
        return policies_changed

    def _apply(self, event: Event) -> bool:
        kind = event.kind
        objects = [as_json(o, str(kind)) for o in event.objects]
        if kind == NAMESPACES:
            self._replace_or_update(self.namespaces, event, objects, by_name=True)
            return False
        if kind in self.synced_kinds:
            self._sync(event, objects)
            return False
        if kind == CONFIG:
            docs: dict[tuple[str, str], dict[str, Any]] = {}
            for obj in objects:
                if event.type != "DELETED" and _key(obj)[1] == "config":
                    docs[_key(obj)] = obj
            if event.type == "SYNC" or docs or event.type == "DELETED":
                self.config = next(iter(docs.values()), {}) if event.type != "DELETED" else {}
                self._follow_sync_kinds()
            return False
        store = self.policy_docs.setdefault(kind, {})
        if event.type == "MODIFIED" and all(self._same_generation(store, o) for o in objects):
            # only status or metadata moved (our own status writes, mostly): nothing to rebuild
            store.update({_key(o): o for o in objects})
            return False
        self._replace_or_update(store, event, objects)
        if kind == TEMPLATES:
            self._follow_constraint_kinds()
        return True

    @staticmethod
    def _same_generation(store: Mapping[tuple[str, str], Mapping[str, Any]], obj: Mapping[str, Any]) -> bool:
        before = store.get(_key(obj))
        if before is None:
            return False
        old_gen = (before.get("metadata") or {}).get("generation")
        new_gen = (obj.get("metadata") or {}).get("generation")
        return old_gen is not None and old_gen == new_gen and before.get("spec") == obj.get("spec")

    @staticmethod
    def _replace_or_update(
        store: dict[Any, dict[str, Any]], event: Event, objects: list[dict[str, Any]], *, by_name: bool = False
    ) -> None:
        def key(o: dict[str, Any]) -> Any:
            return _key(o)[1] if by_name else _key(o)

        if event.type == "SYNC":
            store.clear()
            store.update({key(o): o for o in objects})
        elif event.type == "DELETED":
            for o in objects:
                store.pop(key(o), None)
        else:
            store.update({key(o): o for o in objects})

    # -- constraint kinds follow templates

    def _follow_constraint_kinds(self) -> None:
        wanted: dict[Kind, Mapping[str, Any]] = {}
        for template in self.policy_docs.get(TEMPLATES, {}).values():
            try:
                kind = template["spec"]["crd"]["spec"]["names"]["kind"]
            except (KeyError, TypeError):
                continue
            wanted[Kind(f"constraints.gatekeeper.sh/{CONSTRAINT_VERSION}", kind)] = template
        for kind, template in wanted.items():
            if self.create_crds:
                self._ensure_crd(template)
            self._watch(kind)
        for kind in [k for k in self.watchers if k.api_version.startswith("constraints.gatekeeper.sh/")]:
            if kind not in wanted:
                self._unwatch(kind)
                self.policy_docs.pop(kind, None)

    def _ensure_crd(self, template: Mapping[str, Any]) -> None:
        crd = constraint_crd(template)
        name = crd["metadata"]["name"]
        version = str((template.get("metadata") or {}).get("resourceVersion") or "")
        if self._crds_made.get(name) == version:
            return
        api = k8s.ApiextensionsV1Api(self.api_client)
        try:
            try:
                existing = api.read_custom_resource_definition(name)
                crd["metadata"]["resourceVersion"] = existing.metadata.resource_version
                api.replace_custom_resource_definition(name, crd)
            except k8s.ApiException as err:
                if err.status != 404:
                    raise
                api.create_custom_resource_definition(crd)
            self._crds_made[name] = version
            log.info("constraint CRD %s ready", name)
        except k8s.ApiException as err:
            log.error("cannot create or update CRD %s: %s %s", name, err.status, err.reason)

    # -- sync (data.inventory)

    def _follow_sync_kinds(self) -> None:
        wanted = set()
        for entry in ((self.config.get("spec") or {}).get("sync") or {}).get("syncOnly") or []:
            group, version, kind = entry.get("group") or "", entry.get("version") or "", entry.get("kind") or ""
            if version and kind:
                wanted.add(Kind(f"{group}/{version}" if group else version, kind))
        for kind in wanted - self.synced_kinds:
            self.synced_kinds.add(kind)
            if kind in self.watchers:  # e.g. Namespaces: already watched for namespaceSelector
                continue
            self._watch(kind)
        for kind in self.synced_kinds - wanted:
            self.synced_kinds.discard(kind)
            if kind != NAMESPACES:
                self._unwatch(kind)
            for obj in [o for o in self._inventory_objects(kind)]:
                self.inventory.remove(obj)

    def _inventory_objects(self, kind: Kind) -> list[dict[str, Any]]:
        tree = self.inventory
        out: list[dict[str, Any]] = []
        out.extend(tree.cluster.get(kind.api_version, {}).get(kind.kind, {}).values())
        for gvs in tree.namespace.values():
            out.extend(gvs.get(kind.api_version, {}).get(kind.kind, {}).values())
        return out

    def _sync(self, event: Event, objects: list[dict[str, Any]]) -> None:
        if event.type == "SYNC":
            for obj in self._inventory_objects(event.kind):
                self.inventory.remove(obj)
        for obj in objects:
            namespace = _key(obj)[0]
            if namespace and self.excluded(namespace, "sync"):
                continue
            if event.type == "DELETED":
                self.inventory.remove(obj)
            else:
                self.inventory.add(obj)

    # -- policy set

    def _documents(self) -> Iterable[Document]:
        for kind, store in self.policy_docs.items():
            for (namespace, name), body in store.items():
                yield Document(body, f"{kind.kind}/{namespace + '/' if namespace else ''}{name}")

    def _rebuild(self) -> None:
        policies = build_policy_set(self._documents(), enable_cel=self.enable_cel, cache=self.cache)
        policies.validation.inventory = self.inventory
        policies.namespaces = self.namespaces  # kept current by the Namespace watch
        policies.excluded = self.excluded  # reads the current Config
        self.current = policies
        self.generation += 1
        log_loaded(policies, "policies from the cluster", self.generation)
        for callback in self.on_change:
            try:
                callback(self)
            except Exception:
                log.exception("policy change callback failed")

    async def run(self, interval: float = 0.1) -> None:
        """Drain events in the serving loop until cancelled."""
        self.start()
        try:
            while True:
                try:
                    self.apply_events()
                except Exception:
                    log.exception("applying cluster events failed; keeping the last policy set")
                await asyncio.sleep(interval)
        finally:
            self.stop()
