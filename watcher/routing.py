"""Who is told of an event: decided once, when the event is recorded, and handed to the store as data.

Each notifier chooses events by type (glob patterns, `events`) and, for events of a task, by the task's labels
(Alertmanager's matchers, `matchers`). An event that ends a problem (`model.RESOLVES`: resumed, unstalled, reappeared,
recovered) goes to the notifiers that want the problem it ends, unless they set `send_resolved = false`. Events of the
watcher itself (the API's outages, a failing notifier) have no labels: they go by type alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from .fields import NotifierBase
from .matchers import Matcher, matches, parse_matchers
from .model import RESOLVES
from .notify import DEFAULT_EVENTS, EventFilter

TASK_EVENTS = "voicefox.task."


@dataclasses.dataclass(frozen=True)
class Route:
    """One notifier's choice of events."""

    name: str
    events: Callable[[str], bool]  # an EventFilter of the notifier's `events` patterns
    matchers: tuple[Matcher, ...] = ()
    send_resolved: bool = True

    @classmethod
    def of(cls, config: NotifierBase) -> Route:
        """The route a `[[notifiers]]` entry declares."""
        patterns = config.events if config.events is not None else DEFAULT_EVENTS[config.kind]
        return cls(config.name, EventFilter(patterns), parse_matchers(config.matchers), config.send_resolved)

    def wants_type(self, event_type: str) -> bool:
        """Whether events of this type reach it, labels aside."""
        ends = RESOLVES.get(event_type)
        if ends is not None:
            # A notice that a problem is over is for whoever heard of the problem.
            return self.send_resolved and (self.events(event_type) or any(self.events(p) for p in ends))
        return self.events(event_type)

    def wants(self, event_type: str, labels: Mapping[str, str]) -> bool:
        """Whether an event of this type, about a task with these labels, reaches it."""
        if not self.wants_type(event_type):
            return False
        return not event_type.startswith(TASK_EVENTS) or matches(self.matchers, labels)


class Router:
    """Every notifier's route: which receivers get an event."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)

    @classmethod
    def of(cls, configs: Sequence[NotifierBase]) -> Router:
        """The routes of the configured notifiers."""
        return cls([Route.of(c) for c in configs])

    def receivers(self, event_type: str, labels: Mapping[str, str] | None = None) -> list[str]:
        """The notifiers an event of this type, about a task with these labels, goes to."""
        return [route.name for route in self.routes if route.wants(event_type, labels or {})]

    def names(self) -> list[str]:
        """Every notifier's name."""
        return [route.name for route in self.routes]
