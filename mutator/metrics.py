"""Prometheus metrics under Gatekeeper's names and labels (Gatekeeper's docs/metrics.md).

One :class:`Metrics` owns a dedicated :class:`~prometheus_client.CollectorRegistry` (never the global one), so
each server, and each test, has its own.  Three kinds of metric live here:

* request metrics, recorded by the webhook on every request: ``gatekeeper_validation_request_count`` and
  ``..._duration_seconds`` {admission_status, admission_dryrun}, ``gatekeeper_mutation_request_count`` and
  ``..._duration_seconds`` {mutation_status}, ``gatekeeper_mutation_system_iterations`` {success};
* policy gauges, computed at scrape time from the current :class:`~mutator.policy.PolicySet`:
  ``gatekeeper_constraints`` {enforcement_action, status}, ``gatekeeper_constraint_templates`` {status},
  ``gatekeeper_mutators`` {status}, ``gatekeeper_mutator_conflicting_count`` {status};
* ``mutator_validation_cut_offs_total``: evaluations stopped at the validation deadline (mutator's own);
* audit and sync metrics, set by the controller through methods: ``gatekeeper_violations``
  {enforcement_action}, ``gatekeeper_audit_duration_seconds``, ``gatekeeper_audit_last_run_time``,
  ``gatekeeper_audit_last_run_end_time``, ``gatekeeper_sync`` {kind, status}, ``gatekeeper_sync_duration_seconds``,
  ``gatekeeper_sync_last_run_time``.

:meth:`Metrics.render` writes the Prometheus text format (0.0.4).  Gatekeeper's counters are exposed under their
documented names, without the ``_total`` suffix prometheus-client would add, and without ``_created`` series.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from .policy import PolicySet
    from .webhook.admission import MutationOutcome, ValidationOutcome

PolicyProvider = Callable[[], "PolicySet"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# label values, as Gatekeeper reports them
ACTIVE = "active"
ERROR = "error"
STATUSES = (ACTIVE, ERROR)
ALLOW = "allow"
DENY = "deny"
VALIDATION_STATUSES = (ALLOW, DENY, ERROR)
SUCCESS = "success"
SKIP = "skip"
MUTATION_STATUSES = (SUCCESS, ERROR, SKIP)
ENFORCEMENT_ACTIONS = ("deny", "dryrun", "warn")
UNKNOWN_ACTION = "unknown"  # a rejected constraint: its enforcementAction is not known to the policy set

# Gatekeeper's bucket boundaries (pkg/webhook, pkg/audit, pkg/mutation, pkg/controller/sync stats reporters);
# the audit's gain a few sub-minute buckets, as a small cluster is audited in seconds.
REQUEST_BUCKETS = (
    *(i / 1000 for i in range(1, 10)),
    *(i / 100 for i in range(1, 10)),
    *(i / 10 for i in range(1, 10)),
    1.0,
    1.5,
    2.0,
    2.5,
    3.0,
)
ITERATION_BUCKETS = (2, 3, 4, 5, 10, 20, 50, 100)
AUDIT_BUCKETS = (1, 5, 10, 30, 60, 180, 300, 600, 900, 1200, 2400, 4800, 9600, 19200)
SYNC_BUCKETS = (
    *(i / 10000 for i in range(1, 10)),
    *(i / 1000 for i in range(1, 6)),
    0.01,
    0.02,
    0.03,
    0.04,
    0.05,
)

MUTATOR_KINDS = frozenset({"Assign", "AssignMetadata", "ModifySet", "AssignImage"})
TEMPLATE_KIND = "ConstraintTemplate"
# LoadError.source is Document.describe(): "<path> (<kind> <name>)"
_DESCRIBED = re.compile(r"\((?P<kind>[^\s()]+) [^\s()]+\)$")


def _rejected_kind(error: Any) -> str:
    """The kind of resource a LoadError rejected, or "" for a file that did not parse."""
    kind = getattr(error, "kind", None)
    if isinstance(kind, str) and kind:
        return kind
    found = _DESCRIBED.search(str(getattr(error, "source", "")))
    if found is None or found["kind"] == "?":
        return ""
    return found["kind"]


class _StateCollector(Collector):
    """The gauges computed at scrape time: policy counts from the current PolicySet, and the last sync."""

    def __init__(self, owner: Metrics) -> None:
        self._owner = owner

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        yield from self._policy_families()
        sync = GaugeMetricFamily(
            "gatekeeper_sync", "Total number of resources of each kind being cached", labels=("kind", "status")
        )
        for (kind, status), value in sorted(self._owner._sync.items()):
            sync.add_metric((kind, status), value)
        yield sync

    def _policy_families(self) -> Iterator[Metric]:
        provider = self._owner.policies
        if provider is None:
            return
        current = provider()
        constraints: dict[tuple[str, str], int] = {(a, s): 0 for a in ENFORCEMENT_ACTIONS for s in STATUSES}
        for constraint in current.validation.constraints():
            key = (constraint.enforcement_action, ACTIVE)
            constraints[key] = constraints.get(key, 0) + 1
        templates = {ACTIVE: len(current.validation.templates), ERROR: 0}
        mutators = {ACTIVE: len(current.mutation), ERROR: 0}
        for error in getattr(current, "errors", ()):
            kind = _rejected_kind(error)
            if not kind:
                continue
            if kind == TEMPLATE_KIND:
                templates[ERROR] += 1
            elif kind in MUTATOR_KINDS:
                mutators[ERROR] += 1
            else:  # build_policy_set rejects only mutators, templates and constraints
                action = getattr(error, "enforcement_action", None) or UNKNOWN_ACTION
                constraints[(action, ERROR)] = constraints.get((action, ERROR), 0) + 1

        family = GaugeMetricFamily(
            "gatekeeper_constraints", "Current number of known constraints", labels=("enforcement_action", "status")
        )
        for labels, value in sorted(constraints.items()):
            family.add_metric(labels, value)
        yield family
        family = GaugeMetricFamily(
            "gatekeeper_constraint_templates", "Number of observed constraint templates", labels=("status",)
        )
        for status in STATUSES:
            family.add_metric((status,), templates[status])
        yield family
        family = GaugeMetricFamily("gatekeeper_mutators", "The current number of Mutator objects", labels=("status",))
        for status in STATUSES:
            family.add_metric((status,), mutators[status])
        yield family
        family = GaugeMetricFamily(
            "gatekeeper_mutator_conflicting_count",
            "The current number of conflicting Mutator objects",
            labels=("status",),
        )
        family.add_metric((ACTIVE,), len(current.mutation.conflicting()))
        family.add_metric((ERROR,), 0)
        yield family


class Metrics:
    """Gatekeeper's metrics in a registry of their own.

    ``policies`` returns the current policy set; the policy gauges are computed from it at scrape time (the
    webhook app sets it when it is not given here).  Request metrics are recorded by the webhook through
    :meth:`observe_mutation` and :meth:`observe_validation`; the audit and the sync call :meth:`set_audit_violations`,
    :meth:`observe_audit`, :meth:`set_sync` and :meth:`observe_sync`.
    """

    def __init__(self, policies: PolicyProvider | None = None, *, process: bool = True) -> None:
        self.policies = policies
        self.registry = CollectorRegistry(auto_describe=False)
        registry = self.registry
        self._sync: dict[tuple[str, str], int] = {}
        self._bare_counters: set[str] = set()

        self.validation_request_count = self._counter(
            "gatekeeper_validation_request_count",
            "The number of requests that are routed to validation webhook",
            ("admission_status", "admission_dryrun"),
        )
        self.validation_request_duration = Histogram(
            "gatekeeper_validation_request_duration_seconds",
            "The response time in seconds",
            ("admission_status", "admission_dryrun"),
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.mutation_request_count = self._counter(
            "gatekeeper_mutation_request_count",
            "The number of requests that are routed to mutation webhook",
            ("mutation_status",),
        )
        self.mutation_request_duration = Histogram(
            "gatekeeper_mutation_request_duration_seconds",
            "The response time in seconds",
            ("mutation_status",),
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.mutation_system_iterations = Histogram(
            "gatekeeper_mutation_system_iterations",
            "The distribution of Mutation System iterations before convergence",
            ("success",),
            buckets=ITERATION_BUCKETS,
            registry=registry,
        )
        self.violations = Gauge(
            "gatekeeper_violations", "Total number of audited violations", ("enforcement_action",), registry=registry
        )
        self.audit_duration = Histogram(
            "gatekeeper_audit_duration_seconds",
            "Latency of audit operation in seconds",
            buckets=AUDIT_BUCKETS,
            registry=registry,
        )
        self.audit_last_run_time = Gauge(
            "gatekeeper_audit_last_run_time", "Timestamp of last audit run starting time", registry=registry
        )
        self.audit_last_run_end_time = Gauge(
            "gatekeeper_audit_last_run_end_time", "Timestamp of last audit run ending time", registry=registry
        )
        self.sync_duration = Histogram(
            "gatekeeper_sync_duration_seconds",
            "Latency of sync operation in seconds",
            buckets=SYNC_BUCKETS,
            registry=registry,
        )
        self.sync_last_run_time = Gauge(
            "gatekeeper_sync_last_run_time", "Timestamp of last sync operation", registry=registry
        )
        # mutator's own (no Gatekeeper equivalent): runaway evaluations stopped at the deadline
        self.validation_cut_offs = Counter(
            "mutator_validation_cut_offs",
            "Validations cut off at the deadline (--validation-timeout): the evaluating process was killed",
            registry=registry,
        )
        registry.register(_StateCollector(self))
        if process:
            ProcessCollector(registry=registry)

        # labelled children bound once: the request path only looks them up
        self._validation = {
            (status, dryrun): (
                self.validation_request_count.labels(status, dryrun),
                self.validation_request_duration.labels(status, dryrun),
            )
            for status in VALIDATION_STATUSES
            for dryrun in ("true", "false")
        }
        self._mutation = {
            status: (self.mutation_request_count.labels(status), self.mutation_request_duration.labels(status))
            for status in MUTATION_STATUSES
        }
        self._converged = self.mutation_system_iterations.labels("true")
        self._not_converged = self.mutation_system_iterations.labels("false")
        for action in ENFORCEMENT_ACTIONS:
            self.violations.labels(action).set(0)

    def _counter(self, name: str, documentation: str, labels: tuple[str, ...]) -> Counter:
        self._bare_counters.add(name)
        return Counter(name, documentation, labels, registry=self.registry)

    # ------------------------------------------------------------------ webhook

    def observe_mutation(self, outcome: MutationOutcome | None, seconds: float) -> None:
        """One /v1/mutate request; ``outcome`` is None when the request was malformed or the answer failed."""
        if outcome is None or outcome.error:
            status = ERROR
        elif outcome.skipped:
            status = SKIP
        else:
            status = SUCCESS
        count, duration = self._mutation[status]
        count.inc()
        duration.observe(seconds)
        if outcome is not None and outcome.passes:
            # as Gatekeeper: reported when the system changed the object (and converged), or did not converge
            (self._not_converged if outcome.error else self._converged).observe(outcome.passes)

    def observe_validation(
        self, review: Mapping[str, Any] | None, outcome: ValidationOutcome | None, seconds: float
    ) -> None:
        """One /v1/admit request; ``review`` is None when it was malformed, ``outcome`` when the answer failed."""
        request = review.get("request") if review is not None else None
        dryrun = "true" if isinstance(request, dict) and request.get("dryRun") is True else "false"
        if outcome is None or outcome.errors:
            status = ERROR
        elif outcome.response.get("allowed"):
            status = ALLOW
        else:
            status = DENY
        count, duration = self._validation[(status, dryrun)]
        count.inc()
        duration.observe(seconds)

    def observe_cut_off(self) -> None:
        """One evaluation stopped at the validation deadline."""
        self.validation_cut_offs.inc()

    # ------------------------------------------------------------------ audit and sync

    def set_audit_violations(self, counts: Mapping[str, int]) -> None:
        """The violations the last audit found, by enforcement action (deny, dryrun, warn)."""
        for action in ENFORCEMENT_ACTIONS:
            self.violations.labels(action).set(counts.get(action, 0))
        for action, value in counts.items():
            if action not in ENFORCEMENT_ACTIONS:
                self.violations.labels(action).set(value)

    def observe_audit(self, seconds: float, started: float, ended: float | None = None) -> None:
        """A finished audit run: its duration and its start (and end) as Unix timestamps."""
        self.audit_duration.observe(seconds)
        self.audit_last_run_time.set(started)
        self.audit_last_run_end_time.set(ended if ended is not None else started + seconds)

    def set_sync(self, active: Mapping[str, int], errors: Mapping[str, int] | None = None) -> None:
        """The objects replicated into ``data.inventory`` now, by kind; replaces the previous counts."""
        counts = {(kind, ACTIVE): value for kind, value in active.items()}
        counts.update({(kind, ERROR): value for kind, value in (errors or {}).items()})
        self._sync = counts

    def observe_sync(self, seconds: float, finished: float | None = None) -> None:
        """A sync operation: its duration and when it ran (a Unix timestamp; now by default)."""
        self.sync_duration.observe(seconds)
        self.sync_last_run_time.set(finished if finished is not None else time.time())

    # ------------------------------------------------------------------ exposition

    def render(self) -> bytes:
        """The registry in the Prometheus text format (:data:`CONTENT_TYPE`)."""
        out: list[str] = []
        for family in self.registry.collect():
            name = family.name
            bare = family.type == "counter" and name in self._bare_counters
            kind = _TEXT_TYPES.get(family.type, family.type)
            exposed = name if bare or family.type != "counter" else name + "_total"
            help_text = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
            out.append(f"# HELP {exposed} {help_text}\n# TYPE {exposed} {kind}\n")
            created = name + "_created"
            for sample in family.samples:
                if sample.name == created:
                    continue
                sample_name = name if bare and sample.name == name + "_total" else sample.name
                if sample.labels:
                    labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(sample.labels.items()))
                    out.append(f"{sample_name}{{{labels}}} {floatToGoString(sample.value)}\n")
                else:
                    out.append(f"{sample_name} {floatToGoString(sample.value)}\n")
        return "".join(out).encode("utf-8")


_TEXT_TYPES = {"unknown": "untyped", "info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram"}


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
