"""The mutation system: mutators in ID order, applied in passes until a pass changes nothing.

At most (number of mutators + 1) passes run; an object still changing then is a "not converging" error.
Mutators in schema conflict with each other are skipped until the conflict is gone.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from ..match import MatchError, gvk_of
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
        max_passes = len(self._ids) + 1
        changed_any = False
        before = None
        for iteration in range(1, max_passes + 1):
            # Like Gatekeeper, a pass counts as a change only if the object differs from the one the pass
            # started with (two mutators may rewrite each other's field every pass and still agree). The
            # snapshot is only needed once a first pass has changed something.
            if iteration > 1:
                before = deep_copy(mutable.object)
            changed = False
            for mutator in self._active_for(gvk_of(mutable.object)):
                try:
                    if not mutator.matches(mutable):
                        continue
                except MatchError as err:
                    raise MutationError(
                        f"matching for mutator {mutator.id} failed for {_describe(mutable)}: "
                        f"failed to run Match criteria: {err}"
                    ) from err
                try:
                    if mutator.mutate(mutable):
                        changed = True
                except MutationError as err:
                    raise MutationError(f"mutation of {mutator.id} failed for {_describe(mutable)}: {err}") from err
            if changed and before is not None and json_equal(before, mutable.object):
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


def _describe(mutable: Mutable) -> str:
    obj = mutable.object
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return (
        f"{obj.get('apiVersion', '')} {obj.get('kind', '')} "
        f"{meta.get('namespace', '') or ''}/{meta.get('name', '') or meta.get('generateName', '') or ''}"
    )
