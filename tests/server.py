"""Start the real server for a test: certificates from `mutator certs`, `mutator serve` as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
# An Assign that sets imagePullPolicy: Always on every container of every Pod (name: always-pull).
ALWAYS_PULL = (FIXTURES / "policies" / "always-pull.yaml").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mutator(*args: str) -> list[str]:
    return [sys.executable, "-m", "mutator.cli", *args]


class Server:
    def __init__(self, base: str, ca: Path, policies: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.base = base
        self.ca = ca
        self.policies = policies
        self.proc = proc
        self.log = log
        self.client = httpx.Client(base_url=base, verify=ssl.create_default_context(cafile=str(ca)), timeout=10)

    def post(self, path: str, body: Any) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(path, content=content, headers={"Content-Type": "application/json"})


@contextlib.contextmanager
def running_server(tmp: Path, policies: Path, *extra: str) -> Iterator[Server]:
    certs = tmp / "certs"
    subprocess.run(_mutator("certs", "--out", str(certs)), check=True, capture_output=True)
    port = _free_port()
    log = tmp / "server.log"
    args = ["serve", "--policies", str(policies), "--certs-dir", str(certs), "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _mutator(*args, "--reload-interval", "0.2", *extra),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    srv = Server(f"https://127.0.0.1:{port}", certs / "ca.crt", policies, proc, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if srv.client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in 30 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield srv
    finally:
        srv.client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)
