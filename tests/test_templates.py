"""Notifiers' own words: Jinja2 templates (sandboxed) for the title and body, checked by `watcher check`, and never the
end of an alert when they fail at run time."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from watcher import config as config_mod
from watcher.cli import main
from watcher.errors import ConfigError
from watcher.model import EventType
from watcher.notify import Context, build
from watcher.notify.message import build as build_message
from watcher.notify.templates import Templates, samples

from .conftest import Receiver
from .test_notify import event_of

pytestmark = pytest.mark.anyio

TITLE = "{{ event.kind | upper }}: {{ task.name if task else event.subject }} ({{ task.status_text if task else '-' }})"
BODY = """{% if task %}{{ task.name }} — {{ percent(task.progress) }} of {{ number(task.total) }}{% endif %}
{% if stalled_for %}stalled for {{ stalled_for }}{% endif %}{{ link }}"""


def notifier(**keys: Any) -> dict[str, Any]:
    return {"kind": "slack", "name": "team", "url": "https://hooks.slack.example/services/T/B/x", **keys}


def load(*notifiers: dict[str, Any], language: str = "en") -> config_mod.Config:
    raw = {"api": {"token": "t"}, "watch": {"tasks": [1]}, "messages": {"language": language}, "notifiers": notifiers}
    return config_mod.validate(raw, source="test", env={})


def test_a_title_and_body_template_replace_the_headline_and_the_facts() -> None:
    templates = Templates.compile("team", TITLE, BODY)
    assert templates is not None
    event = event_of(EventType.FAILED)
    message = templates.render(build_message(event, language="ja"), event)
    assert message.headline == "FAILED: Spring renewal reminders (異常停止)"
    assert message.facts == ()
    assert message.details[0].value == "Spring renewal reminders — 50% of 1,200"


def test_every_sample_event_renders_with_the_documented_variables() -> None:
    templates = Templates.compile("team", TITLE, BODY)
    assert templates is not None
    for event in samples():
        for language in ("en", "ja", "zh-Hans", "zh-Hant"):
            assert templates.render(build_message(event, language=language), event).headline


LASTING = (
    "{% if reminder %}reminder {{ reminder.count }} of {{ reminder.of }}, {{ reminder.lasted }} since {{ reminder.since }}"
    "{% endif %}{% if resolves %}{{ resolves.kind }} for {{ resolves.lasted }} since {{ resolves.since }}{% endif %}"
    "{% if receiver %}{{ receiver.name }} ({{ receiver.kind }}): {{ receiver.pending }} pending, "
    "{{ receiver.dead_letters }} dead, {{ receiver.lasted }}, {{ receiver.error }}{% endif %}"
)


@pytest.mark.parametrize(
    ("event", "headline"),
    [
        (event_of(EventType.UNSTALLED), "stalled for 40 min since Nov 23, 2026, 8:50:00 AM (UTC+00:00)"),
        (
            event_of(EventType.RECEIVER_FAILING),
            "ops-slack (slack): 14 pending, 2 dead, 30 min, ops-slack (slack): receiver answered 500 'internal_error'",
        ),
        (
            samples()[-1],
            f"reminder 2 of {next(e.id for e in samples() if e.type == EventType.FAILED.value)}, 60 min since "
            "Nov 23, 2026, 8:00:00 AM (UTC+00:00)",
        ),
    ],
    ids=["resolves", "receiver", "reminder"],
)
def test_what_a_lasting_problem_carries_is_there_for_templates(event: Any, headline: str) -> None:
    templates = Templates.compile("team", LASTING, None)
    assert templates is not None
    assert templates.render(build_message(event), event).headline == headline


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({"title_template": "{{ task.name "}, "notifiers[0].title_template: (line 1) unexpected end of template"),
        ({"body_template": "{% if %}"}, "notifiers[0].body_template: (line 1)"),
    ],
)
def test_a_template_that_does_not_compile_is_a_config_problem_naming_the_notifier_key(
    keys: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(notifier(**keys))
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    ("title", "says"),
    [
        ("{{ task.nmae }}", "'dict object' has no attribute 'nmae'"),  # a typo: strict, not an empty title
        ("{{ task.name }}", "voicefox.watcher.api_unreachable"),  # no task for the API's events: the check says so
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),  # the sandbox refuses
    ],
)
def test_watcher_check_renders_every_template_against_every_event_type(tmp_path: Path, title: str, says: str) -> None:
    path = tmp_path / "w.toml"
    path.write_text(
        '[api]\ntoken = "t"\n[watch]\ntasks = [1]\n[[notifiers]]\nkind = "log"\nname = "audit"\n'
        f"title_template = {json.dumps(title)}\n"
    )
    path.chmod(0o600)
    err = io.StringIO()
    import contextlib

    with contextlib.redirect_stderr(err):
        assert main(["check", "-c", str(path)], stdout=io.StringIO()) == 2
    assert "notifiers[0] (audit): a template fails for" in err.getvalue()
    assert says in err.getvalue()
    assert "Traceback" not in err.getvalue()


async def test_a_template_failing_at_run_time_sends_the_built_in_message_with_one_error_line(
    receiver: Receiver,
) -> None:
    cfg = load(notifier(url=receiver.url, title_template="{{ task.name | upper }}"))
    async with httpx.AsyncClient() as http:
        slack = build(cfg.notifiers, Context(http))["team"]
        with capture_logs() as logs:
            await slack.send(event_of(EventType.API_UNREACHABLE))  # no task: the template fails
            await slack.send(event_of(EventType.FAILED))  # a task: the template works
    first, second = receiver.bodies()
    assert first["text"].endswith("VoiceFox API unreachable for 10 min: no task can be watched")  # built-in
    assert second["text"].endswith("SPRING RENEWAL REMINDERS")
    failures = [e for e in logs if e["event"] == "notify.template_failed"]
    assert len(failures) == 1
    assert failures[0]["notifier"] == "team"
    assert failures[0]["log_level"] == "error"


async def test_templated_messages_reach_every_channel_as_plain_text(receiver: Receiver) -> None:
    """A template's output is text like any other: a name with markup is shown literally, never as a mention."""
    cfg = load(notifier(url=receiver.url, body_template="{{ task.name }}"), language="zh-Hans")
    async with httpx.AsyncClient() as http:
        await build(cfg.notifiers, Context(http, language="zh-Hans"))["team"].send(
            event_of(EventType.FINISHED, name="<!channel> *VIP*")
        )
    (body,) = receiver.bodies()
    texts = [b["text"]["text"] for b in body["blocks"] if b.get("text", {}).get("type") == "plain_text"]
    assert "<!channel> *VIP*" in texts


def test_watcher_check_renders_only_the_events_a_notifier_gets_and_says_ok_only_when_all_render(tmp_path: Path) -> None:
    import contextlib

    path = tmp_path / "w.toml"
    path.write_text(
        '[api]\ntoken = "t"\n[watch]\ntasks = [1]\n[[notifiers]]\nkind = "log"\nname = "audit"\n'
        'events = ["voicefox.task.*"]\ntitle_template = "{{ task.name }} {{ event.kind }}"\n'
    )
    path.chmod(0o600)
    out = io.StringIO()
    assert main(["check", "-c", str(path)], stdout=out) == 0  # the API's own events never reach it
    assert out.getvalue().startswith(f"{path}: OK")
    path.write_text(path.read_text().replace('events = ["voicefox.task.*"]', 'events = ["*"]'))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["check", "-c", str(path)], stdout=out) == 2
    assert "OK" not in out.getvalue()
    assert "voicefox.watcher.api_unreachable" in err.getvalue()
