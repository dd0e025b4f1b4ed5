"""`mutator serve --workers 2`: two processes share the port; a worker that dies is replaced."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from mutator.webhook.admission import review_for

from .server import ALWAYS_PULL, Server, running_server, wait_for


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("workers")
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "assign.yaml").write_text(ALWAYS_PULL)
    with running_server(tmp, policies, "--workers", "2") as srv:
        yield srv


def _pod() -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "w", "namespace": "default"},
        "spec": {"containers": [{"name": "a", "image": "x"}]},
    }


def _mutates(server: Server) -> bool:
    response = server.post("/v1/mutate", review_for(_pod(), uid="w")).json()["response"]
    return response["allowed"] is True and "patch" in response


def test_two_workers_answer(server: Server) -> None:
    assert wait_for(lambda: len(_children(server.proc.pid)) == 2, 20)
    assert all(_mutates(server) for _ in range(40))


def test_a_dead_worker_is_replaced(server: Server) -> None:
    before = _children(server.proc.pid)
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    assert wait_for(lambda: len(set(_children(server.proc.pid)) - set(before)) == 1, 20)
    server.client.close()  # the killed worker's keep-alive connection is gone with it
    import ssl

    import httpx

    server.client = httpx.Client(base_url=server.base, verify=ssl.create_default_context(cafile=str(server.ca)))
    assert wait_for(lambda: all(_mutates(server) for _ in range(10)), 20)
    assert server.proc.poll() is None
