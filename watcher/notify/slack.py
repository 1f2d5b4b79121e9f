"""Slack channel: an incoming-webhook message with a plain-text fallback and Block Kit blocks."""

from __future__ import annotations

import json
from typing import Any

import httpx

from ..config import SlackNotifierConfig
from ..model import Event, EventType
from . import DEFAULT_EVENTS, EventFilter, describe
from .http import post

_TERMINAL = {EventType.FINISHED, EventType.STOPPED, EventType.TIMED_OUT, EventType.FAILED}
_MAX_SECTION = 2900  # Slack caps a section's text at 3000 characters


def _escape(text: str) -> str:
    # Slack mrkdwn control characters; a campaign name must not become a link or a mention.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _pct(value: Any) -> str:
    return f"{value}%" if isinstance(value, int) else "–"


def message(event: Event) -> dict[str, Any]:
    """The Slack payload for an event."""
    _severity, emoji, headline = describe(event)
    task: dict[str, Any] = event.data.get("task") or {}
    text = f"{emoji} {_escape(headline)}"  # Slack formats the fallback text too: no <!channel> from a name
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} *{_escape(headline)}*"}},
    ]
    if task:
        total = task.get("total")
        previous = event.data.get("previous") or {}
        status = f"`{_escape(str(task.get('status')))}`"
        if previous.get("status") and previous["status"] != task.get("status"):
            status = f"`{_escape(str(previous['status']))}` → {status}"
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*Status*\n{status}"},
                    {"type": "mrkdwn", "text": f"*Progress*\n{_pct(task.get('progress'))}"},
                    {"type": "mrkdwn", "text": f"*Numbers*\n{total:,}" if isinstance(total, int) else "*Numbers*\n–"},
                    {"type": "mrkdwn", "text": f"*Collection rate*\n{_pct(task.get('collectionRate'))}"},
                ],
            }
        )
        if event.type in _TERMINAL:
            for label, key in (("Summary", "summary"), ("Suggestion", "suggestion")):
                value = task.get(key)
                if value:
                    blocks.append(
                        {
                            "type": "section",
                            "text": {"type": "mrkdwn", "text": f"*{label}*\n{_escape(value)[:_MAX_SECTION]}"},
                        }
                    )
    ts = int(event.time.timestamp())
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"task {_escape(event.subject)} · `{event.type}` · "
                    f"<!date^{ts}^{{date_short_pretty}} {{time}}|{event.time.isoformat()}>",
                }
            ],
        }
    )
    return {"text": text, "blocks": blocks}


class SlackNotifier:
    """Posts each event to a Slack incoming webhook."""

    def __init__(self, name: str, url: str, http: httpx.AsyncClient, *, events: list[str] | None = None) -> None:
        self.name = name
        self._url = url
        self._http = http
        self.wants = EventFilter(events if events is not None else DEFAULT_EVENTS["slack"])

    @classmethod
    def from_config(cls, config: SlackNotifierConfig, http: httpx.AsyncClient) -> SlackNotifier:
        """Build from a `[[notifiers]]` entry."""
        return cls(config.name, config.url.get_secret_value(), http, events=config.events)

    async def send(self, event: Event) -> None:
        """Post the message or raise DeliveryError; Slack's 4xx (invalid_payload, no_service...) are permanent."""
        body = json.dumps(message(event), ensure_ascii=False).encode()
        # The whole Slack URL is a credential: messages name the notifier only.
        await post(self._http, self._url, body, {"Content-Type": "application/json"}, shown_url=f"{self.name} (slack)")
