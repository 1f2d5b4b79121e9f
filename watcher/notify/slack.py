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
_MAX_HEADER = 150  # Slack caps a header block's text at 150 characters
_MAX_SECTION = 2900  # and a section's text at 3000
_MAX_FIELD = 1900  # and a field's at 2000


def _escape(text: str) -> str:
    # Slack mrkdwn control characters; a campaign name must not become a link or a mention.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str, *, emoji: bool = False) -> dict[str, Any]:
    # Text from the API goes only into plain_text: Slack shows it as it is, so a campaign name with *, _, ~, `,
    # a leading > or <!channel> never turns into formatting, a quote or a mention. mrkdwn is for our own labels.
    return {"type": "plain_text", "text": text, "emoji": emoji}


def _slack_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2  # Slack counts UTF-16 units: an emoji outside the BMP counts 2


def _cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-16 units, as Slack counts (never in the middle of a surrogate pair)."""
    if _slack_len(text) <= limit:
        return text
    units = text.encode("utf-16-le")[: 2 * limit]
    return units.decode("utf-16-le", errors="ignore")


def _pct(value: Any) -> str:
    return f"{value}%" if isinstance(value, int) else "–"


def message(event: Event) -> dict[str, Any]:
    """The Slack payload for an event."""
    _severity, emoji, headline = describe(event)
    task: dict[str, Any] = event.data.get("task") or {}
    title = _plain(f"{emoji} {headline}", emoji=True)  # emoji: our shortcode becomes the emoji
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": title}
        if _slack_len(title["text"]) <= _MAX_HEADER
        else {"type": "section", "text": title | {"text": _cut(title["text"], _MAX_SECTION)}}
    ]
    if task:
        total = task.get("total")
        previous = event.data.get("previous") or {}
        status = str(task.get("status"))
        if previous.get("status") and previous["status"] != task.get("status"):
            status = f"{previous['status']} → {status}"
        facts = [
            ("Status", status),
            ("Progress", _pct(task.get("progress"))),
            ("Numbers", f"{total:,}" if isinstance(total, int) else "–"),
            ("Collection rate", _pct(task.get("collectionRate"))),
        ]
        # Label and value side by side in the section's two columns: the label in bold, the value as it is.
        fields = [
            f
            for label, value in facts
            for f in ({"type": "mrkdwn", "text": f"*{label}*"}, _plain(_cut(value, _MAX_FIELD)))
        ]
        blocks.append({"type": "section", "fields": fields})
        if event.type in _TERMINAL:
            for label, key in (("Summary", "summary"), ("Suggestion", "suggestion")):
                value = task.get(key)
                if value:
                    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*{label}*"}})
                    blocks.append({"type": "section", "text": _plain(_cut(str(value), _MAX_SECTION))})
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
    # The top-level text is the notification and what screen readers say. Slack parses it as mrkdwn unless the
    # message says `mrkdwn: false`; the entities keep <!channel> in a name from pinging anyone either way.
    return {"text": f"{emoji} {_escape(headline)}", "mrkdwn": False, "blocks": blocks}


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
