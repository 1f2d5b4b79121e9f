"""Label matchers as Alertmanager writes them, pure: `team="sales"`, `team!="qa"`, `team=~"sa.*"`, `team!~"ops|qa"`.

A task's labels are a mapping of names to strings. The semantics are Alertmanager's (pkg/labels/matcher.go): a label
the task does not have reads as the empty string, so `team!="x"` matches a task without `team` and `team=""` matches
only tasks without it (or with it empty); a regex must match the whole value (Go's `^(?:re)$`), here in Python `re`
syntax. Quoted values unescape as Alertmanager's do: `\\"` is a quote, `\\\\` a backslash, `\\n` a line feed, and any
other backslash is kept as it is (so `"\\d+"` is the regex `\\d+`).

The parser is stricter than Alertmanager's tolerant one: it refuses `team==x`, an unterminated quote and text after
the value rather than reading them as part of the value, because here matchers come from a config file, where such
text is a typo to point at, not something a user typed into a search box.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "LABEL_NAME",
    "MAX_LABELS",
    "MAX_VALUE_LENGTH",
    "OPERATORS",
    "Matcher",
    "check_labels",
    "matches",
    "parse_matcher",
    "parse_matchers",
]

LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
OPERATORS = ("=", "!=", "=~", "!~")
MAX_LABELS = 32
MAX_VALUE_LENGTH = 200

_HOW = 'write name="value", name!="value", name=~"regex" or name!~"regex"'
_NAME_RULE = "letters, digits and _, not starting with a digit"
# `=~` and `!~` before `=` so that the `~` is not read as the start of the value (as in Alertmanager's parse.go).
_OP = r"=~|!~|!=|="
# An unquoted value: no spaces, quotes, commas or braces, and not starting with an operator character, so that
# `team==x` and `team=~~x` are typos reported rather than values "=x" and "~x".
_BARE = r"""[^\s"'`,{}=!~][^\s"'`,{}]*"""
# A quoted value: any character but an unescaped quote; a backslash always takes the next character with it.
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_MATCHER = re.compile(
    rf"\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>{_OP})\s*(?P<value>{_QUOTED}|(?:{_BARE})?)\s*",
    re.DOTALL,
)
_LOOSE = re.compile(rf"\s*(?P<name>.*?)\s*(?P<op>{_OP})\s*(?P<rest>.*?)\s*", re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPED = {'"': '"', "\\": "\\", "n": "\n"}


@dataclasses.dataclass(frozen=True, slots=True)
class Matcher:
    """One condition on one label: `name` compared by `op` (=, !=, =~, !~) with `value` (a regex for =~ and !~)."""

    name: str
    op: str
    value: str
    _regex: re.Pattern[str] | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not LABEL_NAME.fullmatch(self.name):
            raise ValueError(f"{json.dumps(self.name, ensure_ascii=False)} is not a label name ({_NAME_RULE})")
        if self.op not in OPERATORS:
            raise ValueError(f"{self.op!r} is not a matcher operator (one of {', '.join(OPERATORS)})")
        if self.op in ("=~", "!~"):
            # Compiled on its own and used with fullmatch, which is Go's `^(?:re)$`: a `(?i)` at the start stays a
            # global flag, an error's position is the user's, and `$` cannot match before a trailing line feed.
            try:
                regex = re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"the regex {json.dumps(self.value, ensure_ascii=False)} is invalid: {exc}") from None
            object.__setattr__(self, "_regex", regex)

    def __call__(self, labels: Mapping[str, str]) -> bool:
        """Whether `labels` satisfy this matcher, a missing label reading as the empty string."""
        actual = labels.get(self.name, "")
        if self._regex is not None:
            return (self._regex.fullmatch(actual) is not None) == (self.op == "=~")
        return (actual == self.value) == (self.op == "=")

    def __str__(self) -> str:
        """The canonical text, which `parse_matcher` reads back to an equal matcher: `team="sales"`."""
        # Alertmanager's (and OpenMetrics') escaping, which is JSON's for printable text: only a backslash, a quote
        # and a line feed are escaped, because any other backslash sequence is read back literally (`\d`, `\b`).
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op}"{escaped}"'


def _unescape(raw: str) -> str:
    return _ESCAPE.sub(lambda m: _UNESCAPED.get(m.group(1), m.group(0)), raw)


def _why_not(text: str) -> str:
    """What is wrong with a text that is not a matcher, for the error message."""
    loose = _LOOSE.fullmatch(text)
    if loose is None:
        return "no operator"
    name, op, rest = loose.group("name", "op", "rest")
    if not name:
        return "no label name before the operator"
    if not LABEL_NAME.fullmatch(name):
        return f"{json.dumps(name, ensure_ascii=False)} is not a label name ({_NAME_RULE})"
    if rest.startswith('"'):
        quoted = re.match(_QUOTED, rest, re.DOTALL)
        if quoted is None:
            return "the quoted value has no closing quote"
        return f"unexpected {json.dumps(rest[quoted.end() :].strip(), ensure_ascii=False)} after the quoted value"
    if rest[:1] in ("=", "!", "~"):
        return f"{json.dumps(op + rest[0])} is not an operator"
    return "a value with spaces, quotes or commas must be in double quotes"


def parse_matcher(text: str) -> Matcher:
    """A matcher from its text, e.g. `team="sales"`, `team = sales`, `team=~"sa.*"`; ValueError saying how to write it."""
    found = _MATCHER.fullmatch(text)
    if found is None:
        raise ValueError(f"{text!r} is not a matcher: {_why_not(text)}; {_HOW}")
    name, op, raw = found.group("name", "op", "value")
    value = _unescape(raw[1:-1] if raw.startswith('"') else raw)
    try:
        return Matcher(name, op, value)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a matcher: {exc}") from None


def parse_matchers(texts: Sequence[str]) -> tuple[Matcher, ...]:
    """Matchers from a list of texts, one matcher each; ValueError for the first that is not one."""
    if isinstance(texts, str):
        # A string is a sequence of one-character strings: refuse it rather than report its first character.
        raise ValueError(f"expected a list of matchers, got the string {texts!r}: write [{json.dumps(texts)}]")
    return tuple(parse_matcher(text) for text in texts)


def matches(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy every matcher (no matchers: True)."""
    return all(matcher(labels) for matcher in matchers)


def check_labels(labels: Mapping[str, Any]) -> dict[str, str]:
    """A label set from the config, checked: names as LABEL_NAME, string values of at most 200 characters, at most 32."""
    if not isinstance(labels, Mapping):
        raise ValueError(f'labels must be a table of name = "value", not {type(labels).__name__}')
    if len(labels) > MAX_LABELS:
        raise ValueError(f"{len(labels)} labels; at most {MAX_LABELS} are allowed")
    checked: dict[str, str] = {}
    for name, value in labels.items():
        shown = json.dumps(name, ensure_ascii=False) if isinstance(name, str) else repr(name)
        if not isinstance(name, str) or not LABEL_NAME.fullmatch(name):
            raise ValueError(f"label {shown}: not a label name ({_NAME_RULE})")
        # bool and int are refused, not converted: `vip = true` would otherwise need matching as "True" or "true".
        if not isinstance(value, str):
            raise ValueError(
                f"label {shown}: {value!r} is not a string (write {name} = {json.dumps(str(value).lower() if isinstance(value, bool) else str(value))})"
            )
        if len(value) > MAX_VALUE_LENGTH:
            raise ValueError(f"label {shown}: the value is {len(value)} characters long; at most {MAX_VALUE_LENGTH}")
        checked[name] = value
    return checked
