"""Summarize several bench_mutation.py runs: median and [min–max] of each figure, as Markdown tables.

    .venv/bin/python bench/summarize.py                      # every full run in bench/results/
    .venv/bin/python bench/summarize.py bench/results/A.json bench/results/B.json

On a shared or virtual machine one run is noisy; the median of a few is the figure to quote.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import orjson

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def load(paths: list[Path]) -> list[dict[str, Any]]:
    runs = []
    for path in paths:
        data = orjson.loads(path.read_bytes())
        if data.get("mode") == "full" and "in_process" in data:
            data["_file"] = path.name
            runs.append(data)
    return runs


def cell(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def in_process_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| mutators | measured | p50 ms | p99 ms | mean ms |",
        "|---:|---|---:|---:|---:|",
    ]
    labels = {
        "request_path": "request path (parse_review + mutate_review)",
        "engine": "engine (MutationSystem.mutate)",
        "parse": "parse_review alone",
        "patch": "JSON patch (make_patch + base64)",
    }
    for size in ("1", "20", "100"):
        for part, label in labels.items():
            row = [runs_value(runs, size, part, k) for k in ("p50_ms", "p99_ms", "mean_ms")]
            lines.append(f"| {size} | {label} | {cell(row[0], 3)} | {cell(row[1], 3)} | {cell(row[2], 3)} |")
    return lines


def runs_value(runs: list[dict[str, Any]], size: str, part: str, key: str) -> list[float]:
    return [r["in_process"][size][part][key] for r in runs if size in r["in_process"]]


def https_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| client | connections | requests/s | p50 ms | p99 ms | server CPU ms/request | client CPUs used |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    keys: list[tuple[str, int, str]] = []
    for r in runs:
        for x in r.get("https", {}).get("runs", []):
            key = (x["client"], x["concurrency"], "POST CREATE")
            if key not in keys:
                keys.append(key)
    keys.append(("raw", 4, "floor"))
    for client, concurrency, what in keys:
        if what == "floor":
            xs = [r["https"]["floor"] for r in runs if r.get("https", {}).get("floor")]
            label = f"{client}, DELETE (not mutated)"
        else:
            xs = [
                x
                for r in runs
                for x in r.get("https", {}).get("runs", [])
                if x["client"] == client and x["concurrency"] == concurrency
            ]
            label = client
        if not xs:
            continue
        lines.append(
            f"| {label} | {concurrency} | {cell([x['rps'] for x in xs], 0)} | {cell([x['p50_ms'] for x in xs], 1)} "
            f"| {cell([x['p99_ms'] for x in xs], 1)} | {cell([x['server_cpu_per_request_ms'] for x in xs], 2)} "
            f"| {cell([x['client_cpu_utilisation'] for x in xs], 2)} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args(argv)
    files = args.files or sorted(p for p in RESULTS_DIR.glob("*.json") if not p.name.startswith("profile-"))
    runs = load(files)
    if not runs:
        print("no full-mode results found", file=sys.stderr)
        return 1
    print(f"{len(runs)} full runs: {', '.join(r['_file'] for r in runs)}")
    print("median [min–max] over the runs\n")
    print("\n".join(in_process_table(runs)))
    print()
    print("\n".join(https_table(runs)))
    memory = [r["https"]["server_memory_mb"] for r in runs if r.get("https", {}).get("server_memory_mb")]
    if memory:
        print(
            f"\nserver RSS MB: idle {cell([m['idle'] for m in memory], 0)}, "
            f"after the load runs {cell([m['rss_after'] for m in memory], 0)}, "
            f"peak {cell([m['peak'] for m in memory], 0)}"
        )
    others = [r["in_process_settings"].get("other_cpu_utilisation", 0.0) for r in runs]
    print(f"other processes' CPU use during the in-process part: {', '.join(f'{o:.2f}' for o in others)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
