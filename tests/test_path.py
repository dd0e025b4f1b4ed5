"""The location grammar: tokenizer, parser, canonical form and prefixes (mutator.mutation.path)."""

from __future__ import annotations

import pytest

from mutator.mutation.path import (
    INT64_MAX,
    Glob,
    List,
    LocationError,
    Object,
    Path,
    T,
    Token,
    parse,
    quote_if_needed,
    tokenize,
)


def _types(text: str) -> list[T]:
    return [tok.type for tok in tokenize(text)]


# --------------------------------------------------------------------------- tokenizer


def test_tokenize_glob_selector() -> None:
    assert _types("spec.containers[name: *].image") == [
        T.IDENT,
        T.SEPARATOR,
        T.IDENT,
        T.LBRACKET,
        T.IDENT,
        T.COLON,
        T.GLOB,
        T.RBRACKET,
        T.SEPARATOR,
        T.IDENT,
        T.EOF,
    ]


def test_tokenize_int_string_and_ident_literals() -> None:
    tokens = tokenize("ports[containerPort: 8080].'app.kubernetes.io/name'")
    literals = [(tok.type, tok.literal) for tok in tokens]
    assert (T.INT, "8080") in literals
    assert (T.STRING, "app.kubernetes.io/name") in literals
    assert (T.IDENT, "containerPort") in literals
    assert literals[-1] == (T.EOF, "")


def test_tokenize_ident_may_hold_dashes_and_underscores() -> None:
    tokens = tokenize("my-field_name")
    assert [(t.type, t.literal) for t in tokens] == [(T.IDENT, "my-field_name"), (T.EOF, "")]


def test_tokenize_unterminated_string_ends_with_error_token() -> None:
    tokens = tokenize('spec."unterminated')
    assert tokens[-1].type is T.ERROR
    assert T.EOF not in [t.type for t in tokens]


def test_tokenize_illegal_character_is_an_error_token() -> None:
    tokens = tokenize("spec.con$tainers")
    assert tokens[-1] == Token(T.ERROR, "$")


def test_tokenize_skips_all_whitespace() -> None:
    assert _types(" \tspec \n. \r\ncontainers ") == [T.IDENT, T.SEPARATOR, T.IDENT, T.EOF]


# --------------------------------------------------------------------------- parser: nodes


def test_parse_plain_fields() -> None:
    path = parse("spec.template.spec.securityContext")
    assert path.nodes == (
        Object("spec"),
        Object("template"),
        Object("spec"),
        Object("securityContext"),
    )


def test_parse_glob_selector() -> None:
    path = parse("spec.containers[name: *].imagePullPolicy")
    assert path.nodes == (Object("spec"), Object("containers"), List("name", Glob), Object("imagePullPolicy"))
    selector = path.nodes[2]
    assert isinstance(selector, List)
    assert selector.glob
    assert selector.key_value is Glob


def test_parse_keyed_selector_with_string_value() -> None:
    path = parse("spec.initContainers[name: wait-for-db].image")
    selector = path.nodes[2]
    assert selector == List("name", "wait-for-db")
    assert isinstance(selector, List)
    assert not selector.glob


def test_quoted_star_is_a_string_not_a_glob() -> None:
    path = parse('spec.containers[name: "*"].image')
    selector = path.nodes[2]
    assert isinstance(selector, List)
    assert selector.key_value == "*"
    assert not selector.glob
    assert str(path) == 'spec.containers[name: "*"].image'


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ('metadata.annotations."example.com/owner"', "example.com/owner"),
        ("metadata.annotations.'example.com/owner'", "example.com/owner"),
        ('metadata.labels."has space"', "has space"),
        ('metadata.labels."say \\"hi\\""', 'say "hi"'),
        ("metadata.labels.'it\\'s'", "it's"),
        ('metadata.labels."back\\\\slash"', "back\\slash"),
        ('metadata.labels."1st-label"', "1st-label"),
        ('metadata.labels.""', ""),
        ("metadata.labels.'double\"inside'", 'double"inside'),
    ],
)
def test_quoted_field_names(location: str, expected: str) -> None:
    path = parse(location)
    assert path.nodes[-1] == Object(expected)


def test_quoted_key_field_and_key_value() -> None:
    path = parse("spec.volumes['volume.name': \"cache volume\"].emptyDir")
    assert path.nodes[2] == List("volume.name", "cache volume")


def test_int_key_value_is_an_int() -> None:
    path = parse("spec.containers[name: app].ports[containerPort: 8080].protocol")
    selector = path.nodes[4]
    assert isinstance(selector, List)
    assert selector.key_value == 8080
    assert isinstance(selector.key_value, int)


def test_quoted_digits_are_a_string_key_value() -> None:
    path = parse('spec.ports[port: "8080"].name')
    selector = path.nodes[2]
    assert isinstance(selector, List)
    assert selector.key_value == "8080"
    assert isinstance(selector.key_value, str)
    assert parse("spec.ports[port: 8080].name") != path


def test_int_key_value_with_leading_zeros() -> None:
    path = parse("spec.ports[port: 0080].name")
    assert path.nodes[2] == List("port", 80)
    assert str(path) == "spec.ports[port: 80].name"


def test_int64_max_is_accepted() -> None:
    path = parse(f"spec.items[id: {INT64_MAX}].value")
    assert path.nodes[2] == List("id", 9223372036854775807)


def test_int64_overflow_is_rejected() -> None:
    with pytest.raises(LocationError) as info:
        parse("spec.items[id: 9223372036854775808].value")
    assert info.value.kind == "ErrInvalidInteger"
    assert "9223372036854775808" in str(info.value)


def test_dash_prefixed_key_value_is_an_identifier_string() -> None:
    path = parse("spec.offsets[delta: -1].apply")
    assert path.nodes[2] == List("delta", "-1")


@pytest.mark.parametrize(
    "location",
    [
        "spec . containers [ name : app ] . image",
        "spec.containers[name:app].image",
        "\tspec.\ncontainers[\n  name:\tapp\n].image  ",
    ],
)
def test_whitespace_between_tokens_is_ignored(location: str) -> None:
    assert parse(location) == parse("spec.containers[name: app].image")


def test_whitespace_inside_quotes_is_kept() -> None:
    assert parse("metadata.labels.' padded '").nodes[-1] == Object(" padded ")


def test_empty_location_is_an_empty_path() -> None:
    path = parse("")
    assert path.nodes == ()
    assert len(path) == 0
    assert str(path) == ""


def test_selector_may_end_the_path() -> None:
    path = parse("spec.containers[name: sidecar]")
    assert path.nodes[-1] == List("name", "sidecar")
    assert len(path) == 3


# --------------------------------------------------------------------------- parser: errors


@pytest.mark.parametrize(
    ("location", "kind"),
    [
        (".spec", "ErrUnexpectedToken"),
        ("spec.", "ErrTrailingSeparator"),
        ("spec.containers[name: app].", "ErrTrailingSeparator"),
        ("spec..containers", "ErrUnexpectedToken"),
        ("spec.containers[name: app][name: b]", "ErrUnexpectedToken"),
        ("spec.containers[name: app*]", "ErrUnexpectedToken"),
        ("spec.containers[name: *app]", "ErrUnexpectedToken"),
        ("spec.containers[name app]", "ErrUnexpectedToken"),
        ("spec.containers[name: app", "ErrUnexpectedToken"),
        ("spec.containers[name: ]", "ErrUnexpectedToken"),
        ("spec.containers[: app]", "ErrUnexpectedToken"),
        ("spec.containers[*: app]", "ErrUnexpectedToken"),
        ("spec.containers[name: app]image", "ErrUnexpectedToken"),
        ("spec.containers]", "ErrUnexpectedToken"),
        ("spec.1containers", "ErrUnexpectedToken"),
        ("8080", "ErrUnexpectedToken"),
        ("spec.*", "ErrUnexpectedToken"),
        ("spec:containers", "ErrUnexpectedToken"),
        ("spec.con$tainers", "ErrUnexpectedToken"),
        ('spec."unterminated', "ErrUnexpectedToken"),
        ("spec.containers[name: 'app]", "ErrUnexpectedToken"),
        ("spec.items[id: 99999999999999999999].v", "ErrInvalidInteger"),
    ],
)
def test_parse_errors_have_a_kind(location: str, kind: str) -> None:
    with pytest.raises(LocationError) as info:
        parse(location)
    assert info.value.kind == kind
    assert isinstance(info.value, ValueError)


def test_unexpected_token_message_names_what_was_expected_and_found() -> None:
    with pytest.raises(LocationError) as info:
        parse("spec.containers[name app]")
    message = str(info.value)
    assert "expected colon" in message
    assert "app" in message


def test_glob_suffix_message_names_the_glob() -> None:
    with pytest.raises(LocationError) as info:
        parse("spec.containers[name: app*].image")
    assert "GLOB" in str(info.value)


# --------------------------------------------------------------------------- canonical form


CANONICAL: list[tuple[str, str]] = [
    ("spec.replicas", "spec.replicas"),
    (
        "spec.template.spec.containers[name: *].imagePullPolicy",
        "spec.template.spec.containers[name: *].imagePullPolicy",
    ),
    (
        "spec.containers[name:istio-proxy].resources.limits.cpu",
        "spec.containers[name: istio-proxy].resources.limits.cpu",
    ),
    ("spec . ports [ port : 443 ] . targetPort", "spec.ports[port: 443].targetPort"),
    ("'spec'.\"replicas\"", "spec.replicas"),
    ('metadata.annotations."prometheus.io/scrape"', 'metadata.annotations."prometheus.io/scrape"'),
    ("metadata.labels.'team name'", 'metadata.labels."team name"'),
    ("spec.volumes['vol.name': config].configMap", 'spec.volumes["vol.name": config].configMap'),
    ("spec.env[name: 'MY.VAR'].value", 'spec.env[name: "MY.VAR"].value'),
    ('spec.env[name: "plain"].value', "spec.env[name: plain].value"),
    ('spec.env[name: "8080"].value', 'spec.env[name: "8080"].value'),
    ('spec.env[name: "*"].value', 'spec.env[name: "*"].value'),
    ("spec.tolerations[key: dedicated]", "spec.tolerations[key: dedicated]"),
    ('data."say \\"hi\\""', 'data."say \\"hi\\""'),
    ('data."back\\\\slash"', 'data."back\\\\slash"'),
    ("data.'9lives'", 'data."9lives"'),
    ("data._private-field", "data._private-field"),
    ("data.''", 'data.""'),
    ("items[id: 9223372036854775807]", "items[id: 9223372036854775807]"),
]


@pytest.mark.parametrize(("location", "canonical"), CANONICAL)
def test_canonical_string(location: str, canonical: str) -> None:
    assert str(parse(location)) == canonical


@pytest.mark.parametrize(("location", "canonical"), CANONICAL)
def test_canonical_string_round_trips(location: str, canonical: str) -> None:
    path = parse(location)
    again = parse(str(path))
    assert again == path
    assert str(again) == canonical


@pytest.mark.parametrize(
    "text",
    ["plain", "with-dash", "_under", "", "has space", "dot.ted", "1digit", 'q"uote', "back\\slash", "*", "a:b", "[x]"],
)
def test_quote_if_needed_tokenizes_back_to_the_same_string(text: str) -> None:
    tokens = tokenize(quote_if_needed(text))
    assert len(tokens) == 2
    assert tokens[0].type in (T.IDENT, T.STRING)
    assert tokens[0].literal == text


def test_quote_if_needed_leaves_identifiers_bare() -> None:
    assert quote_if_needed("imagePullPolicy") == "imagePullPolicy"
    assert quote_if_needed("app.kubernetes.io/name") == '"app.kubernetes.io/name"'
    assert quote_if_needed("80") == '"80"'


# --------------------------------------------------------------------------- list node matching


def test_list_node_matches_by_json_type() -> None:
    by_int = List("containerPort", 8080)
    by_str = List("containerPort", "8080")
    assert by_int.matches({"containerPort": 8080})
    assert not by_int.matches({"containerPort": "8080"})
    assert by_str.matches({"containerPort": "8080"})
    assert not by_str.matches({"containerPort": 8080})
    assert not List("replicas", 1).matches({"replicas": True})


def test_list_node_needs_the_key_field() -> None:
    assert not List("name", "app").matches({"image": "nginx"})
    assert not List("name", "app").matches("app")


def test_glob_matches_every_object_element_only() -> None:
    glob = List("name", Glob)
    assert glob.matches({"name": "anything"})
    assert glob.matches({"image": "no-name-at-all"})
    assert not glob.matches("a-string-element")
    assert not glob.matches(42)


# --------------------------------------------------------------------------- prefixes


@pytest.mark.parametrize(
    ("prefix", "location", "expected"),
    [
        ("spec", "spec.containers[name: *].image", True),
        ("spec.containers", "spec.containers[name: *].image", True),
        ("spec.containers[name: *]", "spec.containers[name: *].image", True),
        ("spec.containers[name: *].image", "spec.containers[name: *].image", True),
        ("spec . containers [name:*]", "spec.containers[name: *].image", True),
        ("spec.containers[name: app]", "spec.containers[name: *].image", False),
        ("spec.containers[name: *]", "spec.containers[name: app].image", False),
        ("spec.containers[id: *]", "spec.containers[name: *].image", False),
        ("spec.container", "spec.containers[name: *].image", False),
        ("spec.containers[name: *].image.tag", "spec.containers[name: *].image", False),
        ("status", "spec.replicas", False),
        ("spec.ports[port: 80]", 'spec.ports[port: "80"].name', False),
        ("spec.ports[port: 80]", "spec.ports[port: 80].name", True),
        ("", "spec.replicas", True),
    ],
)
def test_is_prefix_of(prefix: str, location: str, expected: bool) -> None:
    assert parse(prefix).is_prefix_of(parse(location)) is expected


def test_is_prefix_of_is_not_symmetric() -> None:
    short, long = parse("spec.template"), parse("spec.template.spec")
    assert short.is_prefix_of(long)
    assert not long.is_prefix_of(short)


def test_path_equality_and_hash() -> None:
    a = parse("spec.containers[name: app].image")
    b = Path((Object("spec"), Object("containers"), List("name", "app"), Object("image")))
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
