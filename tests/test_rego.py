"""The Rego adapter (mutator.validation.rego): compile once, evaluate, OPA compatibility shims, errors."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from mutator.validation.rego import (
    RegoCompileError,
    RegoEvalError,
    RegoProgram,
    RegoSource,
    normalize_source,
)


def compile_rego(rego: str, *, libs: tuple[str, ...] = (), v1: bool = False, name: str = "k8stest") -> RegoProgram:
    return RegoProgram(RegoSource(rego, libs, v1), name=name)


def evaluate(program: RegoProgram, review: Any = None, parameters: Any = None, **extra: Any) -> list[dict[str, Any]]:
    doc: dict[str, Any] = {"review": review or {}, "parameters": parameters or {}, **extra}
    return program.evaluate(json.dumps(doc))


def messages(violations: list[dict[str, Any]]) -> list[str]:
    return sorted(str(v["msg"]) for v in violations)


# --- compile and evaluate ---------------------------------------------------------------------------------------

TEAM_LABEL = """package k8steamlabel

violation[{"msg": msg, "details": {"team": team, "allowed": input.parameters.teams}}] {
  team := input.review.object.metadata.labels.team
  not allowed(team)
  msg := sprintf("team %v is not one of %v", [team, input.parameters.teams])
}

violation[{"msg": "the team label is missing"}] {
  not input.review.object.metadata.labels.team
}

allowed(team) {
  input.parameters.teams[_] == team
}
"""


def _labelled(labels: dict[str, str]) -> dict[str, Any]:
    return {"object": {"kind": "ConfigMap", "metadata": {"name": "cm", "labels": labels}}}


def test_template_compiles_once_and_evaluates_many_inputs() -> None:
    program = compile_rego(TEAM_LABEL, name="k8steamlabel")
    assert program.package == "k8steamlabel"
    assert program.uses_inventory is False
    params = {"teams": ["red", "blue"]}
    assert evaluate(program, _labelled({"team": "red"}), params) == []
    assert messages(evaluate(program, _labelled({}), params)) == ["the team label is missing"]
    assert messages(evaluate(program, _labelled({"team": "green"}), params)) == [
        'team green is not one of ["red", "blue"]'
    ]
    # the same program again, with other parameters: nothing is kept from one evaluation to the next
    assert evaluate(program, _labelled({"team": "green"}), {"teams": ["green"]}) == []


def test_violation_carries_its_details() -> None:
    program = compile_rego(TEAM_LABEL, name="k8steamlabel")
    [violation] = evaluate(program, _labelled({"team": "green"}), {"teams": ["red"]})
    assert violation["details"] == {"team": "green", "allowed": ["red"]}


def test_evaluate_accepts_bytes() -> None:
    program = compile_rego(TEAM_LABEL, name="k8steamlabel")
    doc = json.dumps({"review": _labelled({}), "parameters": {}}).encode()
    assert messages(program.evaluate(doc)) == ["the team label is missing"]


# --- compile errors ---------------------------------------------------------------------------------------------


def test_syntax_error_names_file_line_and_column_without_backtrace() -> None:
    rego = 'package k8sbroken\n\nviolation[{"msg": msg}] {\n  x := input.review.object\n  msg := x ++ "y"\n}\n'
    with pytest.raises(RegoCompileError) as info:
        compile_rego(rego, name="k8sbroken")
    text = str(info.value)
    assert "k8sbroken.rego:5:" in text  # the line of the bad expression
    assert re.search(r"k8sbroken\.rego:\d+:\d+", text)
    assert "Stack backtrace" not in text
    assert "<unknown>" not in text


def test_syntax_error_in_a_lib_names_the_lib() -> None:
    lib = 'package lib.broken\n\nhelper := "x" {\n'
    rego = 'package k8susinglib\nimport data.lib.broken\nviolation[{"msg": broken.helper}] { true }\n'
    with pytest.raises(RegoCompileError) as info:
        compile_rego(rego, libs=(lib,), name="k8susinglib")
    assert re.search(r"k8susinglib\.lib0\.rego:\d+:\d+", str(info.value))
    assert "Stack backtrace" not in str(info.value)


def test_missing_package_and_missing_violation_rule_are_compile_errors() -> None:
    with pytest.raises(RegoCompileError, match="package"):
        compile_rego('violation[{"msg": "m"}] { true }\n')
    with pytest.raises(RegoCompileError, match="no violation rule"):
        compile_rego('package k8snothing\n\ndeny[{"msg": "m"}] { true }\n')


def test_unsafe_variable_is_a_compile_error() -> None:
    # OPA rejects this at compile time (rego_unsafe_var_error); Gatekeeper refuses the template.
    rego = 'package k8sunsafe\n\nviolation[{"msg": "m"}] {\n  input.review.object\n  y == 1\n}\n'
    with pytest.raises(RegoCompileError) as info:
        compile_rego(rego, name="k8sunsafe")
    assert "k8sunsafe.rego:5:" in str(info.value)


def test_undefined_function_is_a_compile_error() -> None:
    # OPA: rego_type_error: undefined function no_such_function.
    rego = (
        'package k8sundef\n\nviolation[{"msg": msg}] {\n  x := input.review.object\n  msg := no_such_function(x)\n}\n'
    )
    with pytest.raises(RegoCompileError) as info:
        compile_rego(rego, name="k8sundef")
    assert "no_such_function" in str(info.value)


# --- Rego v0 and v1 ---------------------------------------------------------------------------------------------

V1_POLICY = """package k8sregistry

violation contains {"msg": msg} if {
  some container in input.review.object.spec.containers
  not startswith(container.image, input.parameters.registry)
  msg := sprintf("container %v uses %v", [container.name, container.image])
}
"""

V0_POLICY = """package k8sregistry

violation[{"msg": msg}] {
  container := input.review.object.spec.containers[_]
  not startswith(container.image, input.parameters.registry)
  msg := sprintf("container %v uses %v", [container.name, container.image])
}
"""

PODSPEC = {
    "object": {
        "kind": "Pod",
        "spec": {
            "containers": [
                {"name": "app", "image": "corp.example/app:1"},
                {"name": "proxy", "image": "docker.io/proxy:2"},
            ]
        },
    }
}


@pytest.mark.parametrize(("rego", "v1"), [(V1_POLICY, True), (V0_POLICY, False)])
def test_v0_and_v1_give_the_same_result(rego: str, v1: bool) -> None:
    program = compile_rego(rego, v1=v1, name="k8sregistry")
    got = messages(evaluate(program, PODSPEC, {"registry": "corp.example/"}))
    assert got == ["container proxy uses docker.io/proxy:2"]


def test_v1_keywords_are_not_v0() -> None:
    with pytest.raises(RegoCompileError):
        compile_rego(V1_POLICY, v1=False, name="k8sregistry")


def test_v1_if_and_contains_without_imports_are_not_v0() -> None:
    # OPA (v0 mode) refuses this: "contains" and "if" are keywords only with `import future.keywords` or v1.
    # Read as v0 anyway, the "if" body is lost and every object would be a violation.
    rego = 'package k8sifonly\n\nviolation contains {"msg": "bad"} if {\n  input.review.object.bad\n}\n'
    assert messages(evaluate(compile_rego(rego, v1=True), {"object": {"bad": False}})) == []
    with pytest.raises(RegoCompileError):
        compile_rego(rego, v1=False, name="k8sifonly")


def test_v0_with_future_keywords_imports() -> None:
    rego = (
        "package k8sfuture\n\nimport future.keywords.contains\nimport future.keywords.if\n"
        "import future.keywords.in\n\n"
        'violation contains {"msg": c} if {\n  some c in input.review.object.names\n  startswith(c, "x")\n}\n'
    )
    program = compile_rego(rego, v1=False)
    assert messages(evaluate(program, {"object": {"names": ["xa", "b", "xc"]}})) == ["xa", "xc"]


def test_v0_rule_bodies_need_if_in_v1() -> None:
    with pytest.raises(RegoCompileError, match="if"):
        compile_rego(V0_POLICY, v1=True, name="k8sregistry")


# --- deprecated builtins ----------------------------------------------------------------------------------------


def test_deprecated_any() -> None:
    program = compile_rego(
        'package k8sany\nviolation[{"msg": "some check failed"}] {\n'
        "  any([input.review.a == 1, input.review.b == 2])\n}\n"
    )
    assert messages(evaluate(program, {"a": 1, "b": 0})) == ["some check failed"]
    assert messages(evaluate(program, {"a": 0, "b": 2})) == ["some check failed"]
    assert evaluate(program, {"a": 0, "b": 0}) == []


def test_deprecated_any_over_a_set() -> None:
    program = compile_rego('package k8sanyset\nviolation[{"msg": "x"}] {\n  any({input.review.a == 1, false})\n}\n')
    assert messages(evaluate(program, {"a": 1})) == ["x"]
    assert evaluate(program, {"a": 2}) == []


def test_deprecated_all() -> None:
    program = compile_rego(
        'package k8sall\nviolation[{"msg": "both"}] {\n  all([input.review.a == 1, input.review.b == 2])\n}\n'
        'violation[{"msg": "vacuous"}] {\n  all([])\n}\n'
    )
    assert messages(evaluate(program, {"a": 1, "b": 2})) == ["both", "vacuous"]
    assert messages(evaluate(program, {"a": 1, "b": 0})) == ["vacuous"]


def test_deprecated_re_match_is_an_unanchored_search() -> None:
    program = compile_rego(
        'package k8sre\nviolation[{"msg": input.review.name}] {\n  re_match("^tmp-[0-9]+", input.review.name)\n}\n'
        'violation[{"msg": "has-dash"}] {\n  re_match("-", input.review.name)\n}\n'
    )
    assert messages(evaluate(program, {"name": "tmp-42-x"})) == ["has-dash", "tmp-42-x"]
    assert messages(evaluate(program, {"name": "my-tmp-42"})) == ["has-dash"]
    assert evaluate(program, {"name": "plain"}) == []


def test_deprecated_re_match_in_a_lib_only() -> None:
    lib = 'package lib.names\nis_temp(name) {\n  re_match("^tmp", name)\n}\n'
    rego = (
        'package k8slibre\nimport data.lib.names\nviolation[{"msg": "temp"}] {\n  names.is_temp(input.review.name)\n}\n'
    )
    program = compile_rego(rego, libs=(lib,))
    assert messages(evaluate(program, {"name": "tmpfile"})) == ["temp"]
    assert evaluate(program, {"name": "file"}) == []


def test_deprecated_set_diff_removes_the_members_of_the_second_set() -> None:
    program = compile_rego(
        "package k8ssetdiff\n"
        'violation[{"msg": msg}] {\n'
        "  required := {label | label := input.parameters.labels[_]}\n"
        "  present := {label | input.review.object.metadata.labels[label]}\n"
        "  missing := set_diff(required, present)\n"
        "  count(missing) > 0\n"
        '  msg := sprintf("missing %v", [sort([m | missing[m]])])\n'
        "}\n"
    )
    review = {"object": {"metadata": {"labels": {"team": "a"}}}}
    got = evaluate(program, review, {"labels": ["team", "owner", "tier"]})
    assert messages(got) == ['missing ["owner", "tier"]']
    assert evaluate(program, review, {"labels": ["team"]}) == []


def test_deprecated_set_diff_returns_a_set() -> None:
    # OPA: set_diff(a, b) is a - b, a set: membership lookups and set equality work on it.
    program = compile_rego(
        "package k8ssetdiffset\n"
        'violation[{"msg": "is a set"}] {\n  is_set(set_diff({"a", "b", "c"}, {"b"}))\n}\n'
        'violation[{"msg": "equal"}] {\n  set_diff({"a", "b", "c"}, {"b"}) == {"a", "c"}\n}\n'
        'violation[{"msg": "member"}] {\n  d := set_diff({"a", "b", "c"}, {"b"})\n  d["a"]\n}\n'
    )
    assert messages(evaluate(program)) == ["equal", "is a set", "member"]


# --- normalize_source: multi-body rules and "(" lines ------------------------------------------------------------

MULTI_BODY = """package k8smulti

# the image of any workload kind
image(obj) = img {
  obj.kind == "Pod"
  img := obj.spec.containers[0].image
} {
  obj.kind == "Deployment"
  img := obj.spec.template.spec.containers[0].image
} {
  obj.kind == "CronJob"
  img := obj.spec.jobTemplate.spec.template.spec.containers[0].image
}

violation[{"msg": msg}] {
  img := image(input.review.object)
  endswith(img, ":latest")
  msg := sprintf("image %v uses latest", [img])
}
"""


def test_multi_body_rule_becomes_one_rule_per_body() -> None:
    out = normalize_source(MULTI_BODY)
    assert out.count("image(obj) = img {") == 3
    assert "} {" not in out
    # every line around the rule is kept
    assert out.startswith("package k8smulti\n\n# the image of any workload kind\nimage(obj) = img {\n")
    assert out.endswith(MULTI_BODY[MULTI_BODY.index("violation") :])
    # the bodies keep their text and order
    bodies = [line.strip() for line in out.splitlines() if line.strip().startswith("obj.kind ==")]
    assert bodies == ['obj.kind == "Pod"', 'obj.kind == "Deployment"', 'obj.kind == "CronJob"']


def test_multi_body_rule_evaluates_like_opa() -> None:
    program = compile_rego(MULTI_BODY, name="k8smulti")
    pod = {"kind": "Pod", "spec": {"containers": [{"image": "a:latest"}]}}
    deploy = {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [{"image": "b:latest"}]}}}}
    cron = {
        "kind": "CronJob",
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"image": "c:latest"}]}}}}},
    }
    assert messages(evaluate(program, {"object": pod})) == ["image a:latest uses latest"]
    assert messages(evaluate(program, {"object": deploy})) == ["image b:latest uses latest"]
    assert messages(evaluate(program, {"object": cron})) == ["image c:latest uses latest"]
    deploy_ok = {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [{"image": "b:1"}]}}}}
    assert evaluate(program, {"object": deploy_ok}) == []
    assert evaluate(program, {"object": {"kind": "Service"}}) == []


def test_multi_body_partial_set_rule() -> None:
    rego = (
        "package k8sreasons\n"
        'reason[r] { input.review.a; r := "a" } { input.review.b; r := "b" }\n'
        'violation[{"msg": r}] { reason[r] }\n'
    )
    out = normalize_source(rego)
    assert out.count("reason[r] {") == 2
    program = compile_rego(rego)
    assert messages(evaluate(program, {"a": True, "b": True})) == ["a", "b"]
    assert messages(evaluate(program, {"b": True})) == ["b"]


def test_object_valued_head_is_not_a_second_body() -> None:
    rego = (
        "package k8sobjhead\n\n"
        'defaults(x) = {"a": 1, "b": {"c": 2}} {\n  x > 0\n}\n\n'
        'limits = {"cpu": "1"} { true }\n\n'
        'violation[{"msg": msg}] {\n  d := defaults(input.review.n)\n'
        '  msg := sprintf("%v %v", [d.b.c, limits.cpu])\n}\n'
    )
    assert normalize_source(rego) == rego
    program = compile_rego(rego)
    assert messages(evaluate(program, {"n": 1})) == ["2 1"]
    assert evaluate(program, {"n": -1}) == []


def test_object_valued_head_with_several_bodies() -> None:
    rego = (
        "package k8sobjmulti\n"
        'flag(x) = {"on": true} { x > 10 } { x < -10 }\n'
        'violation[{"msg": "far"}] { flag(input.review.n).on }\n'
    )
    assert normalize_source(rego).count('flag(x) = {"on": true} {') == 2
    program = compile_rego(rego)
    assert messages(evaluate(program, {"n": 11})) == ["far"]
    assert messages(evaluate(program, {"n": -11})) == ["far"]
    assert evaluate(program, {"n": 0}) == []


def test_else_chain_is_not_rewritten() -> None:
    rego = (
        "package k8selse\n"
        'tier = "gold" { input.review.a } else = "silver" { input.review.b } else = "bronze" { true }\n'
        'violation[{"msg": tier}] { true }\n'
    )
    assert normalize_source(rego) == rego
    program = compile_rego(rego)
    assert messages(evaluate(program, {"a": True, "b": True})) == ["gold"]
    assert messages(evaluate(program, {"b": True})) == ["silver"]
    assert messages(evaluate(program, {})) == ["bronze"]


PAREN_LINE = """package k8sparen

violation[{"msg": msg}] {
  n := input.review.replicas
  (n * 2) > input.parameters.max
  msg := sprintf("doubled %v is over %v", [n * 2, input.parameters.max])
}
"""


def test_paren_line_after_a_term_gets_a_semicolon() -> None:
    out = normalize_source(PAREN_LINE)
    assert "  n := input.review.replicas;\n  (n * 2) > input.parameters.max\n" in out
    assert out.replace(";", "", 1) == PAREN_LINE


def test_paren_line_evaluates_as_a_new_expression() -> None:
    program = compile_rego(PAREN_LINE)
    assert messages(evaluate(program, {"replicas": 3}, {"max": 5})) == ["doubled 6 is over 5"]
    assert evaluate(program, {"replicas": 2}, {"max": 5}) == []


def test_paren_lines_that_continue_an_expression_are_kept() -> None:
    rego = (
        "package k8scont\n"
        'violation[{"msg": msg}] {\n'
        "  x := [\n    (input.review.a + 1),\n    2\n  ]\n"
        "  y := input.review.a +\n    (1)\n"
        '  msg := sprintf("%v %v", [x, y])\n'
        "}\n"
    )
    assert normalize_source(rego) == rego
    assert messages(evaluate(compile_rego(rego), {"a": 1})) == ["[2, 2] 2"]


def test_strings_and_comments_are_untouched() -> None:
    rego = (
        "package k8stext\n\n"
        '# a rule like p { a } { b } in a comment, a stray { and a "quote\n'
        'banner := "p { a } { b } # not a comment"\n'
        "raw := `q { x }\n{ y }\n(z)`\n"
        'escaped := "say \\"} {\\" twice"\n\n'
        'violation[{"msg": msg}] {\n'
        "  input.review.go  # a comment { with ( braces\n"
        '  msg := concat("|", [banner, raw, escaped])\n'
        "}\n"
    )
    assert normalize_source(rego) == rego
    [violation] = evaluate(compile_rego(rego), {"go": True})
    assert violation["msg"] == 'p { a } { b } # not a comment|q { x }\n{ y }\n(z)|say "} {" twice'


# --- sprintf with too few arguments -------------------------------------------------------------------------------


def test_sprintf_too_few_arguments_is_padded_in_source() -> None:
    rego = 'package k8sfmt\nviolation[{"msg": m}] { m := sprintf("%v needs %d and %s", [input.review.name]) }\n'
    out = normalize_source(rego)
    assert 'sprintf("%v needs %%!d(MISSING) and %%!s(MISSING)", [input.review.name])' in out


def test_sprintf_with_no_arguments_at_all() -> None:
    rego = 'package k8sfmt\nviolation[{"msg": m}] { m := sprintf("%v-%v", []) }\n'
    assert 'sprintf("%%!v(MISSING)-%%!v(MISSING)", [])' in normalize_source(rego)
    assert messages(evaluate(compile_rego(rego))) == ["%!v(MISSING)-%!v(MISSING)"]


def test_sprintf_missing_v_reads_like_go() -> None:
    rego = 'package k8sfmt\nviolation[{"msg": m}] { m := sprintf("%v is missing %v", [input.review.name]) }\n'
    assert messages(evaluate(compile_rego(rego), {"name": "web"})) == ["web is missing %!v(MISSING)"]


def test_sprintf_missing_d_reads_like_go() -> None:
    # Go (and so OPA and Gatekeeper): fmt.Sprintf("%v has %d replicas", "web") == "web has %!d(MISSING) replicas"
    rego = 'package k8sfmt\nviolation[{"msg": m}] { m := sprintf("%v has %d replicas", [input.review.name]) }\n'
    assert messages(evaluate(compile_rego(rego), {"name": "web"})) == ["web has %!d(MISSING) replicas"]


@pytest.mark.parametrize(
    "call",
    [
        'sprintf("%v and %v", [input.review.a, input.review.b])',
        'sprintf("%v", [[1, 2]])',
        'sprintf("%v %v", [{"a": [1, 2]}, "x,y"])',
        'sprintf("100%% of %v", [input.review.a])',
        'sprintf("%v %v", input.review.args)',
    ],
)
def test_sprintf_with_enough_arguments_is_untouched(call: str) -> None:
    rego = f'package k8sfmt\nviolation[{{"msg": m}}] {{ m := {call} }}\n'
    assert normalize_source(rego) == rego


def test_sprintf_percent_literal_is_not_a_verb() -> None:
    rego = 'package k8sfmt\nviolation[{"msg": m}] { m := sprintf("100%% of %v", [input.review.a]) }\n'
    assert messages(evaluate(compile_rego(rego), {"a": "pods"})) == ["100% of pods"]


# --- data.inventory ---------------------------------------------------------------------------------------------

INVENTORY_POLICY = """package k8suniquehost

violation[{"msg": msg}] {
  host := input.review.object.spec.host
  other := data.inventory.namespace[ns]["example.com/v1"]["Route"][name]
  other.spec.host == host
  not same(ns, name)
  msg := sprintf("host %v is taken by %v/%v", [host, ns, name])
}

same(ns, name) {
  ns == input.review.object.metadata.namespace
  name == input.review.object.metadata.name
}
"""


def _route(ns: str, name: str, host: str) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Route",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"host": host},
    }


def _inventory(*objects: dict[str, Any]) -> str:
    tree: dict[str, Any] = {}
    for obj in objects:
        meta = obj["metadata"]
        tree.setdefault(meta["namespace"], {}).setdefault(obj["apiVersion"], {}).setdefault(obj["kind"], {})[
            meta["name"]
        ] = obj
    return json.dumps({"inventory": {"cluster": {}, "namespace": tree}})


def test_inventory_data_is_seen_and_reloaded_only_when_the_version_moves() -> None:
    program = compile_rego(INVENTORY_POLICY)
    assert program.uses_inventory is True
    review = {"object": _route("shop", "front", "shop.example.com")}

    assert evaluate(program, review) == []  # no data yet

    program.set_data(_inventory(_route("blog", "main", "shop.example.com")), 1)
    assert messages(evaluate(program, review)) == ["host shop.example.com is taken by blog/main"]

    # the same version again: the new text is ignored
    program.set_data(_inventory(), 1)
    assert messages(evaluate(program, review)) == ["host shop.example.com is taken by blog/main"]

    # a new version: the data is replaced, not merged
    program.set_data(_inventory(_route("shop", "front", "shop.example.com")), 2)
    assert evaluate(program, review) == []

    program.set_data(_inventory(_route("docs", "x", "shop.example.com")), 3)
    assert messages(evaluate(program, review)) == ["host shop.example.com is taken by docs/x"]


# --- runtime errors -----------------------------------------------------------------------------------------------


def test_conflicting_complete_rule_raises_eval_error() -> None:
    rego = (
        "package k8sconflict\n"
        "limit = x { x := input.review.a }\n"
        "limit = y { y := input.review.b }\n"
        'violation[{"msg": "over"}] { limit > 1 }\n'
    )
    program = compile_rego(rego, name="k8sconflict")  # compiles: the conflict only shows with this input
    assert messages(evaluate(program, {"a": 2, "b": 2})) == ["over"]
    with pytest.raises(RegoEvalError) as info:
        evaluate(program, {"a": 1, "b": 2})
    assert "Stack backtrace" not in str(info.value)
    # the program is still usable afterwards
    assert messages(evaluate(program, {"a": 3, "b": 3})) == ["over"]


def test_builtin_error_raises_eval_error_with_location() -> None:
    rego = 'package k8snum\nviolation[{"msg": "big"}] {\n  to_number(input.parameters.max) < 3\n}\n'
    program = compile_rego(rego, name="k8snum")
    assert messages(evaluate(program, {}, {"max": "2"})) == ["big"]
    with pytest.raises(RegoEvalError) as info:
        evaluate(program, {}, {"max": "two"})
    assert "k8snum.rego:3:" in str(info.value)
    assert "Stack backtrace" not in str(info.value)
