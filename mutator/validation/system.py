"""The validation system: templates, their constraints, the inventory, and the review of one request."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..match import Match, MatchError, ObjectFacts, PolicyError
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
    params_json: str  # the parameters as JSON, keys sorted: equal parameters, equal text
    group: str = ""  # constraints of a kind with equal parameters share a group, evaluated once per request
    inline: str = ""  # '"<group>":<parameters>' for the bundle's input when they are small, else ""


def _data_params(entry: _Entry) -> str:
    """The text of what the bundle's data holds as this constraint's parameters (``parameters or {}``)."""
    return entry.params_json if entry.constraint.parameters else "{}"


# kind, entry, its match criteria (None when they are only ``kinds``, already decided by the index), its actions
_Candidate = tuple[str, _Entry, Match | None, tuple[str, ...]]


class _Plan:
    """The constraints that act at one enforcement point, in review order, and the subset whose ``kinds``
    criteria accept an object's (group, kind), computed once per pair: a request runs only the matchers that
    can match it. Rebuilt after any change to the policies."""

    __slots__ = ("_by_kind", "candidates")

    _MAX_KINDS = 4096  # distinct (group, kind) pairs remembered; requests could name any

    def __init__(self, candidates: list[tuple[str, _Entry, Match, tuple[str, ...]]]) -> None:
        self.candidates = candidates
        self._by_kind: dict[tuple[str, str], list[_Candidate]] = {}

    def for_kind(self, group: str, kind: str) -> list[_Candidate]:
        found = self._by_kind.get((group, kind))
        if found is None:
            found = [
                (k, entry, None if match.only_kinds() else match, actions)
                for k, entry, match, actions in self.candidates
                if _kinds_accept(match, group, kind)
            ]
            if len(self._by_kind) >= self._MAX_KINDS:
                self._by_kind.clear()
            self._by_kind[(group, kind)] = found
        return found


def _kinds_accept(match: Match, group: str, kind: str) -> bool:
    """The ``kinds`` criterion of ``match`` alone (the first one :meth:`Match.matches_facts` checks)."""
    return not match.kinds or any(selector.matches(group, kind) for selector in match.kinds)


def _violations(found: list[dict[str, Any]], entries: list[tuple[_Entry, tuple[str, ...]]]) -> list[Violation]:
    """A kind's violations, by group, given to every matched constraint of the group, ordered by constraint
    name then message (ties in the engine's order)."""
    group = entries[0][0].group
    if all(entry.group == group for entry, _ in entries):  # one group: the same violations for each constraint
        pairs = sorted(((str(v["msg"]), v.get("details", {})) for v in found), key=_first)
        if len(entries) == 1:
            entry, actions = entries[0]
            return [Violation(entry.constraint, message, details, actions) for message, details in pairs]
        return [
            Violation(entry.constraint, message, details, actions)
            for entry, actions in sorted(entries, key=_constraint_name)
            for message, details in pairs
        ]
    members: dict[str, list[tuple[_Entry, tuple[str, ...]]]] = {}
    for entry, actions in entries:
        members.setdefault(entry.group, []).append((entry, actions))
    rows = []
    for v in found:
        message = str(v["msg"])
        details = v.get("details", {})
        for entry, actions in members.get(v["name"], ()):
            rows.append((entry.constraint.name, message, details, entry.constraint, actions))
    rows.sort(key=_name_and_message)
    return [Violation(constraint, message, details, actions) for _, message, details, constraint, actions in rows]


INLINE_PARAMETERS = 256  # bytes of JSON: up to this, a group's parameters come with the input rather than from data


def _bundle_input(
    review_json: str, bundle: RegoBundle, kinds: list[str], matched: dict[str, list[tuple[_Entry, tuple[str, ...]]]]
) -> str:
    """The bundle's input: the review, and the matched parameter groups of each kind (see RegoBundle._hook)."""
    named: dict[str, list[str]] = {}
    inline: list[str] = []
    for kind in kinds:
        seen: set[str] = set()
        small: list[str] = []
        large: list[str] = []
        for entry, _ in matched[kind]:
            if entry.group not in seen:
                seen.add(entry.group)
                if entry.inline:
                    small.append(entry.inline)
                else:
                    large.append(entry.group)
        if small:
            inline.append(f'"{bundle.keys[kind]}":{{{",".join(small)}}}')
        if large:
            named[bundle.keys[kind]] = large
    return f'{{"review":{review_json},"gkmatched":{orjson.dumps(named).decode()},"gkparams":{{{",".join(inline)}}}}}'


def _constraint_name(pair: tuple[_Entry, tuple[str, ...]]) -> str:
    return pair[0].constraint.name


def _first(row: tuple[Any, ...]) -> Any:
    return row[0]


def _name_and_message(row: tuple[Any, ...]) -> tuple[Any, Any]:
    return row[0], row[1]


class ValidationSystem:
    def __init__(self, *, enable_cel: bool = True, inventory: Inventory | None = None) -> None:
        self.enable_cel = enable_cel
        self.templates: dict[str, Template] = {}
        self._constraints: dict[str, dict[str, _Entry]] = {}
        self._pending: dict[tuple[str, str], Mapping[str, Any]] = {}  # constraints waiting for their template
        self.inventory = inventory if inventory is not None else Inventory()
        self._bundles: list[RegoBundle] | None = None  # built after a change, before the next review
        self._plans: dict[str, _Plan] = {}  # per enforcement point, rebuilt after a change
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
        params_json = (
            orjson.dumps(constraint.parameters, option=orjson.OPT_SORT_KEYS).decode()
            if constraint.parameters is not None
            else "{}"
        )
        self._constraints.setdefault(kind, {})[constraint.name] = _Entry(constraint, params_json)
        return constraint

    def remove_constraint(self, kind: str, name: str) -> None:
        self._changed()
        self._constraints.get(kind, {}).pop(name, None)
        self._pending.pop((kind, name), None)

    def _changed(self) -> None:
        self._bundles = None
        self._plans = {}
        self._generation += 1

    def _plan(self, point: str) -> _Plan:
        plan = self._plans.get(point)
        if plan is None:
            candidates = []
            for kind, by_name in self._constraints.items():
                if kind not in self.templates:
                    continue
                for entry in by_name.values():
                    actions = tuple(entry.constraint.actions_for(point))
                    if actions:
                        candidates.append((kind, entry, entry.constraint.match, actions))
            plan = self._plans[point] = _Plan(candidates)
        return plan

    def prepare(self) -> list[RegoBundle]:
        """Build the Rego bundles (one engine per Rego syntax version) for the current templates."""
        if self._bundles is None:
            for kind, by_name in self._constraints.items():
                # Constraints of a kind with equal parameters get the same violations: one evaluation per group.
                # A template that never reads its parameters gives every constraint the same violations.
                template = self.templates.get(kind)
                shared = template is not None and not getattr(template.program, "reads_parameters", True)
                groups: dict[str, str] = {}
                for entry in by_name.values():
                    entry.group = groups.setdefault("" if shared else _data_params(entry), f"p{len(groups)}")
                    params = _data_params(entry)
                    entry.inline = f'"{entry.group}":{params}' if len(params) <= INLINE_PARAMETERS else ""
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
            key: {e.group: e.constraint.parameters or {} for e in self._constraints.get(kind, {}).values()}
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
        review_json: str | None = None,
    ) -> ReviewResult:
        """Evaluate every matching constraint against ``review`` (an ``input.review``); ``review_json``, when the
        caller has it already, is ``review`` as orjson writes it (it is not written again).

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
        facts = ObjectFacts(obj)
        matched: dict[str, list[tuple[_Entry, tuple[str, ...]]]] = {}
        for kind, entry, match, actions in self._plan(point).for_kind(facts.group, facts.kind):
            try:
                if match is None or match.matches_facts(facts, namespace_object, source):
                    matched.setdefault(kind, []).append((entry, actions))
            except MatchError as err:
                result.errors.append(f"[{entry.constraint.name}] failed to run match criteria: {err}")
        if not matched:
            return result

        for bundle in self.prepare():
            kinds = [kind for kind in bundle.keys if kind in matched]
            if not kinds:
                continue
            if review_json is None:
                review_json = orjson.dumps(review).decode()
            self._refresh_data(bundle)
            bundle.set_input(_bundle_input(review_json, bundle, kinds, matched))
            for kind in kinds:
                entries = matched.pop(kind)
                if _past(deadline):
                    result.errors.extend(f"[{e.constraint.name}] not evaluated: {DEADLINE_MESSAGE}" for e, _ in entries)
                    continue
                if progress is not None:
                    progress(kind)
                try:
                    found = bundle.evaluate(kind)
                except RegoEvalError as err:
                    result.errors.extend(f"[{e.constraint.name}] evaluation failed: {err}" for e, _ in entries)
                    continue
                if found:
                    result.violations.extend(_violations(found, entries))

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
