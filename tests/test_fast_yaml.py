"""The fast YAML path (yaml-rs behind the gate in mutator/resources.py) reads exactly what PyYAML reads.

A document may take the fast path only when the gate finds nothing that YAML 1.2 (yaml-rs) and YAML 1.1 (PyYAML,
kubectl) could read differently. These tests compare the two readings, value *and type* (True vs "yes", 1 vs
1.0 vs "1", -0.0 vs 0.0), on every YAML file of the shared conformance suite, examples/ and tests/fixtures, and on
generated documents built from the scalars where the two YAML versions differ, as values and as keys, plain and
quoted, in block and flow style, with anchors, aliases and block scalars, and on broken variants of them: each
document is either declined by the gate or read identically. A document PyYAML rejects is always declined.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mutator import resources
from mutator.resources import (
    DocumentError,
    as_json,
    fast_document,
    parse_documents,
    parse_documents_pyyaml,
    split_stream,
)

REPO = Path(__file__).resolve().parent.parent
# more generated documents for a longer search: MUTATOR_FAST_YAML_EXAMPLES=5000 pytest tests/test_fast_yaml.py
SCALE = max(1, int(os.environ.get("MUTATOR_FAST_YAML_EXAMPLES", "400")) // 400)
CORPUS = (REPO.parent / "shared" / "conformance", REPO / "examples", REPO / "tests" / "fixtures")

pytestmark = pytest.mark.skipif(not resources.FAST_YAML, reason="the fast YAML path is off (yaml-rs or re2 missing)")


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types all the way down (dict order included; floats by their repr)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return repr(a) == repr(b) or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


def pyyaml_document(text: str) -> tuple[bool, Any]:
    """(ok, the one document in JSON form) as the reference reads it; ok False when PyYAML (or as_json) fails."""
    try:
        docs = list(yaml.load_all(text, Loader=yaml.CSafeLoader))
        if len(docs) != 1:
            return False, docs
        return True, as_json(docs[0], "t")
    except (yaml.YAMLError, DocumentError, RecursionError):
        return False, None


def check_document(text: str) -> bool:
    """The fast reading is None (declined) or exactly PyYAML's. Returns whether it was taken."""
    fast = fast_document(text)
    if fast is None:
        return False
    ok, ref = pyyaml_document(text)
    assert ok, f"the gate let through a document PyYAML rejects or reads otherwise: {text!r}"
    assert same(fast, ref), f"different readings of {text!r}:\n fast:   {fast!r}\n PyYAML: {ref!r}"
    return True


def check_stream(text: str, source: str = "s.yaml") -> None:
    """parse_documents (pieces, fast where allowed) == parse_documents_pyyaml (the whole stream), or same error."""
    try:
        ref = parse_documents_pyyaml(text, source)
    except Exception as err:  # DocumentError, or whatever PyYAML itself raises (IndexError for "!!int" alone)
        with pytest.raises(type(err)) as got:
            parse_documents(text, source)
        if not isinstance(err, RecursionError):  # its message depends on where the stack ran out
            assert str(got.value) == str(err)
        return
    got_docs = parse_documents(text, source)
    assert [d.source for d in got_docs] == [d.source for d in ref]
    assert all(same(a.body, b.body) for a, b in zip(got_docs, ref, strict=True)), text


def corpus_files() -> list[Path]:
    files: list[Path] = []
    for root in CORPUS:
        if root.is_dir():
            files.extend(sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()))
    return files


def test_corpus_reads_the_same_file_by_file_and_document_by_document() -> None:
    files = corpus_files()
    assert len(files) > 100, "the shared conformance suite should be beside the repo"
    taken = pieces = 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        check_stream(text, str(path))
        for piece in split_stream((text,)):
            pieces += 1
            taken += check_document(piece)
    assert taken > pieces // 4, f"the fast path took only {taken} of {pieces} documents"


def test_the_probes_of_yaml_1_1_are_declined_or_equal() -> None:
    for text in [
        "a: yes\nb: no\nc: on\nd: off\ne: y\n",
        "violations: yes\n",
        "a: True\nb: FALSE\nc: tRUE\n",
        "a: ~\nb:\nc: null\nd: NULL\ne: nULL\n",
        "a: 012\nb: 0o12\nc: 0x1F\nd: 0b11\ne: 1_000\n",
        "a: 1e3\nb: 1.0e+3\nc: 1.5E3\nd: .5\ne: 1.\nf: -0.0\ng: -0\n",
        "a: .inf\nb: -.Inf\nc: .NaN\n",
        "a: 1:30\nb: 190:20:30.15\n",
        "a: 2001-12-14\nb: 2001-12-14t21:59:43.10-05:00\nc: 2001-12-14 21:59:43.10 -5\n",
        "a: 123456789012345678901234567890\nb: 9223372036854775807\nc: 9223372036854775808\n",
        "a: &x {k: v}\nb:\n  <<: *x\n  m: n\n",
        "name: &a0\n- *a0\n",  # recursive aliases: PyYAML builds a cycle (as_json fails), yaml-rs reads null
        "a: &x\n  b: *x\n",
        "a: &x [1,\n*x]\n",
        "- &x\n  - *x\n",
        "a: &x\n  b: 1\nc: *x\n",
        "a: &x\nb: &x\n",  # a duplicate anchor: an error in PyYAML
        "a: &x 1\nb: *x\nc: &x 2\nd: *x\n",
        "a: =\n",
        "1: a\ntrue: b\nnull: c\n~: d\n",
        "{a: 1, 2: b}\n",
        "? [a, b]\n: c\n",
        "[a, b]: c\n",
        "{a: b}: c\n",
        "a: 1\na: 2\n",
        "a: !!str 1\n",
        "a: &b.c 1\n",
        'a: "\\x41\\u00e9"\n',
        "a: b\tc\n",
        "a: b\r\nc: d\n",
        "\ufeffa: b\n",
        "a: b\u2028c: d\n",
        "a: |+\n  x\n\nb: 1\n",
        "a: >\n  x\n   y\n  z\n",
        "%YAML 1.1\n---\na: 1\n",
        "a: 1\n...\n",
        'k:{"containerPort":8080,"protocol":"TCP"}: {}\n',
        "a: [1, 2.5, true, null, ~, x]\n",
        '{"a":1,"b":[true,false,null],"c":"yes"}\n',
    ]:
        check_document(text)
        check_stream(text)
    # the gate must let the ordinary through, or it is useless
    pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  replicas: 3\n  a: 'yes'\n  b: [1, 2.5]\n"
    assert same(fast_document(pod), {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
                                     "spec": {"replicas": 3, "a": "yes", "b": [1, 2.5]}})  # fmt: skip


# --- generated documents -------------------------------------------------------------------------------------

RISKY = [
    *"yes Yes YES no No NO on On ON off Off OFF y Y n N".split(),  # noqa: SIM905
    *"true True TRUE tRUE false False FALSE fAlse null Null NULL nuLL ~".split(),  # noqa: SIM905
    *"0 -0 +0 1 +1 -1 012 0o12 0x1F 0b101 1_000 1e3 1E3 1e+3 1.0e+3".split(),  # noqa: SIM905
    *"1.5 -1.5 +1.5 .5 -.5 1. 0.0 -0.0 00.5 .inf -.inf .Inf .INF .nan .NaN".split(),  # noqa: SIM905
    *"1:30 -1:30 1:30.5 190:20:30 2001-12-14 2001-1-1 2001-12-14t21:59:43.10-05:00".split(),  # noqa: SIM905
    "2001-12-14 21:59:43.10 -5",
    "123456789012345678901234567890",
    "9223372036854775807",
    "9223372036854775808",
    "3.14159265358979323846",
    *"<< = - -- --- ... ? : , # @x `x % %x ! !x !!str !!int &a *a | |- |+ > >- [ ] { } [] {}".split(),  # noqa: SIM905
    *"a b a:b a#b a,b v1.2.3 100m 128Mi 1Gi nginx:1.25 3e7b 0b8f6e2a-4c1d é 日本".split(),  # noqa: SIM905
    "a b c",
    "a: b",
    "a #b",
    "x\\y",
    "",
    " ",
    "\t",
]
scalars = st.sampled_from(RISKY)


def quoted(text: str, style: str) -> str:
    if style == "single":
        return "'" + text.replace("'", "''") + "'"
    if style == "double":
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


styled = st.tuples(scalars, st.sampled_from(["plain", "plain", "plain", "single", "double"])).map(lambda t: quoted(*t))
keys = st.one_of(styled, st.sampled_from(["name", "image", 'k:{"a":1}', "f:spec", ".", "a.b/c"]))


def flow(depth: int) -> st.SearchStrategy[str]:
    if depth <= 0:
        return styled
    inner = flow(depth - 1)
    return st.one_of(
        styled,
        st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(keys, inner), max_size=3).map(lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"),
        st.lists(st.tuples(keys, inner), max_size=3).map(lambda kv: "{" + ",".join(f"{k}:{v}" for k, v in kv) + "}"),
    )


Node = tuple[str, Any]


def nodes(depth: int) -> st.SearchStrategy[Node]:
    leaf = st.one_of(
        styled.map(lambda s: ("scalar", s)),
        flow(2).map(lambda s: ("scalar", s)),
        st.lists(st.sampled_from(RISKY[:40] + ["line", "  indented", ""]), min_size=1, max_size=3).map(
            lambda ls: ("literal", ls)
        ),
    )
    if depth <= 0:
        return leaf
    child = nodes(depth - 1)
    return st.one_of(
        leaf,
        st.lists(st.tuples(keys, child), min_size=1, max_size=4).map(lambda kv: ("map", kv)),
        st.lists(child, min_size=1, max_size=3).map(lambda xs: ("seq", xs)),
    )


def render(node: Node, indent: int, anchors: list[str], draw_anchor: Any) -> tuple[str, list[str]]:
    """(inline text, following lines) of a node placed after "key:" or "-" at ``indent``."""
    kind, value = node
    pad = " " * (indent + 2)
    anchor = draw_anchor()
    prefix = ""
    if anchor == "anchor":
        name = f"a{len(anchors)}"
        anchors.append(name)
        prefix = f"&{name} "
    elif anchor == "alias" and anchors:
        return f"*{anchors[-1]}", []
    if kind == "scalar":
        return prefix + value, []
    if kind == "literal":
        return prefix + "|", [pad + line if line else "" for line in value]
    lines: list[str] = []
    if kind == "map":
        for k, child in value:
            inline, more = render(child, indent + 2, anchors, draw_anchor)
            lines.append(f"{pad}{k}: {inline}".rstrip() if inline else f"{pad}{k}:")
            lines.extend(more)
    else:
        for child in value:
            inline, more = render(child, indent + 2, anchors, draw_anchor)
            lines.append(f"{pad}- {inline}".rstrip() if inline else f"{pad}-")
            lines.extend(more)
    return prefix.rstrip(), lines


@st.composite
def documents(draw: Any) -> str:
    entries = draw(st.lists(st.tuples(keys, nodes(2)), min_size=1, max_size=5))
    anchors: list[str] = []

    def draw_anchor() -> str:
        return draw(st.sampled_from(["", "", "", "", "anchor", "alias"]))

    lines = []
    for k, node in entries:
        inline, more = render(node, -2, anchors, draw_anchor)
        lines.append(f"{k}: {inline}".rstrip() if inline else f"{k}:")
        lines.extend(more)
    start = draw(st.sampled_from(["", "---\n", "--- \n", "# c\n---\n"]))
    return start + "\n".join(lines) + "\n"


@settings(max_examples=400 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_generated_documents_are_declined_or_read_the_same(text: str) -> None:
    check_document(text)


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), st.integers(min_value=0), st.sampled_from(list(" :-#'\"[]{},\n?&*!|>") + ["", "  ", "\n  "]))
def test_broken_documents_are_declined_or_read_the_same(text: str, at: int, insert: str) -> None:
    """A character dropped or inserted anywhere: whatever PyYAML makes of it, the fast path agrees or declines."""
    at %= len(text)
    check_document(text[:at] + insert + text[at + (0 if insert else 1) :])


@settings(max_examples=150 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(documents(), st.sampled_from(["", "# only a comment\n", "...\n", "- a\n", "x\n"])), max_size=4)
)
def test_generated_streams_number_their_documents_as_pyyaml(docs: list[str]) -> None:
    text = "".join(d if d.startswith("---") or i == 0 else "---\n" + d for i, d in enumerate(docs))
    check_stream(text)


def test_split_stream_cuts_only_at_document_starts_and_in_any_blocks() -> None:
    text = "# head\n---\na: 1\n----\n--- b\n---\tc\n%YAML 1.1\n---\nd: 1\n---"
    pieces = list(split_stream((text,)))
    assert pieces == ["# head\n", "---\na: 1\n----\n", "--- b\n", "---\tc\n%YAML 1.1\n---\nd: 1\n---"]
    assert list(split_stream(text)) == pieces  # one character at a time: the same cuts
