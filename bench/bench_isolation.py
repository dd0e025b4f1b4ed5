"""What evaluating in a child process costs, and what the cut-off gives (``mutator serve --isolate-validation``).

1. ``/v1/admit`` over HTTPS (the 13 KB Pod, 10 constraints, as in bench_validation.py) with the engines in the
   serving process (``--no-isolate-validation``) and in a child of each worker (the default), for 1 and 2
   workers, in alternating rounds: requests/s, p50/p99, server CPU per request (the whole process tree).
2. A runaway template (several seconds per evaluation) with ``--validation-timeout 0.5``: how long a runaway
   review takes to be answered, and how ``/v1/admit`` load on the normal Pod fares meanwhile.

    .venv/bin/python bench/bench_isolation.py [--quick] [--rounds N]

Prints a table and writes bench/results/isolation-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload  # noqa: E402
from bench_validation import HTTPS_CONSTRAINTS, policy_docs  # noqa: E402
from harness import REPO, Server, free_port, run_loadgen, tree_pss_mb, write_results  # noqa: E402

from mutator.webhook.admission import review_for  # noqa: E402

# a template that evaluates for seconds for a Pod named "runaway" (the one tests/test_cutoff.py uses)
RUNAWAY = yaml.safe_load((REPO / "tests" / "fixtures" / "slow" / "runaway.yaml").read_text())
RUNAWAY_CONSTRAINT = {
    "apiVersion": "constraints.gatekeeper.sh/v1beta1",
    "kind": "K8sRunaway",
    "metadata": {"name": "runaway"},
    "spec": {},
}


def _write(workdir: Path, runaway: bool) -> tuple[Path, Path]:
    policies = workdir / "policies"
    policies.mkdir(exist_ok=True)
    docs = [*policy_docs(HTTPS_CONSTRAINTS), workload.make_namespace()]
    if runaway:
        docs += [RUNAWAY, RUNAWAY_CONSTRAINT]
    (policies / "bench.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    body = workdir / "review.json"
    body.write_text(json.dumps(review_for(workload.make_pod())))
    return policies, body


def ab_runs(rounds: int, duration: float, warmup: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    configs = [(w, iso) for w in (1, 2) for iso in (False, True)]
    for round_ in range(rounds):
        for workers, isolate in configs:
            with tempfile.TemporaryDirectory(prefix="mutator-bench-") as tmp:
                workdir = Path(tmp)
                policies, body = _write(workdir, runaway=False)
                args = ("--workers", str(workers), "--isolate-validation" if isolate else "--no-isolate-validation")
                server = Server(workdir, policies, free_port(), args)
                try:
                    server.start()
                    allowed = server.post(body.read_bytes(), "/v1/admit")["response"]["allowed"]
                    r = run_loadgen(
                        server, body, 4, duration, warmup, "raw",
                        expect_patch=False, path="/v1/admit", expect_allowed="true" if allowed else "false",
                    )  # fmt: skip
                    assert server.proc is not None
                    r["tree_pss_mb"] = tree_pss_mb(server.proc.pid)
                finally:
                    server.stop()
            r.update({"round": round_, "workers": workers, "isolate": isolate})
            out.append(r)
            print(
                f"  round {round_} workers {workers} {'isolated ' if isolate else 'in-process'} "
                f"{r['rps']:7.0f} req/s  p50 {r['p50_ms']:5.2f}  p99 {r['p99_ms']:6.2f}  p99.9 {r['p999_ms']:6.2f} ms  "
                f"CPU {r['server_cpu_per_request_ms']:.2f} ms/req  PSS {r['tree_pss_mb']:.0f} MB",
                flush=True,
            )
    return out


def cut_off_run(runaways: int, duration: float) -> dict[str, Any]:
    """A runaway review every ~second while loadgen sends the normal Pod; ``--validation-timeout 0.5``."""
    with tempfile.TemporaryDirectory(prefix="mutator-bench-") as tmp:
        workdir = Path(tmp)
        policies, body = _write(workdir, runaway=True)
        runaway_pod = workload.make_pod()
        runaway_pod["metadata"]["name"] = "runaway"
        runaway_body = orjson.dumps(review_for(runaway_pod, uid="runaway"))
        server = Server(workdir, policies, free_port(), ("--validation-timeout", "0.5"))
        try:
            server.start()
            allowed = server.post(body.read_bytes(), "/v1/admit")["response"]["allowed"]
            answers: list[float] = []
            messages: set[str] = set()

            def send_runaways() -> None:
                with httpx.Client(verify=str(server.cacert), timeout=30) as client:
                    time.sleep(1.0)
                    for _ in range(runaways):
                        start = time.monotonic()
                        r = client.post(f"https://127.0.0.1:{server.port}/v1/admit", content=runaway_body)
                        answers.append(time.monotonic() - start)
                        messages.add(r.json()["response"]["status"]["message"])
                        time.sleep(0.5)

            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                sender = pool.submit(send_runaways)
                load = run_loadgen(
                    server, body, 4, duration, 0.5, "raw",
                    expect_patch=False, path="/v1/admit", expect_allowed="true" if allowed else "false",
                )  # fmt: skip
                sender.result(timeout=120)
        finally:
            server.stop()
    result = {
        "runaway_answer_s": answers,
        "runaway_messages": sorted(messages),
        "load_during": {k: load[k] for k in ("rps", "p50_ms", "p99_ms", "p999_ms", "total_requests", "errors")},
    }
    print(
        f"  cut-off: {len(answers)} runaway reviews answered in {min(answers):.2f}–{max(answers):.2f} s "
        f"(median {statistics.median(answers):.2f}); meanwhile /v1/admit {load['rps']:.0f} req/s, "
        f"p50 {load['p50_ms']:.2f} p99 {load['p99_ms']:.2f} p99.9 {load['p999_ms']:.2f} ms, {load['errors']} errors",
        flush=True,
    )
    print(f"  answer: {sorted(messages)}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s runs, 3 runaway reviews")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    duration, warmup, rounds, runaways = (2.0, 0.5, 1, 3) if args.quick else (5.0, 1.0, args.rounds, 8)
    print(f"isolation bench: {rounds} rounds of {duration:g} s at 4 connections", flush=True)
    runs = ab_runs(rounds, duration, warmup)
    summary = []
    for workers in (1, 2):
        for isolate in (False, True):
            mine = [r for r in runs if r["workers"] == workers and r["isolate"] == isolate]
            row = {
                "workers": workers,
                "isolate": isolate,
                **{k: statistics.median(r[k] for r in mine) for k in ("rps", "p50_ms", "p99_ms")},
                "cpu_ms": statistics.median(r["server_cpu_per_request_ms"] for r in mine),
                "pss_mb": statistics.median(r["tree_pss_mb"] for r in mine),
            }
            summary.append(row)
    print("\n| workers | engines | req/s | p50 ms | p99 ms | server CPU ms/req | PSS MB |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for row in summary:
        where = "child process" if row["isolate"] else "in-process"
        print(
            f"| {row['workers']} | {where} | {row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{row['cpu_ms']:.2f} | {row['pss_mb']:.0f} |"
        )
    cut = cut_off_run(runaways, duration=max(8.0, runaways * 1.2 + 2))
    write_results("isolation", {"runs": runs, "summary": summary, "cut_off": cut})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
