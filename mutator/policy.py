"""Policy sources: a set of loaded policies, built from documents and swapped in whole.

A :class:`PolicySet` is immutable once built: the server holds one reference and replaces it atomically, so
a request always sees a complete, consistent set.  :class:`DirectorySource` reads a directory (or files)
of Gatekeeper YAML and rebuilds the set when a file changes; a file that stops parsing keeps its last good
documents, and a bad resource is rejected with its reason while the others keep working.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .match import PolicyError
from .mutation import MutationSystem, is_mutator_resource, mutator_from_resource
from .resources import Document, DocumentError, expand_paths, read_file
from .validation.constraints import is_constraint_resource
from .validation.system import ValidationSystem
from .validation.templates import Template, is_template_resource, template_from_resource

log = logging.getLogger("mutator.policy")


@dataclass(frozen=True, slots=True)
class LoadError:
    source: str
    message: str
    kind: str = ""  # the rejected resource's kind and name, when the error is about one resource
    name: str = ""

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass(slots=True)
class PolicySet:
    mutation: MutationSystem = field(default_factory=MutationSystem)
    validation: ValidationSystem = field(default_factory=ValidationSystem)
    namespaces: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)
    conflicts: list[LoadError] = field(default_factory=list)
    objects: list[Document] = field(default_factory=list)  # documents that are not policies

    # Config spec.match[].excludedNamespaces, by process (cluster mode): (namespace, process) -> excluded
    excluded: Callable[[str, str], bool] | None = None

    def excluder(self, process: str) -> Callable[[str], bool] | None:
        """The namespaces the Config excludes from one process (webhook, mutation-webhook, audit, sync)."""
        excluded = self.excluded
        if excluded is None:
            return None
        return lambda namespace: excluded(namespace, process)

    def namespace(self, name: str) -> Mapping[str, Any]:
        """The Namespace object for ``name``: the loaded one, else a label-less stand-in."""
        found = self.namespaces.get(name)
        if found is not None:
            return found
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


class TemplateCache:
    """Compiled templates by content: a reload recompiles only the templates that changed."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[bytes, bool], Template] = {}

    def get(self, resource: Mapping[str, Any], enable_cel: bool) -> Template:
        # what compiles is the spec (and the name): a status or resourceVersion change recompiles nothing
        meta = resource.get("metadata") if isinstance(resource.get("metadata"), Mapping) else {}
        essence = [resource.get("apiVersion"), resource.get("kind"), meta.get("name"), resource.get("spec")]
        key = (orjson.dumps(essence, option=orjson.OPT_SORT_KEYS), enable_cel)
        template = self._compiled.get(key)
        if template is None:
            template = template_from_resource(resource, enable_cel=enable_cel)
            self._compiled[key] = template
        return template

    def retain(self, templates: Iterable[Template]) -> None:
        keep = {id(t) for t in templates}
        self._compiled = {k: t for k, t in self._compiled.items() if id(t) in keep}


def build_policy_set(
    documents: Iterable[Document],
    *,
    keep_objects: bool = False,
    enable_cel: bool = True,
    cache: TemplateCache | None = None,
) -> PolicySet:
    """Sort documents into mutators, templates, constraints and Namespaces; reject bad ones with the reason."""
    policies = PolicySet(validation=ValidationSystem(enable_cel=enable_cel))
    cache = cache or TemplateCache()
    constraints: list[Document] = []
    for doc in documents:
        body = doc.body
        if is_mutator_resource(body):
            try:
                mutator = mutator_from_resource(body)
            except PolicyError as err:
                policies.errors.append(LoadError(doc.describe(), str(err), doc.kind, doc.name))
                continue
            if mutator.id in policies.mutation:
                policies.errors.append(
                    LoadError(doc.describe(), f"duplicate {mutator.id}: replaces the one loaded before")
                )
            conflict = policies.mutation.upsert(mutator)
            if conflict:
                policies.conflicts.append(LoadError(doc.describe(), conflict, doc.kind, doc.name))
        elif is_template_resource(body):
            try:
                template = cache.get(body, enable_cel)
            except PolicyError as err:
                policies.errors.append(LoadError(doc.describe(), str(err), doc.kind, doc.name))
                continue
            policies.validation.add_template(template)
        elif is_constraint_resource(body):
            constraints.append(doc)
        elif body.get("apiVersion") == "v1" and body.get("kind") == "Namespace" and doc.name:
            policies.namespaces[doc.name] = body
            if keep_objects:
                policies.objects.append(doc)
        elif keep_objects:
            policies.objects.append(doc)
    for doc in constraints:  # after every template, whatever the order of the files
        try:
            policies.validation.add_constraint(doc.body)
        except PolicyError as err:
            policies.errors.append(LoadError(doc.describe(), str(err), doc.kind, doc.name))
    cache.retain(policies.validation.templates.values())
    policies.validation.prepare()  # build the Rego bundles now, not on the first request
    return policies


def load_paths(paths: Iterable[str | Path], *, keep_objects: bool = False, enable_cel: bool = True) -> PolicySet:
    """Load policies (and, with keep_objects, the other documents) from files and directories."""
    docs: list[Document] = []
    errors: list[LoadError] = []
    for path in expand_paths(paths):
        try:
            docs.extend(read_file(path))
        except DocumentError as err:
            errors.append(LoadError(str(path), str(err)))
    policies = build_policy_set(docs, keep_objects=keep_objects, enable_cel=enable_cel)
    policies.errors[:0] = errors
    return policies


def log_loaded(policies: PolicySet, what: str, generation: int) -> None:
    """Log a newly built policy set: every rejected resource and mutator conflict, then the counts."""
    for err in policies.errors:
        log.error("policy rejected: %s", err)
    for err in policies.conflicts:
        log.error("mutator conflict: %s", err)
    log.info(
        "%s (generation %d): %d mutators, %d templates, %d constraints, %d rejected, %d conflicting",
        what,
        generation,
        len(policies.mutation),
        len(policies.validation.templates),
        len(policies.validation.constraints()),
        len(policies.errors),
        len(policies.mutation.conflicting()),
    )


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class DirectorySource:
    """Policies from a directory or files, reloaded when they change (polling; no restart)."""

    def __init__(self, paths: Iterable[str | Path], *, interval: float = 1.0, enable_cel: bool = True) -> None:
        self.paths = [Path(p) for p in paths]
        self.enable_cel = enable_cel
        self._cache = TemplateCache()
        self.interval = interval
        self._signatures: dict[Path, tuple[int, int] | None] = {}
        self._docs: dict[Path, list[Document]] = {}
        self._lock = threading.Lock()
        self.current = PolicySet()
        self.generation = 0
        self.loaded = threading.Event()
        self._stop = threading.Event()

    def reload(self) -> bool:
        """Re-read changed files; rebuild and swap the policy set if anything changed."""
        with self._lock:
            try:
                files = expand_paths(self.paths)
            except DocumentError as err:
                log.error("policy source: %s", err)
                files = [p for p in self._docs if p.exists()]
            changed = False
            file_errors: list[LoadError] = []
            seen = set(files)
            for gone in [p for p in self._docs if p not in seen]:
                del self._docs[gone]
                self._signatures.pop(gone, None)
                changed = True
            for path in files:
                sig = _signature(path)
                if path in self._signatures and self._signatures[path] == sig:
                    continue
                self._signatures[path] = sig
                changed = True
                try:
                    self._docs[path] = read_file(path)
                except DocumentError as err:
                    kept = len(self._docs.get(path, []))
                    msg = f"{err}; keeping the {kept} documents loaded before" if kept else str(err)
                    file_errors.append(LoadError(str(path), msg))
            if not changed and self.loaded.is_set():
                return False
            docs = [doc for path in files for doc in self._docs.get(path, [])]
            policies = build_policy_set(docs, enable_cel=self.enable_cel, cache=self._cache)
            policies.errors[:0] = file_errors
            self.current = policies
            self.generation += 1
            self.loaded.set()
            log_loaded(policies, "policies loaded", self.generation)
            return True

    def start(self) -> None:
        """Load now. Call :meth:`watch` in the serving event loop to follow changes."""
        self.reload()

    def stop(self) -> None:
        self._stop.set()

    async def watch(self) -> None:
        """Poll for changes and reload, in the event loop that serves requests: the Rego and CEL engines
        a reload builds may only be used on the thread that made them."""
        while not self._stop.is_set():
            await asyncio.sleep(self.interval)
            try:
                self.reload()
            except Exception:  # never let the watcher die; the last good set keeps serving
                log.exception("policy reload failed; keeping the last loaded policies")
