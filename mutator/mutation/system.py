"""The mutation system: mutators in ID order, applied in passes until a pass changes nothing.

At most (number of mutators + 1) passes run; an object still changing then is a "not converging" error.
Mutators in schema conflict with each other are skipped until the conflict is gone.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import orjson

from ..match import MatchError, ObjectFacts
from .core import MutationError, deep_copy, json_equal
from .mutators import Mutable, Mutator, MutatorID
from .schema import SchemaDB


@dataclass(frozen=True, slots=True)
class MutationResult:
    changed: bool
    passes: int  # 0: the first pass changed nothing; n: pass n was the first to change nothing


class MutationSystem:
    def __init__(self) -> None:
        self._ids: list[MutatorID] = []
        self._mutators: dict[MutatorID, Mutator] = {}
        self.schema = SchemaDB()
        # (group, version, kind) -> the mutators that can apply to it, in order, conflicts left out.
        # Built on first use after a change, so a request only touches the mutators that can match.
        self._by_gvk: dict[tuple[str, str, str], list[Mutator]] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, mid: MutatorID) -> bool:
        return mid in self._mutators

    def mutators(self) -> list[Mutator]:
        return [self._mutators[mid] for mid in self._ids]

    def get(self, mid: MutatorID) -> Mutator | None:
        return self._mutators.get(mid)

    def upsert(self, mutator: Mutator) -> str | None:
        """Add or replace a mutator. Returns the conflict message if it conflicts with another."""
        mid = mutator.id
        if mid not in self._mutators:
            bisect.insort(self._ids, mid)
        self._mutators[mid] = mutator
        self._by_gvk.clear()
        self.schema.upsert(mutator)
        conflicting = self.schema.conflicts.get(mid)
        if conflicting:
            names = ",".join(str(m) for m in sorted(conflicting))
            return f"the following mutators have conflicting schemas: [{names}]"
        return None

    def remove(self, mid: MutatorID) -> None:
        if mid in self._mutators:
            del self._mutators[mid]
            self._ids.remove(mid)
            self._by_gvk.clear()
            self.schema.remove(mid)

    def conflicting(self) -> set[MutatorID]:
        return set(self.schema.conflicts)

    def mutate(self, mutable: Mutable) -> MutationResult:
        """Mutate ``mutable.object`` in place."""
        obj = mutable.object
        namespace, source = mutable.namespace, mutable.source
        max_passes = len(self._ids) + 1
        changed_any = False
        # What the match criteria read, recomputed after every change. A match decision depends only on
        # these facts (the Namespace and the source are fixed for the request), so decisions are kept
        # until the facts they read change: ``plain`` ones until the identity (apiVersion, kind, namespace,
        # name, generateName) changes, ``by_labels`` ones also until the labels change.
        facts = ObjectFacts(obj)
        plain: dict[int, bool] = {}
        by_labels: dict[int, bool] = {}
        for iteration in range(1, max_passes + 1):
            # Like Gatekeeper, a pass counts as a change only if the object differs from the one the pass
            # started with (two mutators may rewrite each other's field every pass and still agree), the
            # first pass included.
            before = _Snapshot(obj)
            changed = False
            for mutator in self._active_for(facts.gvk):
                key = id(mutator)
                decisions = by_labels if mutator.reads_labels else plain
                decision = decisions.get(key)
                if decision is None:
                    try:
                        decision = mutator.matches_facts(facts, namespace, source)
                    except MatchError as err:
                        raise MutationError(
                            f"matching for mutator {mutator.id} failed for {_describe(mutable)}: "
                            f"failed to run Match criteria: {err}"
                        ) from err
                    decisions[key] = decision
                if not decision:
                    continue
                try:
                    if not mutator.mutate(mutable):
                        continue
                except MutationError as err:
                    raise MutationError(f"mutation of {mutator.id} failed for {_describe(mutable)}: {err}") from err
                changed = True
                difference = facts.compare(obj)
                if difference:
                    if difference == 2:
                        plain.clear()
                    by_labels.clear()
                    facts = ObjectFacts(obj)
            if changed and before.equals(obj):
                changed = False
            if not changed:
                return MutationResult(changed_any, 0 if iteration == 1 else iteration)
            changed_any = True
        raise MutationError(
            f"mutation not converging for {_describe(mutable)} after {max_passes} passes "
            f"(mutators: {', '.join(str(m) for m in self._ids)})"
        )

    def _active_for(self, gvk: tuple[str, str, str]) -> list[Mutator]:
        active = self._by_gvk.get(gvk)
        if active is None:
            group, version, kind = gvk
            active = [
                m
                for mid, m in ((mid, self._mutators[mid]) for mid in self._ids)
                if not self.schema.has_conflicts(mid)
                and (not m.requires_apply_to or any(a.applies(group, version, kind) for a in m.apply_to))
            ]
            if len(self._by_gvk) > 4096:  # bounded: unknown kinds must not grow memory without end
                self._by_gvk.clear()
            self._by_gvk[gvk] = active
        return active


class _Snapshot:
    """The object as a pass started, for the end-of-pass comparison. Kept as orjson bytes, which are
    cheaper to take than :func:`deep_copy` (dumps without loads) and decode to exactly the copy it would
    make; the comparison, needed only when a later pass reported a change, decodes them. An object orjson
    cannot encode (non-string keys, integers over 64 bits) is deep-copied by the walk instead."""

    __slots__ = ("_copy", "_data")

    def __init__(self, obj: dict) -> None:
        try:
            self._data: bytes | None = orjson.dumps(obj)
            self._copy = None
        except (TypeError, orjson.JSONEncodeError):
            self._data = None
            self._copy = deep_copy(obj)

    def equals(self, obj: dict) -> bool:
        data = self._data
        start = self._copy if data is None else orjson.loads(data)
        # Python's == (C speed, stops at the first difference) is False only when the JSON differs too; when it
        # is True, json_equal confirms what == cannot tell apart (true from 1)
        return start == obj and json_equal(start, obj)


def _describe(mutable: Mutable) -> str:
    obj = mutable.object
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return (
        f"{obj.get('apiVersion', '')} {obj.get('kind', '')} "
        f"{meta.get('namespace', '') or ''}/{meta.get('name', '') or meta.get('generateName', '') or ''}"
    )
