"""Log channel: one structured log line per event (a digest too: a line per event, sharing a `digest` key)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import structlog

from ..fields import NotifierBase
from ..i18n import DEFAULT_LANGUAGE
from ..model import Event
from .base import EVERYTHING, Context, EventFilter, Kind, digest_of
from .message import EventView, Message, Severity, build, digest_id

_log = structlog.get_logger("watcher.notify.log")


class LogNotifierConfig(NotifierBase):
    """A `[[notifiers]]` entry of kind "log": one structured log line per event."""

    kind: Literal["log"]


class LogNotifier:
    """Writes `task.notified` log lines; it never fails."""

    def __init__(
        self,
        name: str,
        *,
        events: list[str] | None = None,
        language: str = DEFAULT_LANGUAGE,
        messages: Callable[[Event], Message] | None = None,
        digest: bool = True,
    ) -> None:
        self.name = name
        self.digest = digest
        self._message = messages or (lambda event: build(event, language=language))
        self.wants = EventFilter(events if events is not None else EVERYTHING)

    @classmethod
    def from_config(cls, config: LogNotifierConfig, context: Context) -> LogNotifier:
        """Build from a `[[notifiers]]` entry."""
        return cls(config.name, events=config.events, messages=context.messages_for(config), digest=digest_of(config))

    async def send(self, event: Event) -> None:
        """Log the event."""
        self._log(event)

    async def send_digest(self, events: Sequence[Event]) -> None:
        """Log each event on its own line, all with the digest's id as `digest`: a line stays one event, so that
        queries and alerts on `task.notified` lines read a digest's events as they read single ones."""
        digest = digest_id(event.id for event in events)
        for event in events:
            self._log(event, digest=digest)

    def _log(self, event: Event, **extra: Any) -> None:
        msg = self._message(event)
        task = EventView.of(event).task
        level = _LEVELS["warning" if msg.severity in (Severity.WARNING, Severity.DANGER) else "info"]
        _log.log(
            level,
            "task.notified",
            notifier=self.name,
            type=event.type,
            event_id=event.id,
            task_id=event.subject,
            status=task.status if task else None,
            progress=task.progress if task else None,
            message=msg.headline,
            **extra,
        )


_LEVELS = {"info": 20, "warning": 30}


KIND = Kind(config=LogNotifierConfig, default_events=EVERYTHING, build=LogNotifier.from_config)
