"""``input.review``: the admission request as Gatekeeper's templates see it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..match import gvk_of


def review_from_request(request: Mapping[str, Any], namespace_object: Mapping[str, Any] | None) -> dict[str, Any]:
    """The AdmissionRequest (as sent by the API server) plus ``namespaceObject`` when known."""
    review = dict(request)
    if namespace_object is not None:
        review["namespaceObject"] = namespace_object
    return review


def review_from_object(
    obj: Mapping[str, Any],
    *,
    operation: str = "CREATE",
    old_object: Mapping[str, Any] | None = None,
    username: str = "",
    namespace_object: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What gator builds for a plain object (audit and ``mutator test`` use this too)."""
    group, version, kind = gvk_of(obj)
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    review: dict[str, Any] = {
        "kind": {"group": group, "version": version, "kind": kind},
        "object": obj,
        "operation": operation,
        "userInfo": {"username": username} if username else {},
    }
    if meta.get("name"):
        review["name"] = meta["name"]
    if meta.get("namespace"):
        review["namespace"] = meta["namespace"]
    if old_object is not None:
        review["oldObject"] = old_object
    if namespace_object is not None:
        review["namespaceObject"] = namespace_object
    return review
