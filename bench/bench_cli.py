"""``mutator test`` throughput and peak RSS on generated Pods, before/after style (alternating runs).

    .venv/bin/python bench/bench_cli.py [--pods 1000 10000] [--policies 1 examples] [--runs 3]
                                        [--variant NAME=ENV ...] [--small]

Writes the Pod stream and policies once (as bench/bench_validation.py does: the 13 KB Pod of workload.py with a
new name each, one YAML stream; "1" is the one BenchRegistries constraint, "examples" is examples/policies),
then runs ``mutator test -f POLICY pods.yaml -o json`` for each variant in turn, ``--runs`` times, and prints the
median [min-max] of objects/s and of peak RSS. A variant is a name and environment settings, e.g.
``--variant pyyaml=MUTATOR_FAST_YAML=0 --variant fast= --variant j2=ARGS=--jobs=2`` (ARGS: extra arguments;
PYTHONPATH=DIR: another checkout, e.g. ``git archive cf766c4 | tar -x -C /tmp/orig``, run from DIR). The child's
stdout is checked to hold one report per Pod.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from bench_validation import EXAMPLE_POLICIES, TEMPLATES, template_doc, write_pods  # noqa: E402
from harness import REPO, run_measured, write_results  # noqa: E402


def one_constraint(root: Path) -> Path:
    kind, (rego, params) = "BenchRegistries", TEMPLATES["BenchRegistries"]
    constraint = {
        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": kind,
        "metadata": {"name": "registries"},
        "spec": {"match": {"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]}, "parameters": params},
    }
    policy = root / "policy.yaml"
    policy.write_text(yaml.safe_dump_all([template_doc(kind, rego), constraint]))
    return policy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, nargs="+", default=[1000])
    parser.add_argument("--policies", nargs="+", choices=("1", "examples"), default=["1"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="the 0.5 KB Pod instead of the 13 KB one")
    parser.add_argument("--variant", action="append", default=[], help="NAME=VAR=VALUE,VAR=VALUE (env of the run)")
    parser.add_argument("--extra", default="", help="extra arguments to mutator test, e.g. '--jobs 2'")
    args = parser.parse_args(argv)
    variants: list[tuple[str, dict[str, str]]] = []
    for v in args.variant or ["current="]:
        name, _, env = v.partition("=")
        variants.append((name, dict(kv.split("=", 1) for kv in env.split(",") if kv)))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        policy_paths = {"1": one_constraint(root), "examples": EXAMPLE_POLICIES}
        for pods in args.pods:
            stream = root / f"pods-{pods}.yaml"
            write_pods(stream, pods, small=args.small)
            for pol in args.policies:
                samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name, _ in variants}
                for _ in range(args.runs):
                    for name, env in variants:
                        cmd = [sys.executable, "-m", "mutator.cli", "test", "-f", str(policy_paths[pol]), str(stream)]
                        cmd += ["-o", "json", *args.extra.split(), *env.get("ARGS", "").split()]
                        run_env = {k: v for k, v in env.items() if k != "ARGS"}
                        old = {k: os.environ.get(k) for k in run_env}
                        os.environ.update(run_env)
                        try:  # PYTHONPATH=DIR (another checkout): run from there, so that "-m" finds its code
                            cwd = Path(run_env["PYTHONPATH"]) if "PYTHONPATH" in run_env else REPO
                            code, out, err, wall, rss = run_measured(cmd, 3600, cwd=cwd)
                        finally:
                            for k, val in old.items():
                                if val is None:
                                    os.environ.pop(k, None)
                                else:
                                    os.environ[k] = val
                        assert len(json.loads(out)) == pods, err[-2000:]
                        samples[name].append((pods / wall, rss, code))
                        print(f"  {pods} Pods, policies {pol}, {name}: {pods / wall:7.0f} objects/s, {rss:6.0f} MB",
                              flush=True)  # fmt: skip
                for name, runs in samples.items():
                    ops = [r[0] for r in runs]
                    mem = [r[1] for r in runs]
                    row = {"pods": pods, "policies": pol, "variant": name, "objects_per_s": ops, "peak_rss_mb": mem,
                           "exit_codes": sorted({r[2] for r in runs})}  # fmt: skip
                    results.append(row)
                    print(
                        f"{pods:>6} Pods  policies {pol:8}  {name:10}  objects/s {statistics.median(ops):6.0f} "
                        f"[{min(ops):.0f}-{max(ops):.0f}]  peak RSS MB {statistics.median(mem):5.0f} "
                        f"[{min(mem):.0f}-{max(mem):.0f}]  exit {row['exit_codes']}"
                    )
    write_results("cli", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
