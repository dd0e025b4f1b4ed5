"""Validation benchmarks: in-process latency for 1, 10 and 50 constraints on the realistic Pod, and
``mutator test`` throughput (objects/s) on 1,000 generated Pods with one constraint.

    .venv/bin/python bench/bench_validation.py [--quick]

The templates are our own, typical of what clusters run (registries, labels, pull policy, limits,
privileged, host namespaces); constraints cycle through them with distinct names and parameters.
Prints a table and writes JSON to bench/results/validation-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workload  # noqa: E402

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


def policy_docs(constraints: int) -> list[dict[str, Any]]:
    docs = [template_doc(kind, rego) for kind, (rego, _) in TEMPLATES.items()]
    kinds = list(TEMPLATES)
    for i in range(constraints):
        kind = kinds[i % len(kinds)]
        docs.append(
            {
                "apiVersion": "constraints.gatekeeper.sh/v1beta1",
                "kind": kind,
                "metadata": {"name": f"{kind.lower()}-{i}"},
                "spec": {
                    "enforcementAction": "dryrun" if i % 3 else "deny",
                    "match": {"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]},
                    "parameters": TEMPLATES[kind][1],
                },
            }
        )
    return docs


def latency(constraints: int, iterations: int) -> dict[str, float]:
    policies = build_policy_set([Document(d, "bench") for d in policy_docs(constraints)])
    assert not policies.errors, policies.errors
    assert len(policies.validation.constraints()) == constraints
    pod = workload.make_pod()
    namespace = workload.make_namespace()
    request = review_for(pod)["request"]
    review = review_from_request(request, namespace)
    for _ in range(max(50, iterations // 10)):
        policies.validation.review(review, namespace_object=namespace)
    samples = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        result = policies.validation.review(review, namespace_object=namespace)
        samples.append(time.perf_counter_ns() - start)
    assert not result.errors, result.errors
    samples.sort()
    return {
        "constraints": constraints,
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


def cli_throughput(pods: int, *, small: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        kind, (rego, params) = "BenchRegistries", TEMPLATES["BenchRegistries"]
        constraint = {
            "apiVersion": "constraints.gatekeeper.sh/v1beta1",
            "kind": kind,
            "metadata": {"name": "registries"},
            "spec": {"match": {"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]}, "parameters": params},
        }
        (root / "policy.yaml").write_text(yaml.safe_dump_all([template_doc(kind, rego), constraint]))
        base = small_pod() if small else workload.make_pod()
        docs = []
        for i in range(pods):
            pod = json.loads(json.dumps(base))
            pod["metadata"]["name"] = f"pod-{i}"
            pod["metadata"].pop("generateName", None)
            docs.append(pod)
        (root / "pods.yaml").write_text(yaml.safe_dump_all(docs))
        cmd = [
            sys.executable,
            "-m",
            "mutator.cli",
            "test",
            "-f",
            str(root / "policy.yaml"),
            str(root / "pods.yaml"),
            "-o",
            "json",
        ]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
        wall = time.perf_counter() - start
        reports = json.loads(proc.stdout)
        assert len(reports) == pods, proc.stderr[-2000:]
        return {
            "pods": pods,
            "pod": "small (0.5 KB)" if small else "realistic (13 KB)",
            "wall_s": wall,
            "objects_per_s": pods / wall,
            "exit_code": proc.returncode,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args(argv)
    iterations = 300 if args.quick else 2000
    rows = [latency(n, iterations) for n in (1, 10, 50)]
    n = 200 if args.quick else 1000
    clis = [cli_throughput(n), cli_throughput(n, small=True)]
    print(f"{'constraints':>11}  {'violations':>10}  {'p50 ms':>8}  {'p99 ms':>8}  {'mean ms':>8}")
    for r in rows:
        print(
            f"{r['constraints']:>11}  {r['violations']:>10}  "
            f"{r['p50_ms']:8.3f}  {r['p99_ms']:8.3f}  {r['mean_ms']:8.3f}"
        )
    for cli in clis:
        print(
            f"mutator test: {cli['pods']} {cli['pod']} Pods, 1 constraint: {cli['wall_s']:.2f} s wall, "
            f"{cli['objects_per_s']:.0f} objects/s (exit {cli['exit_code']})"
        )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"validation-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"latency": rows, "cli": clis, "iterations": iterations}, indent=2))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
