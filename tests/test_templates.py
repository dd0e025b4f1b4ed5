"""ConstraintTemplates (mutator.validation.templates): engine precedence, structure checks, libs."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from mutator.match import PolicyError
from mutator.validation.review import review_from_object
from mutator.validation.system import ValidationSystem
from mutator.validation.templates import ENGINE_CEL, ENGINE_REGO, Template, template_from_resource

LEGACY_REGO = """package k8sbanneddomain

violation[{"msg": msg}] {
  endswith(input.review.object.spec.host, input.parameters.domain)
  msg := sprintf("legacy: host %v is in %v", [input.review.object.spec.host, input.parameters.domain])
}
"""

CODE_REGO = """package k8sbanneddomain

violation[{"msg": msg}] {
  endswith(input.review.object.spec.host, input.parameters.domain)
  msg := "code entry: banned domain"
}
"""

CODE_REGO_V1 = """package k8sbanneddomain

violation contains {"msg": "v1 code entry: banned domain"} if {
  endswith(input.review.object.spec.host, input.parameters.domain)
}
"""

CEL_SOURCE: dict[str, Any] = {
    "validations": [
        {
            "expression": "!object.spec.host.endsWith(variables.params.domain)",
            "message": "cel: banned domain",
        }
    ]
}


def make_template(
    *,
    name: str = "k8sbanneddomain",
    kind: str = "K8sBannedDomain",
    rego: str | None = None,
    code: list[dict[str, Any]] | None = None,
    libs: list[Any] | None = None,
    schema: Any = None,
) -> dict[str, Any]:
    target: dict[str, Any] = {"target": "admission.k8s.gatekeeper.sh"}
    if rego is not None:
        target["rego"] = rego
    if libs is not None:
        target["libs"] = libs
    if code is not None:
        target["code"] = code
    crd_spec: dict[str, Any] = {"names": {"kind": kind}}
    if schema is not None:
        crd_spec["validation"] = {"openAPIV3Schema": schema}
    return {
        "apiVersion": "templates.gatekeeper.sh/v1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": name},
        "spec": {"crd": {"spec": crd_spec}, "targets": [target]},
    }


def rego_entry(rego: str, version: str | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {"rego": rego}
    if version is not None:
        source["version"] = version
    return {"engine": "Rego", "source": source}


def cel_entry(source: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"engine": "K8sNativeValidation", "source": source if source is not None else CEL_SOURCE}


ROUTE = {
    "apiVersion": "example.com/v1",
    "kind": "Route",
    "metadata": {"name": "r", "namespace": "web"},
    "spec": {"host": "shop.bad.example"},
}
PARAMS = {"domain": ".bad.example"}


def messages_of(template: Template, obj: dict[str, Any] = ROUTE, params: Any = PARAMS) -> list[str]:
    """Evaluate a template's program directly, whichever engine it uses."""
    review = review_from_object(obj)
    if template.engine == ENGINE_CEL:
        found = template.program.evaluate(
            object=obj, old_object=None, params=params, request=review, namespace_object=None, constraint=None
        )
        return [v.message for v in found]
    raw = template.program.evaluate(json.dumps({"review": review, "parameters": params}))
    return sorted(str(v["msg"]) for v in raw)


# --- engine precedence ------------------------------------------------------------------------------------------


def test_legacy_rego_alone() -> None:
    template = template_from_resource(make_template(rego=LEGACY_REGO))
    assert (template.name, template.kind, template.engine) == ("k8sbanneddomain", "K8sBannedDomain", ENGINE_REGO)
    assert messages_of(template) == ["legacy: host shop.bad.example is in .bad.example"]


@pytest.mark.parametrize("enable_cel", [True, False])
def test_legacy_rego_wins_over_a_rego_code_entry(enable_cel: bool) -> None:
    resource = make_template(rego=LEGACY_REGO, code=[rego_entry(CODE_REGO)])
    template = template_from_resource(resource, enable_cel=enable_cel)
    assert template.engine == ENGINE_REGO
    assert messages_of(template) == ["legacy: host shop.bad.example is in .bad.example"]


def test_cel_wins_over_rego_code_when_enabled() -> None:
    resource = make_template(code=[rego_entry(CODE_REGO), cel_entry()])
    template = template_from_resource(resource, enable_cel=True)
    assert template.engine == ENGINE_CEL
    assert messages_of(template) == ["cel: banned domain"]


def test_rego_code_is_used_when_cel_is_disabled() -> None:
    resource = make_template(code=[cel_entry(), rego_entry(CODE_REGO)])
    template = template_from_resource(resource, enable_cel=False)
    assert template.engine == ENGINE_REGO
    assert messages_of(template) == ["code entry: banned domain"]


def test_cel_wins_over_legacy_rego_when_enabled_and_legacy_is_used_otherwise() -> None:
    resource = make_template(rego=LEGACY_REGO, code=[cel_entry()])
    assert template_from_resource(resource, enable_cel=True).engine == ENGINE_CEL
    disabled = template_from_resource(resource, enable_cel=False)
    assert disabled.engine == ENGINE_REGO
    assert messages_of(disabled) == ["legacy: host shop.bad.example is in .bad.example"]


def test_disabled_cel_is_not_even_compiled() -> None:
    broken_cel = cel_entry({"validations": [{"expression": "object.spec.(((", "message": "x"}]})
    resource = make_template(code=[broken_cel, rego_entry(CODE_REGO)])
    assert template_from_resource(resource, enable_cel=False).engine == ENGINE_REGO
    with pytest.raises(PolicyError, match=r"spec\.targets\[0\]\.code\[0\]\.source"):
        template_from_resource(resource, enable_cel=True)


def test_only_cel_with_cel_disabled_is_rejected() -> None:
    resource = make_template(code=[cel_entry()])
    assert template_from_resource(resource, enable_cel=True).engine == ENGINE_CEL
    with pytest.raises(PolicyError, match="K8sNativeValidation"):
        template_from_resource(resource, enable_cel=False)


def test_unknown_engines_are_skipped() -> None:
    resource = make_template(code=[{"engine": "Wasm", "source": {}}, rego_entry(CODE_REGO)])
    assert messages_of(template_from_resource(resource)) == ["code entry: banned domain"]
    with pytest.raises(PolicyError, match=r"spec\.targets\[0\]"):
        template_from_resource(make_template(code=[{"engine": "Wasm", "source": {}}]))


def test_no_code_at_all_is_rejected() -> None:
    with pytest.raises(PolicyError, match=r"spec\.targets\[0\]"):
        template_from_resource(make_template())
    with pytest.raises(PolicyError, match=r"spec\.targets\[0\]"):
        template_from_resource(make_template(rego="   \n"))


def test_rego_code_entry_v1() -> None:
    template = template_from_resource(make_template(code=[rego_entry(CODE_REGO_V1, "v1")]))
    assert template.engine == ENGINE_REGO
    assert messages_of(template) == ["v1 code entry: banned domain"]
    # the same text as v0 (the default) does not compile, and the error names the entry
    with pytest.raises(PolicyError, match=r"spec\.targets\[0\]\.code\[0\]\.source\.rego"):
        template_from_resource(make_template(code=[rego_entry(CODE_REGO_V1)]))


def test_rego_code_entry_bad_version() -> None:
    with pytest.raises(PolicyError, match=r"spec\.targets\[0\]\.code\[0\]\.source\.version"):
        template_from_resource(make_template(code=[rego_entry(CODE_REGO, "v2")]))


def test_rego_code_entry_without_rego() -> None:
    resource = make_template(code=[{"engine": "Rego", "source": {"version": "v0"}}])
    with pytest.raises(PolicyError, match=r"spec\.targets\[0\]\.code\[0\]\.source\.rego: required"):
        template_from_resource(resource)


def test_legacy_rego_compile_error_names_field_and_location() -> None:
    bad = 'package k8sbanneddomain\n\nviolation[{"msg": m}] {\n  m := input.review.object ++ 1\n}\n'
    with pytest.raises(PolicyError) as info:
        template_from_resource(make_template(rego=bad))
    text = str(info.value)
    assert text.startswith("spec.targets[0].rego: ")
    assert re.search(r"k8sbanneddomain\.rego:\d+:\d+", text)
    assert "Stack backtrace" not in text


# --- structure --------------------------------------------------------------------------------------------------


def test_name_must_be_the_lowercase_kind() -> None:
    with pytest.raises(PolicyError, match=r"metadata\.name") as info:
        template_from_resource(make_template(name="banned-domain", rego=LEGACY_REGO))
    assert "k8sbanneddomain" in str(info.value)
    with pytest.raises(PolicyError, match=r"metadata\.name"):
        template_from_resource(make_template(name="K8sBannedDomain", rego=LEGACY_REGO))


def test_kind_is_required() -> None:
    resource = make_template(rego=LEGACY_REGO)
    del resource["spec"]["crd"]["spec"]["names"]["kind"]
    with pytest.raises(PolicyError, match=r"spec\.crd\.spec\.names\.kind"):
        template_from_resource(resource)


def test_crd_names_are_required() -> None:
    resource = make_template(rego=LEGACY_REGO)
    del resource["spec"]["crd"]
    with pytest.raises(PolicyError, match=r"spec\.crd"):
        template_from_resource(resource)


def test_name_is_required_and_bounded() -> None:
    resource = make_template(rego=LEGACY_REGO)
    resource["metadata"] = {}
    with pytest.raises(PolicyError, match=r"metadata\.name"):
        template_from_resource(resource)
    long_kind = "K" + "x" * 63
    with pytest.raises(PolicyError, match=r"metadata\.name"):
        template_from_resource(make_template(name=long_kind.lower(), kind=long_kind, rego=LEGACY_REGO))


def test_missing_targets() -> None:
    resource = make_template(rego=LEGACY_REGO)
    del resource["spec"]["targets"]
    with pytest.raises(PolicyError, match=r"spec\.targets"):
        template_from_resource(resource)
    resource["spec"]["targets"] = []
    with pytest.raises(PolicyError, match=r"spec\.targets"):
        template_from_resource(resource)


def test_two_targets_are_rejected() -> None:
    resource = make_template(rego=LEGACY_REGO)
    resource["spec"]["targets"].append(copy.deepcopy(resource["spec"]["targets"][0]))
    with pytest.raises(PolicyError, match=r"spec\.targets"):
        template_from_resource(resource)


@pytest.mark.parametrize("target", ["admission.k8s.io", "validation.gatekeeper.sh", "", None])
def test_wrong_target_name(target: str | None) -> None:
    resource = make_template(rego=LEGACY_REGO)
    resource["spec"]["targets"][0]["target"] = target
    with pytest.raises(PolicyError, match=r"spec\.targets\[0\]\.target"):
        template_from_resource(resource)


def test_wrong_api_version() -> None:
    resource = make_template(rego=LEGACY_REGO)
    resource["apiVersion"] = "templates.gatekeeper.sh/v2"
    with pytest.raises(PolicyError, match="apiVersion"):
        template_from_resource(resource)


@pytest.mark.parametrize("api_version", ["templates.gatekeeper.sh/v1beta1", "templates.gatekeeper.sh/v1alpha1"])
def test_older_api_versions_are_accepted(api_version: str) -> None:
    resource = make_template(rego=LEGACY_REGO)
    resource["apiVersion"] = api_version
    assert template_from_resource(resource).kind == "K8sBannedDomain"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "objekt"},
        {"type": "object", "properties": {"domain": {"type": 7}}},
        {"type": "object", "properties": {"domain": {"type": "string", "minLength": -1}}},
        "not a schema",
    ],
)
def test_bad_open_api_schema(schema: Any) -> None:
    with pytest.raises(PolicyError, match=r"spec\.crd\.spec\.validation\.openAPIV3Schema"):
        template_from_resource(make_template(rego=LEGACY_REGO, schema=schema))


def test_good_schema_is_kept_for_constraints() -> None:
    schema = {"type": "object", "properties": {"domain": {"type": "string"}}}
    template = template_from_resource(make_template(rego=LEGACY_REGO, schema=schema))
    template.parameters.validate({"domain": ".x"})
    with pytest.raises(PolicyError, match=r"spec\.parameters\.domain"):
        template.parameters.validate({"domain": 3})


def test_libs_must_be_strings() -> None:
    with pytest.raises(PolicyError, match=r"spec\.targets\[0\]\.libs"):
        template_from_resource(make_template(rego=LEGACY_REGO, libs=[{"rego": "x"}]))


# --- libs ---------------------------------------------------------------------------------------------------------

LIB_HOSTS = """package lib.hosts

banned(host, domain) {
  endswith(host, domain)
}

label(host) = concat("", ["<", host, ">"])
"""

LIB_FORMAT = """package lib.format

import data.lib.hosts

line(host) = sprintf("lib says %v is banned", [hosts.label(host)])
"""

REGO_WITH_LIBS = """package k8sbanneddomain

import data.lib.format
import data.lib.hosts

violation[{"msg": msg}] {
  host := input.review.object.spec.host
  hosts.banned(host, input.parameters.domain)
  msg := format.line(host)
}

violation[{"msg": "full path works too"}] {
  data.lib.hosts.banned(input.review.object.spec.host, input.parameters.domain)
}
"""

EXPECTED_LIB_MESSAGES = ["full path works too", "lib says <shop.bad.example> is banned"]


def test_libs_are_importable_as_data_lib() -> None:
    template = template_from_resource(make_template(rego=REGO_WITH_LIBS, libs=[LIB_HOSTS, LIB_FORMAT]))
    assert messages_of(template) == EXPECTED_LIB_MESSAGES
    assert messages_of(template, {**ROUTE, "spec": {"host": "shop.good.example"}}) == []


def test_libs_of_a_rego_code_entry() -> None:
    entry = rego_entry(REGO_WITH_LIBS)
    entry["source"]["libs"] = [LIB_HOSTS, LIB_FORMAT]
    template = template_from_resource(make_template(code=[entry]))
    assert messages_of(template) == EXPECTED_LIB_MESSAGES


def test_missing_lib_is_reported() -> None:
    with pytest.raises(PolicyError, match=r"spec\.targets\[0\]\.rego"):
        template_from_resource(make_template(rego=REGO_WITH_LIBS, libs=[LIB_FORMAT]))


def test_libs_work_in_the_validation_system_next_to_another_template_with_the_same_lib_package() -> None:
    """Two templates whose libs share a package name must not see each other's lib."""
    other_lib = 'package lib.hosts\n\nbanned(host, domain) {\n  host == "never"\n}\n\nlabel(host) = "other"\n'
    other_rego = (
        "package k8sotherdomain\n\nimport data.lib.hosts\n\n"
        'violation[{"msg": hosts.label(input.review.object.spec.host)}] {\n'
        "  hosts.banned(input.review.object.spec.host, input.parameters.domain)\n}\n"
    )
    system = ValidationSystem()
    system.add_template(template_from_resource(make_template(rego=REGO_WITH_LIBS, libs=[LIB_HOSTS, LIB_FORMAT])))
    system.add_template(
        template_from_resource(
            make_template(name="k8sotherdomain", kind="K8sOtherDomain", rego=other_rego, libs=[other_lib])
        )
    )
    for kind, name in (("K8sBannedDomain", "banned"), ("K8sOtherDomain", "other")):
        system.add_constraint(
            {
                "apiVersion": "constraints.gatekeeper.sh/v1beta1",
                "kind": kind,
                "metadata": {"name": name},
                "spec": {"parameters": PARAMS},
            }
        )
    result = system.review(review_from_object(ROUTE))
    assert result.errors == []
    assert sorted(v.text for v in result.violations) == [
        "[banned] full path works too",
        "[banned] lib says <shop.bad.example> is banned",
    ]
    never = system.review(review_from_object({**ROUTE, "spec": {"host": "never"}}))
    assert [v.text for v in never.violations] == ["[other] other"]


def test_uses_inventory_follows_the_source() -> None:
    plain = template_from_resource(make_template(rego=LEGACY_REGO))
    assert plain.uses_inventory is False
    referential = LEGACY_REGO.replace(
        "endswith(input.review.object.spec.host, input.parameters.domain)",
        'data.inventory.cluster["v1"]["Namespace"][input.review.object.metadata.namespace]',
    )
    assert template_from_resource(make_template(rego=referential)).uses_inventory is True
