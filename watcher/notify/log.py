"""Log channel: one structured log line per event."""

from __future__ import annotations

import structlog

from ..config import LogNotifierConfig
from ..model import Event
from . import DEFAULT_EVENTS, EventFilter, describe

_log = structlog.get_logger("watcher.notify.log")


class LogNotifier:
    """Writes `task.notified` log lines; it never fails."""

    def __init__(self, name: str, *, events: list[str] | None = None) -> None:
        self.name = name
        self.wants = EventFilter(events if events is not None else DEFAULT_EVENTS["log"])

    @classmethod
    def from_config(cls, config: LogNotifierConfig) -> LogNotifier:
        """Build from a `[[notifiers]]` entry."""
        return cls(config.name, events=config.events)

    async def send(self, event: Event) -> None:
        """Log the event."""
        severity, _emoji, headline = describe(event)
        task = event.data.get("task") or {}
        level = "warning" if severity in ("warning", "danger") else "info"
        _log.log(
            _LEVELS[level],
            "task.notified",
            notifier=self.name,
            type=event.type,
            event_id=event.id,
            task_id=event.subject,
            status=task.get("status"),
            progress=task.get("progress"),
            message=headline,
        )


_LEVELS = {"info": 20, "warning": 30}
