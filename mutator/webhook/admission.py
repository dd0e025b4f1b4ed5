"""AdmissionReview in, AdmissionReview out: the mutation path the webhook (and the tests) run.

request -> review (validated) -> mutation system -> RFC 6902 patch -> response.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import orjson

from ..match import wildcard_matches
from ..mutation import Mutable, MutationError, MutationSystem
from ..mutation.core import deep_copy

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
    operation = request.get("operation")
    if operation in MUTATED_OPERATIONS and not isinstance(request.get("object"), dict):
        raise BadReview(f"request.object: required for {operation}, must be an object")
    return review


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


def _skip_reason(request: Mapping[str, Any], options: MutationOptions) -> str:
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
) -> MutationOutcome:
    """Answer a parsed AdmissionReview for the mutating webhook."""
    options = options or MutationOptions()
    request = review["request"]
    uid = request["uid"]
    reason = _skip_reason(request, options)
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
        if options.fail_open:
            return MutationOutcome(_allowed(uid, warnings=[f"mutation skipped: {message}"]), error=message)
        response = {"uid": uid, "allowed": False, "status": {"code": 500, "message": message}}
        return MutationOutcome(response, error=message)

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
    patch = jsonpatch.make_patch(original, obj).patch
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
