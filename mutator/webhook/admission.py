"""AdmissionReview in, AdmissionReview out: the mutation path the webhook (and the tests) run.

request -> review (validated) -> mutation system -> RFC 6902 patch -> response.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..match import PolicyError, wildcard_matches
from ..mutation import Mutable, MutationError, MutationSystem, is_mutator_resource, mutator_from_resource
from ..mutation.core import deep_copy
from ..mutation.patch import make_patch
from ..validation.constraints import constraint_from_resource, is_constraint_resource
from ..validation.review import review_from_request
from ..validation.system import ReviewResult, ValidationSystem
from ..validation.templates import is_template_resource, template_from_resource
from .evaluator import CutOff, Evaluator

log = logging.getLogger("mutator.admission")

MAX_BODY_BYTES = 3 * 1024 * 1024
API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
GATEKEEPER_GROUPS = frozenset(
    {
        "mutations.gatekeeper.sh",
        "templates.gatekeeper.sh",
        "constraints.gatekeeper.sh",
        "config.gatekeeper.sh",
        "status.gatekeeper.sh",
        "expansion.gatekeeper.sh",
        "externaldata.gatekeeper.sh",
        "syncset.gatekeeper.sh",
        "connection.gatekeeper.sh",
    }
)
MUTATED_OPERATIONS = ("CREATE", "UPDATE")


class BadReview(ValueError):
    """A request body that is not a usable AdmissionReview: answered with HTTP 400 and this reason."""


def parse_review(body: bytes) -> dict[str, Any]:
    """Decode and check an AdmissionReview body; raises BadReview with the reason."""
    if len(body) > MAX_BODY_BYTES:
        raise BadReview(f"request body is {len(body)} bytes, over the {MAX_BODY_BYTES} byte limit")
    if not body.strip():
        raise BadReview("request body is empty: expected an AdmissionReview")
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise BadReview(f"request body is not valid JSON: {err}") from err
    if not isinstance(review, dict):
        raise BadReview(f"expected an AdmissionReview object, got a JSON {type(review).__name__}")
    kind = review.get("kind")
    if kind != "AdmissionReview":
        raise BadReview(f"kind must be AdmissionReview, got {kind!r}")
    api_version = review.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise BadReview(f"apiVersion must be one of {', '.join(API_VERSIONS)}, got {api_version!r}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReview("request: required, must be an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid: required, must be a non-empty string")
    _check_request_fields(request)
    try:  # orjson reads 1024 levels of nesting but writes only ~254: refuse what we could not copy or pass on
        orjson.dumps(request)
    except orjson.JSONEncodeError as err:
        raise BadReview(f"request is nested too deeply or holds what JSON cannot carry: {err}") from err
    operation = request.get("operation")
    if operation in MUTATED_OPERATIONS and not isinstance(request.get("object"), dict):
        raise BadReview(f"request.object: required for {operation}, must be an object")
    return review


def _check_request_fields(request: Mapping[str, Any]) -> None:
    """The AdmissionRequest fields we read must have their API types; anything else is a 400, not a crash."""
    for field_name in ("name", "namespace", "operation", "subResource"):
        value = request.get(field_name)
        if value is not None and not isinstance(value, str):
            raise BadReview(f"request.{field_name}: must be a string, got {type(value).__name__}")
    for field_name in ("kind", "requestKind", "resource", "requestResource"):
        value = request.get(field_name)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise BadReview(f"request.{field_name}: must be an object, got {type(value).__name__}")
        for key, item in value.items():
            if not isinstance(item, str):
                raise BadReview(f"request.{field_name}.{key}: must be a string, got {type(item).__name__}")
    for field_name in ("object", "oldObject", "userInfo", "options"):
        value = request.get(field_name)
        if value is not None and not isinstance(value, dict):
            raise BadReview(f"request.{field_name}: must be an object, got {type(value).__name__}")
    user = request.get("userInfo") or {}
    if not isinstance(user.get("username", ""), str):
        raise BadReview("request.userInfo.username: must be a string")
    groups = user.get("groups")
    if groups is not None and not (isinstance(groups, list) and all(isinstance(g, str) for g in groups)):
        raise BadReview("request.userInfo.groups: must be a list of strings")
    dry_run = request.get("dryRun")
    if dry_run is not None and not isinstance(dry_run, bool):
        raise BadReview(f"request.dryRun: must be a boolean, got {type(dry_run).__name__}")
    for field_name in ("object", "oldObject"):
        obj = request.get(field_name)
        if isinstance(obj, dict):
            meta = obj.get("metadata")
            if meta is not None and not isinstance(meta, dict):
                raise BadReview(f"request.{field_name}.metadata: must be an object")
            for key in ("apiVersion", "kind"):
                if obj.get(key) is not None and not isinstance(obj.get(key), str):
                    raise BadReview(f"request.{field_name}.{key}: must be a string")
            if isinstance(meta, dict):
                for key in ("name", "namespace", "generateName"):
                    if meta.get(key) is not None and not isinstance(meta.get(key), str):
                        raise BadReview(f"request.{field_name}.metadata.{key}: must be a string")
                for key in ("labels", "annotations"):
                    value = meta.get(key)
                    if value is not None and not (
                        isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
                    ):
                        raise BadReview(f"request.{field_name}.metadata.{key}: must be a map of strings")


@dataclass(slots=True)
class MutationOptions:
    """Per-process settings of the mutation webhook."""

    fail_open: bool = False  # a mutation error answers allowed (True) or denied with the error (False)
    exempt_namespaces: tuple[str, ...] = ()  # globs; requests in these namespaces are never mutated
    own_usernames: tuple[str, ...] = ()  # mutator's own service account(s)


@dataclass(slots=True)
class MutationOutcome:
    response: dict[str, Any]
    patch: list[dict[str, Any]] = field(default_factory=list)
    passes: int = 0
    skipped: str = ""  # why the request was not mutated at all, if it was not
    error: str = ""


def _allowed(uid: str, **extra: Any) -> dict[str, Any]:
    return {"uid": uid, "allowed": True, **extra}


def envelope(review: Mapping[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": review.get("apiVersion", API_VERSIONS[0]), "kind": "AdmissionReview", "response": response}


def _skip_reason(
    request: Mapping[str, Any], options: MutationOptions, excluded: Callable[[str], bool] | None = None
) -> str:
    operation = request.get("operation")
    if operation not in MUTATED_OPERATIONS:
        return f"operation {operation} is not mutated"
    kind = request.get("kind") if isinstance(request.get("kind"), dict) else {}
    obj_group = str(request.get("object", {}).get("apiVersion", "")).rpartition("/")[0]
    if kind.get("group") in GATEKEEPER_GROUPS or obj_group in GATEKEEPER_GROUPS:
        return "mutator's own resources are never mutated"
    user = request.get("userInfo") if isinstance(request.get("userInfo"), dict) else {}
    if user.get("username") and user.get("username") in options.own_usernames:
        return "requests from mutator's own service account are never mutated"
    namespace = request.get("namespace") or ""
    if namespace and any(wildcard_matches(p, namespace) for p in options.exempt_namespaces):
        return f"namespace {namespace} is exempt"
    if namespace and excluded is not None and excluded(namespace):
        return f"namespace {namespace} is excluded by the Config"
    meta = request["object"].get("metadata")
    if operation == "UPDATE" and isinstance(meta, dict) and meta.get("deletionTimestamp"):
        return "object is being deleted"
    return ""


def mutate_review(
    review: Mapping[str, Any],
    system: MutationSystem,
    namespace_lookup: Callable[[str], Mapping[str, Any] | None],
    options: MutationOptions | None = None,
    *,
    source: str = "Original",
    excluded: Callable[[str], bool] | None = None,
) -> MutationOutcome:
    """Answer a parsed AdmissionReview for the mutating webhook. ``excluded`` tells the namespaces the
    Config excludes from mutation."""
    options = options or MutationOptions()
    request = review["request"]
    uid = request["uid"]
    reason = _skip_reason(request, options, excluded)
    if reason:
        return MutationOutcome(_allowed(uid), skipped=reason)

    original = request["object"]
    obj = deep_copy(original)
    meta = obj.get("metadata")
    had_meta = isinstance(meta, dict)
    if not had_meta:
        meta = obj["metadata"] = {}
    had_ns = "namespace" in meta
    old_ns = meta.get("namespace")
    req_ns = request.get("namespace") or ""
    if not old_ns and req_ns:
        # The API server may leave metadata.namespace empty; match on the request's namespace as Gatekeeper
        # does, then restore it so the patch never touches it.
        meta["namespace"] = req_ns
    namespace_name = meta.get("namespace") or ""
    namespace_obj = namespace_lookup(namespace_name) if namespace_name else None
    user = request.get("userInfo") if isinstance(request.get("userInfo"), dict) else {}
    mutable = Mutable(obj, namespace_obj, username=str(user.get("username") or ""), source=source)
    try:
        result = system.mutate(mutable)
    except MutationError as err:
        message = str(err)
        log.warning("mutation failed for request %s: %s", uid, message)
        # a system that did not converge ran all its passes (gatekeeper_mutation_system_iterations{success=false})
        passes = len(system) + 1 if message.startswith("mutation not converging") else 0
        if options.fail_open:
            response = _allowed(uid, warnings=[f"mutation skipped: {message}"])
            return MutationOutcome(response, passes=passes, error=message)
        response = {"uid": uid, "allowed": False, "status": {"code": 500, "message": message}}
        return MutationOutcome(response, passes=passes, error=message)

    meta = obj.get("metadata")
    if isinstance(meta, dict):
        if had_ns:
            meta["namespace"] = old_ns
        else:
            meta.pop("namespace", None)
        if not had_meta and not meta:
            del obj["metadata"]
    if not result.changed:
        return MutationOutcome(_allowed(uid), passes=result.passes)
    patch = make_patch(original, obj)
    if not patch:
        return MutationOutcome(_allowed(uid), passes=result.passes)
    encoded = base64.b64encode(orjson.dumps(patch)).decode("ascii")
    return MutationOutcome(_allowed(uid, patchType="JSONPatch", patch=encoded), patch=patch, passes=result.passes)


def review_for(
    obj: Mapping[str, Any],
    *,
    operation: str = "CREATE",
    uid: str = "00000000-0000-0000-0000-000000000000",
    username: str = "",
    namespace: str | None = None,
) -> dict[str, Any]:
    """The AdmissionReview the API server would send for an object (used by the CLI, tests and benches)."""
    api_version = str(obj.get("apiVersion") or "")
    group, _, version = api_version.rpartition("/")
    kind = str(obj.get("kind") or "")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    ns = namespace if namespace is not None else (meta.get("namespace") or "")
    gvk = {"group": group, "version": version, "kind": kind}
    return {
        "apiVersion": API_VERSIONS[0],
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
            "requestKind": gvk,
            "name": meta.get("name") or "",
            "namespace": ns,
            "operation": operation,
            "userInfo": {"username": username},
            "object": obj,
            "oldObject": None,
            "dryRun": False,
        },
    }


# --------------------------------------------------------------------------- validation


@dataclass(slots=True)
class ValidationOptions:
    fail_open: bool = False  # an evaluation error answers allowed (True) or denied with the error (False)
    exempt_namespaces: tuple[str, ...] = ()
    timeout: float | None = None  # seconds; constraints not evaluated by then are an error (the deadline)
    isolate: bool = False  # evaluate in a child process, cut off at the deadline (webhook/evaluator.py)


@dataclass(slots=True)
class ValidationOutcome:
    response: dict[str, Any]
    violations: list[Any] = field(default_factory=list)
    skipped: str = ""
    errors: list[str] = field(default_factory=list)


def _check_policy_resource(request: Mapping[str, Any], validation: ValidationSystem) -> str:
    """Gatekeeper's own resources are checked for well-formedness; an error text, or "" when fine."""
    obj = request.get("object")
    if request.get("operation") not in MUTATED_OPERATIONS or not isinstance(obj, dict):
        return ""
    try:
        if is_template_resource(obj):
            template_from_resource(obj, enable_cel=validation.enable_cel)
        elif is_mutator_resource(obj):
            mutator_from_resource(obj)
        elif is_constraint_resource(obj):
            constraint_from_resource(obj, validation.templates.get(str(obj.get("kind"))))
    except PolicyError as err:
        return str(err)
    return ""


@dataclass(slots=True)
class _Pending:
    """A review that needs the engines: what to give ``ValidationSystem.review``."""

    uid: str
    review: dict[str, Any]
    namespace_object: Mapping[str, Any] | None
    deadline: float | None


def _prepare_validation(
    review: Mapping[str, Any],
    validation: ValidationSystem,
    namespace_lookup: Callable[[str], Mapping[str, Any] | None],
    options: ValidationOptions,
    excluded: Callable[[str], bool] | None,
) -> ValidationOutcome | _Pending:
    """Everything before the engines: exemptions, Gatekeeper's own resources, the input review."""
    request = review["request"]
    uid = request["uid"]
    namespace = request.get("namespace") or ""
    if namespace and any(wildcard_matches(p, namespace) for p in options.exempt_namespaces):
        return ValidationOutcome(_allowed(uid), skipped=f"namespace {namespace} is exempt")
    if namespace and excluded is not None and excluded(namespace):
        return ValidationOutcome(_allowed(uid), skipped=f"namespace {namespace} is excluded by the Config")
    kind = request.get("kind") if isinstance(request.get("kind"), dict) else {}
    if kind.get("group") in GATEKEEPER_GROUPS:
        problem = _check_policy_resource(request, validation)
        if problem:
            status = {"code": 403, "reason": "Forbidden", "message": problem}
            return ValidationOutcome({"uid": uid, "allowed": False, "status": status})
        return ValidationOutcome(_allowed(uid), skipped="mutator's own resources are checked, not validated")

    obj = request.get("object") or request.get("oldObject")
    meta = obj.get("metadata") if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict) else {}
    ns_name = namespace or meta.get("namespace") or ""
    namespace_obj = namespace_lookup(ns_name) if ns_name else None
    if isinstance(obj, dict) and ns_name and not meta.get("namespace"):
        # match on the request's namespace when the object does not carry one, as Gatekeeper does
        obj = {**obj, "metadata": {**meta, "namespace": ns_name}}
        request = {**request, "object" if request.get("object") else "oldObject": obj}
    deadline = time.monotonic() + options.timeout if options.timeout else None
    return _Pending(uid, review_from_request(request, namespace_obj), namespace_obj, deadline)


def _finish_validation(uid: str, result: ReviewResult, options: ValidationOptions) -> ValidationOutcome:
    """The answer for the engines' result: deny, warn, dryrun (logged), errors per the failure policy."""
    denied = [v.text for v in result.with_action("deny")]
    warnings = [v.text for v in result.with_action("warn")]
    for v in result.with_action("dryrun"):
        log.info("dryrun violation for request %s: %s", uid, v.text)
    if result.errors:
        message = "; ".join(result.errors)
        log.warning("validation failed for request %s: %s", uid, message)
        if not options.fail_open:
            status = {"code": 500, "message": "\n".join([*denied, *result.errors])}
            response = {"uid": uid, "allowed": False, "status": status}
            if warnings:
                response["warnings"] = warnings
            return ValidationOutcome(response, result.violations, errors=result.errors)
        warnings.append(f"validation error ignored (fail-open): {message}")
    if denied:
        response = {
            "uid": uid,
            "allowed": False,
            "status": {"code": 403, "reason": "Forbidden", "message": "\n".join(denied)},
        }
    else:
        response = _allowed(uid)
    if warnings:
        response["warnings"] = warnings
    return ValidationOutcome(response, result.violations, errors=result.errors)


def validate_review(
    review: Mapping[str, Any],
    validation: ValidationSystem,
    namespace_lookup: Callable[[str], Mapping[str, Any] | None],
    options: ValidationOptions | None = None,
    *,
    excluded: Callable[[str], bool] | None = None,
) -> ValidationOutcome:
    """Answer a parsed AdmissionReview for the validating webhook (``/v1/admit``), evaluating in this process."""
    options = options or ValidationOptions()
    pending = _prepare_validation(review, validation, namespace_lookup, options, excluded)
    if isinstance(pending, ValidationOutcome):
        return pending
    result = validation.review(pending.review, namespace_object=pending.namespace_object, deadline=pending.deadline)
    return _finish_validation(pending.uid, result, options)


async def validate_review_isolated(
    review: Mapping[str, Any],
    validation: ValidationSystem,
    namespace_lookup: Callable[[str], Mapping[str, Any] | None],
    evaluator: Evaluator,
    options: ValidationOptions | None = None,
    *,
    excluded: Callable[[str], bool] | None = None,
) -> ValidationOutcome:
    """:func:`validate_review` with the engines in ``evaluator``'s child process: an evaluation still running at
    the deadline is cut off and answered per the failure policy, with the reason."""
    options = options or ValidationOptions()
    pending = _prepare_validation(review, validation, namespace_lookup, options, excluded)
    if isinstance(pending, ValidationOutcome):
        return pending
    try:
        result = await evaluator.review(
            validation, pending.review, namespace_object=pending.namespace_object, deadline=pending.deadline
        )
    except CutOff as err:
        result = ReviewResult(errors=[str(err)])
    return _finish_validation(pending.uid, result, options)


# --------------------------------------------------------------------------- namespace label

IGNORE_LABEL = "admission.gatekeeper.sh/ignore"


def admitlabel_review(review: Mapping[str, Any], options: ValidationOptions | None = None) -> ValidationOutcome:
    """Answer ``/v1/admitlabel`` as Gatekeeper's namespace label webhook: only an exempt namespace may carry
    the ``admission.gatekeeper.sh/ignore`` label."""
    options = options or ValidationOptions()
    request = review["request"]
    uid = request["uid"]
    kind = request.get("kind") if isinstance(request.get("kind"), dict) else {}
    obj = request.get("object")
    if kind.get("group") or kind.get("kind") != "Namespace" or request.get("operation") not in MUTATED_OPERATIONS:
        return ValidationOutcome(_allowed(uid), skipped="not a Namespace being created or updated")
    meta = obj.get("metadata") if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict) else {}
    name = str(meta.get("name") or request.get("name") or "")
    if name and any(wildcard_matches(p, name) for p in options.exempt_namespaces):
        return ValidationOutcome(_allowed(uid), skipped=f"namespace {name} is exempt")
    labels = meta.get("labels")
    if not isinstance(labels, dict) or IGNORE_LABEL not in labels:
        return ValidationOutcome(_allowed(uid))
    message = f"Only exempt namespace can have the {IGNORE_LABEL} label"
    status = {"code": 403, "reason": "Forbidden", "message": message}
    return ValidationOutcome({"uid": uid, "allowed": False, "status": status})
