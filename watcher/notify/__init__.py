"""Notifiers: one module per channel and an explicit registry.

A notifier has a `name`, says which event types it `wants`, and `send`s one event, raising DeliveryError when the
receiver did not accept it. Adding a channel = a module with a class + one line in `KINDS`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import httpx

from ..config import NotifierConfig
from ..model import Event, EventType


class Notifier(Protocol):
    """What the dispatcher needs of a channel."""

    name: str

    def wants(self, event_type: str) -> bool:
        """Whether this notifier should receive events of this type."""
        ...

    async def send(self, event: Event) -> None:
        """Deliver one event or raise DeliveryError."""
        ...


class EventFilter:
    """Glob patterns on event types; "!" excludes; only exclusions mean "all but". An empty list wants nothing."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = list(patterns)
        self._include = [p for p in patterns if not p.startswith("!")]
        self._exclude = [p[1:] for p in patterns if p.startswith("!")]
        if self._exclude and not self._include:
            self._include = ["*"]  # only exclusions ("!voicefox.task.progressed") mean "everything but these"

    def __call__(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, p) for p in self._include) and not any(
            fnmatch.fnmatchcase(event_type, p) for p in self._exclude
        )


# Per kind, the events a notifier gets when its config has no `events` key. Chat is for people: first sightings
# and progress milestones would be noise there; machines (webhook) and logs get everything.
DEFAULT_EVENTS: dict[str, list[str]] = {
    "webhook": ["*"],
    "slack": ["*", f"!{EventType.OBSERVED.value}", f"!{EventType.PROGRESSED.value}"],
    "log": ["*"],
}

_SEVERITY = {
    EventType.OBSERVED: ("info", ":eyes:", "is being watched"),
    EventType.STARTED: ("info", ":arrow_forward:", "started calling"),
    EventType.PROGRESSED: ("info", ":bar_chart:", "made progress"),
    EventType.FINISHED: ("good", ":white_check_mark:", "finished"),
    EventType.STOPPED: ("warning", ":double_vertical_bar:", "was stopped by an operator"),
    EventType.TIMED_OUT: ("warning", ":hourglass:", "stopped: its time ran out"),
    EventType.FAILED: ("danger", ":x:", "stopped abnormally"),
    EventType.RESUMED: ("info", ":arrow_forward:", "resumed calling"),
    EventType.CHANGED: ("warning", ":grey_question:", "changed status"),
    EventType.STALLED: ("danger", ":warning:", "is stalled: no progress"),
    EventType.MISSING: ("danger", ":ghost:", "is missing: the API no longer knows it"),
    EventType.API_UNREACHABLE: ("danger", ":satellite_antenna:", "VoiceFox API unreachable"),
    EventType.API_RECOVERED: ("good", ":satellite_antenna:", "VoiceFox API reachable again"),
    EventType.TEST: ("info", ":bell:", "test notification from voicefox-watcher"),
}


def describe(event: Event) -> tuple[str, str, str]:
    """(severity, emoji, headline) of an event, for people: severity is info, good, warning or danger."""
    try:
        severity, emoji, verb = _SEVERITY[EventType(event.type)]
    except ValueError:
        severity, emoji, verb = "info", ":information_source:", event.type
    task = event.data.get("task") or {}
    name = task.get("name") or ""
    who = f"Campaign “{name}” (task {event.subject})" if name else f"Task {event.subject}"
    if event.type == EventType.TEST:
        return severity, emoji, verb[0].upper() + verb[1:]
    if event.type == EventType.API_UNREACHABLE:
        silent_for = _duration(int(event.data.get("unreachableForSeconds", 0)))
        if event.data.get("cause") == "authentication":
            # The API answers, but 401/403: "unreachable" would send people to the network instead of the token.
            return (
                severity,
                emoji,
                f"VoiceFox API refused the token (check api.token): no task can be watched for {silent_for}",
            )
        return severity, emoji, f"{verb} for {silent_for}: no task can be watched"
    if event.type == EventType.API_RECOVERED:
        down_for = _duration(int(event.data.get("downForSeconds", 0)))
        if event.data.get("cause") == "authentication":
            return severity, emoji, f"VoiceFox API accepts the token again after {down_for}"
        return severity, emoji, f"{verb} after {down_for}"
    if event.type == EventType.PROGRESSED:
        verb = f"reached {event.data.get('milestone', task.get('progress'))}%"
    elif event.type == EventType.CHANGED:
        prev = (event.data.get("previous") or {}).get("status")
        verb = f"changed status {prev} → {task.get('status')}"
    elif event.type == EventType.STALLED:
        verb = f"is stalled: no progress for {_duration(int(event.data.get('stalledForSeconds', 0)))}"
        windows = event.data.get("windows") or {}
        if windows.get("placed") is False:
            # The stall clock ran as if calling were possible at any hour: say so, and what would place the windows.
            fix = windows.get("fix") or "watch.timezone"
            verb += f" (its calling windows could not be placed: their time zone is unknown; set {fix})"
        elif windows.get("doubted"):
            verb += " (it was seen calling outside its calling windows, so they were not relied on)"
    if event.data.get("firstSight"):
        verb += " (already so when the watcher first saw it)"
    return severity, emoji, f"{who} {verb}"


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def build(configs: Sequence[NotifierConfig], http: httpx.AsyncClient) -> dict[str, Notifier]:
    """Instantiate every configured notifier, keyed by name."""
    return {c.name: KINDS[c.kind](c, http) for c in configs}


def _webhook(config: Any, http: httpx.AsyncClient) -> Notifier:
    from .webhook import WebhookNotifier

    return WebhookNotifier.from_config(config, http)


def _slack(config: Any, http: httpx.AsyncClient) -> Notifier:
    from .slack import SlackNotifier

    return SlackNotifier.from_config(config, http)


def _log(config: Any, http: httpx.AsyncClient) -> Notifier:
    from .log import LogNotifier

    return LogNotifier.from_config(config)


KINDS: dict[str, Callable[[Any, httpx.AsyncClient], Notifier]] = {
    "webhook": _webhook,
    "slack": _slack,
    "log": _log,
}
