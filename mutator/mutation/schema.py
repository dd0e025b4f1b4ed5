"""Schema conflicts: two mutators that disagree about the shape of a path are both disabled.

Each mutator's location implies, per group/version/kind of its ``applyTo``, a type for every step of the
path: an object, a list keyed by some field, and at the end a terminal (anything for Assign, a set for
ModifySet, a string for AssignImage).  List elements of one list share one schema, whatever key value
selects them.  Where two mutators imply different types for the same step, both are in conflict.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from .mutators import TERMINAL_ANY, MutatorID
from .path import Object

if TYPE_CHECKING:
    from .mutators import Mutator

Step = tuple[str, ...]  # object field names and "[]" for list elements
Shape = str


def implied_shapes(mutator: Mutator) -> list[tuple[Step, Shape]]:
    """(step, shape) pairs the mutator's location implies; the root step is ()."""
    out: list[tuple[Step, Shape]] = []
    step: Step = ()
    for node in mutator.path.nodes:
        if isinstance(node, Object):
            out.append((step, "object"))
            step = (*step, "." + node.reference)
        else:
            out.append((step, f"list[{node.key_field}]"))
            step = (*step, "[]")
    if mutator.terminal_type != TERMINAL_ANY:
        out.append((step, mutator.terminal_type))
    return out


class SchemaDB:
    def __init__(self) -> None:
        # (gvk, step) -> shape -> mutator ids
        self._index: dict[tuple[tuple[str, str, str], Step], dict[Shape, set[MutatorID]]] = defaultdict(
            lambda: defaultdict(set)
        )
        self._entries: dict[MutatorID, list[tuple[tuple[str, str, str], Step, Shape]]] = {}
        self.conflicts: dict[MutatorID, set[MutatorID]] = {}

    def upsert(self, mutator: Mutator) -> None:
        self._drop(mutator.id)
        entries = [(gvk, step, shape) for gvk in mutator.schema_gvks() for step, shape in implied_shapes(mutator)]
        self._entries[mutator.id] = entries
        for gvk, step, shape in entries:
            self._index[(gvk, step)][shape].add(mutator.id)
        self._recompute()

    def remove(self, mid: MutatorID) -> None:
        self._drop(mid)
        self._recompute()

    def _drop(self, mid: MutatorID) -> None:
        for gvk, step, shape in self._entries.pop(mid, []):
            by_shape = self._index[(gvk, step)]
            by_shape[shape].discard(mid)
            if not by_shape[shape]:
                del by_shape[shape]
            if not by_shape:
                del self._index[(gvk, step)]

    def _recompute(self) -> None:
        conflicts: dict[MutatorID, set[MutatorID]] = {}
        for by_shape in self._index.values():
            if len(by_shape) > 1:
                involved = set().union(*by_shape.values())
                for mid in involved:
                    conflicts.setdefault(mid, set()).update(involved)
        self.conflicts = conflicts

    def has_conflicts(self, mid: MutatorID) -> bool:
        return mid in self.conflicts
