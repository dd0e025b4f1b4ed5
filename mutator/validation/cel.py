"""CEL engine for ConstraintTemplate ``code`` entries with ``engine: K8sNativeValidation``.

Mirrors Gatekeeper's ``pkg/drivers/k8scel``, which runs Kubernetes' ValidatingAdmissionPolicy evaluator:

* CEL variables ``object`` (null on DELETE), ``oldObject``, ``params`` (the constraint, as Gatekeeper passes it
  as the policy's param object), ``request`` (the admission request) and ``namespaceObject``;
* ``variables.<name>`` for each declared ``source.variables`` entry, plus the ones Gatekeeper adds:
  ``variables.anyObject`` (``oldObject`` on a DELETE whose ``object`` is null, else ``object``) and
  ``variables.params`` (the constraint's ``spec.parameters``);
* ``source.matchConditions``: any condition that is false means no violations; errors, if none is false,
  give one violation with the error;
* each validation whose expression is not ``true`` is a violation whose message is the ``messageExpression``
  result (trimmed; ignored when empty, not a string, multi-line or over 5 KiB), else ``message``, else
  ``failed expression: <expression>``; an expression that fails to evaluate is a violation
  ``expression '<expression>' resulted in error: <error>``.

The library is ``cel-expr-python`` (Google's C++ CEL runtime): expressions are parsed and type-checked once,
at compile time, with ``object``/``params``/... declared as ``dyn``. The Kubernetes extension libraries are
provided: cel-go's strings (version 2), optional types, ``cel.bind``, and, written here in Python, Kubernetes'
lists (``isSorted``, ``sum``, ``min``, ``max``), regex (``find``, ``findAll``), sets (``sets.contains``,
``sets.equivalent``, ``sets.intersects``), quantity, URL, IP and CIDR libraries. Quantity, URL, IP and CIDR
values are maps with a single ``@kubernetes.<Type>`` key (the CEL binding cannot carry opaque values).

Variables are evaluated on demand, at most once per ``evaluate`` call, in declaration order; a variable that
fails to evaluate makes every expression that reads it fail with the variable's error.
"""

from __future__ import annotations

import decimal
import ipaddress
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cel_expr_python import cel as _cel
from cel_expr_python.ext import ext_bindings, ext_optional, ext_strings

__all__ = ["CelCompileError", "CelProgram", "CelViolation"]

# Kubernetes' limit on a messageExpression result (celconfig.MaxEvaluatedMessageExpressionSizeBytes).
MAX_MESSAGE_BYTES = 5 * 1024

_TOP_LEVEL = ("object", "oldObject", "params", "request", "namespaceObject")
_VARIABLES = "variables"
# Variables Gatekeeper declares before the template's own.
_ANY_OBJECT = "anyObject"
_PARAMS = "params"
_BUILTIN_VARIABLES = (_ANY_OBJECT, _PARAMS)
# Keys of the admission request that Kubernetes' CEL ``request`` does not carry (they are separate variables).
_NOT_IN_REQUEST = frozenset({"object", "oldObject", "namespaceObject"})

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class CelCompileError(ValueError):
    """A K8sNativeValidation source that cannot be compiled; the message names the entry and the expression."""


@dataclass(frozen=True)
class CelViolation:
    message: str


# --------------------------------------------------------------------------------------------------------------
# Static references: which top-level names and which ``variables.<name>`` an expression reads.
# --------------------------------------------------------------------------------------------------------------

_LITERAL_RE = re.compile(
    r"""(?:[rR][bB]?|[bB][rR])(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"[^"\n\r]*"|'[^'\n\r]*')"""
    r"""|[bB]?(?:\"\"\"(?:\\[\s\S]|[^\\])*?\"\"\"|'''(?:\\[\s\S]|[^\\])*?'''|"(?:\\.|[^"\\\n\r])*"|'(?:\\.|[^'\\\n\r])*')"""
    r"""|//[^\n]*"""
)
_TOP_LEVEL_RE = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(_TOP_LEVEL) + r")(?![A-Za-z0-9_])")
_VARIABLES_RE = re.compile(r"(?<![A-Za-z0-9_])variables(?![A-Za-z0-9_])")
_SELECT_RE = re.compile(r"\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class _Refs:
    top: frozenset[str]  # top-level names other than ``variables``
    variables: frozenset[str]  # names read as ``variables.<name>``
    all_variables: bool  # ``variables`` is used other than as ``variables.<name>``


def _is_field(code: str, start: int) -> bool:
    """Whether the identifier at ``start`` is a field (``x.name``), not a variable (``name`` or ``.name``)."""
    before = code[:start].rstrip()
    if not before.endswith("."):
        return False
    # A leading dot (``.name``) is the root-scoped identifier; after an operand it is a field selection.
    prev = before[:-1].rstrip()
    return bool(prev) and (prev[-1].isalnum() or prev[-1] in "_)]}\"'")


def _references(expression: str) -> _Refs:
    """Over-approximates the names an expression reads (string literals and comments are ignored)."""
    code = _LITERAL_RE.sub('""', expression)
    top = frozenset(m.group(1) for m in _TOP_LEVEL_RE.finditer(code) if not _is_field(code, m.start()))
    names: set[str] = set()
    all_variables = False
    for match in _VARIABLES_RE.finditer(code):
        if _is_field(code, match.start()):
            continue
        select = _SELECT_RE.match(code, match.end())
        if select is None:
            all_variables = True
        else:
            names.add(select.group(1))
    return _Refs(top, frozenset(names), all_variables)


# --------------------------------------------------------------------------------------------------------------
# Kubernetes CEL libraries not in cel-expr-python, as Python functions.
# --------------------------------------------------------------------------------------------------------------

_QUANTITY = "@kubernetes.Quantity"
_URL = "@kubernetes.URL"
_IP = "@kubernetes.IP"
_CIDR = "@kubernetes.CIDR"

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_QUANTITY_RE = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([eE][+-]?[0-9]+|[A-Za-z]*)\Z")
_QUANTITY_SUFFIX = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_DECIMAL_CONTEXT = decimal.Context(prec=80)


def _parse_quantity(text: str) -> Decimal:
    match = _QUANTITY_RE.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {text!r}"
        )
    number, suffix = match.groups()
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        factor = _DECIMAL_CONTEXT.power(Decimal(10), int(suffix[1:]))
    elif suffix in _QUANTITY_SUFFIX:
        factor = _QUANTITY_SUFFIX[suffix]
    else:
        raise ValueError(f"unable to parse quantity's suffix: {text!r}")
    return _DECIMAL_CONTEXT.multiply(Decimal(number), factor)


def _quantity_value(value: Decimal) -> dict[str, str]:
    text = format(value.normalize(_DECIMAL_CONTEXT), "f")
    return {_QUANTITY: "0" if text in ("-0", "0") else text}


def _tagged(value: Any, tag: str, function: str) -> str:
    if isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get(tag), str):
        return value[tag]
    raise TypeError(f"no such overload: {function} applies to {tag[1:]} values")


def _as_quantity(value: Any, function: str) -> Decimal:
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return Decimal(_tagged(value, _QUANTITY, function))


def _quantity(text: str) -> dict[str, str]:
    return _quantity_value(_parse_quantity(text))


def _is_quantity(text: str) -> bool:
    try:
        _parse_quantity(text)
    except (ValueError, decimal.DecimalException):
        return False
    return True


def _quantity_int(value: Any, function: str) -> int | None:
    number = _as_quantity(value, function)
    if number != number.to_integral_value() or not _INT64_MIN <= number <= _INT64_MAX:
        return None
    return int(number)


def _as_integer(value: Any) -> int:
    result = _quantity_int(value, "asInteger")
    if result is None:
        raise ValueError("cannot convert value to integer")
    return result


def _compare(a: Any, b: Any, function: str) -> int:
    x, y = _as_quantity(a, function), _as_quantity(b, function)
    return (x > y) - (x < y)


def _parse_url(text: str) -> urllib.parse.SplitResult:
    if not isinstance(text, str) or not text or any(c.isspace() for c in text):
        raise ValueError(f"URL parse error during conversion from string: {text!r}")
    parts = urllib.parse.urlsplit(text)
    if not (parts.scheme or text.startswith("/")):
        raise ValueError(f"URL parse error during conversion from string: {text!r}: not absolute")
    parts.port  # noqa: B018 - raises ValueError on an invalid port
    return parts


def _url(text: str) -> dict[str, str]:
    _parse_url(text)
    return {_URL: text}


def _is_url(text: str) -> bool:
    try:
        _parse_url(text)
    except ValueError:
        return False
    return True


def _url_parts(value: Any, function: str) -> urllib.parse.SplitResult:
    return urllib.parse.urlsplit(_tagged(value, _URL, function))


def _url_host(value: Any) -> str:
    return _url_parts(value, "getHost").netloc.rpartition("@")[2]


def _url_hostname(value: Any) -> str:
    host = _url_host(value)
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.partition(":")[0]


def _url_port(value: Any) -> str:
    host = _url_host(value)
    if host.startswith("["):
        host = host[host.find("]") + 1 :]
    return host.partition(":")[2]


def _url_query(value: Any) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(_url_parts(value, "getQuery").query, keep_blank_values=True)


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(text, str) or "%" in text:
        raise ValueError(f"IP Address {text!r} parse error during conversion from string")
    try:
        address = ipaddress.ip_address(text)
    except ValueError as err:
        raise ValueError(f"IP Address {text!r} parse error during conversion from string: {err}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        raise ValueError(f"IPv4-mapped IPv6 address {text!r} is not allowed")
    if isinstance(address, ipaddress.IPv4Address) and any(len(p) > 1 and p[0] == "0" for p in text.split(".")):
        raise ValueError(f"IP Address {text!r} parse error during conversion from string: leading zeros")
    return address


def _parse_cidr(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if not isinstance(text, str) or "/" not in text:
        raise ValueError(f"network address parse error during conversion from string: {text!r}")
    address, _, prefix = text.partition("/")
    _parse_ip(address)
    if not prefix.isdigit():
        raise ValueError(f"network address parse error during conversion from string: {text!r}")
    try:
        return ipaddress.ip_interface(text)
    except ValueError as err:
        raise ValueError(f"network address parse error during conversion from string: {err}") from None


def _ip(text: str) -> dict[str, str]:
    return {_IP: str(_parse_ip(text))}


def _cidr(text: str) -> dict[str, str]:
    return {_CIDR: str(_parse_cidr(text))}


def _succeeds(parse: Callable[[str], Any]) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        try:
            parse(text)
        except ValueError:
            return False
        return True

    return check


def _ip_of(value: Any, function: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(value, str):
        return _parse_ip(value)
    return ipaddress.ip_address(_tagged(value, _IP, function))


def _cidr_of(value: Any, function: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if isinstance(value, str):
        return _parse_cidr(value)
    return ipaddress.ip_interface(_tagged(value, _CIDR, function))


def _is_global_unicast(value: Any) -> bool:
    # Go's net.IP.IsGlobalUnicast: not unspecified, loopback, multicast, link-local or the IPv4 broadcast address.
    address = _ip_of(value, "isGlobalUnicast")
    return not (
        address.is_unspecified
        or address.is_loopback
        or address.is_multicast
        or address.is_link_local
        or (isinstance(address, ipaddress.IPv4Address) and int(address) == 0xFFFFFFFF)
    )


def _is_link_local_multicast(value: Any) -> bool:
    address = _ip_of(value, "isLinkLocalMulticast")
    if isinstance(address, ipaddress.IPv4Address):
        return address in ipaddress.IPv4Network("224.0.0.0/24")
    return address in ipaddress.IPv6Network("ff02::/16")


def _contains_ip(cidr: Any, ip: Any) -> bool:
    network = _cidr_of(cidr, "containsIP").network
    address = _ip_of(ip, "containsIP")
    return address.version == network.version and address in network


def _contains_cidr(cidr: Any, other: Any) -> bool:
    network = _cidr_of(cidr, "containsCIDR").network
    inner = _cidr_of(other, "containsCIDR").network
    return inner.version == network.version and inner.subnet_of(network)  # type: ignore[arg-type]


def _string_of(value: Any) -> str:
    if isinstance(value, Mapping) and len(value) == 1:
        for tag in (_IP, _CIDR):
            if isinstance(value.get(tag), str):
                return value[tag]
    raise TypeError("no such overload: string applies to ip and cidr values, and to CEL's primitive types")


def _checked_list(value: Any, function: str) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"no such overload: {function}")
    return value


def _min(values: list[Any]) -> Any:
    if not values:
        raise ValueError("min called on empty list")
    return min(values)


def _max(values: list[Any]) -> Any:
    if not values:
        raise ValueError("max called on empty list")
    return max(values)


def _sum(values: list[Any]) -> Any:
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        raise TypeError("no such overload: sum applies to lists of int, uint or double")
    return sum(values) if values else 0


def _is_sorted(values: list[Any]) -> bool:
    return all(a <= b for a, b in zip(values, values[1:], strict=False))


def _find(text: str, pattern: str) -> str:
    match = re.search(pattern, text)
    return match.group(0) if match else ""


def _find_all(text: str, pattern: str, limit: int = -1) -> list[str]:
    if limit == 0:
        return []
    found = [m.group(0) for m in re.finditer(pattern, text)]
    return found if limit < 0 else found[:limit]


def _k8s_extension() -> Any:
    t = _cel.Type
    dyn, string, boolean, integer = t.DYN, t.STRING, t.BOOL, t.INT
    lst = t.List(t.DYN)
    obj = t.Map(t.STRING, t.DYN)

    def member(name: str, result: Any, params: Sequence[Any], impl: Callable[..., Any]) -> Any:
        types = "_".join(_type_id(p) for p in params)
        return _cel.FunctionDecl(name, [_cel.Overload(f"{name}_{types}", result, list(params), True, impl)])

    def map_or(name: str, result: Any, other: tuple[str, Any], impl: Callable[..., Any]) -> Any:
        """A member function on a Kubernetes value (a map here) taking another such value or a plain one."""
        return _cel.FunctionDecl(
            name,
            [
                _cel.Overload(f"{name}_map_{suffix}", result, [obj, arg], True, impl)
                for suffix, arg in (("map", obj), other)
            ],
        )

    def function(name: str, overloads: Iterable[tuple[Any, Sequence[Any], Callable[..., Any]]]) -> Any:
        return _cel.FunctionDecl(
            name,
            [
                _cel.Overload(f"{name}_{'_'.join(_type_id(p) for p in params)}", result, list(params), False, impl)
                for result, params, impl in overloads
            ],
        )

    decls = [
        # Kubernetes' lists library (indexOf/lastIndexOf on lists clash with the strings extension).
        member("isSorted", boolean, [lst], lambda v: _is_sorted(_checked_list(v, "isSorted"))),
        member("sum", dyn, [lst], lambda v: _sum(_checked_list(v, "sum"))),
        member("min", dyn, [lst], lambda v: _min(_checked_list(v, "min"))),
        member("max", dyn, [lst], lambda v: _max(_checked_list(v, "max"))),
        # Kubernetes' regex library.
        member("find", string, [string, string], _find),
        _cel.FunctionDecl(
            "findAll",
            [
                _cel.Overload("findAll_string_string", lst, [string, string], True, _find_all),
                _cel.Overload("findAll_string_string_int", lst, [string, string, integer], True, _find_all),
            ],
        ),
        # cel-go's sets extension.
        function("sets.contains", [(boolean, [lst, lst], lambda a, b: all(x in a for x in b))]),
        function(
            "sets.equivalent", [(boolean, [lst, lst], lambda a, b: all(x in a for x in b) and all(x in b for x in a))]
        ),
        function("sets.intersects", [(boolean, [lst, lst], lambda a, b: any(x in a for x in b))]),
        # Kubernetes' quantity library.
        function("quantity", [(obj, [string], _quantity)]),
        function("isQuantity", [(boolean, [string], _is_quantity)]),
        member("sign", integer, [obj], lambda v: _compare(v, 0, "sign")),
        member("isInteger", boolean, [obj], lambda v: _quantity_int(v, "isInteger") is not None),
        member("asInteger", integer, [obj], _as_integer),
        member("asApproximateFloat", t.DOUBLE, [obj], lambda v: float(_as_quantity(v, "asApproximateFloat"))),
        member("isGreaterThan", boolean, [obj, obj], lambda a, b: _compare(a, b, "isGreaterThan") > 0),
        member("isLessThan", boolean, [obj, obj], lambda a, b: _compare(a, b, "isLessThan") < 0),
        member("compareTo", integer, [obj, obj], lambda a, b: _compare(a, b, "compareTo")),
        map_or("add", obj, ("int", integer), _add_quantity),
        map_or("sub", obj, ("int", integer), _sub_quantity),
        # Kubernetes' URL library.
        function("url", [(obj, [string], _url)]),
        function("isURL", [(boolean, [string], _is_url)]),
        member("getScheme", string, [obj], lambda v: _url_parts(v, "getScheme").scheme),
        member("getHost", string, [obj], _url_host),
        member("getHostname", string, [obj], _url_hostname),
        member("getPort", string, [obj], _url_port),
        member("getEscapedPath", string, [obj], lambda v: _url_parts(v, "getEscapedPath").path),
        member("getQuery", t.Map(t.STRING, lst), [obj], _url_query),
        # Kubernetes' IP and CIDR libraries.
        function("ip", [(obj, [string], _ip)]),
        function("isIP", [(boolean, [string], _succeeds(_parse_ip))]),
        function("ip.isCanonical", [(boolean, [string], lambda s: str(_parse_ip(s)) == s)]),
        function("cidr", [(obj, [string], _cidr)]),
        function("isCIDR", [(boolean, [string], _succeeds(_parse_cidr))]),
        function("string", [(string, [obj], _string_of)]),
        member("family", integer, [obj], lambda v: _ip_of(v, "family").version),
        member("isUnspecified", boolean, [obj], lambda v: _ip_of(v, "isUnspecified").is_unspecified),
        member("isLoopback", boolean, [obj], lambda v: _ip_of(v, "isLoopback").is_loopback),
        member("isLinkLocalMulticast", boolean, [obj], _is_link_local_multicast),
        member("isLinkLocalUnicast", boolean, [obj], lambda v: _ip_of(v, "isLinkLocalUnicast").is_link_local),
        member("isGlobalUnicast", boolean, [obj], _is_global_unicast),
        map_or("containsIP", boolean, ("string", string), _contains_ip),
        map_or("containsCIDR", boolean, ("string", string), _contains_cidr),
        member("ip", obj, [obj], lambda v: {_IP: str(_cidr_of(v, "ip").ip)}),
        member("masked", obj, [obj], lambda v: {_CIDR: str(_cidr_of(v, "masked").network)}),
        member("prefixLength", integer, [obj], lambda v: _cidr_of(v, "prefixLength").network.prefixlen),
    ]
    # The binding turns a Python exception raised by these functions into a CEL error carrying its message.
    return _cel.CelExtension("kubernetes", decls)


def _add_quantity(a: Any, b: Any) -> dict[str, str]:
    return _quantity_value(_DECIMAL_CONTEXT.add(_as_quantity(a, "add"), _as_quantity(b, "add")))


def _sub_quantity(a: Any, b: Any) -> dict[str, str]:
    return _quantity_value(_DECIMAL_CONTEXT.subtract(_as_quantity(a, "sub"), _as_quantity(b, "sub")))


def _type_id(t: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "_", t.name().lower()).strip("_")


# --------------------------------------------------------------------------------------------------------------
# Environment, compilation and evaluation.
# --------------------------------------------------------------------------------------------------------------

_ENV: Any = None
_ENV_LOCK = threading.Lock()


def _env() -> Any:
    global _ENV
    if _ENV is None:
        with _ENV_LOCK:
            if _ENV is None:
                dyn = _cel.Type.DYN
                _ENV = _cel.NewEnv(
                    variables={name: dyn for name in (*_TOP_LEVEL, _VARIABLES)},
                    extensions=[
                        ext_strings.ExtStrings(version=2),
                        ext_optional.ExtOptional(),
                        ext_bindings.ExtBindings(),
                        _k8s_extension(),
                    ],
                )
    return _ENV


_STATUS_PREFIX_RE = re.compile(r"^(?:[A-Z_]+: )+")
_STATUS_SUFFIX_RE = re.compile(r"\s*\[[A-Z_]+\]\s*$")
_NO_KEY_RE = re.compile(r'Key not found in map : "((?:[^"\\]|\\.)*)"\Z')


def _clean_error(text: str) -> str:
    """cel-expr-python's error text without the absl status code, in cel-go's words where they differ."""
    text = _STATUS_SUFFIX_RE.sub("", _STATUS_PREFIX_RE.sub("", str(text).strip()))
    missing = _NO_KEY_RE.match(text)
    if missing:
        return f"no such key: {missing.group(1)}"
    if text == "Applying SELECT to non-message type":
        return "cannot select a field of a null or non-map value"
    return re.sub(r"No matching overloads found ?:", "no such overload:", text)


def _compile(expression: Any, what: str, want: Any, want_name: str) -> tuple[Any, _Refs]:
    if not isinstance(expression, str) or not expression.strip():
        raise CelCompileError(f"{what}: expression must be a non-empty string")
    try:
        program = _env().compile(expression)
    except Exception as err:  # the binding raises RuntimeError with the checker's message
        raise CelCompileError(
            f"{what}: compilation failed for expression {expression!r}: {_clean_error(err)}"
        ) from None
    result = program.return_type()
    if want is not None and result != want and result != _cel.Type.DYN:
        raise CelCompileError(
            f"{what}: expression {expression!r} must evaluate to {want_name}, not {result.name().lower()}"
        )
    return program, _references(expression)


@dataclass(frozen=True)
class _Expr:
    source: str
    program: Any
    refs: _Refs
    needs: tuple[int, ...]  # indexes of the declared variables to evaluate first, in declaration order


@dataclass(frozen=True)
class _Variable:
    name: str
    expr: _Expr


@dataclass(frozen=True)
class _Validation:
    expr: _Expr
    message: str
    message_expr: _Expr | None


@dataclass(frozen=True)
class _MatchCondition:
    name: str
    expr: _Expr


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


class _Error(Exception):
    pass


_CONVERSION_ERROR = "Non-CEL value type"


def _plain(value: Any) -> Any:
    """A JSON-like copy of ``value`` the CEL binding accepts (tuples, other mappings, odd scalars)."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return str(value)


class CelProgram:
    """A compiled K8sNativeValidation ``source``: variables, matchConditions and validations."""

    def __init__(
        self,
        variables: tuple[_Variable, ...],
        match_conditions: tuple[_MatchCondition, ...],
        validations: tuple[_Validation, ...],
    ) -> None:
        self._variables = variables
        self._match_conditions = match_conditions
        self._validations = validations

    @classmethod
    def compile(cls, source: Mapping[str, Any]) -> CelProgram:
        """Parse and type-check every expression of a code entry's ``source``; raises CelCompileError."""
        if not isinstance(source, Mapping):
            raise CelCompileError("source must be an object")
        variables = _list_field(source, "variables")
        validations = _list_field(source, "validations")
        conditions = _list_field(source, "matchConditions")
        if not validations:
            raise CelCompileError("validations: at least one validation is required")

        declared: dict[str, int] = {}
        compiled_vars: list[_Variable] = []
        for i, entry in enumerate(variables):
            what = f"variables[{i}]"
            if not isinstance(entry, Mapping):
                raise CelCompileError(f"{what}: must be an object with name and expression")
            name = entry.get("name")
            if not isinstance(name, str) or not _IDENT_RE.match(name):
                raise CelCompileError(f"{what}: name {name!r} is not a valid CEL identifier")
            if name in _BUILTIN_VARIABLES:
                raise CelCompileError(f"{what}: name {name!r} is reserved: Gatekeeper declares variables.{name}")
            if name in declared:
                raise CelCompileError(f"{what}: duplicate variable name {name!r}")
            what = f"{what} ({name})"
            expr = _make_expr(entry.get("expression"), what, None, "any type", declared, compiled_vars)
            declared[name] = i
            compiled_vars.append(_Variable(name, expr))

        compiled_conditions: list[_MatchCondition] = []
        names: set[str] = set()
        for i, entry in enumerate(conditions):
            what = f"matchConditions[{i}]"
            if not isinstance(entry, Mapping):
                raise CelCompileError(f"{what}: must be an object with name and expression")
            name = entry.get("name", "")
            if not isinstance(name, str) or not name:
                raise CelCompileError(f"{what}: name is required")
            if name in names:
                raise CelCompileError(f"{what}: duplicate matchCondition name {name!r}")
            names.add(name)
            expr = _make_expr(
                entry.get("expression"), f"{what} ({name})", _cel.Type.BOOL, "bool", declared, compiled_vars
            )
            compiled_conditions.append(_MatchCondition(name, expr))

        compiled_validations: list[_Validation] = []
        for i, entry in enumerate(validations):
            what = f"validations[{i}]"
            if not isinstance(entry, Mapping):
                raise CelCompileError(f"{what}: must be an object with expression")
            expr = _make_expr(entry.get("expression"), what, _cel.Type.BOOL, "bool", declared, compiled_vars)
            message = entry.get("message") or ""
            if not isinstance(message, str):
                raise CelCompileError(f"{what}.message: must be a string")
            message_expr = None
            if entry.get("messageExpression") not in (None, ""):
                message_expr = _make_expr(
                    entry["messageExpression"],
                    f"{what}.messageExpression",
                    _cel.Type.STRING,
                    "string",
                    declared,
                    compiled_vars,
                )
            compiled_validations.append(_Validation(expr, message, message_expr))
        return cls(tuple(compiled_vars), tuple(compiled_conditions), tuple(compiled_validations))

    def evaluate(
        self,
        *,
        object: Any,  # noqa: A002 - the CEL variable's name
        old_object: Any,
        params: Any,
        request: Mapping[str, Any],
        namespace_object: Any,
        constraint: Mapping[str, Any] | None = None,
    ) -> list[CelViolation]:
        """Violations for one admission request; never raises for evaluation errors.

        ``params`` is the constraint's ``spec.parameters`` (``variables.params``). The CEL variable ``params`` is
        the constraint itself, as in Gatekeeper: pass ``constraint`` for that, else it is
        ``{"spec": {"parameters": params}}``.
        """
        if constraint is None:
            constraint = {"spec": {"parameters": params}} if params is not None else {"spec": {}}
        if isinstance(request, Mapping):
            request_value: Any = {k: v for k, v in request.items() if k not in _NOT_IN_REQUEST}
        else:
            request_value = request
        operation = request.get("operation") if isinstance(request, Mapping) else None
        any_object = old_object if operation == "DELETE" and object is None else object
        state = _State(
            self._variables,
            {
                "object": object,
                "oldObject": old_object,
                "params": constraint,
                "request": request_value,
                "namespaceObject": namespace_object,
            },
            # cel-go reports has(null.field) as false where the C++ runtime errors: {} behaves like cel-go's null.
            {_ANY_OBJECT: any_object, _PARAMS: params if params is not None else {}},
        )

        if self._match_conditions:
            errors: list[str] = []
            for condition in self._match_conditions:
                try:
                    value = state.eval(condition.expr)
                except _Error as err:
                    errors.append(f"expression '{condition.expr.source}' resulted in error: {err}")
                    continue
                if value is False:
                    return []
            if errors:
                unique = list(dict.fromkeys(errors))
                return [CelViolation(unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]")]

        violations: list[CelViolation] = []
        for validation in self._validations:
            try:
                value = state.eval(validation.expr)
            except _Error as err:
                violations.append(CelViolation(f"expression '{validation.expr.source}' resulted in error: {err}"))
                continue
            if value is True:
                continue
            violations.append(CelViolation(self._message(validation, state)))
        return violations

    @staticmethod
    def _message(validation: _Validation, state: _State) -> str:
        message = ""
        if validation.message_expr is not None:
            try:
                result = state.eval(validation.message_expr)
            except _Error:
                result = None
            if isinstance(result, str):
                message = result.strip()
                if len(message.encode()) > MAX_MESSAGE_BYTES or "\n" in message:
                    message = ""
        if not message:
            message = validation.message
        if not message:
            message = f"failed expression: {validation.expr.source.strip()}"
        return message


def _list_field(source: Mapping[str, Any], field: str) -> list[Any]:
    value = source.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise CelCompileError(f"{field}: must be a list")
    return value


def _make_expr(
    expression: Any,
    what: str,
    want: Any,
    want_name: str,
    declared: Mapping[str, int],
    compiled_vars: Sequence[_Variable],
) -> _Expr:
    program, refs = _compile(expression, what, want, want_name)
    unknown = sorted(refs.variables - set(declared) - set(_BUILTIN_VARIABLES))
    if unknown:
        known = ", ".join([*_BUILTIN_VARIABLES, *declared]) or "none"
        raise CelCompileError(
            f"{what}: compilation failed for expression {expression!r}: undefined field "
            f"'{unknown[0]}' of variables (declared: {known})"
        )
    direct = set(declared.values()) if refs.all_variables else {declared[n] for n in refs.variables if n in declared}
    needs: set[int] = set()
    for index in direct:
        needs.add(index)
        needs.update(compiled_vars[index].expr.needs)
    return _Expr(expression, program, refs, tuple(sorted(needs)))


class _State:
    """One ``evaluate`` call: the inputs and the variables evaluated so far."""

    __slots__ = ("_declared", "_top", "_values")

    def __init__(self, declared: tuple[_Variable, ...], top: dict[str, Any], builtins: dict[str, Any]) -> None:
        self._declared = declared
        self._top = top
        self._values: dict[str, Any] = dict(builtins)

    def eval(self, expr: _Expr) -> Any:
        for index in expr.needs:
            variable = self._declared[index]
            if variable.name not in self._values:
                try:
                    self._values[variable.name] = self._run(variable.expr)
                except _Error as err:
                    self._values[variable.name] = _Failed(str(err))
        return self._run(expr)

    def _run(self, expr: _Expr) -> Any:
        refs = expr.refs
        data = {name: self._top[name] for name in refs.top}
        failed: list[str] = []
        if refs.variables or refs.all_variables:
            names: Iterable[str] = self._values if refs.all_variables else refs.variables
            variables = {}
            for name in names:
                value = self._values.get(name)
                if isinstance(value, _Failed):
                    failed.append(name)
                elif name in self._values:
                    variables[name] = value
            data[_VARIABLES] = variables
        try:
            result = expr.program.eval(data=data)
            if result.type() == _cel.Type.ERROR and _CONVERSION_ERROR in str(result.value()):
                result = expr.program.eval(data=_plain(data))
        except Exception as err:  # the binding raises RuntimeError for conversion and runtime failures
            raise _Error(_clean_error(err)) from None
        if result.type() == _cel.Type.ERROR:
            message = _clean_error(result.value())
            for name in failed:
                if message == f"no such key: {name}":
                    failure = self._values[name]
                    assert isinstance(failure, _Failed)
                    message = f"variables.{name}: {failure.error}"
                    break
            raise _Error(message)
        try:
            return result.plain_value()
        except Exception as err:  # e.g. an optional value, which the binding cannot return to Python
            raise _Error(f"result of type {result.type().name().lower()} cannot be used: {err}") from None
