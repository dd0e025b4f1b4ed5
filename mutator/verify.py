"""``mutator verify``: run Gatekeeper ``Suite`` files (``test.gatekeeper.sh/v1alpha1``) unchanged.

Each test names a template and a constraint; each case an object (or an AdmissionReview, for UPDATE and
userInfo cases), optional inventory files, and assertions: ``violations: yes|no|N`` with an optional
``message`` regex that counts only the violations whose message matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .match import PolicyError
from .resources import DocumentError, read_file
from .validation.constraints import GATOR_POINT
from .validation.inventory import Inventory
from .validation.review import review_from_object
from .validation.system import ReviewResult, ValidationSystem, Violation
from .validation.templates import template_from_resource

SUITE_API = "test.gatekeeper.sh/v1alpha1"


@dataclass(slots=True)
class CaseResult:
    suite: str
    test: str
    case: str
    passed: bool
    reason: str = ""
    violations: list[Violation] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.suite} {self.test}/{self.case}"


def find_suites(target: str) -> list[Path]:
    """``dir/...`` recurses; a directory holds suite.yaml files at its top; a file is one suite."""
    recursive = target.endswith("/...")
    base = Path(target[: -len("/...")] if recursive else target)
    if base.is_file():
        return [base]
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no such file or directory")
    pattern = "**/*" if recursive else "*"
    found = []
    for path in sorted(base.glob(pattern)):
        if path.suffix in (".yaml", ".yml") and path.is_file() and _is_suite(path):
            found.append(path)
    return found


def _is_suite(path: Path) -> bool:
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:4096]
    except OSError:
        return False
    return "kind: Suite" in head and SUITE_API in head


def _load_one(path: Path) -> Mapping[str, Any]:
    docs = read_file(path)
    if len(docs) != 1:
        raise DocumentError(f"{path}: expected one document, found {len(docs)}")
    return docs[0].body


def _count_matching(violations: list[Violation], message: str | None) -> int:
    if message is None:
        return len(violations)
    pattern = re.compile(message)
    return sum(1 for v in violations if pattern.search(v.message))


def check_assertions(assertions: list[Any], violations: list[Violation]) -> str:
    """Empty string when every assertion holds, else why the first one does not."""
    for i, assertion in enumerate(assertions or [{"violations": "no"}]):
        if not isinstance(assertion, Mapping):
            return f"assertions[{i}]: must be an object"
        expected = assertion.get("violations", "yes")
        message = assertion.get("message")
        got = _count_matching(violations, message)
        about = f" matching {message!r}" if message is not None else ""
        if expected is True or expected == "yes":
            if got == 0:
                return f"assertions[{i}]: expected violations{about}, got none"
        elif expected is False or expected == "no":
            if got != 0:
                return f"assertions[{i}]: expected no violations{about}, got {got}: " + _messages(violations)
        elif isinstance(expected, int) or (isinstance(expected, str) and expected.isdigit()):
            if got != int(expected):
                return f"assertions[{i}]: expected {int(expected)} violations{about}, got {got}: " + _messages(
                    violations
                )
        else:
            return f"assertions[{i}].violations: must be yes, no or a number, got {expected!r}"
    return ""


def _messages(violations: list[Violation]) -> str:
    return "; ".join(v.text for v in violations) or "(none)"


def review_case(
    system: ValidationSystem, obj: Mapping[str, Any], inventory_objects: list[Mapping[str, Any]]
) -> ReviewResult:
    """Review one case object (plain object or AdmissionReview) with the given inventory."""
    system.inventory = Inventory(inventory_objects)
    namespaces = {
        o["metadata"]["name"]: o for o in inventory_objects if o.get("kind") == "Namespace" and o.get("metadata")
    }
    if obj.get("kind") == "AdmissionReview" and isinstance(obj.get("request"), Mapping):
        request = dict(obj["request"])
        target = request.get("object") or request.get("oldObject") or {}
        meta = target.get("metadata") or {}
        ns_name = request.get("namespace") or meta.get("namespace") or ""
        ns_obj = namespaces.get(ns_name)
        if ns_obj is None and ns_name:
            ns_obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns_name}}
        if "kind" not in request and isinstance(target, Mapping):
            review = review_from_object(target, operation=request.get("operation", "CREATE"))
            review.update(request)
            request = review
        return system.review(request, namespace_object=ns_obj, point=GATOR_POINT)
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    ns_name = meta.get("namespace") or ""
    ns_obj = namespaces.get(ns_name)
    if ns_obj is None and ns_name:
        ns_obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns_name}}
    return system.review(review_from_object(obj, namespace_object=None), namespace_object=ns_obj, point=GATOR_POINT)


@dataclass(frozen=True, slots=True)
class RunFilter:
    """gator's ``--run``: ``REGEX`` selects tests or cases whose name matches; ``TEST//CASE`` both at once
    (an empty side selects everything)."""

    test: re.Pattern[str] | None
    case: re.Pattern[str] | None
    either: bool

    @classmethod
    def parse(cls, expression: str) -> RunFilter:
        if "//" in expression:
            test, _, case = expression.partition("//")
            return cls(re.compile(test) if test else None, re.compile(case) if case else None, False)
        pattern = re.compile(expression)
        return cls(pattern, pattern, True)

    def selects(self, test: str, case: str) -> bool:
        test_ok = self.test is None or self.test.search(test) is not None
        case_ok = self.case is None or self.case.search(case) is not None
        return (test_ok or case_ok) if self.either else (test_ok and case_ok)


def run_suite(path: Path, *, run: RunFilter | None = None, enable_cel: bool = True) -> Iterator[CaseResult]:
    suite_name = str(path)
    try:
        suite = _load_one(path)
    except DocumentError as err:
        yield CaseResult(suite_name, "-", "-", False, str(err))
        return
    base = path.parent
    for test in suite.get("tests") or []:
        test_name = str(test.get("name", "?"))
        cases = test.get("cases") or []
        selected = [c for c in cases if run is None or run.selects(test_name, str(c.get("name", "")))]
        if not selected:
            continue
        system = ValidationSystem(enable_cel=enable_cel)
        setup_error = ""
        try:
            template = template_from_resource(_load_one(base / test["template"]), enable_cel=enable_cel)
            system.add_template(template)
            system.add_constraint(_load_one(base / test["constraint"]))
        except (DocumentError, PolicyError, KeyError) as err:
            setup_error = f"setup: {err}"
        for case in selected:
            case_name = str(case.get("name", "?"))
            if setup_error:
                yield CaseResult(suite_name, test_name, case_name, False, setup_error)
                continue
            if case.get("skip"):
                yield CaseResult(suite_name, test_name, case_name, True, "skipped by the suite")
                continue
            try:
                obj = _load_one(base / case["object"])
                inventory = [d.body for f in case.get("inventory") or [] for d in read_file(base / f)]
            except (DocumentError, KeyError) as err:
                yield CaseResult(suite_name, test_name, case_name, False, f"case: {err}")
                continue
            result = review_case(system, obj, inventory)
            if result.errors:
                yield CaseResult(suite_name, test_name, case_name, False, "; ".join(result.errors), result.violations)
                continue
            reason = check_assertions(case.get("assertions") or [], result.violations)
            yield CaseResult(suite_name, test_name, case_name, not reason, reason, result.violations)
