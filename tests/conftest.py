from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    return SHARED.joinpath(*parts)


def require_shared(*parts: str) -> Path:
    path = shared_path(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared conformance data is not checked out beside the repo")
    return path


def mutation_cases_path() -> Path:
    env = os.environ.get("MUTATOR_MUTATION_CASES")
    return Path(env) if env else shared_path("conformance", "mutation", "cases.yaml")
