"""AssignImage: replace only the given parts of an image reference ``domain/path:tag`` or ``path@digest``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..match import PolicyError
from .core import MutationError, go_repr
from .mutators import TERMINAL_STRING, Mutator
from .path import List

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PORT = r"(?::[0-9]+)"
DOMAIN_RE = re.compile(rf"^(?:localhost{_PORT}?|{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})+{_PORT}?)$")
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
TAG_RE = re.compile(r"(^:[\w][\w.-]{0,127}$)|(^@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$)")


def split_domain(name: str) -> tuple[str, str]:
    """Docker's rule: the first segment is a domain if it has a ``.`` or ``:`` or is ``localhost``."""
    i = name.find("/")
    if i == -1:
        return "", name
    first = name[:i]
    if ("." not in first and ":" not in first and first != "localhost") and first.lower() == first:
        return "", name
    return first, name[i + 1 :]


@dataclass(slots=True)
class ImageRef:
    domain: str
    path: str
    tag: str

    @classmethod
    def parse(cls, image: str) -> ImageRef:
        domain, remainder = split_domain(image)
        cut = min((i for i in (remainder.find(":"), remainder.find("@")) if i >= 0), default=-1)
        if cut >= 0:
            return cls(domain, remainder[:cut], remainder[cut:])
        return cls(domain, remainder, "")

    def __str__(self) -> str:
        return (self.domain + "/" if self.domain else "") + self.path + self.tag


def validate_parts(domain: str, path: str, tag: str) -> str | None:
    """Gatekeeper's checks on assignDomain/assignPath/assignTag; an error text or None."""
    if not (domain or path or tag):
        return "at least one of [assignDomain, assignPath, assignTag] must be set"
    if domain and not DOMAIN_RE.match(domain):
        return f'assignDomain "{domain}" must be a fully-qualified domain name or localhost'
    if path and not PATH_RE.match(path):
        return f'assignPath "{path}" must be a valid docker image path'
    if tag and not TAG_RE.match(tag):
        return f"assignTag \"{tag}\" must be a valid docker image tag or digest starting with ':' or '@'"
    if not domain and path:
        first, _ = split_domain(path)
        if first:
            return (
                f'assignDomain must be set if the first part of assignPath "{path}" can be '
                "interpretted as part of a domain"
            )
    return None


@lru_cache(maxsize=4096)
def _assign_image(image: str, domain: str, path: str, tag: str) -> str:
    """``image`` with the given parts replaced (a pure function of its arguments, so cached: the same
    images come back request after request, and every pass re-applies the mutator)."""
    ref = ImageRef.parse(image)
    if domain:
        ref.domain = domain
    if path:
        ref.path = path
    if tag:
        ref.tag = tag
    return str(ref)


class AssignImage(Mutator):
    kind = "AssignImage"
    label = "assignImage"
    terminal_type = TERMINAL_STRING

    def _validate(self) -> None:
        self._check_no_metadata_root("assignImage")
        nodes = self.path.nodes
        if nodes and isinstance(nodes[-1], List):
            raise PolicyError(f"spec.location: assignImage {self.name} cannot mutate list-type fields")
        parts = {}
        for key in ("assignDomain", "assignPath", "assignTag"):
            value = self.params.get(key) or ""
            if not isinstance(value, str):
                raise PolicyError(f"spec.parameters.{key}: must be a string")
            parts[key] = value
        self.domain, self.image_path, self.tag = parts["assignDomain"], parts["assignPath"], parts["assignTag"]
        error = validate_parts(self.domain, self.image_path, self.tag)
        if error is not None:
            raise PolicyError(f"spec.parameters: assignImage {self.name} has invalid parameters: {error}")
        super()._validate()

    def set_value(self, parent: dict[str, Any], key: str, ctx: Any) -> bool:
        current = parent.get(key, "")
        if current is None:
            current = ""
        if not isinstance(current, str):
            raise MutationError(f"assignImage {self.name}: value at location is not a string: {go_repr(current)}")
        new = _assign_image(current, self.domain, self.image_path, self.tag)
        if key in parent and parent[key] == new:
            return False
        parent[key] = new
        return True
