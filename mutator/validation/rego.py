"""The Rego engine, behind one small adapter: regorus (PyPI ``gordon-to-regorus``), a Rust Rego interpreter.

A template's Rego (and its ``libs``) is parsed and compiled once, into a :class:`RegoProgram` holding its own
engine.  Evaluation sets ``input`` as JSON text and reads ``violation`` back as JSON.  Gatekeeper still accepts
a few things regorus does not: the deprecated builtins ``any``, ``all``, ``re_match`` and ``set_diff`` are
added as extensions, and rules with several bodies (``p { a } { b }``) are rewritten into one rule per body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import regorus

__all__ = ["RegoCompileError", "RegoEvalError", "RegoProgram", "normalize_source"]


class RegoCompileError(ValueError):
    """Rego that does not parse or compile; the message carries the file and line."""


class RegoEvalError(RuntimeError):
    """Evaluation failed (a builtin error, a conflict in a complete rule, ...)."""


def clean_error(err: BaseException) -> str:
    """The engine's message without the Rust backtrace."""
    text = str(err)
    cut = text.find("Stack backtrace:")
    if cut >= 0:
        text = text[:cut]
    return text.strip()


# --------------------------------------------------------------------------- deprecated builtins


def _any(collection: Any) -> bool:
    values = collection.values() if isinstance(collection, dict) else collection
    return any(v is True for v in values)


def _all(collection: Any) -> bool:
    values = collection.values() if isinstance(collection, dict) else collection
    return all(v is True for v in values)


def _re_match(pattern: str, value: str) -> bool:
    return re.search(pattern, value) is not None


DEPRECATED_BUILTINS = {"any": (1, _any), "all": (1, _all), "re_match": (2, _re_match)}
_CALL = re.compile(r"(?<![\w.])(any|all|re_match)\s*\(")
_SET_DIFF = re.compile(r"(?<![\w.])set_diff\s*\(")


def _call_args(source: str, start: int) -> tuple[list[str], int] | None:
    """The top-level arguments of a call whose "(" (or an array whose "[") is just before ``start``, and the index
    after the closing bracket."""
    depth, i, args, begin = 0, start, [], start
    while i < len(source):
        ch = source[i]
        if ch == '"':
            i += 1
            while i < len(source) and source[i] != '"':
                i += 2 if source[i] == "\\" else 1
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                args.append(source[begin:i].strip())
                return args, i + 1
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(source[begin:i].strip())
            begin = i + 1
        i += 1
    return None


def _rewrite_set_diff(source: str) -> str:
    """The deprecated ``set_diff(a, b)`` is exactly the set difference ``a - b``: write it so, which keeps
    a set a set (an extension function could only return an array)."""
    out: list[str] = []
    copied = 0
    for match in _SET_DIFF.finditer(source):
        if match.start() < copied:
            continue
        parsed = _call_args(source, match.end())
        if parsed is None or len(parsed[0]) != 2:
            continue
        (a, b), end = parsed
        out.append(source[copied : match.start()])
        out.append(f"({_rewrite_set_diff(a)} - {_rewrite_set_diff(b)})")
        copied = end
    out.append(source[copied:])
    return "".join(out)


# --------------------------------------------------------------------------- source normalization

_ENDS_TERM = set('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_])"`')


def normalize_source(source: str) -> str:
    """Rewrite two constructs OPA accepts and regorus does not, leaving everything else byte for byte:

    - a rule with several bodies, ``head { a } { b }``, becomes ``head { a }`` and ``head { b }``;
    - in a body, a line starting with ``(`` after a line ending in a term is a new expression in OPA (a
      newline ends an expression), where regorus reads a call: a ``;`` makes the break explicit.
    """
    out: list[str] = []
    copied = 0
    stack: list[str] = []
    stmt_start: int | None = None  # where the current top-level statement starts
    head_end: int | None = None  # its first top-level "{"
    closed_body = False  # the last significant character closed a top-level body
    prev = ""  # the last significant character
    newline_at: int | None = None  # a newline inside a body since the last significant character
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "#":
            j = source.find("\n", i)
            i = n if j < 0 else j
            continue
        if ch == "\n":
            if not stack:
                stmt_start, head_end, closed_body = None, None, False
            elif stack[-1] == "{" and newline_at is None:
                newline_at = i
            i += 1
            continue
        if ch.isspace():
            i += 1
            continue
        if ch == "(" and newline_at is not None and prev in _ENDS_TERM:
            out.append(source[copied:newline_at])
            out.append(";")
            copied = newline_at
        newline_at = None
        if not stack and stmt_start is None:
            stmt_start = i
        if ch in '"`':
            j = i + 1
            while j < n and source[j] != ch:
                j += 2 if ch == '"' and source[j] == "\\" else 1
            i = j + 1
            prev = ch
            closed_body = False
            continue
        if ch == "{" and not stack and prev in "=:,":
            stack.append("V")  # an object or set value in a rule head, not a body
            closed_body = False
        elif ch in "{[(":
            if not stack and ch == "{":
                if closed_body and stmt_start is not None and head_end is not None:
                    out.append(source[copied:i].rstrip(" \t"))
                    out.append("\n" + source[stmt_start:head_end].rstrip() + " ")
                    copied = i
                elif head_end is None:
                    head_end = i
            stack.append(ch)
            closed_body = False
        elif ch in "}])":
            opened = stack.pop() if stack else ""
            closed_body = not stack and ch == "}" and opened == "{"
        else:
            closed_body = False
        prev = ch
        i += 1
    out.append(source[copied:])
    return _pad_sprintf(_rewrite_set_diff("".join(out)))


_SPRINTF = re.compile(r'(?<![\w.])sprintf\(\s*("(?:[^"\\\n]|\\.)*")\s*,\s*\[')
_VERB = re.compile(r"%[-+# 0]*(?:\d+|\*)?(?:\.(?:\d+|\*))?([a-zA-Z%])")


def _pad_sprintf(source: str) -> str:
    """Go's fmt prints ``%!v(MISSING)`` for a verb with no argument, and OPA's sprintf with it, where regorus
    raises an error. For calls with a literal format and a literal argument array that is too short, the
    verbs without an argument become that text in the format, so messages read exactly as Gatekeeper's."""
    out: list[str] = []
    copied = 0
    for match in _SPRINTF.finditer(source):
        verbs = [v for v in _VERB.findall(match.group(1)) if v != "%"]
        parsed = _call_args(source, match.end())  # the items of the argument array, which opens just before
        if parsed is None:
            continue
        count = sum(1 for item in parsed[0] if item)  # "[]" and a trailing comma give empty items
        if count >= len(verbs):
            continue
        # rewrite the verbs that have no argument as literal text: "%%!d(MISSING)" prints "%!d(MISSING)"
        literal = match.group(1)
        spans = [m for m in _VERB.finditer(literal) if m.group(1) != "%"]
        rewritten = literal
        for m in reversed(spans[count:]):
            rewritten = rewritten[: m.start()] + f"%%!{m.group(1)}(MISSING)" + rewritten[m.end() :]
        out.append(source[copied : match.start(1)])
        out.append(rewritten)
        copied = match.end(1)
    out.append(source[copied:])
    return "".join(out)


# --------------------------------------------------------------------------- programs


_STRINGS_AND_COMMENTS = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*')


def _check_v0_keywords(filename: str, text: str) -> None:
    """In Rego v0, ``if`` and ``contains`` are keywords only when imported (``future.keywords``, ``rego.v1``).
    OPA refuses them otherwise; regorus would read ``if`` as a name and drop the body, so refuse them too."""
    code = _STRINGS_AND_COMMENTS.sub(lambda m: " " * len(m.group(0)), text)
    imports = set(re.findall(r"^\s*import\s+([\w.]+)", code, re.MULTILINE))
    everything = bool({"future.keywords", "rego.v1"} & imports)
    checks = (("if", r"\bif\b"), ("contains", r"\bcontains\b(?!\s*\()"))
    for keyword, pattern in checks:
        if everything or f"future.keywords.{keyword}" in imports:
            continue
        found = re.search(pattern, code)
        if found:
            line = code.count("\n", 0, found.start()) + 1
            raise RegoCompileError(
                f"{filename}:{line}: `{keyword}` is a keyword only with `import future.keywords.{keyword}` "
                "or `import rego.v1` in Rego v0 (or set `source.version: v1`)"
            )


_INPUT = re.compile(r"(?<![\w.])input(?![\w])")
_REVIEW_ONLY = re.compile(r"\.review(?![\w])")


def reads_parameters(texts: Sequence[str]) -> bool:
    """Whether Rego source may read ``input.parameters``: False only when every use of ``input`` (outside
    strings and comments) is ``input.review``, which cannot reach the parameters. Conservative: ``input``
    alone, ``input[...]``, ``with input as ...`` and anything else count as reading them."""
    for text in texts:
        code = _STRINGS_AND_COMMENTS.sub(lambda m: " " * len(m.group(0)), text)
        if "gkconstraints" in code or "gkparams" in code or "gkmatched" in code:
            return True  # names of the bundle's own layout
        for found in _INPUT.finditer(code):
            if not _REVIEW_ONLY.match(code, found.end()):
                return True
    return False


def _dotted(expr: Any) -> str | None:
    """``a.b.c`` for a Var/RefDot chain of regorus' AST, None for anything else."""
    if not isinstance(expr, dict):
        return None
    if "Var" in expr:
        return str(expr["Var"]["value"])
    if "RefDot" in expr:
        base = _dotted(expr["RefDot"]["refr"])
        return f"{base}.{expr['RefDot']['field'][1]}" if base else None
    return None


def _calls(node: Any, out: list[dict[str, Any]]) -> None:
    if isinstance(node, dict):
        if "Call" in node:
            out.append(node["Call"])
        for value in node.values():
            _calls(value, out)
    elif isinstance(node, list):
        for value in node:
            _calls(value, out)


_BUILTINS: dict[str, bool] = {}


def _is_builtin(name: str) -> bool:
    """Whether regorus knows a function: a one-off probe, remembered."""
    known = _BUILTINS.get(name)
    if known is None:
        probe = regorus.Engine()
        probe.set_rego_v0(True)
        try:
            probe.add_policy("probe.rego", f"package probe\np {{ x := {name}(1) }}\n")
            probe.eval_rule_as_json("data.probe.p")
            known = True
        except Exception as err:
            known = f"could not find function {name}" not in str(err)
        _BUILTINS[name] = known
    return known


def _check_calls(engine: regorus.Engine) -> None:
    """Every function called must be a builtin or a function the template (or its libs) defines: OPA refuses
    undefined functions at compile time, regorus only when a request reaches the call."""
    modules = orjson.loads(engine.get_ast_as_json())
    defined: set[str] = set()
    for module in modules:
        package = _dotted(module["ast"]["package"]["refr"]) or ""
        for rule in module["ast"].get("rules", []):
            for head in rule.get("Spec", {}).get("head", {}).values():
                name = _dotted(head.get("refr")) if isinstance(head, dict) else None
                if name:
                    defined.add(f"{package}.{name}")
    for module in modules:
        package = _dotted(module["ast"]["package"]["refr"]) or ""
        aliases: dict[str, str] = {}
        for imp in module["ast"].get("imports", []):
            path = _dotted(imp.get("refr")) or ""
            alias = imp.get("as")
            aliases[str(alias) if alias else path.rsplit(".", 1)[-1]] = path
        calls: list[dict[str, Any]] = []
        _calls(module["ast"].get("rules", []), calls)
        for call in calls:
            name = _dotted(call.get("fcn"))
            if not name:
                continue
            first, _, rest = name.partition(".")
            if first == "data":
                ok = name[len("data.") :] in defined
            elif first in aliases and aliases[first].startswith("data."):
                ok = (aliases[first][len("data.") :] + (f".{rest}" if rest else "")) in defined
            else:
                ok = f"{package}.{name}" in defined or name in DEPRECATED_BUILTINS or _is_builtin(name)
            if not ok:
                span = call.get("span", {})
                raise RegoCompileError(
                    f"{module['source']['file']}:{span.get('line', '?')}:{span.get('col', '?')}: "
                    f"undefined function {name}"
                )


def _add_deprecated_builtins(engine: regorus.Engine, texts: Sequence[str]) -> None:
    used: set[str] = set()
    for text in texts:
        used.update(_CALL.findall(text))
    for builtin in sorted(used):
        nargs, fn = DEPRECATED_BUILTINS[builtin]
        try:
            engine.add_extension(builtin, nargs, fn)
        except Exception as err:  # a builtin the engine already has
            if "already" not in str(err):
                raise RegoCompileError(clean_error(err)) from err


@dataclass(frozen=True, slots=True)
class RegoSource:
    rego: str
    libs: Sequence[str] = ()
    v1: bool = False


def _package(source: str) -> str:
    match = re.search(r"^\s*package\s+([\w.]+)", source, re.MULTILINE)
    if not match:
        raise RegoCompileError("rego: no package declaration")
    return match.group(1)


class RegoProgram:
    """One template's Rego, compiled once. ``evaluate`` is the request-time call."""

    __slots__ = ("_data_version", "_engine", "name", "package", "reads_parameters", "source", "uses_inventory")

    def __init__(self, source: RegoSource, *, name: str = "template") -> None:
        self.package = _package(source.rego)
        self.source = source
        self.name = name
        engine = regorus.Engine()
        engine.set_rego_v0(not source.v1)
        texts = [(f"{name}.rego", source.rego)] + [(f"{name}.lib{i}.rego", lib) for i, lib in enumerate(source.libs)]
        if not source.v1:
            for filename, text in texts:
                _check_v0_keywords(filename, text)
        _add_deprecated_builtins(engine, [text for _, text in texts])
        for filename, text in texts:
            self._add(engine, filename, text)
        _check_calls(engine)
        try:
            engine.eval_rule_as_json(f"data.{self.package}.violation")
        except Exception as err:
            message = clean_error(err)
            if "not a valid rule path" in message or "not found" in message:
                raise RegoCompileError(f"rego: package {self.package} has no violation rule") from err
            if "is unsafe" in message:  # regorus finds unsafe variables when it first evaluates
                raise RegoCompileError(message) from err
            # otherwise evaluating with no input failed at run time; that is not a compile error
        self._engine = engine
        self._data_version = -1
        self.uses_inventory = any("data.inventory" in text for _, text in texts)
        self.reads_parameters = reads_parameters([text for _, text in texts])

    @staticmethod
    def _add(engine: regorus.Engine, filename: str, text: str) -> None:
        try:
            engine.add_policy(filename, normalize_source(text))
        except Exception as err:
            raise RegoCompileError(clean_error(err)) from err

    def set_data(self, data_json: str, version: int) -> None:
        """Replace ``data`` (the inventory) if it changed since the last call; never recompiles."""
        if version == self._data_version:
            return
        self._engine.clear_data()
        self._engine.add_data_json(data_json)
        self._data_version = version

    def evaluate(self, input_json: str | bytes) -> list[dict[str, Any]]:
        """Violations as ``[{"msg": ..., "details": ...}]`` for an input given as JSON text."""
        engine = self._engine
        engine.set_input_json(input_json if isinstance(input_json, str) else input_json.decode())
        try:
            raw = engine.eval_rule_as_json(f"data.{self.package}.violation")
        except Exception as err:
            message = clean_error(err)
            raise RegoEvalError(message) from err
        result = orjson.loads(raw) if raw else []
        if result is None:
            return []
        if isinstance(result, Mapping):  # an object-valued violation set is unusual; keep its values
            result = list(result.values())
        if not isinstance(result, list):
            raise RegoEvalError(f"violation must be a set of objects, got {json.dumps(result)[:200]}")
        return [v for v in result if isinstance(v, dict)]


# --------------------------------------------------------------------------- bundles

_PACKAGE_LINE = re.compile(r"^(\s*package\s+)([\w.]+)", re.MULTILINE)
HOOK_RULE = "gkhook__violations"
_HOOK_NAME = re.compile(r"\bgkhook__")  # the hook's rule and variables: a template using such names keeps its own


class RegoBundle:
    """Every Rego template of a policy set in one engine, so a request's input is parsed once.

    Each template's package is renamed ``gktpl.<key>`` (its libs ``gktpl.<key>.lib.*``) so that templates
    cannot collide, and a generated hook rule evaluates the template once per matching parameter group with
    ``input.parameters`` taken from ``data.gkconstraints`` — as Gatekeeper's own driver does. The templates
    were already compiled one by one (that is where their errors are reported); a template the bundle cannot
    take is left to its own program by the caller.
    """

    __slots__ = ("_data_version", "_engine", "keys", "uses_inventory")

    def __init__(self, programs: Mapping[str, RegoProgram], *, v1: bool) -> None:
        engine = regorus.Engine()
        engine.set_rego_v0(not v1)
        self.keys: dict[str, str] = {}  # kind -> key
        for kind, program in programs.items():
            key = base = re.sub(r"[^a-z0-9_]", "_", kind.lower())
            while key in self.keys.values():  # kinds that differ only in case
                key = f"{base}_{len(self.keys)}"
            sources = self._renamed(program, key)
            if any(_HOOK_NAME.search(text) for _, text in sources):
                continue  # the template uses the hook's names itself: left to its own program
            # the hook goes into the template's own module: a reference to a rule of the same package costs
            # regorus nothing more per module in the engine, a reference through ``data`` does
            (filename, text), *libs = sources
            sources = [(filename, f"{text}\n{self._hook(key)}"), *libs]
            scratch = regorus.Engine()  # try the template alone first, so one bad fit cannot spoil the bundle
            scratch.set_rego_v0(not v1)
            try:
                _add_deprecated_builtins(scratch, [t for _, t in sources])
                for filename, text in sources:
                    scratch.add_policy(filename, text)
                _add_deprecated_builtins(engine, [t for _, t in sources])
                for filename, text in sources:
                    engine.add_policy(filename, text)
            except Exception:  # left to its own program; the bundle is only a faster path
                continue
            self.keys[kind] = key
        self.uses_inventory = any(programs[kind].uses_inventory for kind in self.keys)
        self._engine = engine
        self._data_version: object = None

    @staticmethod
    def _renamed(program: RegoProgram, key: str) -> list[tuple[str, str]]:
        base = f"gktpl.{key}"

        def rename(text: str) -> str:
            text = text.replace("data.lib.", f"data.{base}.lib.").replace(f"data.{program.package}.", f"data.{base}.")
            return normalize_source(text)

        out = [(f"{program.name}.rego", _PACKAGE_LINE.sub(rf"\g<1>{base}", rename(program.source.rego), count=1))]
        for i, lib in enumerate(program.source.libs):
            renamed = _PACKAGE_LINE.sub(lambda m: f"{m.group(1)}{base}.{m.group(2)}", rename(lib), count=1)
            out.append((f"{program.name}.lib{i}.rego", renamed))
        return out

    @staticmethod
    def _hook(key: str) -> str:
        """The hook rule, ``data.gktpl.<key>.gkhook__violations``, added to the template's package: the template's
        violations for each matched parameter group, tagged with the group (one line: the template's line numbers
        stay as they were; Rego v0 and v1 both read it; its variables are named so that they cannot be the
        template's own rules). A group's parameters come with the input
        (``input.gkparams.<key>.<group>``) when they are small: reading them from ``data`` costs regorus more than
        parsing them. Larger ones are named in ``input.gkmatched.<key>`` and read from ``data.gkconstraints``."""
        check = "gkhook__v := violation[_] with input.parameters as gkhook__params"
        out = (
            'gkhook__out := {"name": gkhook__name, "msg": gkhook__v.msg, '
            '"details": object.get(gkhook__v, "details", {})}'
        )
        return (
            f"{HOOK_RULE} := {{gkhook__out | gkhook__params := input.gkparams.{key}[gkhook__name]; {check}; {out}}}"
            f" | {{gkhook__out | gkhook__name := input.gkmatched.{key}[_]; "
            f"gkhook__params := data.gkconstraints.{key}[gkhook__name]; {check}; {out}}}\n"
        )

    def data_version(self) -> object:
        return self._data_version

    def set_data(self, data_json: str, version: object) -> None:
        self._engine.clear_data()
        self._engine.add_data_json(data_json)
        self._data_version = version

    def set_input(self, input_json: str) -> None:
        self._engine.set_input_json(input_json)

    def evaluate(self, kind: str) -> list[dict[str, Any]]:
        """Violations of every matched constraint of ``kind``, as ``{"name", "msg", "details"}``."""
        try:
            raw = self._engine.eval_rule_as_json(f"data.gktpl.{self.keys[kind]}.{HOOK_RULE}")
        except Exception as err:
            raise RegoEvalError(clean_error(err)) from err
        result = orjson.loads(raw) if raw else []
        return [v for v in result if isinstance(v, dict)] if isinstance(result, list) else []
