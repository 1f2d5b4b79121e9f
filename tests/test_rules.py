"""Rules on task values, table by table: compiling, verdicts, episodes through `detect`, the config and the CLI."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from watcher import config
from watcher.detect import Rules, detect
from watcher.errors import ConfigError
from watcher.model import EventType, TaskSnapshot, TaskState
from watcher.rules import Rule, RuleError, Unknowns, compile_rule, compile_rules
from watcher.simulator import Simulator

from .conftest import Receiver
from .test_cli import SECRET, run, write_config

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
E = EventType
LOW = ("low collection", "progress >= 30 && collectionRate < 20", "")
BIG = ("big and slow", 'total >= 10000 && progress < 5 && status == "running"', "A big campaign barely moving")


def snap(progress: int | None = 40, collection_rate: int | None = 10, **fields: Any) -> TaskSnapshot:
    values: dict[str, Any] = {"status": "running", "name": "November renewals", "total": 1200} | fields
    return TaskSnapshot(id=1001, progress=progress, collection_rate=collection_rate, **values)


def knobs(*entries: tuple[str, str, str]) -> Rules:
    return Rules(progress_step=0, stall_after=timedelta(days=1), task_rules=compile_rules(entries))


def rule(text: str) -> Rule:
    return Rule("r", compile_rule(text))


# -- compiling -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "variables"),
    [
        ("progress >= 30 && collectionRate < 20", ("progress", "collectionRate")),
        ('total >= 10000 && progress < 5 && status == "running"', ("total", "progress", "status")),
        ("status in ['running', 'pending']", ("status",)),
        ("name.startsWith('Nov') && size(name) > 3", ("name",)),
        ("name.matches('^(Nov|Dec)')", ("name",)),
        ("double(collectionRate) < double(progress) / 2.0", ("collectionRate", "progress")),
        ("id == 1001 || id == 1002", ("id",)),
        ("[10, 20].exists(x, x == collectionRate)", ("collectionRate",)),  # a comprehension's own variable
        ("true", ()),
    ],
)
def test_a_condition_compiles_and_names_the_variables_it_reads(text: str, variables: tuple[str, ...]) -> None:
    assert compile_rule(text).variables == variables


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "is empty"),
        ("progress >= ", "syntax error at column 10: unexpected end of the expression"),
        ("progress >= 30 and collectionRate < 20", "unexpected 'and' (CEL writes && || ! for and, or, not)"),
        ("progress\n>= )", "syntax error at line 2, column 4: unexpected ')'"),
        ("progres >= 30", "unknown variable 'progres' (did you mean 'progress'?)"),
        ("collection_rate < 20", "unknown variable 'collection_rate' (did you mean 'collectionRate'?)"),
        ("now > 3", "unknown variable 'now'"),
        ("status.code == 1", "'code': the variables have no fields"),
        ("rate(progress) > 1", "unknown function 'rate'"),
        ("progress > 2.5", "no matching overload for > applied to (int, double) (CEL does not mix int and double"),
        ("status == 1", "no matching overload for == applied to (string, int)"),
        ("progress + 1", "gives an int, not true or false"),
        ("name", "gives a string, not true or false"),
    ],
)
def test_a_bad_condition_is_refused_in_one_line_saying_why(text: str, error: str) -> None:
    with pytest.raises(RuleError) as caught:
        compile_rule(text)
    assert error in str(caught.value)
    assert "\n" not in str(caught.value) and "celpy" not in str(caught.value)


# -- verdicts --------------------------------------------------------------------------------------------------------

VERDICTS: list[tuple[str, TaskSnapshot, bool | None, str]] = [
    ("progress >= 30 && collectionRate < 20", snap(40, 10), True, ""),
    ("progress >= 30 && collectionRate < 20", snap(40, 25), False, ""),
    ("progress >= 30 && collectionRate < 20", snap(20, 10), False, ""),
    # A variable the rule reads is absent from the answer: unknown, whatever the rest says.
    ("progress >= 30 && collectionRate < 20", snap(40, None), None, "the API's answer has no collectionRate"),
    ("progress >= 30 && collectionRate < 20", snap(None, None), None, "no progress, collectionRate"),
    # ...but one it does not read does not matter.
    ("progress >= 30", snap(40, None), True, ""),
    # A value error at run time (never seen on the samples it was compiled with) is unknown, not a crash.
    ("100 / (100 - progress) > 2", snap(100, 10), None, "division by zero"),
    ("100 / (100 - progress) > 2", snap(80, 10), True, ""),
    ('status == "running" && name.contains("renewals")', snap(), True, ""),
    ('status == "running"', snap(status="stop.operate"), False, ""),
]


@pytest.mark.parametrize(("text", "snapshot", "holds", "problem"), VERDICTS)
def test_a_rule_on_a_task_answer_holds_does_not_or_is_unknown(
    text: str, snapshot: TaskSnapshot, holds: bool | None, problem: str
) -> None:
    verdict = rule(text).evaluate(snapshot)
    assert verdict.holds is holds
    assert problem in verdict.problem and bool(verdict.problem) == (holds is None)


def test_a_verdict_carries_the_values_the_rule_read_and_only_those() -> None:
    verdict = rule("progress >= 30 && collectionRate < 20").evaluate(snap(40, 10))
    assert dict(verdict.values) == {"progress": 40, "collectionRate": 10}


# -- episodes, through detect ---------------------------------------------------------------------------------------

# Each step: (progress, collectionRate, status) of one answer a minute after the previous; the rule events it raises;
# the rules holding after it.
Step = tuple[int | None, int | None, str, list[str], list[str]]
EPISODES: dict[str, list[Step]] = {
    "fires once per episode, resolves, fires again in a new one": [
        (20, 40, "running", [], []),
        (35, 15, "running", [E.RULE_MATCHED], ["low collection"]),
        (45, 12, "running", [], ["low collection"]),
        (55, 25, "running", [E.RULE_RESOLVED], []),
        (60, 26, "running", [], []),
        (70, 10, "running", [E.RULE_MATCHED], ["low collection"]),
    ],
    "an answer without the value neither fires nor resolves": [
        (40, 10, "running", [E.RULE_MATCHED], ["low collection"]),
        (45, None, "running", [], ["low collection"]),
        (50, 30, "running", [E.RULE_RESOLVED], []),
        (55, None, "running", [], []),
        (60, 10, "running", [E.RULE_MATCHED], ["low collection"]),
    ],
    "a stopped campaign keeps its rules: it may resume": [
        (40, 10, "running", [E.RULE_MATCHED], ["low collection"]),
        (40, 10, "stop.operate", [], ["low collection"]),
        (40, 10, "running", [], ["low collection"]),
    ],
    "a finished campaign's rules end without a notice (done is final: `finished` says it)": [
        (40, 10, "running", [E.RULE_MATCHED], ["low collection"]),
        (100, 10, "done", [], []),
        (100, 10, "done", [], []),
    ],
}


@pytest.mark.parametrize("name", EPISODES)
def test_a_rule_through_detect(name: str) -> None:
    rules = knobs(LOW)
    state = TaskState(snap(0, 50), progress_since=T0)
    now = T0
    for progress, rate, status, expected, holding in EPISODES[name]:
        now += MINUTE
        state, events = detect(state, snap(progress, rate, status=status), now, rules)
        assert [e.type for e in events if e.type.startswith("voicefox.task.rule_")] == expected, (progress, rate)
        assert [n for n, _ in state.rules] == holding


def test_a_matched_event_says_which_rule_held_and_on_what_values() -> None:
    state, events = detect(TaskState(snap(20, 40), progress_since=T0), snap(35, 15), T0 + MINUTE, knobs(LOW))
    (matched,) = [e for e in events if e.type == E.RULE_MATCHED]
    assert matched.data["rule"] == {
        "name": "low collection",
        "when": "progress >= 30 && collectionRate < 20",
        "description": "",
        "values": {"progress": 35, "collectionRate": 15},
    }
    assert matched.data["task"]["collectionRate"] == 15 and matched.subject == "1001"
    assert state.rules == (("low collection", T0 + MINUTE),)


def test_a_resolved_event_says_what_it_resolves_since_when_and_for_how_long() -> None:
    since = T0 + MINUTE
    holding = TaskState(snap(35, 15), progress_since=T0, rules=(("low collection", since),))
    _, events = detect(holding, snap(60, 30), since + timedelta(minutes=90), knobs(LOW))
    (resolved,) = events
    assert resolved.type == E.RULE_RESOLVED
    assert resolved.data["resolves"] == {
        "type": "voicefox.task.rule_matched",
        "since": since.isoformat(),
        "lastedSeconds": 5400,
    }
    assert resolved.data["rule"]["values"] == {"progress": 60, "collectionRate": 30}


def test_an_event_id_is_a_function_of_what_happened() -> None:
    previous = TaskState(snap(20, 40), progress_since=T0)
    _, first = detect(previous, snap(35, 15), T0 + MINUTE, knobs(LOW))
    _, again = detect(previous, snap(35, 15), T0 + MINUTE, knobs(LOW))
    _, later = detect(previous, snap(35, 15), T0 + 2 * MINUTE, knobs(LOW))
    _, other = detect(previous, snap(35, 15), T0 + MINUTE, knobs(("other", LOW[1], "")))
    assert [e.id for e in first] == [e.id for e in again]
    assert len({first[0].id, later[0].id, other[0].id}) == 3


def test_a_restart_remembers_the_episode_and_does_not_fire_again() -> None:
    """The store keeps TaskState.rules: a state read back after a restart is all detection needs."""
    state, events = detect(TaskState(snap(20, 40), progress_since=T0), snap(35, 15), T0 + MINUTE, knobs(LOW))
    assert [e.type for e in events] == [E.RULE_MATCHED]
    reread = dataclasses.replace(state)  # (what a store gives back: the same values)
    _, events = detect(reread, snap(36, 14), T0 + 2 * MINUTE, knobs(LOW))
    assert events == []


def test_several_rules_raise_one_event_each_in_config_order_and_are_kept_by_name() -> None:
    rules = knobs(LOW, BIG)
    big = snap(3, 10, total=20000)
    state, events = detect(TaskState(snap(2, 40, total=20000), progress_since=T0), big, T0 + MINUTE, rules)
    # progress 3 does not reach 30: only the big campaign's rule holds.
    assert [(e.type, e.data["rule"]["name"]) for e in events] == [(E.RULE_MATCHED, "big and slow")]
    both = dataclasses.replace(big, progress=4)
    rules = knobs(LOW, BIG, ("few left", "progress >= 4", ""))
    state, events = detect(state, both, T0 + 2 * MINUTE, rules)
    assert [e.data["rule"]["name"] for e in events] == ["few left"]
    assert [n for n, _ in state.rules] == ["big and slow", "few left"]  # sorted by name, as the store keeps them
    assert events[0].data["rule"]["description"] == ""


def test_a_rule_holding_at_first_sight_fires_as_a_failure_first_seen_does() -> None:
    state, events = detect(None, snap(40, 10), T0, knobs(LOW))
    assert [e.type for e in events] == [E.OBSERVED, E.RULE_MATCHED]
    assert events[1].data["firstSight"] is True and events[1].data["previous"] is None
    assert state.rules == (("low collection", T0),)
    _, events = detect(None, snap(40, 50), T0, knobs(LOW))
    assert [e.type for e in events] == [E.OBSERVED]


def test_a_task_first_seen_done_raises_no_rule() -> None:
    state, events = detect(None, snap(100, 10, status="done"), T0, knobs(LOW))
    assert [e.type for e in events] == [E.OBSERVED] and state.rules == ()


def test_a_rule_taken_out_of_the_config_ends_silently() -> None:
    holding = TaskState(snap(35, 15), progress_since=T0, rules=(("gone", T0), ("low collection", T0)))
    state, events = detect(holding, snap(36, 14), T0 + MINUTE, knobs(LOW))
    assert events == [] and state.rules == (("low collection", T0),)


def test_rules_with_nothing_to_say_leave_the_state_equal_so_nothing_is_written() -> None:
    previous = TaskState(snap(35, 15), progress_since=T0, rules=(("low collection", T0),))
    state, events = detect(previous, snap(35, 15), T0 + MINUTE, knobs(LOW))
    assert events == [] and state == previous


def test_a_rule_that_cannot_be_evaluated_is_logged_once_per_task_and_rule_and_again_after_it_could_be() -> None:
    rules = compile_rules([LOW])
    unknowns = Unknowns()
    with capture_logs() as logs:
        unknowns(1001, snap(40, None), rules)
        unknowns(1001, snap(41, None), rules)
        unknowns(1002, snap(41, None), rules)
        unknowns(1001, snap(42, 10), rules)
        unknowns(1001, snap(43, None), rules)
        unknowns(1001, snap(100, None, status="done"), rules)  # a done task is not evaluated
    assert [(e["event"], e["task_id"], e["log_level"]) for e in logs] == [
        ("rule.unknown", 1001, "warning"),
        ("rule.unknown", 1002, "warning"),
        ("rule.unknown", 1001, "warning"),
    ]
    assert logs[0]["rule"] == "low collection" and "no collectionRate" in logs[0]["problem"]


# -- the config -----------------------------------------------------------------------------------------------------


def validated(rules: str) -> config.Config:
    import tomllib

    raw = tomllib.loads(f'[api]\ntoken = "t"\n[watch]\ntasks = [1]\n{rules}')
    return config.validate(raw, source="w.toml", env={})


def problems(rules: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validated(rules)
    return caught.value.problems


def test_rules_in_the_config_are_compiled_into_the_detection_knobs() -> None:
    from watcher.daemon import knobs as daemon_knobs

    cfg = validated(
        '[[rules]]\nname = "low collection"\nwhen = "progress >= 30 && collectionRate < 20"\n'
        'description = "Fix the script"\n[[rules]]\nname = "slow"\nwhen = "progress < 5"\n'
    )
    task_rules = daemon_knobs(cfg)[0].task_rules
    assert [(r.name, r.when, r.description) for r in task_rules] == [
        ("low collection", "progress >= 30 && collectionRate < 20", "Fix the script"),
        ("slow", "progress < 5", ""),
    ]


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        (
            '[[rules]]\nname = "low"\nwhen = "progress >= 30 &&"',
            "rules[0] (low).when: syntax error at column 16: unexpected end of the expression",
        ),
        (
            '[[rules]]\nname = "ok"\nwhen = "true"\n[[rules]]\nname = "low"\nwhen = "collection < 20"',
            "rules[1] (low).when: unknown variable 'collection' (did you mean 'collectionRate'?)",
        ),
        (
            '[[rules]]\nname = "low"\nwhen = "true"\n[[rules]]\nname = "low"\nwhen = "false"',
            "rules: rule name 'low' is used more than once; names must be unique",
        ),
        ('[[rules]]\nwhen = "true"', "rules[0].name: is required"),
        ('[[rules]]\nname = "low"', "rules[0] (low).when: is required"),
        ('[[rules]]\nname = " "\nwhen = "true"', "rules[0].name: String should match pattern"),
        ('[[rules]]\nname = "low"\nwhen = "true"\nfor = "5m"', "rules[0] (low).for: unknown key"),
    ],
)
def test_a_bad_rule_is_a_config_problem_named_by_its_key_and_name(rules: str, problem: str) -> None:
    assert any(p.startswith(problem) for p in problems(rules)), problems(rules)


def test_a_rule_error_in_a_file_says_its_line(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_text('[api]\ntoken = "t"\n[watch]\ntasks = [1]\n\n[[rules]]\nname = "low"\nwhen = "progres > 1"\n')
    with pytest.raises(ConfigError) as caught:
        config.load(path, env={})
    assert caught.value.problems == [
        "rules[0] (low).when: unknown variable 'progres' (did you mean 'progress'?) (variables: progress,"
        " collectionRate, total, status, name, id) (line 8)"
    ]


@pytest.fixture
def without_cel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As if the [rules] extra were not installed (no other seam can take an installed package away)."""
    from watcher import rules

    rules._environment.cache_clear()
    rules.compile_rule.cache_clear()
    monkeypatch.setitem(sys.modules, "celpy", None)
    yield
    rules._environment.cache_clear()
    rules.compile_rule.cache_clear()


@pytest.mark.usefixtures("without_cel")
def test_without_the_rules_extra_a_rule_is_refused_with_how_to_install_it() -> None:
    assert problems('[[rules]]\nname = "low"\nwhen = "true"') == [
        "rules[0] (low).when: rules need the [rules] extra: pip install 'voicefox-watcher[rules]'"
    ]
    validated("")  # a config without rules never needs it


# -- the installed CLI, against the simulator ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_rule_fires_once_resolves_and_is_routed_like_any_event_through_the_cli(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(21, "Renewals", status="running", progress=40, collectionRate=10)
    extra = f"""
[[notifiers]]
kind = "webhook"
name = "sales-rules"
url = "{receiver.url}/sales"
secret = "{SECRET}"
events = ["voicefox.task.rule_matched"]
matchers = ['team="sales"']

[[notifiers]]
kind = "webhook"
name = "support-rules"
url = "{receiver.url}/support"
secret = "{SECRET}"
events = ["voicefox.task.rule_matched"]
matchers = ['team="support"']

[[watch.task]]
id = 21
labels = {{ team = "sales" }}

[[rules]]
name = "low collection"
when = "progress >= 30 && collectionRate < 20"
description = "The assistant is not collecting: check its script"
"""
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [], extra)
    check = await run(["check", "-c", str(cfg)])
    assert check.returncode == 0, check.stderr.decode()
    assert (
        "rule low collection: progress >= 30 && collectionRate < 20 (compiled OK; reads progress, collectionRate)"
        in check.stdout.decode()
    )

    def told(since: int = 0) -> list[tuple[str, dict[str, Any]]]:
        """(notifier path, event) of each rule event the receiver got."""
        events = [(r.path.rsplit("/", 1)[-1], json.loads(r.body)) for r in receiver.requests[since:]]
        return [(path, event) for path, event in events if event["type"].startswith("voicefox.task.rule_")]

    first = await run(["once", "-c", str(cfg)], token=sim.token)
    assert first.returncode == 0, first.stderr.decode()
    got = told()
    assert sorted(path for path, _ in got) == ["hook", "sales"]  # not support: its matchers do not match the task
    for _, event in got:
        assert event["type"] == "voicefox.task.rule_matched" and event["data"]["labels"] == {"team": "sales"}
        assert event["data"]["rule"]["values"] == {"progress": 40, "collectionRate": 10}
    assert len({event["id"] for _, event in got}) == 1  # one event, delivered to two receivers

    seen = len(receiver.requests)
    again = await run(["once", "-c", str(cfg)], token=sim.token)
    assert again.returncode == 0 and len(receiver.requests) == seen  # once per episode, across processes

    sim.set(21, collectionRate=25, progress=45)
    resolved = await run(["once", "-c", str(cfg)], token=sim.token)
    assert resolved.returncode == 0, resolved.stderr.decode()
    after = told(seen)
    # The resolved notice reaches whoever heard of the rule (send_resolved), by the same matchers.
    assert sorted(path for path, _ in after) == ["hook", "sales"]
    for _, event in after:
        assert event["type"] == "voicefox.task.rule_resolved"
        assert event["data"]["resolves"]["type"] == "voicefox.task.rule_matched"
        assert event["data"]["rule"]["values"] == {"progress": 45, "collectionRate": 25}
