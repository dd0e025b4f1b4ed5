"""Validation benchmarks (issue 5): in-process latency for 1, 10 and 50 constraints on the realistic Pod;
``POST /v1/admit`` over HTTPS from the separate load generator at 1, 4 and 16 connections and the server's
peak RSS after a bounded number of requests; ``mutator test`` on 1,000 and 10,000 generated Pods with one
constraint and with every example policy (wall time, objects/s, the child's peak RSS); ``mutator verify`` on
the whole shared Gatekeeper library.

    .venv/bin/python bench/bench_validation.py [--quick] [--memory-requests N] [--skip-https] [--skip-cli]
                                               [--no-gc-freeze]

The templates are our own, typical of what clusters run (registries, labels, pull policy, limits,
privileged, host namespaces); constraints cycle through them with distinct names. In the "shared" cases the
constraints of a template have equal parameters (the system evaluates such a group once per request); in the
"distinct" cases each constraint's parameters differ (an extra ``tag``), which costs one evaluation per
constraint of the two templates that read their parameters (the four others never do, and the system then
evaluates them once); in the "worst" cases every template also reads the ``tag`` (one more condition, same
violations), so every constraint costs its own evaluation. As ``mutator serve`` does after loading its
policies, the in-process cases run after ``gc.collect(); gc.freeze()``; ``--no-gc-freeze`` leaves the
collector as it is.
Prints a table and writes JSON to bench/results/validation-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workload  # noqa: E402
from harness import REPO, Server, free_port, proc_memory_mb, run_loadgen, run_measured, tree_pss_mb, write_results  # noqa: E402

from mutator.policy import build_policy_set  # noqa: E402
from mutator.resources import Document  # noqa: E402
from mutator.validation.review import review_from_request  # noqa: E402
from mutator.webhook.admission import review_for  # noqa: E402

TEMPLATES: dict[str, tuple[str, dict[str, Any]]] = {
    "BenchRegistries": (
        """
violation[{"msg": msg}] {
  c := input.review.object.spec.containers[_]
  not startswith_any(c.image, input.parameters.registries)
  msg := sprintf("container <%v> image <%v> is not from %v", [c.name, c.image, input.parameters.registries])
}
startswith_any(s, prefixes) { startswith(s, prefixes[_]) }
""",
        {"registries": ["registry.example.com/", "mirror.example.com/"]},
    ),
    "BenchLabels": (
        """
violation[{"msg": msg}] {
  required := {l | l := input.parameters.labels[_]}
  provided := {l | input.review.object.metadata.labels[l]}
  missing := required - provided
  count(missing) > 0
  msg := sprintf("missing labels %v", [missing])
}
""",
        {"labels": ["app", "team"]},
    ),
    "BenchPullAlways": (
        """
violation[{"msg": msg}] {
  c := input.review.object.spec.containers[_]
  object.get(c, "imagePullPolicy", "") != "Always"
  msg := sprintf("container <%v> must pull Always", [c.name])
}
""",
        {},
    ),
    "BenchLimits": (
        """
violation[{"msg": msg}] {
  c := input.review.object.spec.containers[_]
  not c.resources.limits.memory
  msg := sprintf("container <%v> has no memory limit", [c.name])
}
""",
        {},
    ),
    "BenchPrivileged": (
        """
violation[{"msg": msg}] {
  c := array.concat(input.review.object.spec.containers, object.get(input.review.object.spec, "initContainers", []))[_]
  c.securityContext.privileged
  msg := sprintf("container <%v> is privileged", [c.name])
}
""",
        {},
    ),
    "BenchHostNamespaces": (
        """
violation[{"msg": "host namespaces are not allowed"}] {
  spec := input.review.object.spec
  object.get(spec, "hostPID", false) == true
}
violation[{"msg": "host namespaces are not allowed"}] {
  spec := input.review.object.spec
  object.get(spec, "hostNetwork", false) == true
}
""",
        {},
    ),
}


_VIOLATION_HEAD = re.compile(r"^(violation\[.*\] \{)$", re.MULTILINE)


def reading_parameters(rego: str) -> str:
    """The template with one more condition in each violation rule, ``input.parameters.tag``: true whenever the
    tag is set, so the violations stay the same, but the template now reads its parameters."""
    return _VIOLATION_HEAD.sub(r"\1\n  input.parameters.tag", rego)


def template_doc(kind: str, rego: str) -> dict[str, Any]:
    return {
        "apiVersion": "templates.gatekeeper.sh/v1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": kind.lower()},
        "spec": {
            "crd": {"spec": {"names": {"kind": kind}}},
            "targets": [{"target": "admission.k8s.gatekeeper.sh", "rego": f"package {kind.lower()}\n{rego}"}],
        },
    }


def policy_docs(constraints: int, *, parameters_mode: str = "shared") -> list[dict[str, Any]]:
    """The templates and ``constraints`` constraints; ``parameters_mode`` is shared, distinct or worst."""
    worst = parameters_mode == "worst"
    docs = [template_doc(kind, reading_parameters(rego) if worst else rego) for kind, (rego, _) in TEMPLATES.items()]
    kinds = list(TEMPLATES)
    for i in range(constraints):
        kind = kinds[i % len(kinds)]
        shared = parameters_mode == "shared"
        parameters = TEMPLATES[kind][1] if shared else {**TEMPLATES[kind][1], "tag": f"c{i}"}
        docs.append(
            {
                "apiVersion": "constraints.gatekeeper.sh/v1beta1",
                "kind": kind,
                "metadata": {"name": f"{kind.lower()}-{i}"},
                "spec": {
                    "enforcementAction": "dryrun" if i % 3 else "deny",
                    "match": {"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]},
                    "parameters": parameters,
                },
            }
        )
    return docs


def latency(constraints: int, iterations: int, *, parameters: str = "shared", freeze: bool = True) -> dict[str, Any]:
    policies = build_policy_set([Document(d, "bench") for d in policy_docs(constraints, parameters_mode=parameters)])
    assert not policies.errors, policies.errors
    assert len(policies.validation.constraints()) == constraints
    pod = workload.make_pod()
    namespace = workload.make_namespace()
    request = review_for(pod)["request"]
    review = review_from_request(request, namespace)
    for _ in range(max(50, iterations // 10)):
        policies.validation.review(review, namespace_object=namespace)
    if freeze:  # as mutator serve does once its policies are loaded
        gc.collect()
        gc.freeze()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        result = policies.validation.review(review, namespace_object=namespace)
        samples.append(time.perf_counter_ns() - start)
    assert not result.errors, result.errors
    samples.sort()
    return {
        "constraints": constraints,
        "parameters": parameters,
        "gc_freeze": freeze,
        "violations": len(result.violations),
        "p50_ms": samples[len(samples) // 2] / 1e6,
        "p99_ms": samples[int(len(samples) * 0.99) - 1] / 1e6,
        "mean_ms": sum(samples) / len(samples) / 1e6,
    }


def small_pod() -> dict[str, Any]:
    """A minimal Pod as a developer writes it (~0.5 KB of YAML), for comparison with the 13 KB one."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {
            "containers": [
                {"name": "app", "image": "registry.example.com/web:1.2", "ports": [{"containerPort": 8080}]},
                {"name": "proxy", "image": "envoyproxy/envoy:v1.31.2"},
            ]
        },
    }


EXAMPLE_POLICIES = REPO / "examples" / "policies"
LIBRARY = REPO.parent / "shared" / "conformance" / "validation" / "library"
CONCURRENCY = (1, 4, 16)
HTTPS_CONSTRAINTS = 10


def write_pods(path: Path, pods: int, *, small: bool = False) -> None:
    base = small_pod() if small else workload.make_pod()
    base["metadata"].pop("generateName", None)
    with path.open("w") as out:
        for i in range(pods):
            base["metadata"]["name"] = f"pod-{i}"
            out.write("---\n")
            out.write(yaml.safe_dump(base, sort_keys=False))


def cli_throughput(
    pods: int, *, small: bool = False, policies: str = "1 constraint", timeout: float = 1800
) -> dict[str, Any]:
    """``mutator test -f POLICY pods.yaml -o json``: wall time and the child's peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if policies == "1 constraint":
            kind, (rego, params) = "BenchRegistries", TEMPLATES["BenchRegistries"]
            constraint = {
                "apiVersion": "constraints.gatekeeper.sh/v1beta1",
                "kind": kind,
                "metadata": {"name": "registries"},
                "spec": {"match": {"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]}, "parameters": params},
            }
            policy = root / "policy.yaml"
            policy.write_text(yaml.safe_dump_all([template_doc(kind, rego), constraint]))
        else:
            policy = EXAMPLE_POLICIES
        write_pods(root / "pods.yaml", pods, small=small)
        cmd = [sys.executable, "-m", "mutator.cli", "test", "-f", str(policy), str(root / "pods.yaml"), "-o", "json"]
        code, out, err, wall, rss = run_measured(cmd, timeout)
        reports = json.loads(out)
        assert len(reports) == pods, err[-2000:]
        return {
            "pods": pods,
            "pod": "small (0.5 KB)" if small else "realistic (13 KB)",
            "policies": policies
            if policies == "1 constraint"
            else f"examples/policies ({len(list(EXAMPLE_POLICIES.glob('*.yaml')))} files)",
            "wall_s": wall,
            "objects_per_s": pods / wall,
            "peak_rss_mb": rss,
            "exit_code": code,
        }


def verify_library(timeout: float = 1800) -> dict[str, Any]:
    """``mutator verify <shared library>/...``: wall time and the child's peak RSS."""
    cmd = [sys.executable, "-m", "mutator.cli", "verify", "--quiet", f"{LIBRARY}/..."]
    code, out, err, wall, rss = run_measured(cmd, timeout)
    suites = len(list(LIBRARY.rglob("suite.yaml")))
    summary = (out.strip().splitlines() or [""])[-1]
    return {"suites": suites, "wall_s": wall, "peak_rss_mb": rss, "exit_code": code, "summary": summary}


def bench_admit(duration: float, warmup: float, memory_requests: int) -> dict[str, Any]:
    """``mutator serve`` with the bench templates and HTTPS_CONSTRAINTS constraints; ``/v1/admit`` load."""
    with tempfile.TemporaryDirectory(prefix="mutator-bench-") as tmp:
        workdir = Path(tmp)
        policies = workdir / "policies"
        policies.mkdir()
        docs = [*policy_docs(HTTPS_CONSTRAINTS), workload.make_namespace()]
        (policies / "bench.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        body = json.dumps(review_for(workload.make_pod())).encode()
        body_file = workdir / "review.json"
        body_file.write_bytes(body)
        server = Server(workdir, policies, free_port())
        runs: list[dict[str, Any]] = []
        memory: dict[str, Any] = {}
        try:
            server.start()
            answer = server.post(body, "/v1/admit")["response"]
            expect = "true" if answer["allowed"] else "false"
            assert server.proc is not None
            memory["idle_rss_mb"] = proc_memory_mb(server.proc.pid)["VmRSS"]
            for concurrency in CONCURRENCY:
                r = run_loadgen(
                    server, body_file, concurrency, duration, warmup, "raw",
                    expect_patch=False, path="/v1/admit", expect_allowed=expect,
                )  # fmt: skip
                runs.append(r)
                print(
                    f"  https /v1/admit c={concurrency:<3} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                    f"p99 {r['p99_ms']:6.2f} ms  p99.9 {r['p999_ms']:6.2f} ms  "
                    f"server CPU {r['server_cpu_per_request_ms']:.2f} ms/req",
                    flush=True,
                )
            served = sum(r["total_requests"] for r in runs)
            if memory_requests > served:
                # a bounded run: stops at the request count, or after 3 ms per request at the latest
                extra = run_loadgen(
                    server, body_file, 4, memory_requests * 3e-3, 0.0, "raw",
                    expect_patch=False, path="/v1/admit", expect_allowed=expect,
                    max_requests=memory_requests - served,
                )  # fmt: skip
                served += extra["total_requests"]
            mem = proc_memory_mb(server.proc.pid)
            memory.update({"requests_served": served, "rss_after_mb": mem["VmRSS"], "peak_rss_mb": mem["VmHWM"]})
            # the evaluating child (--isolate-validation) shares most pages with the server: PSS splits them
            memory["tree_pss_mb"] = tree_pss_mb(server.proc.pid)
            print(
                f"  server memory: idle {memory['idle_rss_mb']:.0f} MB, after {served:,} requests "
                f"{mem['VmRSS']:.0f} MB (peak {mem['VmHWM']:.0f} MB); with its evaluating child "
                f"{memory['tree_pss_mb']:.0f} MB PSS",
                flush=True,
            )
        finally:
            code = server.stop()
        return {
            "constraints": HTTPS_CONSTRAINTS,
            "allowed": answer["allowed"],
            "body_bytes": len(body),
            "runs": runs,
            "server_memory": memory,
            "server_exit_code": code,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations, smaller counts")
    parser.add_argument("--memory-requests", type=int, default=0, help="requests before reading the server's peak RSS")
    parser.add_argument("--skip-https", action="store_true")
    parser.add_argument("--skip-cli", action="store_true", help="skip mutator test and mutator verify")
    parser.add_argument("--no-gc-freeze", action="store_true", help="in process: no gc.collect(); gc.freeze() first")
    args = parser.parse_args(argv)
    iterations = 300 if args.quick else 2000
    freeze = not args.no_gc_freeze
    results: dict[str, Any] = {"iterations": iterations, "quick": args.quick, "gc_freeze": freeze}
    print(f"in process, gc.freeze: {'yes' if freeze else 'no'}")
    print(f"{'constraints':>11}  {'parameters':>10}  {'violations':>10}  {'p50 ms':>8}  {'p99 ms':>8}  {'mean ms':>8}")
    rows = []
    cases = [(1, "shared"), (10, "shared"), (50, "shared"), (10, "distinct"), (50, "distinct")]
    for n, parameters in [*cases, (10, "worst"), (50, "worst")]:
        r = latency(n, iterations, parameters=parameters, freeze=freeze)
        rows.append(r)
        print(
            f"{r['constraints']:>11}  {r['parameters']:>10}  {r['violations']:>10}  "
            f"{r['p50_ms']:8.3f}  {r['p99_ms']:8.3f}  {r['mean_ms']:8.3f}",
            flush=True,
        )
    results["latency"] = rows
    if not args.skip_https:
        duration, warmup = (2.0, 0.5) if args.quick else (5.0, 1.0)
        memory_requests = args.memory_requests or (5_000 if args.quick else 100_000)
        results["https_admit"] = bench_admit(duration, warmup, memory_requests)
    if not args.skip_cli:
        counts = (200, 1000) if args.quick else (1000, 10_000)
        clis = []
        for policies in ("1 constraint", "examples"):
            for n in counts:
                cli = cli_throughput(n, policies=policies)
                clis.append(cli)
                print(
                    f"mutator test: {cli['pods']:>6} {cli['pod']} Pods, {cli['policies']}: "
                    f"{cli['wall_s']:7.2f} s wall, {cli['objects_per_s']:5.0f} objects/s, "
                    f"peak RSS {cli['peak_rss_mb']:.0f} MB (exit {cli['exit_code']})",
                    flush=True,
                )
        small = cli_throughput(counts[0], small=True)
        clis.append(small)
        print(
            f"mutator test: {small['pods']:>6} {small['pod']} Pods, 1 constraint: {small['wall_s']:7.2f} s wall, "
            f"{small['objects_per_s']:5.0f} objects/s, peak RSS {small['peak_rss_mb']:.0f} MB",
            flush=True,
        )
        results["cli"] = clis
        v = verify_library()
        results["verify_library"] = v
        print(
            f"mutator verify {LIBRARY}/...: {v['suites']} suites, {v['wall_s']:.2f} s wall, "
            f"peak RSS {v['peak_rss_mb']:.0f} MB, exit {v['exit_code']}: {v['summary']}"
        )
    write_results("validation", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
