"""The evaluating child process (mutator.webhook.evaluator): same results as in-process, data.inventory kept
current, a new child for a new policy set, a crashed child replaced."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from mutator.validation.inventory import Inventory
from mutator.validation.system import ReviewResult
from mutator.webhook.evaluator import CutOff, Evaluator, EvaluatorError

from .test_validation_system import (
    UNIQUE_HOST_REGO,
    ingress,
    make_constraint,
    make_template,
    namespace,
    system_with,
)

NAME_REGO = """package k8snamed
violation[{"msg": msg, "details": {"name": name, "n": 3}}] {
  name := input.review.object.metadata.name
  startswith(name, input.parameters.prefix)
  msg := sprintf("name %v starts with %v", [name, input.parameters.prefix])
}
"""
SLOW_REGO = """package k8sslow
violation[{"msg": "slow"}] {
  count([x | x := numbers.range(1, 3000)[i] * numbers.range(1, 3000)[j]]) < 0
}
"""


def _review(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": {"group": "", "version": "v1", "kind": obj["kind"]}, "operation": "CREATE", "object": obj}


def _summary(result: ReviewResult) -> list[tuple[str, str, Any, tuple[str, ...]]]:
    return sorted((v.text, v.constraint.kind, v.details, v.actions) for v in result.violations)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_results_equal_the_in_process_review() -> None:
    system = system_with(
        make_template("K8sNamed", NAME_REGO),
        constraints=[
            make_constraint("K8sNamed", "deny-web", parameters={"prefix": "we"}),
            make_constraint("K8sNamed", "warn-w", parameters={"prefix": "w"}, enforcementAction="warn"),
        ],
    )
    objects = [ingress("web", "shop", "h"), ingress("api", "shop", "h"), namespace("welcome")]

    async def main() -> list[ReviewResult]:
        evaluator = Evaluator()
        try:
            return [await evaluator.review(system, _review(o)) for o in objects]
        finally:
            evaluator.close()

    isolated = _run(main())
    in_process = [system.review(_review(o)) for o in objects]
    assert [_summary(r) for r in isolated] == [_summary(r) for r in in_process]
    assert _summary(isolated[0])[0][0] == "[deny-web] name web starts with we"
    assert _summary(isolated[0])[0][2] == {"name": "web", "n": 3}
    assert sorted(v.actions for v in isolated[0].violations) == [("deny",), ("warn",)]
    assert isolated[1].violations == []
    # the constraints are the serving process's own objects, not copies
    assert {id(v.constraint) for v in isolated[0].violations} <= {id(c) for c in system.constraints()}


def test_inventory_changes_reach_the_child() -> None:
    system = system_with(
        make_template("K8sUniqueIngressHost", UNIQUE_HOST_REGO),
        constraints=[make_constraint("K8sUniqueIngressHost", "unique-host")],
    )
    new = ingress("shop", "web", "shop.example.com")

    async def texts() -> list[str]:
        return [v.text for v in (await evaluator.review(system, _review(new))).violations]

    async def main() -> None:
        assert await texts() == []
        system.inventory.add(ingress("legacy-shop", "old", "shop.example.com"))
        assert await texts() == ["[unique-host] host shop.example.com is already used by ingress old/legacy-shop"]
        system.inventory.remove(ingress("legacy-shop", "old", "shop.example.com"))
        assert await texts() == []
        system.inventory.add(namespace("web", {"frozen": "true"}))
        assert await texts() == ["[unique-host] namespace web is frozen"]
        system.inventory = Inventory([ingress("other", "blog", "shop.example.com")])
        assert await texts() == ["[unique-host] host shop.example.com is already used by ingress blog/other"]

    evaluator = Evaluator()
    try:
        _run(main())
        assert evaluator.forks == 1  # data changes travel with the reviews; no new child was needed
    finally:
        evaluator.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] != "Z"


def test_a_new_policy_set_gets_a_new_child_and_the_old_one_exits() -> None:
    first = system_with(make_template("K8sNamed", NAME_REGO), constraints=[])
    first.add_constraint(make_constraint("K8sNamed", "a", parameters={"prefix": "a"}))
    second = system_with(make_template("K8sNamed", NAME_REGO), constraints=[])
    second.add_constraint(make_constraint("K8sNamed", "b", parameters={"prefix": "ap"}))
    evaluator = Evaluator()

    async def main() -> tuple[list[str], list[str], int, int]:
        one = [v.text for v in (await evaluator.review(first, _review(ingress("api", "x", "h")))).violations]
        (old,) = evaluator.pids()
        two = [v.text for v in (await evaluator.review(second, _review(ingress("api", "x", "h")))).violations]
        (new,) = evaluator.pids()
        return one, two, old, new

    try:
        one, two, old_pid, new_pid = _run(main())
    finally:
        evaluator.close()
    assert one == ["[a] name api starts with a"]
    assert two == ["[b] name api starts with ap"]
    assert old_pid != new_pid
    assert not _alive(old_pid)  # it saw its socket close, exited, and was reaped


def test_a_child_that_dies_is_an_error_and_is_replaced() -> None:
    system = system_with(
        make_template("K8sNamed", NAME_REGO),
        constraints=[make_constraint("K8sNamed", "deny-web", parameters={"prefix": "we"})],
    )
    evaluator = Evaluator()

    async def main() -> list[str]:
        await evaluator.review(system, _review(ingress("web", "x", "h")))
        (pid,) = evaluator.pids()
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
        with pytest.raises(EvaluatorError, match="the evaluating process failed"):
            await evaluator.review(system, _review(ingress("web", "x", "h")))
        return [v.text for v in (await evaluator.review(system, _review(ingress("web", "x", "h")))).violations]

    try:
        assert _run(main()) == ["[deny-web] name web starts with we"]
    finally:
        evaluator.close()


def test_cut_off_names_the_template_and_kills_the_evaluation() -> None:
    system = system_with(make_template("K8sSlow", SLOW_REGO), constraints=[make_constraint("K8sSlow", "slow")])
    evaluator = Evaluator()

    async def main() -> tuple[str, int, int, float]:
        start = time.monotonic()
        with pytest.raises(CutOff) as caught:
            await evaluator.review(system, _review(namespace("x")), deadline=time.monotonic() + 0.3)
        return str(caught.value), evaluator.cut_offs, running_pid, time.monotonic() - start

    evaluator.prefork(system)  # fork it now, to know which process runs the evaluation
    (running_pid,) = evaluator.pids()
    try:
        reason, cut_offs, pid, seconds = _run(main())
        assert len(evaluator.pids()) == 1 and evaluator.pids() != [pid]  # a fresh one is ready
    finally:
        evaluator.close()
    assert reason == (
        "validation cut off at the webhook's deadline while evaluating template K8sSlow; the evaluation was stopped"
    )
    assert cut_offs == 1
    assert seconds < 1.5  # the evaluation alone takes several seconds
    assert not _alive(pid)  # killed and reaped, not left burning a CPU


def test_a_review_waiting_behind_a_long_one_gets_a_child_of_its_own() -> None:
    system = system_with(
        make_template("K8sSlow", SLOW_REGO),
        make_template("K8sNamed", NAME_REGO),
        constraints=[
            make_constraint("K8sSlow", "slow", match={"kinds": [{"apiGroups": [""], "kinds": ["Namespace"]}]}),
            make_constraint("K8sNamed", "deny-web", parameters={"prefix": "we"}),
        ],
    )
    evaluator = Evaluator(spare_after=0.05)

    async def main() -> tuple[float, list[str], str, int]:
        slow = asyncio.ensure_future(evaluator.review(system, _review(namespace("x")), deadline=time.monotonic() + 1.0))
        await asyncio.sleep(0.1)  # the slow evaluation is running in the first child
        start = time.monotonic()
        quick = await evaluator.review(system, _review(ingress("web", "x", "h")), deadline=time.monotonic() + 1.0)
        waited = time.monotonic() - start
        children = len(evaluator.pids())
        with pytest.raises(CutOff) as caught:
            await slow
        return waited, [v.text for v in quick.violations], str(caught.value), children

    try:
        waited, texts, reason, children = _run(main())
    finally:
        evaluator.close()
    assert texts == ["[deny-web] name web starts with we"]
    assert waited < 0.6  # answered by a second child, not after the slow review's cut-off at 1 s
    assert children == 2
    assert "while evaluating template K8sSlow" in reason
