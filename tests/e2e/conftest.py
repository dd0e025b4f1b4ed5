"""Fixtures for the end-to-end tests: a real kube-apiserver (see cluster.py for where it comes from).

Run them with ``make e2e`` (or ``pytest -m e2e tests/e2e``); the default ``pytest`` run skips them.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import Cluster

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects: every test in tests/e2e is an e2e test
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """One API server for the whole session (etcd + kube-apiserver, or MUTATOR_E2E_KUBECONFIG's cluster)."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    # Show a first-time build's progress (minutes) live instead of capturing it.
    live = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
    c = Cluster()
    with live:  # sys.stderr is the terminal in here, not pytest's capture
        c.start()
        print(f"\ne2e cluster ({c.mode}) ready in {c.start_seconds:.1f}s at {c.server}", file=sys.stderr)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace, created with kubectl; deleted afterwards without waiting.

    (Without a controller-manager a deleted namespace stays Terminating: names are never reused.)
    """
    name = f"e2e-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", name, check=True)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
