"""Checking manifests offline (``mutator test``): every object is mutated first, then validated.

The same two systems the webhook runs: ``mutate_review`` for mutation, ``ValidationSystem.review`` for
validation, with the objects under test as ``data.inventory`` (as gator does for referential policies).

``run_manifests`` streams: policies first (only files that may hold one are parsed up front, see
``resources.may_hold_policies``), then each object is read, mutated, validated and reported before the next is
read, so memory holds one document at a time plus the (small) reports of the file being read. When a loaded
template reads ``data.inventory``, every object must be known before the first is validated: the objects are
then all held, as ``check_manifests`` always did.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import jsonpatch
import orjson
import yaml

from .mutation.core import deep_copy
from .policy import LoadError, PolicySet, build_policy_set, load_paths
from .resources import (
    Document,
    DocumentError,
    StreamInterrupted,
    expand_paths,
    may_hold_policies,
    parse_piece,
    read_file,
    split_stream,
    stream_file,
)
from .validation.constraints import GATOR_POINT
from .validation.inventory import Inventory
from .validation.review import review_from_object


@dataclass(slots=True)
class ObjectReport:
    source: str
    kind: str
    namespace: str
    name: str
    mutated: bool
    patch: list[dict[str, Any]]
    violations: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": self.title,
            "source": self.source,
            "mutated": self.mutated,
            "violations": self.violations,
            **({"errors": self.errors} if self.errors else {}),
        }


@dataclass(slots=True)
class ManifestRun:
    reports: list[ObjectReport]
    policy_errors: list[LoadError]

    @property
    def denied(self) -> bool:
        return any(v["enforcementAction"] == "deny" for r in self.reports for v in r.violations) or any(
            r.errors for r in self.reports
        )


def _mutated(doc: Document, policies: PolicySet) -> tuple[dict[str, Any], ObjectReport]:
    meta = doc.body.get("metadata") if isinstance(doc.body.get("metadata"), dict) else {}
    report = ObjectReport(doc.source, doc.kind, str(meta.get("namespace") or ""), doc.name, False, [])
    if not len(policies.mutation):  # no mutator: mutate_review would copy the object and find no change
        return doc.body, report
    from .webhook.admission import mutate_review, review_for  # (and asyncio: not imported without mutators)

    outcome = mutate_review(review_for(doc.body), policies.mutation, policies.namespace)
    obj = doc.body
    if outcome.error:
        report.errors.append(f"mutation: {outcome.error}")
    elif outcome.patch:
        obj = jsonpatch.apply_patch(deep_copy(obj), outcome.patch, in_place=True)
        report.mutated, report.patch = True, outcome.patch
    return obj, report


def _validate(obj: dict[str, Any], report: ObjectReport, policies: PolicySet) -> ObjectReport:
    namespace = policies.namespace(report.namespace) if report.namespace else None
    result = policies.validation.review(review_from_object(obj), namespace_object=namespace, point=GATOR_POINT)
    report.errors.extend(result.errors)
    for v in result.violations:
        for action in v.actions:
            report.violations.append(
                {
                    "constraint": f"{v.constraint.kind}/{v.constraint.name}",
                    "enforcementAction": action,
                    "message": v.message,
                    **({"details": v.details} if v.details else {}),
                }
            )
    return report


def _check_all(objects: Iterable[Document], policies: PolicySet) -> list[ObjectReport]:
    """Every object mutated, then all of them as the inventory, then each validated (the objects are held)."""
    mutated = [_mutated(doc, policies) for doc in objects]
    inventory = Inventory()
    for obj, _ in mutated:
        with contextlib.suppress(ValueError):  # an object without a name cannot be referred to
            inventory.add(obj)
    policies.validation.inventory = inventory
    return [_validate(obj, report, policies) for obj, report in mutated]


def check_manifests(paths: Iterable[str | Path], *, enable_cel: bool = True) -> ManifestRun:
    """The whole run in memory (every document and report held); ``run_manifests`` streams the same."""
    policies: PolicySet = load_paths(paths, keep_objects=True, enable_cel=enable_cel)
    return ManifestRun(_check_all(policies.objects, policies), policies.errors)


def uses_inventory(policies: PolicySet) -> bool:
    return any(t.uses_inventory for t in policies.validation.templates.values())


@dataclass(slots=True)
class StreamedRun:
    checked: int = 0
    denied: bool = False
    errors: list[LoadError] = field(default_factory=list)  # as ManifestRun.policy_errors
    late_errors: list[LoadError] = field(default_factory=list)  # found while streaming (also in errors)
    streamed: bool = True  # False: a template uses data.inventory, every object was held


def run_manifests(
    paths: Iterable[str | Path],
    *,
    enable_cel: bool = True,
    on_errors: Callable[[list[LoadError]], None],
    on_report: Callable[[ObjectReport], None],
    jobs: int = 1,
) -> StreamedRun:
    """``check_manifests``, streamed: ``on_errors`` gets the policy errors known before the first object is
    checked, then ``on_report`` each object's report, in the order of the documents. A file that turns out not
    to parse while it is streamed contributes no report (as before: its reports are held until its end) and its
    error is in ``late_errors``, after the others. Raises ValueError as ``load_paths`` does.

    ``jobs`` > 1: files that hold no policy are parsed and checked by that many forked worker processes (they
    inherit the loaded policies), in batches of documents, and the reports come back in document order. ``jobs``
    0: one per CPU (up to AUTO_JOBS_MAX) when those files hold at least AUTO_JOBS_MIN_BYTES, else 1."""
    files = expand_paths(paths)
    file_errors: dict[int, LoadError] = {}
    parsed: dict[int, list[Document]] = {}
    for i, path in enumerate(files):
        if may_hold_policies(path):
            try:
                parsed[i] = read_file(path)
            except DocumentError as err:
                file_errors[i] = LoadError(str(path), str(err))
    policies = build_policy_set(
        (doc for i in sorted(parsed) for doc in parsed[i]), keep_objects=True, enable_cel=enable_cel
    )
    kept = {id(doc) for doc in policies.objects}
    run = StreamedRun(errors=[file_errors[i] for i in sorted(file_errors)] + policies.errors)

    def objects(i: int, path: Path) -> Iterator[Document]:
        if i in parsed:
            yield from (doc for doc in parsed[i] if id(doc) in kept)
        elif i not in file_errors:
            yield from stream_file(path)

    if uses_inventory(policies):  # every object before the first validation: hold them all
        run.streamed = False
        docs: list[Document] = []
        for i, path in enumerate(files):
            if i in parsed or i in file_errors:
                docs.extend(objects(i, path))
                continue
            try:
                docs.extend(read_file(path))
            except DocumentError as err:
                file_errors[i] = LoadError(str(path), str(err))
        run.errors = [file_errors[i] for i in sorted(file_errors)] + policies.errors
        on_errors(run.errors)
        for report in _check_all(docs, policies):
            _emit(run, report, on_report)
        return run

    on_errors(run.errors)
    if jobs <= 0:  # auto: workers only where they pay for their start (~60 ms)
        jobs = _auto_jobs(sum(_size(path) for i, path in enumerate(files) if i not in parsed and i not in file_errors))
    pool: _Pool | None = None
    try:
        for i, path in enumerate(files):
            # .json files stay here: orjson reads them (read_file), not the YAML path of the workers
            streamed = i not in parsed and i not in file_errors and path.suffix != ".json"
            if jobs > 1 and streamed and pool is None:
                pool = _Pool(policies, jobs)
            pooled = pool is not None and streamed
            _check_file(run, policies, path, None if pooled else objects(i, path), pool, on_report)
    finally:
        if pool is not None:
            pool.close()
    return run


def _check_file(
    run: StreamedRun,
    policies: PolicySet,
    path: Path,
    docs: Iterable[Document] | None,
    pool: _Pool | None,
    on_report: Callable[[ObjectReport], None],
) -> None:
    """One file's reports: from ``docs`` in this process, or (None) from the pool's workers."""
    held: list[ObjectReport] = []
    try:
        if docs is None:
            assert pool is not None
            held.extend(pool.reports(path))
        else:
            for doc in docs:
                obj, report = _mutated(doc, policies)
                held.append(_validate(obj, report, policies))
    except StreamInterrupted:
        held = []
        try:  # the whole file, as load_paths reads it: its documents (all objects: may_hold_policies said
            docs = read_file(path)  # it holds no policy), or the error it always gave
        except DocumentError as err:
            late = LoadError(str(path), str(err))
            run.late_errors.append(late)
            run.errors.append(late)
            return
        for doc in docs:
            obj, report = _mutated(doc, policies)
            held.append(_validate(obj, report, policies))
    for report in held:
        _emit(run, report, on_report)


AUTO_JOBS_MIN_BYTES = 2 << 20  # ~150 realistic 13 KB Pods: below that the workers' start costs more than it saves
AUTO_JOBS_MAX = 4  # measured on 2 CPUs only (2 workers: 1.3-1.9x one process when the second CPU is free)


def _auto_jobs(object_bytes: int) -> int:
    if object_bytes < AUTO_JOBS_MIN_BYTES:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, AUTO_JOBS_MAX))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# The worker processes' policy set: set before the fork, inherited (regorus engines may be used by a forked child
# of the thread that made them; they cannot cross a pickle).
_worker_policies: PolicySet | None = None
_BATCH = 8  # documents per task: amortizes the pickling and the round trip (~0.1 ms) over several objects


def _check_pieces(pieces: list[str]) -> list[tuple[int, list[ObjectReport]] | None]:
    """In a worker: each piece of a stream parsed (numbered from 0), mutated, validated; None for a piece that
    does not parse (the parent then reads the whole file itself)."""
    policies = _worker_policies
    assert policies is not None
    out: list[tuple[int, list[ObjectReport]] | None] = []
    for piece in pieces:
        try:
            count, docs = parse_piece(piece, "", 0)
        except Exception:  # noqa: BLE001 - the parent reads the whole file itself, for the exact outcome
            out.append(None)
            continue
        reports = []
        for doc in docs:
            obj, report = _mutated(doc, policies)
            reports.append(_validate(obj, report, policies))
        out.append((count, reports))
    return out


class _Pool:
    def __init__(self, policies: PolicySet, jobs: int) -> None:
        import multiprocessing

        global _worker_policies
        _worker_policies = policies
        # a worker that exits normally flushes the stdio buffers it inherited: empty them before the fork
        sys.stdout.flush()
        sys.stderr.flush()
        self.jobs = jobs
        self._pool = multiprocessing.get_context("fork").Pool(jobs)

    def reports(self, path: Path) -> Iterator[ObjectReport]:
        """The reports of one file's documents in order; raises StreamInterrupted as ``stream_file`` does."""
        from collections import deque

        source = str(path)
        index = 0
        inflight: deque[Any] = deque()

        def results(batch: list[tuple[int, list[ObjectReport]] | None]) -> Iterator[ObjectReport]:
            nonlocal index
            for item in batch:
                if item is None:
                    raise StreamInterrupted(source)
                count, reports = item
                for report in reports:  # "#k" or "#k.items[j]", numbered from the piece: renumber in the stream
                    k, dot, rest = report.source[1:].partition(".")
                    report.source = f"{source}#{index + int(k)}{dot}{rest}"
                    yield report
                index += count

        try:
            with path.open(encoding="utf-8") as f:
                batch: list[str] = []
                for piece in split_stream(iter(lambda: f.read(1 << 20), "")):
                    batch.append(piece)
                    if len(batch) == _BATCH:
                        inflight.append(self._pool.apply_async(_check_pieces, (batch,)))
                        batch = []
                        if len(inflight) >= 4 * self.jobs:
                            yield from results(inflight.popleft().get())
                if batch:
                    inflight.append(self._pool.apply_async(_check_pieces, (batch,)))
            while inflight:
                yield from results(inflight.popleft().get())
        except (OSError, UnicodeDecodeError) as err:
            raise StreamInterrupted(str(err)) from err

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()


def _emit(run: StreamedRun, report: ObjectReport, on_report: Callable[[ObjectReport], None]) -> None:
    run.checked += 1
    if report.errors or any(v["enforcementAction"] == "deny" for v in report.violations):
        run.denied = True
    on_report(report)


class ReportWriter:
    """Writes reports as they come, byte for byte as the whole list was written (``-o json|yaml|table``)."""

    def __init__(self, output: str, out: TextIO) -> None:
        self.output, self.out = output, out
        self.count = 0
        self.rows: list[tuple[str, str, str, str]] = []  # the table needs every row for its widths

    def add(self, report: ObjectReport) -> None:
        self.count += 1
        if self.output == "json":
            text = orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode()
            self.out.write(("[\n" if self.count == 1 else ",\n") + "\n".join("  " + line for line in text.split("\n")))
        elif self.output == "yaml":
            self.out.write(yaml.safe_dump([report.as_dict()], sort_keys=False))
        else:
            self.rows.extend(_rows(report))

    def close(self) -> None:
        if self.output == "json":
            self.out.write("\n]\n" if self.count else "[]\n")
        elif self.output == "yaml":
            if not self.count:
                self.out.write(yaml.safe_dump([], sort_keys=False))
        else:
            self.out.write(_table(self.rows, self.count))


def _rows(report: ObjectReport) -> Iterator[tuple[str, str, str, str]]:
    for v in report.violations:
        yield (report.title, v["constraint"], v["enforcementAction"], v["message"])
    for err in report.errors:
        yield (report.title, "-", "error", err)


def _table(body: list[tuple[str, str, str, str]], count: int) -> str:
    if not body:
        return f"{count} objects checked, no violations\n"
    rows = [("OBJECT", "CONSTRAINT", "ACTION", "MESSAGE"), *body]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row)) for row in rows]
    return "\n".join(lines) + "\n"


def format_table(run: ManifestRun) -> str:
    return _table([row for report in run.reports for row in _rows(report)], len(run.reports))
