"""Label matchers: parsing, Alertmanager's matching semantics, the canonical text, and label sets from the config."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.matchers import LABEL_NAME, Matcher, check_labels, matches, parse_matcher, parse_matchers

ACME_SALES = {"team": "sales", "customer": "acme"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('team="sales"', Matcher("team", "=", "sales")),
        ('team = "sales"', Matcher("team", "=", "sales")),
        ('  team\t=\t"sales"  ', Matcher("team", "=", "sales")),
        ("team=sales", Matcher("team", "=", "sales")),
        ("team = sales", Matcher("team", "=", "sales")),
        ('team!="sales"', Matcher("team", "!=", "sales")),
        ('team=~"sa.*"', Matcher("team", "=~", "sa.*")),
        ('team!~"ops|qa"', Matcher("team", "!~", "ops|qa")),
        ("team=~sa.*", Matcher("team", "=~", "sa.*")),
        ('team!=""', Matcher("team", "!=", "")),
        ('team=""', Matcher("team", "=", "")),
        ("team=", Matcher("team", "=", "")),  # as in Alertmanager: an empty unquoted value
        ("_x9=1", Matcher("_x9", "=", "1")),
        ('url="a=b"', Matcher("url", "=", "a=b")),
        ("url=a=b", Matcher("url", "=", "a=b")),  # only the first character may not continue an operator
        ('team="sales, east"', Matcher("team", "=", "sales, east")),  # commas and spaces inside quotes
        ('quote="she said \\"hi\\""', Matcher("quote", "=", 'she said "hi"')),
        ('path="C:\\\\temp"', Matcher("path", "=", "C:\\temp")),
        ('multi="a\\nb"', Matcher("multi", "=", "a\nb")),
        ('digits=~"\\d+"', Matcher("digits", "=~", "\\d+")),  # an unknown escape is kept, as Alertmanager does
        ('city="東京"', Matcher("city", "=", "東京")),
        ("city=東京", Matcher("city", "=", "東京")),
        ('team=~"(?i)sales"', Matcher("team", "=~", "(?i)sales")),
    ],
)
def test_parse_matcher_reads(text: str, expected: Matcher) -> None:
    assert parse_matcher(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("team==x", '"==" is not an operator'),
        ("team=~~x", '"=~~" is not an operator'),
        ("team!==x", '"!==" is not an operator'),
        ('="x"', "no label name before the operator"),
        ('1team="x"', '"1team" is not a label name'),
        ('te-am="x"', '"te-am" is not a label name'),
        ('"team"="x"', '"\\"team\\"" is not a label name'),
        ('team:x="y"', '"team:x" is not a label name'),  # Alertmanager allows ":"; label sets here never have it
        ('team="sales', "the quoted value has no closing quote"),
        ('team="sales\\"', "the quoted value has no closing quote"),
        ('team="sales" x', 'unexpected "x" after the quoted value'),
        ('team="sales",', 'unexpected "," after the quoted value'),
        ('team="a"b"', 'unexpected "b\\"" after the quoted value'),
        ("team=sa les", "must be in double quotes"),
        ("team=sales,qa", "must be in double quotes"),
        ("team=sa'les", "must be in double quotes"),
        ("team", "no operator"),
        ("", "no operator"),
        ("team ~ x", "no operator"),
    ],
)
def test_parse_matcher_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)) as caught:
        parse_matcher(text)
    message = str(caught.value)
    assert message.startswith(f"{text!r} is not a matcher: ")
    assert message.endswith('write name="value", name!="value", name=~"regex" or name!~"regex"')


def test_the_message_reads_as_the_brief_shows() -> None:
    with pytest.raises(ValueError, match="is not a matcher") as caught:
        parse_matcher("team==x")
    assert str(caught.value) == (
        "'team==x' is not a matcher: \"==\" is not an operator; "
        'write name="value", name!="value", name=~"regex" or name!~"regex"'
    )


@pytest.mark.parametrize("text", ['team=~"("', 'team!~"[a-"', 'team=~"*x"', 'team=~"a)|(b"'])
def test_an_invalid_regex_is_named(text: str) -> None:
    regex = text.split('"')[1]
    with pytest.raises(ValueError, match=re.escape(f'the regex "{regex}" is invalid')):
        parse_matcher(text)


@pytest.mark.parametrize(
    ("name", "op", "value", "problem"),
    [
        ("1x", "=", "a", "is not a label name"),
        ("", "=", "a", "is not a label name"),
        ("team\n", "=", "a", "is not a label name"),  # LABEL_NAME's `$` alone would let a trailing line feed through
        ("x", "==", "a", "is not a matcher operator"),
        ("x", "=~", "(", "is invalid"),
    ],
)
def test_matcher_checks_itself(name: str, op: str, value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        Matcher(name, op, value)


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('team="sales"', ACME_SALES, True),
        ('team="sales"', {"team": "Sales"}, False),
        ('team="sales"', {}, False),
        ('team!="sales"', ACME_SALES, False),
        ('team!="qa"', ACME_SALES, True),
        # A missing label is the empty string.
        ('team!="x"', {}, True),
        ('team=""', {}, True),
        ('team=""', {"team": "sales"}, False),
        ('team=""', {"team": ""}, True),
        ('team!=""', {}, False),
        ('team!=""', {"team": "sales"}, True),
        ('team=~".*"', {}, True),
        ('team=~".+"', {}, False),
        ('team!~".+"', {}, True),
        # Regexes are anchored at both ends.
        ('team=~"sa.*"', ACME_SALES, True),
        ('team=~"sale"', ACME_SALES, False),
        ('team=~"ales"', ACME_SALES, False),
        ('team=~"a|sales"', ACME_SALES, True),  # the anchors hold the whole alternation
        ('team=~"sales|a"', {"team": "xa"}, False),
        ('team=~"sales"', {"team": "sales\n"}, False),  # `$` does not stop before a trailing line feed
        ('team!~"ops|qa"', ACME_SALES, True),
        ('team!~"ops|qa"', {"team": "qa"}, False),
        ('team!~"ops|qa"', {"team": "qa2"}, True),
        ('team=~"(?i)SALES"', ACME_SALES, True),
        ('customer=~"ac.e"', ACME_SALES, True),
        ('region=~"eu-.*"', ACME_SALES, False),
    ],
)
def test_matcher_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(text)(labels) is expected


@pytest.mark.parametrize(
    ("texts", "labels", "expected"),
    [
        ([], {}, True),
        ([], ACME_SALES, True),
        (['team="sales"', 'customer="acme"'], ACME_SALES, True),
        (['team="sales"', 'customer="other"'], ACME_SALES, False),
        (['team="sales"', 'region!="eu"'], ACME_SALES, True),
        (['team=~"s.*"', 'team!~"support"'], ACME_SALES, True),
    ],
)
def test_matches_needs_every_matcher(texts: list[str], labels: dict[str, str], expected: bool) -> None:
    assert matches(parse_matchers(texts), labels) is expected


def test_parse_matchers_keeps_order_and_refuses_a_bare_string() -> None:
    assert parse_matchers(['a="1"', "b!=2"]) == (Matcher("a", "=", "1"), Matcher("b", "!=", "2"))
    with pytest.raises(ValueError, match=re.escape("expected a list of matchers, got the string 'a=\"1\"'")):
        parse_matchers('a="1"')
    with pytest.raises(ValueError, match=re.escape("'b==2' is not a matcher")):
        parse_matchers(['a="1"', "b==2"])


@pytest.mark.parametrize(
    ("matcher", "text"),
    [
        (Matcher("team", "=", "sales"), 'team="sales"'),
        (Matcher("team", "!=", ""), 'team!=""'),
        (Matcher("team", "=~", "sa.*"), 'team=~"sa.*"'),
        (Matcher("q", "!=", 'a"b\\c\nd'), 'q!="a\\"b\\\\c\\nd"'),
        (Matcher("city", "=", "東京"), 'city="東京"'),
    ],
)
def test_str_is_canonical(matcher: Matcher, text: str) -> None:
    assert str(matcher) == text


def _valid_regex(text: str) -> bool:
    try:
        re.compile(text)
    except re.error:
        return False
    return True


_names = st.from_regex(LABEL_NAME, fullmatch=True)
_values = st.text(max_size=30)
_plain = st.builds(Matcher, _names, st.sampled_from(["=", "!="]), _values)
_regexes = st.builds(Matcher, _names, st.sampled_from(["=~", "!~"]), _values.filter(_valid_regex))


@given(_plain | _regexes)
def test_str_reads_back_to_an_equal_matcher(matcher: Matcher) -> None:
    assert parse_matcher(str(matcher)) == matcher


@given(_names, _values, _values, st.booleans())
def test_an_escaped_regex_is_equality(name: str, value: str, actual: str, present: bool) -> None:
    """Anchoring makes `=~` of an escaped value `=` of the value (and `!~` `!=`), whatever the label holds."""
    for labels in ({name: actual} if present else {}, {name: value}):
        assert Matcher(name, "=~", re.escape(value))(labels) is Matcher(name, "=", value)(labels)
        assert Matcher(name, "!~", re.escape(value))(labels) is Matcher(name, "!=", value)(labels)


@pytest.mark.parametrize(
    "labels",
    [
        {},
        {"team": "sales", "customer": "acme"},
        {"_private": ""},
        {f"l{i}": "x" for i in range(32)},
        {"note": "x" * 200},
    ],
)
def test_check_labels_accepts(labels: dict[str, Any]) -> None:
    assert check_labels(labels) == labels


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"1team": "x"}, 'label "1team": not a label name'),
        ({"team-name": "x"}, 'label "team-name": not a label name'),
        ({"": "x"}, 'label "": not a label name'),
        ({"team\n": "x"}, 'label "team\\n": not a label name'),
        ({"priority": 1}, 'label "priority": 1 is not a string (write priority = "1")'),
        ({"vip": True}, 'label "vip": True is not a string (write vip = "true")'),
        ({"ratio": 0.5}, 'label "ratio": 0.5 is not a string'),
        ({"team": None}, 'label "team": None is not a string'),
        ({"team": ["a"]}, "label \"team\": ['a'] is not a string"),
        ({"note": "x" * 201}, 'label "note": the value is 201 characters long; at most 200'),
        ({f"l{i}": "x" for i in range(33)}, "33 labels; at most 32 are allowed"),
        (["team"], "labels must be a table"),
    ],
)
def test_check_labels_refuses(labels: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_labels(labels)
