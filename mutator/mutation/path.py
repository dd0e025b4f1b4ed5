"""The Assign location grammar: Gatekeeper's own path language, not JSONPath.

    path    := segment ("." segment)*
    segment := field [ "[" key ":" keyval "]" ]
    field, key := IDENT | quoted string
    keyval  := IDENT | quoted string | INT | "*"

A location such as ``spec.containers[name: *].imagePullPolicy`` is tokenized, then parsed into a
:class:`Path` of :class:`Object` and :class:`List` nodes.  ``str(path)`` is the canonical form, which
parses back to the same nodes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "Glob",
    "List",
    "LocationError",
    "Object",
    "Path",
    "parse",
    "quote_if_needed",
]

INT64_MAX = 2**63 - 1


class LocationError(ValueError):
    """A location that does not parse. ``kind`` is Gatekeeper's error name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _unexpected(expected: str, got: Token) -> LocationError:
    return LocationError("ErrUnexpectedToken", f"unexpected token: expected {expected}, got: {got}")


# --------------------------------------------------------------------------- tokens


class T(Enum):
    ERROR = "ERROR"
    EOF = "EOF"
    IDENT = "IDENT"
    STRING = "STRING"
    INT = "INT"
    GLOB = "GLOB"
    SEPARATOR = "SEPARATOR"
    LBRACKET = "LBRACKET"
    RBRACKET = "RBRACKET"
    COLON = "COLON"


@dataclass(frozen=True, slots=True)
class Token:
    type: T
    literal: str

    def __str__(self) -> str:
        return f'{self.type.value}: "{self.literal}"'


_SINGLE = {".": T.SEPARATOR, "[": T.LBRACKET, "]": T.RBRACKET, ":": T.COLON, "*": T.GLOB}
_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_DIGITS = frozenset("0123456789")


def tokenize(text: str) -> list[Token]:
    """Split a location into tokens; the list always ends with EOF (or an ERROR token)."""
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in _SINGLE:
            out.append(Token(_SINGLE[ch], ch))
            i += 1
        elif ch in "\"'":
            quote, i = ch, i + 1
            buf: list[str] = []
            while i < n and text[i] != quote:
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(text[i])
                i += 1
            if i >= n:
                out.append(Token(T.ERROR, ch + "".join(buf)))
                return out
            out.append(Token(T.STRING, "".join(buf)))
            i += 1
        elif ch in _DIGITS:
            j = i
            while j < n and text[j] in _DIGITS:
                j += 1
            out.append(Token(T.INT, text[i:j]))
            i = j
        elif ch in _IDENT_CHARS:
            j = i
            while j < n and text[j] in _IDENT_CHARS:
                j += 1
            out.append(Token(T.IDENT, text[i:j]))
            i = j
        else:
            out.append(Token(T.ERROR, ch))
            return out
    out.append(Token(T.EOF, ""))
    return out


# --------------------------------------------------------------------------- nodes


class _GlobType:
    """The ``*`` key value: matches every list element."""

    _instance: _GlobType | None = None

    def __new__(cls) -> _GlobType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "Glob"


Glob = _GlobType()

KeyValue = str | int | _GlobType

_PLAIN_IDENT = re.compile(r"[A-Za-z_-][A-Za-z0-9_-]*\Z")


def quote_if_needed(text: str) -> str:
    """Render a field, key or key value so that it tokenizes back to the same string."""
    if _PLAIN_IDENT.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Object:
    """A map field: ``spec``."""

    reference: str

    def __str__(self) -> str:
        return quote_if_needed(self.reference)


@dataclass(frozen=True, slots=True)
class List:
    """A list selector: ``[name: foo]`` or ``[name: *]``; ``key_value`` is a str, an int or Glob."""

    key_field: str
    key_value: KeyValue

    @property
    def glob(self) -> bool:
        return self.key_value is Glob

    def matches(self, element: object) -> bool:
        """Whether a list element is selected by this node."""
        if not isinstance(element, dict):
            return False
        if self.key_value is Glob:
            return True
        if self.key_field not in element:
            return False
        return json_scalar_equal(element[self.key_field], self.key_value)

    def __str__(self) -> str:
        v = self.key_value
        if v is Glob:
            rendered = "*"
        elif isinstance(v, int):
            rendered = str(v)
        else:
            rendered = quote_if_needed(v)
        return f"[{quote_if_needed(self.key_field)}: {rendered}]"


Node = Object | List


def json_scalar_equal(a: object, b: object) -> bool:
    """Equality as JSON sees it: ``True`` is not ``1`` and ``"1"`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    return a == b


@dataclass(frozen=True, slots=True)
class Path:
    nodes: tuple[Node, ...]

    def __str__(self) -> str:
        out: list[str] = []
        for node in self.nodes:
            if isinstance(node, Object):
                if out:
                    out.append(".")
                out.append(str(node))
            else:
                out.append(str(node))
        return "".join(out)

    def __len__(self) -> int:
        return len(self.nodes)

    def is_prefix_of(self, other: Path) -> bool:
        return len(self.nodes) <= len(other.nodes) and other.nodes[: len(self.nodes)] == self.nodes


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0

    @property
    def cur(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        tok = self.tokens[self.pos]
        if self.pos < len(self.tokens) - 1:
            self.pos += 1
        return tok

    def parse(self) -> Path:
        nodes: list[Node] = []
        if self.cur.type is T.EOF:
            return Path(())
        while True:
            nodes.append(self._field())
            if self.cur.type is T.LBRACKET:
                nodes.append(self._list())
            tok = self.cur
            if tok.type is T.EOF:
                return Path(tuple(nodes))
            if tok.type is not T.SEPARATOR:
                raise _unexpected("separator or eof", tok)
            self.advance()
            if self.cur.type is T.EOF:
                raise LocationError("ErrTrailingSeparator", "trailing separators are forbidden")

    def _field(self) -> Object:
        tok = self.cur
        if tok.type in (T.IDENT, T.STRING):
            self.advance()
            return Object(tok.literal)
        raise _unexpected("field name or eof" if self.pos == 0 else "field name", tok)

    def _list(self) -> List:
        self.advance()  # [
        key = self.cur
        if key.type not in (T.IDENT, T.STRING):
            raise _unexpected("key field", key)
        self.advance()
        if self.cur.type is not T.COLON:
            raise _unexpected("colon", self.cur)
        self.advance()
        val = self.cur
        value: KeyValue
        if val.type is T.GLOB:
            value = Glob
        elif val.type in (T.IDENT, T.STRING):
            value = val.literal
        elif val.type is T.INT:
            number = int(val.literal, 10)
            if number > INT64_MAX:
                raise LocationError("ErrInvalidInteger", f"invalid integer: {val.literal} overflows a 64-bit integer")
            value = number
        else:
            raise _unexpected("key value or glob", val)
        self.advance()
        if self.cur.type is not T.RBRACKET:
            raise _unexpected("]", self.cur)
        self.advance()
        return List(key.literal, value)


def parse(location: str) -> Path:
    """Parse a location string; raises :class:`LocationError`."""
    return _Parser(location).parse()
