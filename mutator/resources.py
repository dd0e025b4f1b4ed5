"""YAML/JSON documents from files and directories, with the place each came from for error messages."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

try:  # libyaml's loader is ~10x faster when present
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - depends on the build of pyyaml
    _Loader = yaml.SafeLoader

YAML_SUFFIXES = (".yaml", ".yml", ".json")


class DocumentError(ValueError):
    """A file that cannot be read or parsed."""


@dataclass(frozen=True, slots=True)
class Document:
    body: dict[str, Any]
    source: str  # "file.yaml#2": the file and the document's index in it

    @property
    def kind(self) -> str:
        kind = self.body.get("kind")
        return kind if isinstance(kind, str) else ""

    @property
    def name(self) -> str:
        meta = self.body.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) else ""

    def describe(self) -> str:
        return f"{self.source} ({self.kind or '?'} {self.name or '?'})"


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, and every YAML/JSON file under directories, in a stable order."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in YAML_SUFFIXES))
        elif p.exists():
            out.append(p)
        else:
            raise DocumentError(f"{p}: no such file or directory")
    return out


def _yaml_key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return "null" if key is None else str(key)


def as_json(value: Any, where: str) -> Any:
    """A YAML value as JSON has it, as kubectl converts it: non-string keys become strings; NaN and
    infinities, which JSON cannot carry, are an error."""
    if isinstance(value, float) and not math.isfinite(value):
        raise DocumentError(f"{where}: {value} is not a JSON number (Kubernetes objects are JSON)")
    if isinstance(value, dict):
        return {k if isinstance(k, str) else _yaml_key(k): as_json(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, datetime.date | datetime.datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def parse_documents(text: str, source: str) -> list[Document]:
    """Every mapping document in a YAML stream; a ``kind: List`` is flattened into its items.

    PyYAML's safe loader (libyaml's when built in) stays the parser: the faster Rust/C++ loaders on PyPI
    follow YAML 1.2 and read ``violations: yes`` in gator suites, octal ``012`` or ``1e3`` differently
    (docs/performance.md, "Whole picture")."""
    try:
        raw = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as err:
        raise DocumentError(f"{source}: invalid YAML: {err}") from err
    return _documents(raw, source)


def parse_json_document(data: bytes | str, source: str) -> list[Document]:
    """A ``.json`` file: orjson (~10x faster than YAML), falling back to the YAML parser for anything orjson
    rejects (comments, NaN, integers beyond 64 bits, YAML in a .json file), so the result is never worse."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return parse_documents(text, source)
    return _documents([value], source, json_form=True)


def _documents(raw: list[Any], source: str, *, json_form: bool = False) -> list[Document]:
    """``json_form``: the values came from a JSON parser (string keys, finite numbers), so ``as_json`` has
    nothing to change and is skipped (it costs ~1 ms for a 13 KB Pod)."""
    docs: list[Document] = []
    for i, body in enumerate(raw):
        if body is None:
            continue
        if not isinstance(body, dict):
            raise DocumentError(f"{source}#{i}: a document must be a mapping, got {type(body).__name__}")
        if not json_form:
            body = as_json(body, f"{source}#{i}")
        if body.get("kind") == "List" and isinstance(body.get("items"), list):
            docs.extend(
                Document(item, f"{source}#{i}.items[{j}]")
                for j, item in enumerate(body["items"])
                if isinstance(item, dict)
            )
        else:
            docs.append(Document(body, f"{source}#{i}"))
    return docs


def read_file(path: Path) -> list[Document]:
    if path.suffix == ".json":
        try:
            data = path.read_bytes()
            data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DocumentError(f"{path}: cannot read: {err}") from err
        return parse_json_document(data, str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DocumentError(f"{path}: cannot read: {err}") from err
    return parse_documents(text, str(path))


def iter_documents(paths: Iterable[str | Path]) -> Iterator[Document]:
    for path in expand_paths(paths):
        yield from read_file(path)
