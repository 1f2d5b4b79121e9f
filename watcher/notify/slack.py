"""Slack channel: an incoming-webhook message with a plain-text fallback and Block Kit blocks."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Literal

import httpx

from ..fields import NotifierBase, SecretHttpUrl
from ..i18n import DEFAULT_LANGUAGE
from ..model import Event
from . import robot
from .base import FOR_PEOPLE, Context, EventFilter, Kind, digest_of
from .http import post
from .message import Digest, Message, build, build_digest


class SlackNotifierConfig(NotifierBase):
    """A `[[notifiers]]` entry of kind "slack": an incoming-webhook URL (its path is a secret)."""

    kind: Literal["slack"]
    url: SecretHttpUrl


_MAX_HEADER = 150  # Slack caps a header block's text at 150 characters
_MAX_SECTION = 2900  # and a section's text at 3000
_MAX_FIELD = 1900  # and a field's at 2000
_MAX_BLOCKS = 50  # and a message's blocks at 50

# Each event type's symbol, as Unicode rather than Slack's :shortcodes:, so that no text may turn shortcodes on:
# a campaign named ":rotating_light: VIP" is shown as written.
EMOJI = robot.EMOJI


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


def _title(text: str) -> dict[str, Any]:
    # A header block when the text fits one (150 characters), else a section (a long campaign name must not fail).
    title = _plain(text)
    if _slack_len(text) <= _MAX_HEADER:
        return {"type": "header", "text": title}
    return {"type": "section", "text": title | {"text": _cut(text, _MAX_SECTION)}}


def render(msg: Message) -> dict[str, Any]:
    """The Slack payload of a message."""
    emoji = EMOJI.get(msg.icon, "ℹ️")
    blocks: list[dict[str, Any]] = [_title(f"{emoji} {msg.headline}")]
    if msg.facts:
        # Label and value side by side in the section's two columns: the label in bold, the value as it is.
        fields = [
            f
            for fact in msg.facts
            for f in ({"type": "mrkdwn", "text": f"*{_escape(fact.label)}*"}, _plain(_cut(fact.value, _MAX_FIELD)))
        ]
        # Slack takes ten fields (five facts) a section: more facts go on in further sections, not dropped (an
        # answer-rate event's own figures come after the task's four).
        blocks += [{"type": "section", "fields": fields[i : i + 10]} for i in range(0, len(fields), 10)]
    for detail in msg.details:
        if detail.label:  # (a template's body comes without one)
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*{_escape(detail.label)}*"}})
        blocks.append({"type": "section", "text": _plain(_cut(detail.value, _MAX_SECTION))})
    if msg.link:
        button = {"type": "button", "text": _plain(msg.link_text), "url": msg.link}
        blocks.append({"type": "actions", "elements": [button]})
    blocks.append({"type": "context", "elements": [_plain(_cut(msg.footer, _MAX_SECTION))]})
    # The top-level text is the notification and what screen readers say. Slack parses it as mrkdwn unless the
    # message says `mrkdwn: false`; the entities keep <!channel> in a name from pinging anyone either way.
    return {"text": f"{emoji} {_escape(msg.headline)}", "mrkdwn": False, "blocks": blocks}


def render_digest(digest: Digest) -> dict[str, Any]:
    """The Slack payload of a digest: its headline as the header, a section per event (emoji, headline, and the
    task's link as the section's button), within Slack's 50 blocks (the rest as "… and N more")."""
    emoji = robot.digest_symbol(digest)
    blocks: list[dict[str, Any]] = [_title(f"{emoji} {digest.headline}")]
    count = len(digest.items)
    # The header and the footer, and the "more" line when not every item fits.
    kept = count if count + 2 <= _MAX_BLOCKS else _MAX_BLOCKS - 3
    for item in digest.items[:kept]:
        section: dict[str, Any] = {
            "type": "section",
            "text": _plain(_cut(f"{EMOJI.get(item.icon, 'ℹ️')} {item.headline}", _MAX_SECTION)),
        }
        if item.link:
            section["accessory"] = {"type": "button", "text": _plain(item.link_text), "url": item.link}
        blocks.append(section)
    if kept < count:
        blocks.append({"type": "context", "elements": [_plain(digest.more(count - kept))]})
    blocks.append({"type": "context", "elements": [_plain(_cut(digest.footer, _MAX_SECTION))]})
    return {"text": f"{emoji} {_escape(digest.headline)}", "mrkdwn": False, "blocks": blocks}


def message(event: Event, *, language: str = DEFAULT_LANGUAGE, task_url: str = "") -> dict[str, Any]:
    """The Slack payload for an event."""
    return render(build(event, language=language, task_url=task_url))


class SlackNotifier:
    """Posts each event to a Slack incoming webhook."""

    def __init__(
        self,
        name: str,
        url: str,
        http: httpx.AsyncClient,
        *,
        events: list[str] | None = None,
        language: str = DEFAULT_LANGUAGE,
        task_url: str = "",
        messages: Callable[[Event], Message] | None = None,
        digest: bool = True,
    ) -> None:
        self.name = name
        self.digest = digest
        self._language = language
        self._url = url
        self._http = http
        self._message = messages or (lambda event: build(event, language=language, task_url=task_url))
        self.wants = EventFilter(events if events is not None else FOR_PEOPLE)

    @classmethod
    def from_config(cls, config: SlackNotifierConfig, context: Context) -> SlackNotifier:
        """Build from a `[[notifiers]]` entry."""
        return cls(
            config.name,
            config.url.get_secret_value(),
            context.http,
            events=config.events,
            language=context.language_of(config),
            messages=context.messages_for(config),
            digest=digest_of(config),
        )

    async def send(self, event: Event) -> None:
        """Post the message or raise DeliveryError; Slack's 4xx (invalid_payload, no_service...) are permanent."""
        await self._post(render(self._message(event)))

    async def send_digest(self, events: Sequence[Event]) -> None:
        """Post one message listing the events, or raise DeliveryError as `send` does."""
        await self._post(render_digest(build_digest(events, language=self._language, messages=self._message)))

    async def _post(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        # The whole Slack URL is a credential: messages name the notifier only.
        await post(self._http, self._url, body, {"Content-Type": "application/json"}, shown_url=f"{self.name} (slack)")


KIND = Kind(config=SlackNotifierConfig, default_events=FOR_PEOPLE, build=SlackNotifier.from_config, secrets=("url",))
