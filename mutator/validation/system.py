"""The validation system: templates, their constraints, the inventory, and the review of one request."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..match import Matchable, MatchError, PolicyError
from .constraints import WEBHOOK_POINT, Constraint, constraint_from_resource
from .inventory import Inventory
from .rego import RegoBundle, RegoEvalError
from .templates import ENGINE_CEL, Template

DEADLINE_MESSAGE = "the review passed the webhook's deadline"


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


@dataclass(frozen=True, slots=True)
class Violation:
    constraint: Constraint
    message: str
    details: Any
    actions: tuple[str, ...]

    @property
    def text(self) -> str:
        """Gatekeeper's form: ``[<constraint name>] <message>``."""
        return f"[{self.constraint.name}] {self.message}"


@dataclass(slots=True)
class ReviewResult:
    violations: list[Violation] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def with_action(self, action: str) -> list[Violation]:
        return [v for v in self.violations if action in v.actions]


@dataclass(slots=True)
class _Entry:
    constraint: Constraint
    params_json: str


class ValidationSystem:
    def __init__(self, *, enable_cel: bool = True, inventory: Inventory | None = None) -> None:
        self.enable_cel = enable_cel
        self.templates: dict[str, Template] = {}
        self._constraints: dict[str, dict[str, _Entry]] = {}
        self._pending: dict[tuple[str, str], Mapping[str, Any]] = {}  # constraints waiting for their template
        self.inventory = inventory if inventory is not None else Inventory()
        self._bundles: list[RegoBundle] | None = None  # built after a change, before the next review
        self._generation = 0

    # -- policies

    def add_template(self, template: Template) -> list[tuple[Mapping[str, Any], PolicyError]]:
        """Add or replace a template; constraints of its kind are checked again. Returns rejected constraints."""
        self.templates[template.kind] = template
        self._changed()
        rejected = []
        existing = [e.constraint.resource for e in self._constraints.pop(template.kind, {}).values()]
        pending = [r for (kind, _), r in list(self._pending.items()) if kind == template.kind]
        for resource in existing + pending:
            try:
                self.add_constraint(resource)
            except PolicyError as err:
                rejected.append((resource, err))
        return rejected

    def remove_template(self, kind: str) -> None:
        self.templates.pop(kind, None)
        self._changed()
        for entry in self._constraints.pop(kind, {}).values():
            self._pending[entry.constraint.key] = entry.constraint.resource

    def add_constraint(self, resource: Mapping[str, Any]) -> Constraint:
        kind = str(resource.get("kind") or "")
        if kind not in self.templates:
            # kept, and checked again when its template arrives (a watch may deliver it first)
            meta = resource.get("metadata") if isinstance(resource.get("metadata"), Mapping) else {}
            self._pending[(kind, str(meta.get("name") or ""))] = resource
        constraint = constraint_from_resource(resource, self.templates.get(kind))
        self._pending.pop(constraint.key, None)
        self._changed()
        self._constraints.setdefault(kind, {})[constraint.name] = _Entry(
            constraint, orjson.dumps(constraint.parameters).decode() if constraint.parameters is not None else "{}"
        )
        return constraint

    def remove_constraint(self, kind: str, name: str) -> None:
        self._changed()
        self._constraints.get(kind, {}).pop(name, None)
        self._pending.pop((kind, name), None)

    def _changed(self) -> None:
        self._bundles = None
        self._generation += 1

    def prepare(self) -> list[RegoBundle]:
        """Build the Rego bundles (one engine per Rego syntax version) for the current templates."""
        if self._bundles is None:
            bundles = []
            for v1 in (False, True):
                programs = {
                    kind: t.program
                    for kind, t in self.templates.items()
                    if t.engine != ENGINE_CEL and t.program.source.v1 == v1 and self._constraints.get(kind)
                }
                if programs:
                    bundles.append(RegoBundle(programs, v1=v1))
            self._bundles = bundles
        return self._bundles

    def _refresh_data(self, bundle: RegoBundle) -> None:
        """Give the bundle its constraints' parameters and the inventory, when either changed."""
        version = (self._generation, self.inventory.version if bundle.uses_inventory else None)
        if bundle.data_version() == version:
            return
        params = {
            key: {name: e.constraint.parameters or {} for name, e in self._constraints.get(kind, {}).items()}
            for kind, key in bundle.keys.items()
        }
        inventory = self.inventory.inventory_json() if bundle.uses_inventory else "{}"
        bundle.set_data(f'{{"gkconstraints":{orjson.dumps(params).decode()},"inventory":{inventory}}}', version)

    def constraints(self) -> list[Constraint]:
        return [e.constraint for by_name in self._constraints.values() for e in by_name.values()]

    # -- review

    def review(
        self,
        review: Mapping[str, Any],
        *,
        namespace_object: Mapping[str, Any] | None = None,
        source: str = "Original",
        point: str = WEBHOOK_POINT,
        deadline: float | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> ReviewResult:
        """Evaluate every matching constraint against ``review`` (an ``input.review``).

        With ``deadline`` (a ``time.monotonic()`` value), templates not yet evaluated when it passes are
        skipped and reported as an error: the webhook then answers per its failure policy with the reason.
        One evaluation already running is not interrupted here (the engines cannot be); ``progress``, called with
        the template kind before each evaluation, lets a supervisor name what was running when it cut one off."""
        result = ReviewResult()
        obj = review.get("object")
        if not isinstance(obj, Mapping) or not obj:
            obj = review.get("oldObject")
        if not isinstance(obj, Mapping):
            return result
        target = Matchable(obj, namespace_object, source)
        matched: dict[str, list[tuple[_Entry, tuple[str, ...]]]] = {}
        for kind, by_name in self._constraints.items():
            if kind not in self.templates:
                continue
            for entry in by_name.values():
                constraint = entry.constraint
                actions = tuple(constraint.actions_for(point))
                if not actions:
                    continue
                try:
                    if constraint.match.matches(target):
                        matched.setdefault(kind, []).append((entry, actions))
                except MatchError as err:
                    result.errors.append(f"[{constraint.name}] failed to run match criteria: {err}")
        if not matched:
            return result

        review_json: str | None = None
        for bundle in self.prepare():
            kinds = [kind for kind in bundle.keys if kind in matched]
            if not kinds:
                continue
            if review_json is None:
                review_json = orjson.dumps(review).decode()
            self._refresh_data(bundle)
            names = {bundle.keys[k]: [e.constraint.name for e, _ in matched[k]] for k in kinds}
            bundle.set_input(f'{{"review":{review_json},"gkmatched":{orjson.dumps(names).decode()}}}')
            for kind in kinds:
                entries = {e.constraint.name: (e, actions) for e, actions in matched.pop(kind)}
                if _past(deadline):
                    result.errors.extend(f"[{name}] not evaluated: {DEADLINE_MESSAGE}" for name in entries)
                    continue
                if progress is not None:
                    progress(kind)
                try:
                    found = bundle.evaluate(kind)
                except RegoEvalError as err:
                    result.errors.extend(f"[{name}] evaluation failed: {err}" for name in entries)
                    continue
                for v in sorted(found, key=lambda v: (str(v.get("name")), str(v.get("msg")))):
                    entry, actions = entries[v["name"]]
                    result.violations.append(Violation(entry.constraint, str(v["msg"]), v.get("details", {}), actions))

        # CEL templates, and any Rego template the bundle could not take, one constraint at a time
        for kind, entries_actions in matched.items():
            template = self.templates[kind]
            for entry, actions in entries_actions:
                constraint = entry.constraint
                if _past(deadline):
                    result.errors.append(f"[{constraint.name}] not evaluated: {DEADLINE_MESSAGE}")
                    continue
                if progress is not None:
                    progress(kind)
                try:
                    if template.engine == ENGINE_CEL:
                        found_msgs = [
                            (v.message, {})
                            for v in template.program.evaluate(
                                object=review.get("object"),
                                old_object=review.get("oldObject"),
                                params=constraint.parameters,
                                request=review,
                                namespace_object=namespace_object,
                                constraint=constraint.resource,
                            )
                        ]
                    else:
                        if review_json is None:
                            review_json = orjson.dumps(review).decode()
                        program = template.program
                        if program.uses_inventory:
                            program.set_data(self.inventory.data_json(), self.inventory.version)
                        raw = program.evaluate(f'{{"review":{review_json},"parameters":{entry.params_json}}}')
                        found_msgs = [(str(v.get("msg", "")), v.get("details", {})) for v in raw]
                except (RegoEvalError, RuntimeError, ValueError) as err:
                    result.errors.append(f"[{constraint.name}] evaluation failed: {err}")
                    continue
                for message, details in found_msgs:
                    result.violations.append(Violation(constraint, message, details, actions))
        return result
