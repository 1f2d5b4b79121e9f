"""Notifiers: one module per channel, declared in `registry.KINDS`.

A notifier has a `name`, says which event types it `wants`, and `send`s one event, raising DeliveryError when the
receiver did not accept it; with `digest` true it also `send_digest`s several events due at once as one message
(`message.build_digest`). What an event means is decided once (`message.build`); a channel only renders it.
Adding a channel = a module with its settings model, its class and a `KIND`, plus one line in `registry.KINDS`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..fields import NotifierBase
from .base import Context, EventFilter, Kind, Notifier
from .registry import KINDS

__all__ = ["DEFAULT_EVENTS", "KINDS", "Context", "EventFilter", "Kind", "Notifier", "build"]

# Per kind, the events a notifier gets when its config has no `events` key.
DEFAULT_EVENTS: dict[str, list[str]] = {name: list(kind.default_events) for name, kind in KINDS.items()}


def build(configs: Sequence[NotifierBase], context: Context) -> dict[str, Notifier]:
    """Instantiate every configured notifier, keyed by name."""
    return {c.name: KINDS[c.kind].build(c, context) for c in configs}
