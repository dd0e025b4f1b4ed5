"""The CEL engine for K8sNativeValidation code entries (mutator.validation.cel)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from mutator.validation import cel as cel_module
from mutator.validation.cel import CelCompileError, CelProgram, CelViolation

SHARED = Path(__file__).resolve().parents[2] / "shared"
VALIDATION = SHARED / "conformance" / "validation"

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "namespace": "prod", "labels": {"app": "web", "owner": "me"}},
    "spec": {
        "containers": [
            {"name": "app", "image": "nginx:1.25", "securityContext": {"privileged": True}},
            {"name": "sidecar", "image": "safe.io/proxy:2"},
        ]
    },
}


def run(
    source: Mapping[str, Any],
    *,
    object: Any = POD,  # noqa: A002 - mirrors the API
    old_object: Any = None,
    params: Any = None,
    request: Mapping[str, Any] | None = None,
    namespace_object: Any = None,
    constraint: Mapping[str, Any] | None = None,
) -> list[str]:
    program = CelProgram.compile(source)
    violations = program.evaluate(
        object=object,
        old_object=old_object,
        params=params,
        request=request if request is not None else {"operation": "CREATE"},
        namespace_object=namespace_object,
        constraint=constraint,
    )
    assert all(isinstance(v, CelViolation) for v in violations)
    return [v.message for v in violations]


def check(expression: str, **kwargs: Any) -> list[str]:
    return run({"validations": [{"expression": expression, "message": "false"}]}, **kwargs)


# --- validations and messages -----------------------------------------------------------------------------------


def test_true_validation_has_no_violation() -> None:
    assert check("object.metadata.name == 'web'") == []


def test_false_validation_uses_message() -> None:
    source = {"validations": [{"expression": "object.metadata.name == 'db'", "message": "name must be db"}]}
    assert run(source) == ["name must be db"]


def test_message_expression_wins_over_message() -> None:
    source = {
        "validations": [
            {
                "expression": "false",
                "message": "static",
                "messageExpression": "'pod ' + object.metadata.name + ' is not allowed'",
            }
        ]
    }
    assert run(source) == ["pod web is not allowed"]


def test_default_message_names_the_trimmed_expression() -> None:
    assert run({"validations": [{"expression": "  1 > 2\n"}]}) == ["failed expression: 1 > 2"]


@pytest.mark.parametrize(
    "message_expression",
    [
        "object.missing",  # fails to evaluate
        "'   '",  # blank after trimming
        "'two\\nlines'",  # Kubernetes refuses multi-line messages
        "dyn(42)",  # not a string
        "object.metadata.name + '" + "x" * 5200 + "'",  # over 5 KiB
    ],
)
def test_message_expression_falls_back_to_message(message_expression: str) -> None:
    source = {"validations": [{"expression": "false", "message": "fallback", "messageExpression": message_expression}]}
    assert run(source) == ["fallback"]


def test_message_expression_is_trimmed() -> None:
    source = {"validations": [{"expression": "false", "messageExpression": "'  padded \\t'"}]}
    assert run(source) == ["padded"]


def test_message_expression_failure_without_message_uses_default() -> None:
    source = {"validations": [{"expression": "false", "messageExpression": "object.nope"}]}
    assert run(source) == ["failed expression: false"]


def test_each_failing_validation_is_one_violation_in_order() -> None:
    source = {
        "validations": [
            {"expression": "false", "message": "first"},
            {"expression": "true", "message": "never"},
            {"expression": "false", "message": "third"},
        ]
    }
    assert run(source) == ["first", "third"]


def test_dyn_result_that_is_not_true_is_a_violation() -> None:
    assert check("object.metadata.labels.app") == ["false"]


# --- variables ----------------------------------------------------------------------------------------------------


def test_variables_chain_in_declaration_order() -> None:
    source = {
        "variables": [
            {"name": "containers", "expression": "variables.anyObject.spec.containers"},
            {
                "name": "privileged",
                "expression": "variables.containers.filter(c, has(c.securityContext) && "
                "has(c.securityContext.privileged) && c.securityContext.privileged)",
            },
            {"name": "names", "expression": "variables.privileged.map(c, c.name)"},
        ],
        "validations": [
            {
                "expression": "size(variables.privileged) == 0",
                "messageExpression": "'privileged: ' + variables.names.join(', ')",
            }
        ],
    }
    assert run(source) == ["privileged: app"]


def test_variables_params_is_the_constraint_parameters() -> None:
    source = {
        "validations": [
            {
                "expression": "variables.params.labels.all(l, l in object.metadata.labels)",
                "messageExpression": "'missing one of ' + variables.params.labels.join(', ')",
            }
        ]
    }
    assert run(source, params={"labels": ["app", "team"]}) == ["missing one of app, team"]
    assert run(source, params={"labels": ["app"]}) == []


def test_absent_params_behave_like_cel_go_null_under_has() -> None:
    source = {"validations": [{"expression": "!has(variables.params.exemptImages)", "message": "has it"}]}
    assert run(source, params=None) == []


def test_cel_params_is_the_constraint() -> None:
    constraint = {"metadata": {"name": "c1"}, "spec": {"parameters": {"n": 1}}}
    assert check("params.metadata.name == 'c1' && params.spec.parameters.n == 1", constraint=constraint) == []
    # Without the constraint, params is still shaped like one.
    assert check("params.spec.parameters.n == 2", params={"n": 2}) == []


def test_any_object_is_old_object_on_delete() -> None:
    source = {"validations": [{"expression": "false", "messageExpression": "variables.anyObject.metadata.name"}]}
    old = {"metadata": {"name": "old-pod"}}
    assert run(source, object=None, old_object=old, request={"operation": "DELETE"}) == ["old-pod"]
    assert run(source, object=POD, old_object=old, request={"operation": "UPDATE"}) == ["web"]


def test_object_old_object_request_and_namespace_object() -> None:
    expression = (
        "object.metadata.name == 'web' && oldObject.metadata.name == 'before' && request.operation == 'UPDATE' "
        "&& request.userInfo.username == 'alice' && namespaceObject.metadata.labels.env == 'prod'"
    )
    assert (
        check(
            expression,
            old_object={"metadata": {"name": "before"}},
            request={"operation": "UPDATE", "userInfo": {"username": "alice"}, "object": {"not": "visible"}},
            namespace_object={"metadata": {"name": "prod", "labels": {"env": "prod"}}},
        )
        == []
    )
    assert check("oldObject == null && namespaceObject == null") == []
    # Kubernetes' ``request`` does not carry the objects: they are separate variables.
    assert check("!has(request.object)", request={"operation": "CREATE", "object": POD}) == []


def test_variable_used_only_by_a_passing_path_is_not_an_error() -> None:
    # Like Kubernetes' lazy variables: a failing variable only matters where it is read.
    source = {
        "variables": [{"name": "broken", "expression": "object.spec.nothing"}],
        "validations": [{"expression": "true || variables.broken", "messageExpression": "variables.broken"}],
    }
    assert run(source) == []


def test_failing_variable_error_reaches_the_expression_that_reads_it() -> None:
    source = {
        "variables": [{"name": "broken", "expression": "object.spec.nothing"}],
        "validations": [{"expression": "variables.broken == 1"}],
    }
    assert run(source) == [
        "expression 'variables.broken == 1' resulted in error: variables.broken: no such key: nothing"
    ]


def test_failing_message_variable_falls_back_like_fsgroup() -> None:
    # string() of a map fails: Gatekeeper then reports the default message.
    source = {
        "variables": [{"name": "ranges", "expression": "variables.params.ranges.map(r, string(r)).join(', ')"}],
        "validations": [{"expression": "false", "messageExpression": "'ranges: ' + variables.ranges"}],
    }
    assert run(source, params={"ranges": [{"min": 1, "max": 2}]}) == ["failed expression: false"]


def test_variables_are_evaluated_once_per_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = cel_module._State._run

    def counting(self: Any, expr: Any) -> Any:
        calls.append(expr.source)
        return original(self, expr)

    monkeypatch.setattr(cel_module._State, "_run", counting)
    source = {
        "variables": [{"name": "n", "expression": "size(object.spec.containers)"}],
        "validations": [
            {"expression": "variables.n > 5", "messageExpression": "'n=' + string(variables.n)"},
            {"expression": "variables.n > 6", "messageExpression": "'n=' + string(variables.n)"},
        ],
    }
    assert run(source) == ["n=2", "n=2"]
    assert calls.count("size(object.spec.containers)") == 1


def test_whole_variables_map_is_available() -> None:
    source = {
        "variables": [{"name": "a", "expression": "1"}, {"name": "b", "expression": "2"}],
        "validations": [{"expression": "variables['a'] + variables['b'] == 3 && 'anyObject' in variables"}],
    }
    assert run(source) == []


def test_evaluate_does_not_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    program = CelProgram.compile(
        {
            "variables": [{"name": "x", "expression": "object.metadata.name"}],
            "matchConditions": [{"name": "m", "expression": "true"}],
            "validations": [{"expression": "variables.x == 'db'", "messageExpression": "'got ' + variables.x"}],
        }
    )

    def no_env() -> Any:
        raise AssertionError("compiled during evaluate")

    monkeypatch.setattr(cel_module, "_env", no_env)
    kwargs: dict[str, Any] = {"old_object": None, "params": None, "request": {}, "namespace_object": None}
    assert program.evaluate(object=POD, **kwargs) == [CelViolation("got web")]


# --- matchConditions ----------------------------------------------------------------------------------------------


def match_source(*conditions: str) -> dict[str, Any]:
    return {
        "matchConditions": [{"name": f"c{i}", "expression": e} for i, e in enumerate(conditions)],
        "validations": [{"expression": "false", "message": "denied"}],
    }


def test_match_conditions_all_true_run_the_validations() -> None:
    assert run(match_source("true", "object.kind == 'Pod'")) == ["denied"]


def test_a_false_match_condition_means_no_violations() -> None:
    assert run(match_source("true", "object.metadata.namespace == 'kube-system'")) == []


def test_match_condition_errors_are_reported() -> None:
    assert run(match_source("object.nope")) == ["expression 'object.nope' resulted in error: no such key: nope"]


def test_a_false_match_condition_beats_an_error() -> None:
    assert run(match_source("object.nope", "false")) == []


def test_match_conditions_can_read_variables() -> None:
    source = match_source("variables.isPod")
    source["variables"] = [{"name": "isPod", "expression": "object.kind == 'Pod'"}]
    assert run(source) == ["denied"]
    assert run(source, object={"kind": "Service"}) == []


# --- CEL language and the Kubernetes libraries ----------------------------------------------------------------------

TRUE_EXPRESSIONS = [
    # macros, has(), in, size, ternary, null, dyn, string(), lists
    "has(object.metadata.labels) && !has(object.metadata.annotations)",
    "object.spec.containers.all(c, has(c.image))",
    "object.spec.containers.exists(c, c.name == 'sidecar')",
    "object.spec.containers.exists_one(c, c.name == 'app')",
    "object.spec.containers.filter(c, c.image.startsWith('safe.io/')).map(c, c.name) == ['sidecar']",
    "object.spec.containers.map(c, has(c.securityContext), c.name) == ['app']",
    "'owner' in object.metadata.labels && 'nginx:1.25' in object.spec.containers.map(c, c.image)",
    "size(object.spec.containers) == 2 && size('abc') == 3 && 'abc'.size() == 3",
    "(has(object.spec.hostPID) ? object.spec.hostPID : false) == false",
    "{'a': null}.a == null && object.metadata.labels != null",
    "dyn(1) == 1 && string(2) == '2' && string('s') == 's' && int('3') == 3 && double(1) == 1.0",
    "[1, 2] + [3] == [1, 2, 3] && {'a': 1, 'b': 2,}.b == 2",
    "dyn(1) == 1.0 && dyn(1) < 1.5 && dyn('') != 0 && object.metadata.name != 1",
    "object.spec.containers.exists(c, c.securityContext.privileged)",  # errors on one element are absorbed
    # strings
    "'AbC'.lowerAscii() == 'abc' && 'AbC'.upperAscii() == 'ABC'",
    "'a,b,c'.split(',') == ['a', 'b', 'c'] && 'a,b,c'.split(',', 2) == ['a', 'b,c']",
    "['a', 'b'].join() == 'ab' && ['a', 'b'].join(', ') == 'a, b'",
    "'img:*'.replace('*', '') == 'img:' && 'aaa'.replace('a', 'b', 2) == 'bba'",
    "'nginx:1'.startsWith('nginx') && 'nginx:1'.endsWith(':1') && 'nginx'.contains('gin')",
    "'nginx:1.25'.matches('^nginx:[0-9.]+$') && !'nginx'.matches('^x')",
    "'  x '.trim() == 'x' && 'hello'.substring(1, 3) == 'el' && 'hello'.charAt(1) == 'e'",
    "'hello'.indexOf('l') == 2 && 'hello'.lastIndexOf('l') == 3",
    "'%s has %d'.format(['pod', 2]) == 'pod has 2' && strings.quote('a\"b') == '\"a\\\\\"b\"'",
    # optionals and cel.bind
    "object.?metadata.?annotations.?x.orValue('none') == 'none'",
    "object.metadata.labels[?'app'].hasValue() && !object.metadata.labels[?'nope'].hasValue()",
    "cel.bind(n, object.metadata.name, n + n) == 'webweb'",
    # Kubernetes lists library
    "[1, 2, 3].isSorted() && ![2, 1].isSorted() && ['a', 'b'].isSorted()",
    "[1, 2, 3].sum() == 6 && [1.5, 2.5].sum() == 4.0 && [].sum() == 0",
    "[3, 1, 2].min() == 1 && [3, 1, 2].max() == 3 && ['b', 'a'].min() == 'a'",
    # Kubernetes regex library
    "'abc123def456'.find('[0-9]+') == '123' && 'abc'.find('[0-9]') == ''",
    "'a1b2c3'.findAll('[0-9]') == ['1', '2', '3'] && 'a1b2c3'.findAll('[0-9]', 2) == ['1', '2']",
    # sets
    "sets.contains([1, 2, 3], [1, 3]) && !sets.contains([1], [2])",
    "sets.equivalent([1, 2, 2], [2, 1]) && sets.intersects([1, 2], [2, 9]) && !sets.intersects([1], [2])",
    # Kubernetes quantity library
    "isQuantity('1.5Gi') && !isQuantity('1.5x') && !isQuantity('')",
    "quantity('1Gi') == quantity('1024Mi') && quantity('1k') == quantity('1000') && quantity('1e3') == quantity('1k')",
    "quantity('500m').isLessThan(quantity('1')) && quantity('2Gi').isGreaterThan(quantity('2G'))",
    "quantity('1').compareTo(quantity('1000m')) == 0 && quantity('1').compareTo(quantity('2')) == -1",
    "quantity('1.5').add(quantity('500m')) == quantity('2') && quantity('2').sub(1) == quantity('1')",
    "quantity('2').add(3).asInteger() == 5 && quantity('1Ki').asInteger() == 1024",
    "quantity('1.5').isInteger() == false && quantity('3').isInteger()",
    "quantity('-1').sign() == -1 && quantity('0').sign() == 0 && quantity('250m').asApproximateFloat() == 0.25",
    # Kubernetes URL library
    "isURL('https://example.com:8443/a/b?x=1&x=2&y') && !isURL('not a url') && isURL('/relative/path')",
    "url('https://user@example.com:8443/a%20b?x=1').getScheme() == 'https'",
    "url('https://example.com:8443/p').getHost() == 'example.com:8443'",
    "url('https://[::1]:80/').getHostname() == '::1' && url('https://[::1]:80/').getPort() == '80'",
    "url('https://example.com/a%20b').getEscapedPath() == '/a%20b'",
    "url('https://e.com/?x=1&x=2&y').getQuery() == {'x': ['1', '2'], 'y': ['']}",
    # Kubernetes IP and CIDR libraries
    "isIP('10.0.0.1') && isIP('::1') && !isIP('10.0.0.256') && !isIP('::ffff:1.2.3.4') && !isIP('010.0.0.1')",
    "ip('10.0.0.1').family() == 4 && ip('fe80::1').family() == 6 && string(ip('10.0.0.1')) == '10.0.0.1'",
    "ip('127.0.0.1').isLoopback() && ip('0.0.0.0').isUnspecified() && ip('169.254.1.1').isLinkLocalUnicast()",
    "ip('224.0.0.1').isLinkLocalMulticast() && ip('8.8.8.8').isGlobalUnicast() && !ip('127.0.0.1').isGlobalUnicast()",
    "ip.isCanonical('10.0.0.1') && !ip.isCanonical('2001:DB8::1')",
    "isCIDR('10.0.0.0/8') && !isCIDR('10.0.0.0') && !isCIDR('10.0.0.0/33')",
    "cidr('10.0.0.0/8').containsIP(ip('10.1.2.3')) && cidr('10.0.0.0/8').containsIP('10.1.2.3')",
    "!cidr('10.0.0.0/8').containsIP('11.0.0.1') && cidr('10.0.0.0/8').containsCIDR('10.1.0.0/16')",
    "cidr('10.1.2.3/8').ip() == ip('10.1.2.3') && cidr('10.1.2.3/8').masked() == cidr('10.0.0.0/8')",
    "cidr('10.0.0.0/8').prefixLength() == 8 && string(cidr('192.168.0.0/24')) == '192.168.0.0/24'",
]


@pytest.mark.parametrize("expression", TRUE_EXPRESSIONS)
def test_language_and_extension_functions(expression: str) -> None:
    assert check(expression) == []


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("object.spec.nothing == 1", "no such key: nothing"),
        ("object.spec.containers[5].name == ''", "index"),
        ("1 / (size(object.spec.containers) - 2) == 1", "divide by zero"),
        ("int('x') == 1", "cannot convert"),
        ("quantity('12 apples').isInteger()", "quantities must match"),
        ("quantity('1.5').asInteger() == 1", "cannot convert value to integer"),
        ("[].min() == 0", "min called on empty list"),
        ("ip('300.1.1.1').family() == 4", "parse error"),
        ("url('nope').getHost() == ''", "URL parse error"),
        ("object.metadata.name.matches('[') ", "invalid regular expression"),
        ("string(object.metadata) == ''", "no such overload"),
        ("dyn(object.metadata.name).startsWith(dyn(1))", "no such overload"),
    ],
)
def test_runtime_errors_become_violations(expression: str, error: str) -> None:
    messages = check(expression)
    assert len(messages) == 1
    assert messages[0].startswith(f"expression '{expression}' resulted in error: ")
    assert error in messages[0]


def test_null_object_errors_do_not_crash() -> None:
    # On DELETE ``object`` is null; reading through it is an evaluation error, reported as a violation.
    messages = check("object.metadata.name == 'x'", object=None, old_object=POD, request={"operation": "DELETE"})
    assert len(messages) == 1 and "resulted in error" in messages[0]


def test_inputs_that_are_not_plain_json_are_converted() -> None:
    obj = {"metadata": {"name": "web", "labels": ("a", "b")}, "spec": {"when": object()}}
    assert check("object.metadata.labels == ['a', 'b'] && type(object.spec.when) == string", object=obj) == []


def test_programs_are_reusable_across_evaluations() -> None:
    program = CelProgram.compile(
        {"validations": [{"expression": "object.n < 3", "messageExpression": "string(object.n)"}]}
    )
    kwargs: dict[str, Any] = {"old_object": None, "params": None, "request": {}, "namespace_object": None}
    assert [program.evaluate(object={"n": n}, **kwargs) for n in range(2, 5)] == [
        [],
        [CelViolation("3")],
        [CelViolation("4")],
    ]


# --- compile errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"validations": [{"expression": "object.spec +"}]}, "validations[0]: compilation failed for expression "),
        ({"validations": [{"expression": "true"}, {"expression": "nope == 1"}]}, "undeclared reference to 'nope'"),
        ({"validations": [{"expression": "'s'"}]}, "validations[0]: expression \"'s'\" must evaluate to bool"),
        (
            {"validations": [{"expression": "false", "messageExpression": "1"}]},
            "validations[0].messageExpression: expression '1' must evaluate to string",
        ),
        ({"validations": [{"expression": "variables.nope"}]}, "undefined field 'nope' of variables"),
        (
            {
                "variables": [{"name": "a", "expression": "variables.b"}, {"name": "b", "expression": "1"}],
                "validations": [{"expression": "true"}],
            },
            "variables[0] (a): compilation failed for expression 'variables.b': undefined field 'b'",
        ),
        (
            {
                "variables": [{"name": "a", "expression": "1"}, {"name": "a", "expression": "2"}],
                "validations": [{"expression": "true"}],
            },
            "variables[1]: duplicate variable name 'a'",
        ),
        (
            {"variables": [{"name": "params", "expression": "1"}], "validations": [{"expression": "true"}]},
            "variables[0]: name 'params' is reserved",
        ),
        (
            {"variables": [{"name": "not-valid", "expression": "1"}], "validations": [{"expression": "true"}]},
            "variables[0]: name 'not-valid' is not a valid CEL identifier",
        ),
        (
            {"variables": [{"name": "x", "expression": "object.("}], "validations": [{"expression": "true"}]},
            "variables[0] (x): compilation failed for expression 'object.('",
        ),
        (
            {"matchConditions": [{"name": "m", "expression": "'x'"}], "validations": [{"expression": "true"}]},
            "matchConditions[0] (m): expression \"'x'\" must evaluate to bool",
        ),
        ({"validations": [{"expression": ""}]}, "validations[0]: expression must be a non-empty string"),
        ({"validations": []}, "at least one validation is required"),
        ({"validations": "nope"}, "validations: must be a list"),
    ],
)
def test_compile_errors_name_the_entry_and_the_expression(source: Mapping[str, Any], expected: str) -> None:
    with pytest.raises(CelCompileError) as info:
        CelProgram.compile(source)
    assert expected in str(info.value)
    assert isinstance(info.value, ValueError)


def test_strings_inside_expressions_do_not_count_as_variable_references() -> None:
    source = {"validations": [{"expression": "'variables.nope' != \"variables.x\" // variables.y"}]}
    assert run(source) == []


def test_a_field_named_variables_is_not_a_variable_reference() -> None:
    obj = {"spec": {"variables": {"foo": 1}}}
    assert check("object.spec.variables.foo == 1", object=obj) == []


# --- conformance: Gatekeeper's own CEL results for the library templates -------------------------------------------


def _cel_source(template: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for target in template.get("spec", {}).get("targets", []):
        for entry in target.get("code", []) or []:
            if entry.get("engine") == "K8sNativeValidation":
                return entry.get("source")
    return None


def _load_cases() -> list[Any]:
    reference = VALIDATION / "reference_violations.json"
    if not reference.exists():
        return [
            pytest.param(None, marks=pytest.mark.skip(reason=f"{reference} is absent (no shared/ beside the repo)"))
        ]
    cases = []
    for case in json.loads(reference.read_text()):
        suite_dir = (VALIDATION / "library" / case["suite"]).parent
        template = yaml.safe_load((suite_dir / case["template"]).read_text())
        if _cel_source(template) is None or "cel" not in case.get("engines", {}):
            continue
        ident = f"{case['suite'].rsplit('/', 2)[-2]}/{case['test']}/{case['case']}"
        cases.append(pytest.param(case, id=ident))
    return cases


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def _constraint_applies(constraint: Mapping[str, Any], obj: Mapping[str, Any]) -> str | None:
    """None when the constraint's match selects ``obj``; else why not (kinds and namespaces only)."""
    match = constraint.get("spec", {}).get("match") or {}
    group, kind = _group(str(obj.get("apiVersion", ""))), obj.get("kind")
    kinds = match.get("kinds")
    if kinds and not any(
        (group in k.get("apiGroups", ["*"]) or "*" in k.get("apiGroups", ["*"]))
        and (kind in k.get("kinds", ["*"]) or "*" in k.get("kinds", ["*"]))
        for k in kinds
    ):
        return f"the constraint does not match kind {group}/{kind}"
    namespace = (obj.get("metadata") or {}).get("namespace")
    if namespace and namespace in (match.get("excludedNamespaces") or []):
        return f"the constraint excludes namespace {namespace}"
    if namespace and match.get("namespaces") and namespace not in match["namespaces"]:
        return f"the constraint does not select namespace {namespace}"
    return None


@pytest.mark.parametrize("case", _load_cases())
def test_library_conformance(case: Mapping[str, Any]) -> None:
    suite_dir = (VALIDATION / "library" / case["suite"]).parent
    template = yaml.safe_load((suite_dir / case["template"]).read_text())
    constraint = yaml.safe_load((suite_dir / case["constraint"]).read_text())
    obj = yaml.safe_load((suite_dir / case["object"]).read_text())
    if obj.get("kind") == "AdmissionReview":
        request = dict(obj["request"])
        new, old = request.get("object"), request.get("oldObject")
    else:
        new, old = obj, None
        request = {"operation": "CREATE", "object": obj}
    expected = sorted(v["msg"] for v in case["engines"]["cel"]["violations"])
    reason = _constraint_applies(constraint, new if new is not None else old)
    if reason is not None:
        assert expected == [], f"Gatekeeper reports violations although {reason}"
        pytest.skip(reason)

    program = CelProgram.compile(_cel_source(template) or {})
    violations = program.evaluate(
        object=new,
        old_object=old,
        params=constraint.get("spec", {}).get("parameters"),
        request=request,
        namespace_object=None,
        constraint=constraint,
    )
    assert sorted(v.message for v in violations) == expected
