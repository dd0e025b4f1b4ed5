"""YAML loaders for Kubernetes manifests: speed, and whether they give the same Python objects as PyYAML.

    .venv/bin/python bench/bench_yaml.py [--quick]

For every candidate that is installed (PyYAML's CSafeLoader is the reference; ``yaml_rs``, ``ryaml`` and
``ryml`` (rapidyaml, parsed then emitted as JSON and read with orjson) are optional):

* **exactness**: every ``.yaml``/``.yml`` file under the shared conformance suite, ``examples/`` and
  ``tests/fixtures/`` is loaded by the reference and the candidate; the two object trees must be equal,
  both raw and after ``mutator.resources.as_json`` (what ``parse_documents`` keeps).  A file the reference
  rejects is skipped; a file the candidate rejects counts as "error" (a fallback would handle it).
* **YAML 1.1 probes**: scalars where YAML 1.1 (PyYAML, and kubectl's sigs.k8s.io/yaml) and YAML 1.2 differ.
* **speed**: ms per load of the 13 KB Pod of workload.py as YAML, and of a 1,000-Pod stream.

"mutator: yaml-rs behind the gate" is what ``mutator.resources`` does (the stream cut into documents, each read
by yaml-rs when the RE2 gate proves it exact, else by PyYAML): it must differ on no file and no probe.

Prints a table and writes bench/results/yaml-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
import workload  # noqa: E402
from harness import write_results  # noqa: E402

from mutator.resources import as_json  # noqa: E402

CORPUS = (REPO.parent / "shared" / "conformance", REPO / "examples", REPO / "tests" / "fixtures")
PROBES = {
    "yes/no/on/off": "a: yes\nb: no\nc: on\nd: off\ne: y\n",
    "True/FALSE": "a: True\nb: FALSE\n",
    "tilde null": "a: ~\nb:\nc: null\n",
    "octal 012 / 0o12": "a: 012\nb: 0o12\n",
    "hex / underscore ints": "a: 0x1F\nb: 1_000\n",
    "1e3 (no dot)": "a: 1e3\nb: 1.0e+3\n",
    ".inf/.nan": "a: .inf\nb: -.Inf\n",
    "sexagesimal 1:30": "a: 1:30\n",
    "timestamp": "a: 2020-01-01\nb: 2020-01-01T10:00:00Z\n",
    "quoted stay strings": 'a: "123"\nb: \'yes\'\nc: "true"\nd: "null"\n',
    "anchors/aliases": "a: &x {k: v}\nb: *x\n",
    "merge key": "a: &x {k: v}\nb:\n  <<: *x\n  m: n\n",
    "block scalars": "a: |\n  one\n  two\nb: >-\n  folded\n  text\n",
    "multi-doc + empty": "---\na: 1\n---\n---\nb: 2\n...\n",
}

Loader = Callable[[str], list[Any]]


def _pyyaml(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=yaml.CSafeLoader))


def _gated(text: str) -> list[Any]:
    """What mutator reads (mutator/resources.py): the stream cut into documents, each read by yaml-rs where the
    RE2 gate proves it exact, else by PyYAML."""
    from mutator.resources import fast_document, split_stream

    out: list[Any] = []
    for piece in split_stream((text,)):
        body = fast_document(piece)
        out.extend([body] if body is not None else yaml.load_all(piece, Loader=yaml.CSafeLoader))
    return out


def candidates() -> dict[str, Loader]:
    out: dict[str, Loader] = {"pyyaml CSafeLoader": _pyyaml, "mutator: yaml-rs behind the gate": _gated}
    try:
        import yaml_rs

        def _yaml_rs(text: str) -> list[Any]:
            value = yaml_rs.loads(text)
            # yaml_rs returns a list for a multi-document stream and the value for one document
            return value if text.count("\n---") or text.startswith("---") else [value]

        out["yaml-rs"] = _yaml_rs
    except ImportError:
        pass
    try:
        import ryaml

        def _ryaml(text: str) -> list[Any]:
            return list(ryaml.loads_all(text))

        out["ryaml"] = _ryaml
    except ImportError:
        pass
    try:
        import ryml

        def _ryml(text: str) -> list[Any]:
            tree = ryml.parse_in_arena(text.encode())
            value = orjson.loads(ryml.emit_json(tree))
            return value if tree.is_stream(tree.root_id()) else [value]

        out["rapidyaml (ryml -> JSON -> orjson)"] = _ryml
    except ImportError:
        pass
    return out


def corpus_files() -> list[Path]:
    files: list[Path] = []
    for root in CORPUS:
        if root.is_dir():
            files.extend(sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()))
    return files


def exactness(name: str, load: Loader, files: list[Path]) -> dict[str, Any]:
    same = differ = errors = skipped = 0
    examples: list[str] = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            ref = _pyyaml(text)
        except yaml.YAMLError:
            skipped += 1
            continue
        try:
            got = load(text)
        except Exception as err:  # any failure of the candidate would fall back to PyYAML
            errors += 1
            if len(examples) < 5:
                examples.append(f"{path}: error {type(err).__name__}: {str(err)[:80]}")
            continue
        try:
            equal = ref == got and as_json(ref, "r") == as_json(got, "c")
        except Exception:
            equal = False
        if equal:
            same += 1
        else:
            differ += 1
            if len(examples) < 5:
                examples.append(f"{path}: different objects")
    return {"loader": name, "files": len(files), "same": same, "differ": differ, "errors": errors,
            "skipped_invalid_for_pyyaml": skipped, "examples": examples}  # fmt: skip


def probes(load: Loader) -> dict[str, str]:
    out: dict[str, str] = {}
    for label, text in PROBES.items():
        try:
            ref = _pyyaml(text)
        except yaml.YAMLError:
            ref = None
        try:
            got = load(text)
            out[label] = "same" if got == ref else f"differs: {got!r}"[:120]
        except Exception as err:
            out[label] = f"error: {type(err).__name__}"
    return out


def per_call_ms(load: Loader, text: str, budget_s: float, max_calls: int) -> float:
    load(text)
    calls = 0
    start = time.perf_counter()
    while calls < max_calls and time.perf_counter() - start < budget_s:
        load(text)
        calls += 1
    return (time.perf_counter() - start) / max(calls, 1) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing")
    args = parser.parse_args(argv)
    budget = 0.5 if args.quick else 2.0
    pod_yaml = yaml.safe_dump(workload.make_pod(), sort_keys=False)
    pods = []
    for i in range(1000):
        pod = workload.make_pod()
        pod["metadata"]["name"] = f"pod-{i}"
        pods.append(pod)
    stream = yaml.safe_dump_all(pods, sort_keys=False)
    files = corpus_files()
    rows = []
    for name, load in candidates().items():
        row: dict[str, Any] = {"loader": name}
        try:
            row["pod_ms"] = per_call_ms(load, pod_yaml, budget, 5000)
            row["stream_1000_pods_s"] = per_call_ms(load, stream, budget, 3) / 1e3
            row["pod_same"] = load(pod_yaml) == _pyyaml(pod_yaml)
        except Exception as err:
            row["speed_error"] = f"{type(err).__name__}: {err}"[:200]
        row["corpus"] = exactness(name, load, files)
        row["probes"] = probes(load)
        rows.append(row)
    print(f"13 KB Pod = {len(pod_yaml):,} bytes of YAML; 1,000-Pod stream = {len(stream):,} bytes; {len(files)} files")
    print(f"{'loader':36} {'pod ms':>8} {'1000 pods s':>11} {'same':>6} {'differ':>6} {'error':>6}")
    for r in rows:
        c = r["corpus"]
        print(
            f"{r['loader']:36} {r.get('pod_ms', float('nan')):8.3f} {r.get('stream_1000_pods_s', float('nan')):11.3f} "
            f"{c['same']:6} {c['differ']:6} {c['errors']:6}"
        )
    for r in rows[1:]:
        bad = {k: v for k, v in r["probes"].items() if v != "same"}
        print(f"  {r['loader']}: YAML 1.1 probes that differ from PyYAML: {len(bad)}/{len(PROBES)}")
        for k, v in bad.items():
            print(f"    {k}: {v}")
        for e in r["corpus"]["examples"][:3]:
            print(f"    e.g. {e}")
    write_results("yaml", {"pod_bytes": len(pod_yaml), "stream_bytes": len(stream), "loaders": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
