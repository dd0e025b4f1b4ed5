"""Mutation speed: in-process latency of the request path and HTTPS throughput of ``mutator serve``.

    .venv/bin/python bench/bench_mutation.py            # full run (~1 min)
    .venv/bin/python bench/bench_mutation.py --quick    # shorter run
    .venv/bin/python bench/bench_mutation.py --profile  # cProfile of the 20-mutator request path only

In-process, for 1, 20 and 100 mutators and a ~13 KB Pod AdmissionReview (see workload.py):

* ``request path``: ``parse_review(body bytes)`` + ``mutate_review(...)`` (copy, match, mutate, JSON patch);
* ``engine``: ``MutationSystem.mutate`` alone on a fresh copy of the Pod (the copy is not timed);
* ``parse`` and ``patch`` (the patch generator mutate_review uses, on the original and the mutated Pod) alone.

Over HTTPS: certificates from ``mutator certs``, ``mutator serve`` in a subprocess with the 20-mutator set,
and a separate load-generator process (loadgen.py) holding 1, 4 and 16 keep-alive connections.  The
server's CPU time and memory are read from /proc.  Results go to bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import datetime as dt
import gc
import math
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import yaml

import mutator
from mutator.mutation import Mutable, MutationSystem, mutator_from_resource
from mutator.mutation.core import deep_copy
from mutator.webhook import admission
from mutator.webhook.admission import mutate_review, parse_review, review_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402  (bench/ is not a package)
from harness import Server, free_port, proc_memory_mb, run_loadgen, system_busy_seconds  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
SIZES = (1, 20, 100)
HTTPS_SET = 20
CONCURRENCY = (1, 4, 16)
UID = "7f3c2a10-5b8e-4d6f-9c1a-3e2b4d6f8a01"


# --------------------------------------------------------------------------- setup


def patch_function() -> tuple[Callable[[Any, Any], list[dict[str, Any]]], str]:
    """The patch generator mutate_review uses: mutator's own ``make_patch`` if admission.py imports one,
    else ``jsonpatch.make_patch`` (the first versions)."""
    own = getattr(admission, "make_patch", None)
    if callable(own):
        return own, f"{own.__module__}.make_patch"

    def with_jsonpatch(original: Any, mutated: Any) -> list[dict[str, Any]]:
        return list(jsonpatch.make_patch(original, mutated).patch)

    return with_jsonpatch, "jsonpatch.make_patch"


def build_system(docs: list[dict[str, Any]]) -> MutationSystem:
    """A MutationSystem holding ``docs``; any invalid or conflicting mutator stops the bench."""
    system = MutationSystem()
    for doc in docs:
        mutator = mutator_from_resource(doc)  # raises PolicyError on an invalid resource
        conflict = system.upsert(mutator)
        if conflict is not None:
            raise SystemExit(f"bench: mutator {mutator.id} conflicts: {conflict}")
    if len(system) != len(docs) or system.conflicting():
        raise SystemExit(f"bench: expected {len(docs)} active mutators, got {len(system)}")
    return system


def namespace_lookup(namespaces: Mapping[str, Mapping[str, Any]]) -> Callable[[str], Mapping[str, Any] | None]:
    def lookup(name: str) -> Mapping[str, Any] | None:
        return namespaces.get(name)

    return lookup


@dataclass(slots=True)
class Workload:
    size: int
    system: MutationSystem
    body: bytes
    pod: dict[str, Any]
    namespace: dict[str, Any]
    matched: int
    patch_ops: int
    passes: int


def make_workload(size: int) -> Workload:
    pod = workload.make_pod()
    namespace = workload.make_namespace()
    system = build_system(workload.mutator_set(size))
    body = orjson.dumps(review_for(pod, uid=UID))
    probe = Mutable(deep_copy(pod), namespace)
    matched = sum(1 for m in system.mutators() if m.matches(probe))
    lookup = namespace_lookup({workload.POD_NAMESPACE: namespace})
    outcome = mutate_review(parse_review(body), system, lookup)
    if outcome.error or not outcome.patch:
        raise SystemExit(f"bench: {size} mutators: expected a patch, got error={outcome.error!r}")
    return Workload(size, system, body, pod, namespace, matched, len(outcome.patch), outcome.passes)


# --------------------------------------------------------------------------- timing


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(samples_ns: list[int]) -> dict[str, float]:
    ms = sorted(s / 1e6 for s in samples_ns)
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms),
        "min_ms": ms[0],
        "max_ms": ms[-1],
    }


def time_calls(setup: Callable[[], Any], run: Callable[[Any], Any], iterations: int, warmup: int) -> dict[str, float]:
    """Time ``run(setup())`` ``iterations`` times after ``warmup`` runs; ``setup`` is not timed."""
    for _ in range(warmup):
        run(setup())
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    for _ in range(iterations):
        arg = setup()
        start = clock()
        run(arg)
        append(clock() - start)
    return summarize(samples)


def bench_in_process(w: Workload, iterations: int, warmup: int) -> dict[str, dict[str, float]]:
    lookup = namespace_lookup({workload.POD_NAMESPACE: w.namespace})
    system = w.system
    body = w.body

    def request_path(_: None) -> None:
        mutate_review(parse_review(body), system, lookup)

    def engine(mutable: Mutable) -> None:
        system.mutate(mutable)

    def fresh() -> Mutable:
        return Mutable(deep_copy(w.pod), w.namespace, username="", source="Original")

    mutated = fresh()
    system.mutate(mutated)
    original = w.pod
    make_patch, _ = patch_function()

    def patch(_: None) -> None:
        ops = make_patch(original, mutated.object)
        base64.b64encode(orjson.dumps(ops))

    def parse(_: None) -> None:
        parse_review(body)

    def nothing() -> None:
        return None

    return {
        "request_path": time_calls(nothing, request_path, iterations, warmup),
        "engine": time_calls(fresh, engine, iterations, warmup),
        "parse": time_calls(nothing, parse, iterations, warmup),
        "patch": time_calls(nothing, patch, iterations, warmup),
    }


def _profile(run: Callable[[], Any], iterations: int) -> pstats.Stats:
    for _ in range(50):
        run()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(iterations):
        run()
    profiler.disable()
    return pstats.Stats(profiler)


def _where(filename: str, line: int, func: str) -> str:
    path = Path(filename)
    try:
        where = str(path.relative_to(REPO))
    except ValueError:
        where = path.name if filename.startswith("/") else filename
    return f"{where}:{line}({func})"


def profile_rows(stats: pstats.Stats, iterations: int, top: int = 20) -> dict[str, list[dict[str, Any]]]:
    """The ``top`` functions by cumulative and by own time, as % of the profiled total."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = [
        {
            "function": _where(filename, line, func),
            "calls_per_request": ncalls / iterations,
            "cumulative_pct": 100.0 * cumtime / total,
            "own_pct": 100.0 * tottime / total,
            "cumulative_us_per_request": 1e6 * cumtime / iterations,
        }
        for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in raw.items()
    ]
    by_cumulative = sorted(rows, key=lambda r: r["cumulative_pct"], reverse=True)[:top]
    by_own = sorted(rows, key=lambda r: r["own_pct"], reverse=True)[:top]
    return {"cumulative": by_cumulative, "own": by_own}


def profile(w: Workload, iterations: int) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """cProfile the request path and the engine alone."""
    lookup = namespace_lookup({workload.POD_NAMESPACE: w.namespace})

    def request_path() -> None:
        mutate_review(parse_review(w.body), w.system, lookup)

    def engine() -> None:
        w.system.mutate(Mutable(deep_copy(w.pod), w.namespace))

    return {
        "request_path": profile_rows(_profile(request_path, iterations), iterations),
        "engine_with_copy": profile_rows(_profile(engine, iterations), iterations),
    }


def print_profile(name: str, rows: dict[str, list[dict[str, Any]]]) -> None:
    print(f"\n{name}: by cumulative time (% of the profiled total)")
    for row in rows["cumulative"]:
        print(
            f"  {row['cumulative_pct']:5.1f}%  own {row['own_pct']:5.1f}%  {row['calls_per_request']:7.1f} calls/req  "
            f"{row['cumulative_us_per_request']:7.0f} us/req  {row['function']}"
        )
    print(f"{name}: by own time")
    for row in rows["own"][:12]:
        print(f"  {row['own_pct']:5.1f}%  {row['calls_per_request']:7.1f} calls/req  {row['function']}")


# --------------------------------------------------------------------------- HTTPS


def bench_https(
    w: Workload,
    clients: list[str],
    duration: float,
    warmup: float,
    expected_patch: list[dict[str, Any]],
    workers: int = 1,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mutator-bench-") as tmp:
        workdir = Path(tmp)
        policies = workdir / "policies"
        policies.mkdir()
        docs = [*workload.mutator_set(w.size), workload.make_namespace()]
        (policies / "bench.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        body_file = workdir / "review.json"
        body_file.write_bytes(w.body)
        # The transport floor: the same bytes as a DELETE, which is parsed and answered but not mutated.
        floor_file = workdir / "review-delete.json"
        floor_file.write_bytes(orjson.dumps(review_for(w.pod, uid=UID, operation="DELETE")))
        server = Server(workdir, policies, free_port(), ("--workers", str(workers)))
        runs: list[dict[str, Any]] = []
        floor: dict[str, Any] = {}
        memory: dict[str, float] = {}
        try:
            server.start()
            answer = server.post(w.body)
            patch = orjson.loads(base64.b64decode(answer["response"]["patch"]))
            if patch != expected_patch:
                raise SystemExit("bench: the server's patch differs from the in-process patch")
            memory["idle"] = proc_memory_mb(server.proc.pid)["VmRSS"]  # type: ignore[union-attr]
            for client in clients:
                for concurrency in CONCURRENCY:
                    result = run_loadgen(server, body_file, concurrency, duration, warmup, client)
                    runs.append(result)
                    print(
                        f"  https {client:5} c={concurrency:<3} {result['rps']:8.0f} req/s  "
                        f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
                        f"p99.9 {result['p999_ms']:6.2f} ms  "
                        f"server CPU {result['server_cpu_per_request_ms']:.2f} ms/req  "
                        f"(other processes {result['other_cpu_utilisation']:.2f} CPUs)",
                        flush=True,
                    )
                    if not server.alive():
                        raise SystemExit(f"bench: mutator serve died:\n{server.log_tail()}")
            floor = run_loadgen(server, floor_file, 4, duration, warmup, clients[0], expect_patch=False)
            floor["operation"] = "DELETE (not mutated)"
            print(
                f"  floor {clients[0]:5} c=4   {floor['rps']:8.0f} req/s  p50 {floor['p50_ms']:6.2f} ms  "
                f"p99 {floor['p99_ms']:6.2f} ms  server CPU {floor['server_cpu_per_request_ms']:.2f} ms/req",
                flush=True,
            )
            mem = proc_memory_mb(server.proc.pid)  # type: ignore[union-attr]
            memory["rss_after"] = mem["VmRSS"]
            memory["peak"] = mem["VmHWM"]
        finally:
            code = server.stop()
        log = server.log_tail(200) if server.log_path.exists() else ""
        problems = [line for line in log.splitlines() if "Traceback" in line or " ERROR " in line]
        return {
            "mutators": w.size,
            "workers": workers,
            "runs": runs,
            "floor": floor,
            "server_memory_mb": memory,
            "server_exit_code": code,
            "server_log_problems": problems,
        }


# --------------------------------------------------------------------------- report


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("orjson", "jsonpatch", "starlette", "hypercorn", "h11", "httpx"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = ""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": versions,
    }


def code_info() -> dict[str, Any]:
    """Which mutator was measured: where it was imported from and, if that is a git checkout, its commit."""
    package = Path(mutator.__file__).resolve().parent
    info: dict[str, Any] = {"package": str(package), "patch": patch_function()[1]}
    try:
        commit = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(package), "status", "--porcelain", "--", "."], capture_output=True, text=True
        ).stdout.strip()
        info["commit"] = commit
        info["uncommitted_changes"] = bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = os.environ.get("MUTATOR_BENCH_COMMIT", "")
    return info


def print_in_process(results: dict[str, Any]) -> None:
    print()
    print("In-process latency (ms)        p50      p99     mean")
    for size, parts in results.items():
        for part in ("request_path", "engine", "parse", "patch"):
            s = parts[part]
            label = f"{size:>3} mutators  {part}"
            print(f"  {label:28} {s['p50_ms']:7.3f}  {s['p99_ms']:7.3f}  {s['mean_ms']:7.3f}")


def print_https(https: dict[str, Any]) -> None:
    print()
    print(
        f"HTTPS /v1/mutate, {https['mutators']} mutators, {https.get('workers', 1)} workers"
        "    req/s    p50 ms   p99 ms p99.9 ms  server CPU ms/req"
    )
    for r in https["runs"]:
        print(
            f"  client {r['client']:5} concurrency {r['concurrency']:>2}   {r['rps']:8.0f}  {r['p50_ms']:8.2f} "
            f"{r['p99_ms']:8.2f} {r.get('p999_ms', float('nan')):8.2f}  {r['server_cpu_per_request_ms']:8.2f}"
        )
    floor = https.get("floor")
    if floor:
        print(
            f"  floor: DELETE, c=4 ({floor['client']})     {floor['rps']:8.0f}  {floor['p50_ms']:8.2f} "
            f"{floor['p99_ms']:8.2f}  {floor['server_cpu_per_request_ms']:8.2f}"
        )
    mem = https["server_memory_mb"]
    if mem:
        print(
            f"  server RSS: idle {mem['idle']:.0f} MB, after load {mem['rss_after']:.0f} MB, peak {mem['peak']:.0f} MB"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="mutation speed benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer iterations and 2 s load runs")
    parser.add_argument("--iterations", type=int, help="timed iterations per in-process case")
    parser.add_argument("--duration", type=float, help="measured seconds per HTTPS run")
    parser.add_argument("--clients", default="raw,httpx", help="load-generator clients, comma-separated: raw, httpx")
    parser.add_argument("--no-https", action="store_true", help="in-process figures only")
    parser.add_argument(
        "--workers", type=int, default=2, help="mutator serve --workers for the HTTPS runs (default 2: the cores)"
    )
    parser.add_argument("--profile", action="store_true", help="only cProfile the 20-mutator request path")
    args = parser.parse_args(argv)
    iterations = args.iterations or (300 if args.quick else 2000)
    warmup = 50 if args.quick else 200
    duration = args.duration or (2.0 if args.quick else 5.0)
    load_warmup = 0.5 if args.quick else 1.0
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if any(c not in ("raw", "httpx") for c in clients):
        parser.error("--clients: raw and/or httpx")

    workloads = {size: make_workload(size) for size in SIZES}
    code = code_info()
    print(
        f"mutator from {code['package']} (commit {code.get('commit') or '?'}"
        f"{', with uncommitted changes' if code.get('uncommitted_changes') else ''}); patch: {code['patch']}"
    )
    print(f"AdmissionReview: {len(workloads[20].body)} bytes (Pod with 3 containers + 1 init container)")
    for w in workloads.values():
        print(
            f"  {w.size:>3} mutators: {w.matched} match the Pod, {w.patch_ops} patch operations, "
            f"converged after pass {w.passes}"
        )

    if args.profile:
        n = args.iterations or 2000
        print(f"\ncProfile, 20 mutators, {n} requests")
        profiles = profile(workloads[20], n)
        for name, rows in profiles.items():
            print_profile(name, rows)
        RESULTS_DIR.mkdir(exist_ok=True)
        out = RESULTS_DIR / f"profile-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
        out.write_bytes(orjson.dumps({"iterations": n, "mutators": 20, **profiles}, option=orjson.OPT_INDENT_2))
        print(f"\nprofile: {out.relative_to(REPO)}")
        return 0

    results: dict[str, Any] = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "mode": "quick" if args.quick else "full",
        "machine": machine_info(),
        "code": code_info(),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "workload": {
            "review_bytes": len(workloads[20].body),
            "sets": {str(w.size): {"matched": w.matched, "patch_ops": w.patch_ops} for w in workloads.values()},
        },
        "in_process": {},
        "in_process_settings": {"iterations": iterations, "warmup": warmup, "gc": gc.isenabled()},
    }
    busy0, own0, wall0 = system_busy_seconds(), time.process_time(), time.monotonic()
    for size, w in workloads.items():
        results["in_process"][str(size)] = bench_in_process(w, iterations, warmup)
    other = max(0.0, system_busy_seconds() - busy0 - (time.process_time() - own0)) / (time.monotonic() - wall0)
    results["in_process_settings"]["other_cpu_utilisation"] = other
    print_in_process(results["in_process"])
    print(f"  (other processes used {other:.2f} CPUs meanwhile)")

    if not args.no_https:
        print(
            f"\nHTTPS: {duration:g} s per run after {load_warmup:g} s warm-up, clients: {', '.join(clients)}, "
            f"{args.workers} server workers"
        )
        w = workloads[HTTPS_SET]
        lookup = namespace_lookup({workload.POD_NAMESPACE: w.namespace})
        expected = mutate_review(parse_review(w.body), w.system, lookup).patch
        results["https"] = bench_https(w, clients, duration, load_warmup, expected, args.workers)
        print_https(results["https"])
        if results["https"]["server_log_problems"]:
            print("  server log problems:", *results["https"]["server_log_problems"], sep="\n    ")

    results["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS_DIR / f"{stamp}.json"
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    print(f"\nresults: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
