"""What the HTTPS benches share: ``mutator serve`` in a subprocess, the /proc readings (CPU time, RSS) and
running the separate load generator (loadgen.py) against it.  Traffic goes to 127.0.0.1 only.

Used by bench_mutation.py (``/v1/mutate``) and bench_validation.py (``/v1/admit``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def write_results(kind: str, results: Any) -> Path:
    """``bench/results/<kind>-<timestamp>.json`` (gitignored), printed; its path is returned."""
    out = BENCH_DIR / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results: {path.relative_to(REPO)}")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (workers, their evaluating children)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(_stat(int(entry))[1])
            except (OSError, IndexError, ValueError):
                continue
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def proc_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and every process below it (live ones, and the exited ones it collected)."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            fields = _stat(p)
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def tree_pss_mb(pid: int) -> float:
    """Proportional set size of ``pid`` and its descendants: forked children share most pages with their
    parent, so summing RSS would count those pages several times; PSS splits them."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def proc_memory_mb(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def system_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (user+nice+system+irq+softirq+steal), for
    telling whether something else competed with the bench."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Server:
    """``mutator serve`` in a subprocess (stopped by ``stop``, always called from a finally)."""

    def __init__(self, workdir: Path, policies: Path, port: int, extra_args: tuple[str, ...] = ()) -> None:
        self.port = port
        self.extra_args = extra_args
        self.certs = workdir / "certs"
        self.log_path = workdir / "server.log"
        self.policies = policies
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None

    @property
    def cacert(self) -> Path:
        return self.certs / "ca.crt"

    def start(self, timeout: float = 30.0) -> None:
        mutator = shutil.which("mutator", path=str(Path(sys.executable).parent)) or "mutator"
        subprocess.run([mutator, "certs", "--out", str(self.certs)], check=True, stdout=subprocess.DEVNULL, cwd=REPO)
        cmd = [
            mutator,
            "serve",
            "--policies",
            str(self.policies),
            "--certs-dir",
            str(self.certs),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.extra_args,
        ]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        assert self.proc is not None
        deadline = time.monotonic() + timeout
        url = f"https://127.0.0.1:{self.port}/readyz"
        with httpx.Client(verify=str(self.cacert), timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise SystemExit(f"bench: mutator serve exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if client.get(url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise SystemExit(f"bench: mutator serve not ready after {timeout} s:\n{self.log_tail()}")

    def post(self, body: bytes, path: str = "/v1/mutate") -> dict[str, Any]:
        import httpx

        with httpx.Client(verify=str(self.cacert), timeout=10.0) as client:
            response = client.post(
                f"https://127.0.0.1:{self.port}{path}",
                content=body,
                headers={"Content-Type": "application/json"},
            )
        if response.status_code != 200:
            raise SystemExit(f"bench: {path} answered {response.status_code}: {response.text[:500]}")
        return dict(response.json())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            code = self.proc.returncode
        if self._log is not None:
            self._log.close()
        return code


def run_loadgen(
    server: Server,
    body_file: Path,
    concurrency: int,
    duration: float,
    warmup: float,
    client: str,
    *,
    expect_patch: bool = True,
    path: str = "/v1/mutate",
    expect_allowed: str = "true",
    max_requests: int = 0,
) -> dict[str, Any]:
    """One loadgen.py run against ``server``; any failed request stops the bench.  ``max_requests`` > 0 ends
    the run after that many answers (the duration stays an upper bound)."""
    cmd = [
        sys.executable,
        str(BENCH_DIR / "loadgen.py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(server.port),
        "--cacert",
        str(server.cacert),
        "--body",
        str(body_file),
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
        "--client",
        client,
        "--path",
        path,
        "--expect-allowed",
        expect_allowed,
    ]
    if max_requests:
        cmd += ["--max-requests", str(max_requests)]
    if expect_patch:
        cmd.append("--expect-patch")
    assert server.proc is not None
    cpu0 = proc_cpu_seconds(server.proc.pid)
    busy0 = system_busy_seconds()
    wall0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, timeout=duration + warmup + 60, cwd=REPO)
    cpu = proc_cpu_seconds(server.proc.pid) - cpu0
    busy = system_busy_seconds() - busy0
    wall = time.monotonic() - wall0
    if not done.stdout.strip():
        raise SystemExit(f"bench: load generator failed ({done.returncode}):\n{done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    result["server_cpu_s"] = cpu
    total = result["total_requests"]
    result["server_cpu_per_request_ms"] = cpu / total * 1e3 if total else math.nan
    measured_wall = duration + warmup
    result["server_cpu_utilisation"] = cpu / measured_wall
    result["client_cpu_utilisation"] = result["client_cpu_s"] / measured_wall
    # CPU used by everything else on the machine while the load generator ran (its start-up included)
    result["other_cpu_utilisation"] = max(0.0, busy - cpu - result["client_cpu_s"]) / wall
    if result["errors"]:
        raise SystemExit(
            f"bench: {result['errors']} failed requests at concurrency {concurrency} ({client}): "
            f"{result['first_error']}\nserver log:\n{server.log_tail()}"
        )
    return result


def run_measured(cmd: list[str], timeout: float, cwd: Path = REPO) -> tuple[int, str, str, float, float]:
    """Run ``cmd`` to completion (killed after ``timeout`` s): exit code, stdout, stderr, wall seconds and the
    child's peak RSS in MB: the larger of its VmHWM polled from /proc every 20 ms and ``ru_maxrss`` from
    ``os.wait4``.  ``ru_maxrss`` alone is not enough: a vfork()ed child inherits the parent's high-water mark
    at exec, so for a child smaller than this process it reports this process's size; the poll can miss
    the last 20 ms.  The larger of the two is right whenever the child outgrows the parent."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd)
        deadline = start + timeout
        polled_kb = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            polled_kb = max(polled_kb, _vm_hwm_kb(proc.pid))
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise subprocess.TimeoutExpired(cmd, timeout)
            time.sleep(0.02)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        parent_kb = _vm_hwm_kb(os.getpid())
        rss_kb = usage.ru_maxrss if usage.ru_maxrss > parent_kb else polled_kb
        return proc.returncode, out.read().decode(), err.read().decode(), wall, rss_kb / 1024


def _vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
