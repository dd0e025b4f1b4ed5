"""The gatekeeper-library suites through our own runner, and our violations against Gatekeeper's own output.

`reference_violations.json` holds, per suite case, the exact violations Gatekeeper returns (message,
enforcementAction, constraint) with the Rego engine and with CEL enabled.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from mutator.verify import find_suites, run_suite

from .conftest import shared_path

LIBRARY = shared_path("conformance", "validation", "library")
REFERENCE = shared_path("conformance", "validation", "reference_violations.json")
ENGINES = {"rego": False, "cel": True}  # engine column -> enable_cel


def _results(enable_cel: bool) -> dict[tuple[str, str, str], Any]:
    out = {}
    for suite in find_suites(f"{LIBRARY}/..."):
        rel = str(suite.relative_to(LIBRARY))
        for result in run_suite(suite, enable_cel=enable_cel):
            out[(rel, result.test, result.case)] = result
    return out


def _reference() -> list[Any]:
    if not REFERENCE.exists():
        return [pytest.param(None, id="absent", marks=pytest.mark.skip(reason=f"{REFERENCE} is absent"))]
    entries = json.loads(REFERENCE.read_text())
    return [pytest.param(e, id=f"{e['suite'].removesuffix('/suite.yaml')}:{e['case']}") for e in entries]


_CACHE: dict[str, dict[tuple[str, str, str], Any]] = {}


def results_for(engine: str) -> dict[tuple[str, str, str], Any]:
    if not LIBRARY.exists():
        pytest.skip(f"{LIBRARY} is absent: the shared conformance data is not checked out beside the repo")
    if engine not in _CACHE:
        _CACHE[engine] = _results(ENGINES[engine])
    return _CACHE[engine]


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("entry", _reference())
def test_violations_equal_gatekeeper(entry: dict[str, Any], engine: str) -> None:
    result = results_for(engine)[(entry["suite"], entry["test"], entry["case"])]
    expected = sorted(
        (v["constraint"], v["enforcementAction"], v["msg"]) for v in entry["engines"][engine]["violations"]
    )
    ours = sorted(
        (f"{v.constraint.kind}/{v.constraint.name}", v.constraint.enforcement_action, v.message)
        for v in result.violations
    )
    assert ours == expected, result.reason
    assert result.passed == entry["engines"][engine]["assertions_pass"], result.reason


@pytest.mark.parametrize("flag", [[], ["--disable-cel"]], ids=["cel", "rego"])
def test_verify_cli_passes_the_whole_library(flag: list[str]) -> None:
    if not LIBRARY.exists():
        pytest.skip(f"{LIBRARY} is absent")
    proc = subprocess.run(
        [sys.executable, "-m", "mutator.cli", "verify", f"{LIBRARY}/...", *flag],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "190 passed, 0 failed"
