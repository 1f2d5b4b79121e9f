"""Rules on task values: `[[rules]]` conditions in CEL over a task's typed fields, compiled once, evaluated purely.

A rule is a name and a CEL expression (`progress >= 30 && collectionRate < 20`) over the variables in `VARIABLES`, all
taken from the task's last answer (no clock: a rule's verdict is a function of the snapshot alone, so it is memoised
and detection stays pure). `compile_rule` parses the expression, refuses names CEL would only trip over at run time
(an unknown variable or function) and runs it once on sample values to catch type errors (`progress > 3.5`) and
expressions that are not conditions; its `RuleError` says what is wrong in one line. `Rule.evaluate` gives a `Verdict`:
holds, does not hold, or unknown (a variable the rule reads is absent from the answer, or the evaluation failed).

CEL (cel-python, the `[rules]` extra) is imported only when a config has rules.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from .model import Status, TaskSnapshot

if TYPE_CHECKING:
    import celpy

_log = structlog.get_logger("watcher.rules")

INSTALL_HINT = "pip install 'voicefox-watcher[rules]'"

Value = int | str | None

# The variables a rule may read, their CEL type and what they mean (`watcher check` and the README list them).
VARIABLES: dict[str, tuple[type, str]] = {
    "progress": (int, "percent of the task done, 0-100"),
    "collectionRate": (int, "percent of calls in which the assistant collected what it asks for"),
    "total": (int, "phone numbers in the task"),
    "status": (str, "pending, running, stop.operate, stop.timeout, stop.abnormal or done"),
    "name": (str, "the task's name"),
    "id": (int, "the task id"),
}


def values_of(snapshot: TaskSnapshot) -> dict[str, Value]:
    """Every variable's value for one task answer (None: the API did not give it)."""
    return {
        "progress": snapshot.progress,
        "collectionRate": snapshot.collection_rate,
        "total": snapshot.total,
        "status": snapshot.status,
        "name": snapshot.name,
        "id": snapshot.id,
    }


def evaluated(snapshot: TaskSnapshot) -> bool:
    """Whether rules are evaluated on this task: not once it is done (final: nothing is left to act on)."""
    return snapshot.status != Status.DONE


class RuleError(ValueError):
    """A rule's expression cannot be used; the message says why, in one line."""


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """A rule on one task answer: holds (True/False), or None when it could not be evaluated (`problem` says why)."""

    holds: bool | None
    values: Mapping[str, Value]  # the variables the rule reads, as they were
    problem: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Expression:
    """A compiled CEL condition: the variables it reads and a memoised evaluation of their values."""

    text: str
    variables: tuple[str, ...]
    run: Callable[[tuple[Value, ...]], Verdict] = dataclasses.field(compare=False, repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """One `[[rules]]` entry, compiled."""

    name: str
    expression: Expression
    description: str = ""

    @property
    def when(self) -> str:
        """The condition as written."""
        return self.expression.text

    def evaluate(self, snapshot: TaskSnapshot) -> Verdict:
        """The rule on one task answer; never raises."""
        values = values_of(snapshot)
        return self.expression.run(tuple(values[v] for v in self.expression.variables))

    def data(self, verdict: Verdict) -> dict[str, Any]:
        """What an event says of the rule: `data.rule`."""
        return {"name": self.name, "when": self.when, "description": self.description, "values": dict(verdict.values)}


def compile_rules(entries: Iterable[tuple[str, str, str]]) -> tuple[Rule, ...]:
    """(name, when, description) entries, compiled (the config validated them: this does not fail)."""
    return tuple(Rule(name, compile_rule(when), description) for name, when, description in entries)


# -- compiling -----------------------------------------------------------------------------------------------------

# Bare identifiers CEL knows besides the variables (type names, as in `type(name) == string`).
_TYPE_NAMES = frozenset(
    {"int", "uint", "double", "string", "bool", "bytes", "list", "map", "null_type", "type", "duration", "timestamp"}
)
# Macros: expanded by the evaluator, not functions; the comprehensions bind a variable of their own.
_MACROS = frozenset({"has", "all", "exists", "exists_one", "map", "filter"})
_BINDING = frozenset({"all", "exists", "exists_one", "map", "filter"})
# Sample values the expression is tried on at compile time: the smallest, a middle and the largest percentages, so that
# a type error behind `&&` or `||` is less likely to hide (CEL short-circuits either way).
_SAMPLES: tuple[dict[type, Any], ...] = ({int: 0, str: ""}, {int: 50, str: "running"}, {int: 100, str: "done"})
MEMO_SIZE = 4096  # distinct value tuples remembered per expression: a poll of an unchanged task costs a dict lookup


@functools.cache
def _environment() -> celpy.Environment:
    try:
        import celpy
    except ImportError:
        raise RuleError(f"rules need the [rules] extra: {INSTALL_HINT}") from None
    # cel-python reports through stdlib logging, which the watcher does not configure: its errors reach us as
    # exceptions (translated below), so its log records would only be stray lines on stderr.
    logging.getLogger("celpy").addHandler(logging.NullHandler())
    logging.getLogger("celpy").propagate = False
    # (Creating it builds the CEL grammar once per process, ~0.1 s; it also raises the recursion limit to 2500.)
    return celpy.Environment()


@functools.lru_cache(maxsize=256)
def compile_rule(text: str) -> Expression:
    """Compile a CEL condition over `VARIABLES`; raise RuleError saying what is wrong."""
    environment = _environment()
    import celpy

    if not text.strip():
        raise RuleError("is empty: write a condition, e.g. progress >= 30 && collectionRate < 20")
    try:
        tree = environment.compile(text)
    except celpy.celparser.CELParseError as exc:
        raise RuleError(_syntax_error(exc, text)) from None
    except RecursionError:
        raise RuleError("is nested too deeply") from None
    variables = _check_names(tree)
    program = environment.program(tree)

    def run(values: tuple[Value, ...]) -> Verdict:
        return _run(program, variables, values)

    expression = Expression(text, variables, functools.lru_cache(maxsize=MEMO_SIZE)(run))
    for sample in _SAMPLES:
        _try(program, {v: sample[VARIABLES[v][0]] for v in variables})
    return expression


def _check_names(tree: Any) -> tuple[str, ...]:
    """The variables the expression reads, in order; RuleError for a name CEL would not resolve."""
    import celpy

    functions = set(celpy.evaluation.base_functions) | _MACROS
    bound: set[str] = set()
    for node in tree.iter_subtrees_topdown():
        if node.data == "member_dot_arg" and str(node.children[1]) in _BINDING:
            args = node.children[2]
            first = args.children[0] if args is not None and args.children else None
            if first is not None and (ident := _bare_ident(first)) is not None:
                bound.add(ident)
    seen: dict[str, None] = {}
    for node in tree.iter_subtrees_topdown():
        if node.data in ("ident", "dot_ident"):
            name = str(node.children[0])
            if name in VARIABLES:
                seen.setdefault(name)
            elif name not in bound and name not in _TYPE_NAMES:
                raise RuleError(f"unknown variable {name!r}{_did_you_mean(name, VARIABLES)} (variables: {_listed()})")
        elif node.data in ("ident_arg", "dot_ident_arg", "member_dot_arg"):
            name = str(node.children[1] if node.data == "member_dot_arg" else node.children[0])
            if name not in functions:
                raise RuleError(f"unknown function {name!r}{_did_you_mean(name, functions)}")
        elif node.data == "member_dot":
            raise RuleError(f"{str(node.children[1])!r}: the variables have no fields (variables: {_listed()})")
        elif node.data == "member_object":
            raise RuleError("message construction (Type{...}) is not available in rules")
    return tuple(seen)


def _bare_ident(node: Any) -> str | None:
    """The name if this subtree is just an identifier (the variable a comprehension binds)."""
    while hasattr(node, "children") and len(node.children) == 1 and node.data != "ident":
        node = node.children[0]
    return str(node.children[0]) if getattr(node, "data", None) == "ident" else None


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _listed() -> str:
    return ", ".join(VARIABLES)


def _syntax_error(exc: Any, text: str) -> str:
    """CEL's parse error in one line: where, and what it did not expect."""
    cause = exc.__context__
    token = getattr(cause, "token", None)
    char = getattr(cause, "char", None)
    found = str(token) if token is not None and str(token) else char
    what = f"unexpected {found!r}" if found else "unexpected end of the expression"
    where = f"line {exc.line}, column {exc.column}" if "\n" in text.strip() else f"column {exc.column}"
    hint = " (CEL writes && || ! for and, or, not)" if found in ("and", "or", "not") else ""
    return f"syntax error at {where}: {what}{hint}"


def _activation(values: Mapping[str, Value]) -> dict[str, Any]:
    import celpy.celtypes as ct

    return {k: ct.IntType(v) if isinstance(v, int) else ct.StringType(str(v)) for k, v in values.items()}


def _try(program: Any, values: Mapping[str, Value]) -> None:
    """Run the expression on sample values: a type error or a result that is not true/false is a RuleError."""
    import celpy
    import celpy.celtypes as ct

    try:
        result = program.evaluate(_activation(values))
    except celpy.evaluation.CELEvalError as exc:
        if len(exc.args) > 1 and exc.args[1] is TypeError:
            raise RuleError(_readable(exc)) from None
        return  # a value error (a division by zero at these samples): the values decide, at run time
    except Exception as exc:  # noqa: BLE001 - cel-python's own failure is a rule that cannot be used, said in one line
        raise RuleError(f"cannot be evaluated: {exc.__class__.__name__}: {exc}") from None
    if isinstance(result, celpy.evaluation.CELEvalError):
        return
    if not isinstance(result, ct.BoolType):
        raise RuleError(f"gives {_type_name(result)}, not true or false: compare it, e.g. progress >= 30")


def _run(program: Any, variables: Sequence[str], values: tuple[Value, ...]) -> Verdict:
    import celpy
    import celpy.celtypes as ct

    shown = dict(zip(variables, values, strict=True))
    absent = [v for v, value in shown.items() if value is None]
    if absent:
        return Verdict(None, shown, f"the API's answer has no {', '.join(absent)}")
    try:
        result = program.evaluate(_activation(shown))
    except celpy.evaluation.CELEvalError as exc:
        return Verdict(None, shown, _readable(exc))
    except Exception as exc:  # noqa: BLE001 - detection must never fail on a rule: the verdict says it is unknown
        return Verdict(None, shown, f"evaluation failed: {exc.__class__.__name__}: {exc}")
    if isinstance(result, ct.BoolType):
        return Verdict(bool(result), shown)
    if isinstance(result, celpy.evaluation.CELEvalError):
        return Verdict(None, shown, _readable(result))
    return Verdict(None, shown, f"gives {_type_name(result)}, not true or false")


_OPERATORS = {
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_eq": "==",
    "relation_ne": "!=",
    "relation_in": "in",
    "addition_add": "+",
    "addition_sub": "-",
    "multiplication_mul": "*",
    "multiplication_div": "/",
    "multiplication_mod": "%",
    "unary_neg": "-",
    "unary_not": "!",
}
_CEL_TYPES = {
    "IntType": "int",
    "UintType": "uint",
    "DoubleType": "double",
    "StringType": "string",
    "BoolType": "bool",
    "BytesType": "bytes",
    "ListType": "list",
    "MapType": "map",
    "NoneType": "null",
}


def _type_name(value: Any) -> str:
    name = _CEL_TYPES.get(type(value).__name__, type(value).__name__)
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _readable(exc: Any) -> str:
    """CEL's evaluation error in one line, with CEL's names for operators and types."""
    message = str(exc.args[0]) if exc.args else str(exc)
    if exc.args[1:2] == (ZeroDivisionError,):
        return "division by zero"
    message = re.sub(r"Token\('RULE', '(\w+)'\)", lambda m: _OPERATORS.get(m.group(1), m.group(1)), message)
    message = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", lambda m: _CEL_TYPES.get(m.group(1), m.group(1)), message)
    message = message.replace("applied to '(", "applied to (").replace(")'", ")")
    if "int" in message and "double" in message and "overload" in message:
        message += " (CEL does not mix int and double: write 20, not 20.0)"
    return message.splitlines()[0][:300] if message else "evaluation failed"


# -- the daemon's log of rules that could not be evaluated -------------------------------------------------------


class Unknowns:
    """Logs once per task and rule that a rule could not be evaluated, and again after it could be for a while."""

    def __init__(self) -> None:
        self._noted: set[tuple[int, str]] = set()

    def __call__(self, task_id: int, snapshot: TaskSnapshot, rules: Sequence[Rule]) -> None:
        """Note the rules that could not be evaluated on this answer (memoised: costs nothing more than detection)."""
        if not rules or not evaluated(snapshot):
            return
        for rule in rules:
            key = (task_id, rule.name)
            verdict = rule.evaluate(snapshot)
            if verdict.holds is not None:
                self._noted.discard(key)
            elif key not in self._noted:
                self._noted.add(key)
                _log.warning(
                    "rule.unknown",
                    task_id=task_id,
                    rule=rule.name,
                    problem=verdict.problem,
                    hint="the rule neither fires nor resolves on this task until it can be evaluated",
                )
