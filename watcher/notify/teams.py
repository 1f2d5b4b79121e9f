"""Microsoft Teams channel: an Adaptive Card 1.4 posted to a Workflows (Power Automate) webhook.

Office 365 connectors are retired; a team creates a workflow from the template "Post to a channel when a webhook
request is received" and gets a URL whose `sig=` parameter is its credential. The workflow posts each attachment of
a `{"type": "message", "attachments": [...]}` body as a card. It answers 202 once it has the request: a card it
cannot post fails later, in the flow's run history, not in our answer.

Text from the API never passes through markdown. A TextBlock's and a Fact's text is read as a markdown subset
(bold, italics, lists, links), and the renderers do not agree on escapes (the shared C++ renderer of the mobile
clients drops a backslash only before `[`, `]` and `)`): so the headline, the details and the footer, where the
campaign's name and summary go, are `TextRun`s of a RichTextBlock, which the schema defines as never markdown. Facts
(our labels, numbers, and a status the API may spell its own way) are escaped for the subset.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

import httpx

from ..fields import NotifierBase, SecretHttpUrl
from ..i18n import DEFAULT_LANGUAGE
from ..model import Event
from . import robot
from .base import FOR_PEOPLE, Context, EventFilter, Kind, digest_of
from .http import post
from .message import Digest, Message, Severity, build, build_digest
from .size import fit, most_that_fit


class TeamsNotifierConfig(NotifierBase):
    """A `[[notifiers]]` entry of kind "teams": a Workflows webhook URL (its `sig=` is a secret)."""

    kind: Literal["teams"]
    url: SecretHttpUrl


# A Teams message holds about 28 KB; the workflow wraps the card on its way, so keep a margin.
MAX_BODY = 20_000
CARD_VERSION = "1.4"  # what the Workflows "Post card in a chat or channel" action renders on every client
CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"

# The Adaptive Card colour of the headline, by severity.
COLOR = {
    Severity.DANGER: "Attention",
    Severity.WARNING: "Warning",
    Severity.GOOD: "Good",
    Severity.INFO: "Accent",
}

_INLINE = re.compile(r"[\\`*_~\[\]]")  # emphasis, code, strikethrough, link brackets, and the escape itself
_LINE_START = re.compile(r"(?m)^([ \t]*)([-+>#]|\d+\.)(?=[ \t]|$)")  # a list item, quote or heading


def escape(text: str) -> str:
    """`text` as literal text for a TextBlock or a Fact (backslash escapes, as CommonMark reads them)."""
    text = _INLINE.sub(lambda m: "\\" + m.group(0), text)
    return _LINE_START.sub(
        lambda m: m.group(1) + (m.group(2)[:-1] + "\\." if m.group(2).endswith(".") else "\\" + m.group(2)), text
    )


def _run(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": text, **style}]}


def _adaptive(body: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": body,
    }


def card(msg: Message) -> dict[str, Any]:
    """The Adaptive Card of a message."""
    body: list[dict[str, Any]] = [_run(msg.headline, weight="Bolder", size="Medium", color=COLOR[msg.severity])]
    if msg.facts:
        facts = [{"title": escape(fact.label), "value": escape(fact.value)} for fact in msg.facts]
        body.append({"type": "FactSet", "facts": facts})
    for detail in msg.details:
        if detail.label:  # (a template's body comes without one)
            body.append({"type": "TextBlock", "text": escape(detail.label), "weight": "Bolder", "wrap": True})
        body.append(_run(detail.value) | {"spacing": "Small"})
    body.append(_run(msg.footer, isSubtle=True, size="Small") | {"separator": True, "spacing": "Medium"})
    result = _adaptive(body)
    if msg.link:
        result["actions"] = [{"type": "Action.OpenUrl", "title": msg.link_text, "url": msg.link}]
    return result


def digest_card(digest: Digest, kept: int | None = None) -> dict[str, Any]:
    """The Adaptive Card of a digest: its headline, then a container per event (emoji and headline in the event's
    colour, and the task's link), for the first `kept` events (all by default) and "… and N more" for the rest."""
    items = digest.items if kept is None else digest.items[:kept]
    body: list[dict[str, Any]] = [_run(digest.headline, weight="Bolder", size="Medium", color=COLOR[digest.severity])]
    for item in items:
        runs: list[dict[str, Any]] = [
            {"type": "TextRun", "text": f"{robot.message_symbol(item)} {item.headline}", "color": COLOR[item.severity]}
        ]
        if item.link:
            link = {"type": "Action.OpenUrl", "title": item.link_text, "url": item.link}
            runs += [
                {"type": "TextRun", "text": " · "},
                {"type": "TextRun", "text": item.link_text, "selectAction": link},
            ]
        body.append({"type": "Container", "spacing": "Small", "items": [{"type": "RichTextBlock", "inlines": runs}]})
    if len(items) < len(digest.items):
        body.append(_run(digest.more(len(digest.items) - len(items)), isSubtle=True) | {"spacing": "Small"})
    body.append(_run(digest.footer, isSubtle=True, size="Small") | {"separator": True, "spacing": "Medium"})
    return _adaptive(body)


def _message(content: dict[str, Any]) -> bytes:
    document = {
        "type": "message",
        "attachments": [{"contentType": CONTENT_TYPE, "contentUrl": None, "content": content}],
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def render(msg: Message) -> dict[str, Any]:
    """The Teams payload of a message: a message with the card as its one attachment."""
    return {"type": "message", "attachments": [{"contentType": CONTENT_TYPE, "contentUrl": None, "content": card(msg)}]}


def body(msg: Message) -> bytes:
    """The request body for a message."""
    return _message(card(msg))


def digest_body(digest: Digest) -> bytes:
    """The request body for a digest: one card with as many of its events as fit in MAX_BODY."""
    kept = most_that_fit(len(digest.items), lambda k: len(_message(digest_card(digest, k))) <= MAX_BODY)
    return _message(digest_card(digest, kept))


class TeamsNotifier:
    """Posts each event to a Teams Workflows webhook as an Adaptive Card."""

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
        self._shown = f"{name} (teams)"  # the URL's sig= is a credential: messages name the notifier only
        self.wants = EventFilter(events if events is not None else FOR_PEOPLE)

    @classmethod
    def from_config(cls, config: TeamsNotifierConfig, context: Context) -> TeamsNotifier:
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
        """Post the card or raise DeliveryError: 429 and 5xx are temporary, other 4xx permanent."""
        await self._post(fit(self._message(event), body, MAX_BODY))

    async def send_digest(self, events: Sequence[Event]) -> None:
        """Post one card listing the events, or raise DeliveryError as `send` does."""
        await self._post(digest_body(build_digest(events, language=self._language, messages=self._message)))

    async def _post(self, content: bytes) -> None:
        await post(self._http, self._url, content, {"Content-Type": "application/json"}, shown_url=self._shown)


KIND = Kind(config=TeamsNotifierConfig, default_events=FOR_PEOPLE, build=TeamsNotifier.from_config, secrets=("url",))
