"""YAML/JSON documents from files and directories, with the place each came from for error messages."""

from __future__ import annotations

import datetime
import itertools
import math
import os
import re
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

try:  # RE2 (linear-time regexes): the fast path's gate, ~40 us for a 13 KB Pod where Python's re takes ~3 ms
    import re2
except ImportError:  # pragma: no cover
    re2 = None

try:  # yaml-rs (Rust, YAML 1.2): ~10x faster, used only where the gate below proves it reads as PyYAML does
    from yaml_rs import DuplicateKeyPolicy as _DuplicateKeyPolicy
    from yaml_rs._yaml_rs import _loads as _rs_loads
except ImportError:  # pragma: no cover - yaml-rs is a dependency, but the YAML path must not need it
    _rs_loads = None

# MUTATOR_FAST_YAML=0 turns the fast path off (to compare, or to rule it out when chasing a bug)
FAST_YAML = _rs_loads is not None and re2 is not None and os.environ.get("MUTATOR_FAST_YAML", "1") != "0"

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


# --- The fast YAML path ---------------------------------------------------------------------------------------
#
# yaml-rs follows YAML 1.2; PyYAML (and kubectl, through sigs.k8s.io/yaml) follow YAML 1.1. They differ on plain
# scalars (yes/no/on/off, 012, 1e3, 1_000, 1:30, timestamps, <<, =), on tags, on anchor names, and on what they
# reject. A document therefore goes to yaml-rs only when one regex over its text finds nothing that could be read
# differently (false alarms only cost speed: the document goes to PyYAML), and the result is then checked to be
# a mapping that orjson can write (string keys only, integers within 64 bits). Everything else is PyYAML's.
# tests/test_fast_yaml.py proves the two agree, value and type, on the corpus and on generated documents.


def _case_variants(*words: str) -> set[str]:
    return {"".join(c) for w in words for c in itertools.product(*[(ch.lower(), ch.upper()) for ch in w])}


# A scalar or an indicator may start after whitespace or a flow indicator, or after a ':' that follows a quoted
# scalar or a flow indicator ({"a":1} in flow context); it may end before whitespace, a flow indicator, ':' or
# '#' (supersets: a false alarm only costs speed). The text is searched with a space in front, so the first line
# counts too.
_START = r"""(?:[\s\[\]{},]|[\s"'\[\]{},]:)"""
_END = r"(?:[\s,\[\]{}:#]|$)"
# Read alike by PyYAML and yaml-rs, so allowed: true/True/TRUE, false/False/FALSE, null/Null/NULL, ~, decimal
# integers without a leading zero and within 64 bits, and such integers with a decimal fraction (1.5). Everything
# else that either of them reads as a bool, a null, a number or a date is risky:
_RISKY_WORDS = sorted(
    _case_variants("true", "false", "null", "yes", "no", "on", "off", "y", "n")
    - {"true", "True", "TRUE", "false", "False", "FALSE", "null", "Null", "NULL"},
    key=lambda w: (-len(w), w),
) + ["<<", "="]  # merge keys; the YAML 1.1 "value" type (an error in PyYAML)
_RISKY_NUMBERS = [
    r"[-+]?[0-9._]*[_eE][-+0-9._eE]*",  # 1_000, 1e3, 1.0e+3
    r"[-+]?\.[0-9][0-9._]*",  # .5
    r"[-+]?[0-9][0-9_]*\.",  # 1.
    r"[-+]?0[0-9_][0-9._]*",  # 012 (octal in YAML 1.1), 00.5
    r"[-+]?[0-9]{19,}(?:\.[0-9]*)?",  # beyond 64 bits
    r"[-+]?0[xXoObB][0-9a-fA-F_]*",  # 0x1F, 0o17, 0b101
    r"[-+]?[0-9][0-9_]*(?::[0-9_]+)+(?:\.[0-9_]*)?",  # sexagesimal 1:30
    r"[-+]?\.(?i:inf|nan)",
]
_RISKY_PATTERN = "|".join(
    [
        # tab, CR, control characters, NEL, line and paragraph separators, BOM, non-characters; backslash
        # (escapes in double-quoted scalars)
        r"[\x00-\x09\x0b-\x1f\x7f-\x9f\x{2028}\x{2029}\x{feff}\x{fffe}\x{ffff}\\]",
        r"\n(?:---|\.\.\.|%)",  # another document, a document end marker, a directive
        r"\n[^\n]{1000}",  # long lines: PyYAML allows simple keys of at most 1024 characters
        r"[\s\[{,]:",  # empty keys
        # libyaml rejects a plain scalar followed by ":" and a flow indicator in flow context ({a:}, [a:[b]]);
        # yaml-rs reads a mapping. Declined: ":" before ",?]}" anywhere, ":[" and ":{" after a flow collection
        # opened on the same line, and lines that end inside a flow collection (after "[", "{" or ",")
        r":[,?\]}]",
        r"[\s\[\]{},][\[{][^\n]*[^\s\"'\]}]:[\[{]",
        r"[\[{,][ ]*(?:\n|$)",
        _START
        + "(?:"
        + "|".join(
            [
                # tags, explicit keys, reserved indicators, block scalars (yaml-rs reads an empty "|" as "\n"),
                # empty flow entries
                r"[!?@`%|>,]",
                r"[&*](?:[^A-Za-z0-9_\-]|[A-Za-z0-9_-]+[^A-Za-z0-9_\- \n]|$)",  # anchors, aliases: simple names
                r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}",  # timestamps
                "(?:" + "|".join(_RISKY_NUMBERS + _RISKY_WORDS) + ")" + _END,
            ]
        )
        + ")",
    ]
)
_risky_search = re2.compile(_RISKY_PATTERN).search if re2 is not None else None


_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _node_end(indent: int) -> re.Pattern[str]:
    """The first line (not blank, not a comment) indented less than ``indent``, or as much without a "-"."""
    pattern = _node_ends.get(indent)
    if pattern is None:
        less = f"| {{0,{indent - 1}}}[^ \\n#]" if indent else ""
        pattern = _node_ends[indent] = re.compile(rf"\n(?: {{{indent}}}[^ \n#-]{less})")
    return pattern


_node_ends: dict[int, re.Pattern[str]] = {}


def _anchors_differ(text: str) -> bool:
    """Whether anchors may be read differently: an anchor named twice (an error in PyYAML, allowed by yaml-rs),
    or an alias that may sit inside the node its anchor names (``a: &x [1, *x]``): PyYAML builds a recursive
    object (and ``as_json`` fails), yaml-rs reads that alias as null. The anchored node is taken to run from the
    anchor to the first later line indented less than the anchor's line (or as much, not starting with "-");
    an alias on the anchor's line, or after a flow collection that may not close on it, counts as inside (false
    alarms only cost speed)."""
    ends: dict[str, int] = {}  # anchor name -> where its node ends at the latest
    marks = []
    for mark in "&*":
        at = text.find(mark)
        while at >= 0:
            marks.append(at)
            at = text.find(mark, at + 1)
    for at in sorted(marks):
        if at and text[at - 1] not in " \n[{,":
            continue  # inside a scalar (the gate declined tabs)
        m = _NAME.match(text, at + 1)
        if m is None:
            continue
        name = m.group()
        if text[at] == "&":
            if name in ends:
                return True  # "found duplicate anchor" in PyYAML
            line_start = text.rfind("\n", 0, at) + 1
            line_end = text.find("\n", at)
            if line_end < 0:
                line_end = len(text)
            rest = text[at:line_end]
            if ("[" in rest or "{" in rest) and (
                "'" in rest or '"' in rest or rest.count("[") + rest.count("{") != rest.count("]") + rest.count("}")
            ):
                ends[name] = len(text)  # a flow collection that may go on over lines, whatever their indent
                continue
            line = text[line_start:line_end]
            end = _node_end(len(line) - len(line.lstrip(" "))).search(text, line_end)
            ends[name] = end.start() if end else len(text)
        elif at < ends.get(name, -1):
            return True
    return False


def fast_document(text: str) -> dict[str, Any] | None:
    """One YAML document (no ``---`` inside but at its start) read by yaml-rs, in JSON form (as ``as_json`` would
    give it), or None when the gate cannot prove that yaml-rs reads it exactly as PyYAML does."""
    if _risky_search is None or _risky_search(" " + text) or (("&" in text or "*" in text) and _anchors_differ(text)):
        return None
    try:
        value = _rs_loads(text, parse_datetime=False, duplicate_key_policy=_DuplicateKeyPolicy.Error)
    except Exception:  # anything yaml-rs rejects (duplicate keys included) is PyYAML's to judge
        return None
    if type(value) is not dict:
        return None
    try:  # string keys only (no tuple, bool, number or None key), integers within 64 bits
        orjson.dumps(value)
    except TypeError:
        return None
    return value


def split_stream(blocks: Iterable[str]) -> Iterator[str]:
    """The documents of a YAML stream (given in blocks of text) as texts, split before each ``---`` line (a
    document start wherever it appears in valid YAML), and no more after a ``%`` directive (the rest of the
    stream then stays in one piece). A piece may hold no document (comments before the first ``---``) or, after a
    NEL or LS line break, more than one: each piece is parsed on its own and its documents counted, so the
    numbering is the stream's."""
    pending = ""
    whole = False
    for block in blocks:
        pending += block
        if whole:
            continue
        directive = 0 if pending.startswith("%") else pending.find("\n%")
        whole = directive >= 0
        end = directive if whole else len(pending)
        cut = 0
        at = pending.find("\n---", 1)
        while 0 <= at < end and at + 5 <= len(pending):  # the character after "---" is known
            if pending[at + 4] in " \t\n":
                yield pending[cut : at + 1]
                cut = at + 1
            at = pending.find("\n---", at + 1)
        pending = pending[cut:]
    if pending:
        yield pending


def parse_piece(piece: str, source: str, start: int) -> tuple[int, list[Document]]:
    """One piece of ``split_stream``: how many documents of the stream it holds, and its mapping documents
    (numbered from ``start``). Raises yaml.YAMLError or DocumentError."""
    body = fast_document(piece) if FAST_YAML else None
    if body is not None:
        return 1, _documents([body], source, json_form=True, start=start)
    raw = list(yaml.load_all(piece, Loader=_Loader))
    return len(raw), _documents(raw, source, start=start)


def _stream_documents(pieces: Iterable[str], source: str) -> Iterator[Document]:
    """Documents piece by piece; raises (yaml.YAMLError, DocumentError) on the first problem, and the caller
    then reads the whole text with PyYAML for the exact outcome (``parse_documents`` does)."""
    index = 0
    for piece in pieces:
        count, docs = parse_piece(piece, source, index)
        yield from docs
        index += count


def parse_documents(text: str, source: str) -> list[Document]:
    """Every mapping document in a YAML stream; a ``kind: List`` is flattened into its items.

    Each document is read on its own, by yaml-rs where the gate above proves it exact, else by PyYAML's safe
    loader (libyaml's when built in). If any document fails, the whole text is read again by PyYAML alone, so
    a file that does not parse gives the very error (and line) it always gave."""
    try:
        return list(_stream_documents(split_stream((text,)), source))
    except Exception:  # noqa: BLE001 - whatever failed (also RecursionError, IndexError from PyYAML): the
        return parse_documents_pyyaml(text, source)  # whole text again, for the very outcome it always had


def parse_documents_pyyaml(text: str, source: str) -> list[Document]:
    """The reference reading: the whole stream with PyYAML, then ``as_json``."""
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


def _documents(raw: list[Any], source: str, *, json_form: bool = False, start: int = 0) -> list[Document]:
    """``json_form``: the values came from a JSON parser (string keys, finite numbers), so ``as_json`` has
    nothing to change and is skipped (it costs ~1 ms for a 13 KB Pod). ``start``: the index of raw[0] in its
    stream."""
    docs: list[Document] = []
    for i, body in enumerate(raw, start):
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


class StreamInterrupted(Exception):
    """``stream_file`` met a problem; ``read_file`` on the same path gives the exact outcome (documents or the
    DocumentError) that the whole file has."""


def stream_file(path: Path) -> Iterator[Document]:
    """The documents of one file, read and parsed one at a time (memory: one document, not the file). Raises
    StreamInterrupted, possibly after yielding some documents, where ``read_file`` would fail or read the file
    differently (see ``parse_documents``)."""
    if path.suffix == ".json":
        try:
            yield from read_file(path)
        except DocumentError as err:
            raise StreamInterrupted(str(err)) from err
        return
    try:
        with path.open(encoding="utf-8") as f:
            yield from _stream_documents(split_stream(iter(lambda: f.read(1 << 20), "")), str(path))
    except Exception as err:  # noqa: BLE001 - read_file then gives the exact outcome
        raise StreamInterrupted(str(err)) from err


# Anything that can make a document a policy (mutators, templates and constraints have "gatekeeper.sh" in their
# apiVersion; Namespaces are kept as policy data): YAML cannot spell these words without writing them, short of
# escapes in double-quoted scalars (a backslash).
def _policy_hint(data: bytes) -> bool:
    if b"gatekeeper" in data or b"\\" in data:
        return True
    at = data.find(b"Namespace")
    while at >= 0:  # "Namespace" as a word (not shareProcessNamespace)
        if at == 0 or not (data[at - 1 : at].isalnum() or data[at - 1 : at] == b"_"):
            return True
        at = data.find(b"Namespace", at + 1)
    return False


def may_hold_policies(path: Path, block: int = 1 << 20) -> bool:
    """Whether a file may hold a policy document (false alarms only cost speed); read in blocks, no parsing.
    An unreadable file says True: ``read_file`` then reports it."""
    try:
        with path.open("rb") as f:
            tail = b""
            while data := f.read(block):
                if _policy_hint(tail + data):
                    return True
                tail = data[-16:]
    except OSError:
        return True
    return False
