"""Replicated data for referential policies: ``data.inventory``.

``cluster[<group/version>][<kind>][<name>]`` holds cluster-scoped objects,
``namespace[<ns>][<group/version>][<kind>][<name>]`` namespaced ones.  Each change bumps ``version``; engines
reload the data when the version moved, without recompiling any template.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

# Versions are unique across every Inventory, so an engine never mistakes one inventory for another.
_versions = itertools.count(1)


class Inventory:
    def __init__(self, objects: Iterable[Mapping[str, Any]] = ()) -> None:
        self.cluster: dict[str, dict[str, dict[str, Any]]] = {}
        self.namespace: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        self.version = next(_versions)
        self._json: str | None = None
        for obj in objects:
            self.add(obj)

    @staticmethod
    def _key(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
        return (
            str(obj.get("apiVersion") or ""),
            str(obj.get("kind") or ""),
            str(meta.get("namespace") or ""),
            str(meta.get("name") or ""),
        )

    def add(self, obj: Mapping[str, Any]) -> None:
        gv, kind, ns, name = self._key(obj)
        if not name or not kind:
            raise ValueError("inventory objects need apiVersion, kind and metadata.name")
        tree = self.namespace.setdefault(ns, {}) if ns else self.cluster
        tree.setdefault(gv, {}).setdefault(kind, {})[name] = obj
        self._changed()

    def remove(self, obj: Mapping[str, Any]) -> None:
        gv, kind, ns, name = self._key(obj)
        tree = self.namespace.get(ns, {}) if ns else self.cluster
        kinds = tree.get(gv, {})
        if kinds.get(kind, {}).pop(name, None) is not None:
            if not kinds[kind]:
                del kinds[kind]
            if not kinds:
                tree.pop(gv, None)
            if ns and not tree:
                self.namespace.pop(ns, None)
            self._changed()

    def _changed(self) -> None:
        self.version = next(_versions)
        self._json = None

    def inventory_json(self) -> str:
        """The inventory tree alone as JSON text."""
        return self.data_json()[len('{"inventory":') : -1]

    def data_json(self) -> str:
        """``{"inventory": {...}}`` as JSON text, rebuilt only after a change."""
        if self._json is None:
            self._json = orjson.dumps({"inventory": {"cluster": self.cluster, "namespace": self.namespace}}).decode()
        return self._json

    def __len__(self) -> int:
        n = sum(len(names) for kinds in self.cluster.values() for names in kinds.values())
        return n + sum(
            len(names) for gvs in self.namespace.values() for kinds in gvs.values() for names in kinds.values()
        )
