"""What every channel shares: the `Notifier` protocol, event filters, what a kind declares, and what it is built with."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import httpx
import structlog

from ..fields import NotifierBase
from ..i18n import DEFAULT_LANGUAGE
from ..model import Event, EventType
from .message import Message, build, fallback
from .templates import Templates


class Notifier(Protocol):
    """What the dispatcher needs of a channel."""

    name: str
    digest: bool  # several events due at once go out as one message (`send_digest`) rather than one each

    def wants(self, event_type: str) -> bool:
        """Whether this notifier should receive events of this type."""
        ...

    async def send(self, event: Event) -> None:
        """Deliver one event or raise DeliveryError."""
        ...

    async def send_digest(self, events: Sequence[Event]) -> None:
        """Deliver several events (2 to 50, in order) as one message, or raise DeliveryError as `send` does."""
        ...


def digest_of(config: NotifierBase, default: bool = True) -> bool:
    """Whether a notifier sends digests: its `digest` key, else its kind's default (people's channels: yes)."""
    return config.digest if config.digest is not None else default


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


_log = structlog.get_logger("watcher.notify")

# Chat is for people: first sightings and progress milestones would be noise there; machines and logs get everything.
FOR_PEOPLE = ("*", f"!{EventType.OBSERVED.value}", f"!{EventType.PROGRESSED.value}")
EVERYTHING = ("*",)


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    """What every notifier is built with: the shared HTTP client, the `[delivery]` limits a channel without that client
    must apply itself (SMTP, Apprise), and the `[messages]` settings."""

    http: httpx.AsyncClient
    language: str = DEFAULT_LANGUAGE  # `[messages] language`; a notifier's own `language` wins
    task_url: str = ""  # `[messages] task_url`: a link to the task, "{id}" replaced
    timeout: float = 10.0  # `[delivery] timeout`: how long one delivery attempt may take
    verify_tls: bool = True  # `[delivery] verify_tls`

    def language_of(self, config: NotifierBase) -> str:
        """The language a notifier's people read."""
        return config.language or self.language

    def messages_for(self, config: NotifierBase) -> Callable[[Event], Message]:
        """How a notifier turns an event into its message: the built-in one in its language, with its templates."""
        language, task_url = self.language_of(config), self.task_url
        templates = Templates.compile(config.name, config.title_template, config.body_template)

        def message(event: Event) -> Message:
            try:
                built = build(event, language=language, task_url=task_url)
            except Exception as exc:  # noqa: BLE001 - a message that cannot be built must not cost the alert
                _log.exception("notify.message_failed", notifier=config.name, event_type=event.type, error=str(exc))
                return fallback(event)
            return templates.apply(built, event) if templates is not None else built

        return message


@dataclasses.dataclass(frozen=True, slots=True)
class Kind:
    """One channel, declared once in its own module: its settings, the events it gets by default, how to build it,
    and which of its keys are credentials (redacted in logs, warned about in a readable file, `<key>_file` allowed)."""

    config: type[NotifierBase]
    default_events: tuple[str, ...]
    build: Callable[[Any, Context], Notifier]
    secrets: tuple[str, ...] = ()
