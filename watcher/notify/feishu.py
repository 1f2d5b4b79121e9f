"""Feishu / Lark channel: an interactive card through a group's custom bot, signed when the bot has a secret.

A custom bot's webhook (`https://open.feishu.cn/open-apis/bot/v2/hook/<token>`, Lark's on open.larksuite.com) answers
HTTP 200 with a code in its JSON body: 0 is success, anything else a refusal, read here. The card is a JSON 1.0 card
(header, `div` fields, `action`, `note`): the layout every Feishu and Lark client renders. Text from the API goes only
into `plain_text` objects, which Feishu shows as written: a campaign name cannot become markdown, a link or an
`<at id=all>` mention; `lark_md` carries only our own labels, and only when they hold no markdown character.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import httpx
import pydantic
from pydantic import SecretStr

from ..errors import DeliveryError
from ..fields import NotifierBase, SecretHttpUrl
from ..i18n import DEFAULT_LANGUAGE
from ..model import Event
from . import robot
from .base import FOR_PEOPLE, Context, EventFilter, Kind, digest_of
from .http import request
from .message import Digest, Fact, Message, Severity, build, build_digest
from .size import fit, most_that_fit


def _check_secret(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        secret = value.get_secret_value()
        if not secret.strip():
            raise ValueError("must not be empty (leave the key out when the bot has no signature check)")
        if not secret.isascii() or not secret.isprintable() or any(c.isspace() for c in secret):
            raise ValueError(
                "must be printable ASCII without spaces or newlines (check the variable or file it comes from)"
            )
    return value


class FeishuNotifierConfig(NotifierBase):
    """A `[[notifiers]]` entry of kind "feishu": a custom bot's webhook URL (its token is a secret) and, when the
    bot checks signatures, its signing secret."""

    kind: Literal["feishu"]
    url: SecretHttpUrl
    secret: Annotated[SecretStr | None, pydantic.AfterValidator(_check_secret)] = None


# Feishu takes request bodies up to 20 KB; the timestamp and signature count too.
MAX_BODY = 20_000
# 11232: "frequency limited" (a bot may send 100 messages a minute, 5 a second; busy hours such as 10:00 may refuse
# sooner). The docs give no wait: ten seconds, then the dispatcher's backoff.
RATE_LIMIT_PAUSE = 10.0

TEMPLATE = {
    Severity.DANGER: "red",
    Severity.WARNING: "orange",
    Severity.GOOD: "green",
    Severity.INFO: "blue",
}

# What a refusal means and what fixes it, by Feishu's code; every one of these is permanent until the config is fixed.
_HINTS = {
    19021: "the signature was refused: check `secret` (the bot's signing secret) and this host's clock "
    "(Feishu accepts a timestamp within an hour)",
    19022: "this host's address is not on the bot's IP allowlist",
    19024: "the bot requires a custom keyword in every message: remove it from the bot's security settings "
    "(use signing instead)",
    9499: "Feishu refused the request as malformed",
}

# A label is set in bold through lark_md only when it is words and spaces: no character that card markdown reads.
_PLAIN_WORDS = re.compile(r"(?:[^\W_]|[ \u3000])+")


def _text(content: str) -> dict[str, str]:
    return {"tag": "plain_text", "content": content}


def _label(label: str) -> dict[str, str]:
    return {"tag": "lark_md", "content": f"**{label}**"} if _PLAIN_WORDS.fullmatch(label) else _text(label)


def _fields(facts: tuple[Fact, ...]) -> list[dict[str, Any]]:
    # Two short fields side by side make a row: the label, then its value.
    return [
        field
        for fact in facts
        for field in ({"is_short": True, "text": _label(fact.label)}, {"is_short": True, "text": _text(fact.value)})
    ]


def render(msg: Message) -> dict[str, Any]:
    """The Feishu payload of a message (without the signature): an interactive card."""
    elements: list[dict[str, Any]] = []
    if msg.facts:
        elements.append({"tag": "div", "fields": _fields(msg.facts)})
    for detail in msg.details:
        if detail.label:  # (a template's body comes without one)
            elements.append({"tag": "div", "text": _label(detail.label)})
        elements.append({"tag": "div", "text": _text(detail.value)})
    if msg.link:
        button = {"tag": "button", "text": _text(msg.link_text), "type": "primary", "url": msg.link}
        elements.append({"tag": "action", "actions": [button]})
    elements.append({"tag": "hr"})
    elements.append({"tag": "note", "elements": [_text(msg.footer)]})
    card = {"header": {"template": TEMPLATE[msg.severity], "title": _text(msg.headline)}, "elements": elements}
    return {"msg_type": "interactive", "card": card}


def render_digest(digest: Digest, kept: int | None = None) -> dict[str, Any]:
    """The Feishu payload of a digest: one card headed by its headline, a line per event (emoji and headline, the
    task's link as the line's button) for the first `kept` events (all by default), "… and N more" for the rest."""
    items = digest.items if kept is None else digest.items[:kept]
    elements: list[dict[str, Any]] = []
    for item in items:
        line: dict[str, Any] = {"tag": "div", "text": _text(f"{robot.message_symbol(item)} {item.headline}")}
        if item.link:  # a div's `extra`: the element on the line's right
            line["extra"] = {"tag": "button", "text": _text(item.link_text), "type": "default", "url": item.link}
        elements.append(line)
    if len(items) < len(digest.items):
        elements.append({"tag": "div", "text": _text(digest.more(len(digest.items) - len(items)))})
    elements.append({"tag": "hr"})
    elements.append({"tag": "note", "elements": [_text(digest.footer)]})
    card = {"header": {"template": TEMPLATE[digest.severity], "title": _text(digest.headline)}, "elements": elements}
    return {"msg_type": "interactive", "card": card}


def sign(secret: str, timestamp: int) -> str:
    """Feishu's `sign`: base64 of HMAC-SHA256 keyed with "timestamp\\nsecret" over an empty message."""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def body(msg: Message, *, secret: str | None = None, timestamp: int = 0) -> bytes:
    """The request body for a message: the card, with `timestamp` and `sign` when the bot has a secret."""
    return _signed(render(msg), secret, timestamp)


def digest_body(digest: Digest, *, secret: str | None = None, timestamp: int = 0) -> bytes:
    """The request body for a digest: one card with as many of its events as fit in MAX_BODY, signed as `body`."""
    kept = most_that_fit(
        len(digest.items), lambda k: len(_signed(render_digest(digest, k), secret, timestamp)) <= MAX_BODY
    )
    return _signed(render_digest(digest, kept), secret, timestamp)


def _signed(payload: dict[str, Any], secret: str | None, timestamp: int) -> bytes:
    if secret:
        payload = {"timestamp": str(timestamp), "sign": sign(secret, timestamp), **payload}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def check_answer(response: httpx.Response, shown: str) -> None:
    """Return if Feishu's JSON answer says code 0; raise DeliveryError naming the cause otherwise."""
    try:
        answer = json.loads(response.content)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        snippet = response.text[:100].strip().replace("\n", " ")
        raise DeliveryError(
            f"{shown}: answered {response.status_code} without Feishu's JSON reply ({snippet!r}): is the url a bot's webhook?",
            permanent=True,
        )
    code = answer.get("code", answer.get("StatusCode"))  # StatusCode: the older field, still sent beside code
    text = answer.get("msg") or answer.get("StatusMessage") or ""
    text = text[:200] if isinstance(text, str) else ""
    if code == 0:
        return
    said = f"{shown}: Feishu answered code {code} {text!r}"
    # 9499 is Feishu's generic refusal ("Bad Request"); clients have seen it say "too many request" as well.
    if code == 11232 or (code == 9499 and "too many" in text.lower()):
        raise DeliveryError(f"{said}: sending too fast, waiting", retry_after=RATE_LIMIT_PAUSE)
    hint = _HINTS.get(code) if isinstance(code, int) else None
    raise DeliveryError(f"{said}: {hint}" if hint else said, permanent=True)


class FeishuNotifier:
    """Posts each event to a Feishu or Lark custom bot as an interactive card."""

    def __init__(
        self,
        name: str,
        url: str,
        http: httpx.AsyncClient,
        *,
        secret: str | None = None,
        events: list[str] | None = None,
        clock: Callable[[], float] = time.time,
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
        self._secret = secret
        self._clock = clock
        self._message = messages or (lambda event: build(event, language=language, task_url=task_url))
        self._shown = f"{name} (feishu)"  # the URL's last segment is the bot's token: messages name the notifier only
        self.wants = EventFilter(events if events is not None else FOR_PEOPLE)

    @classmethod
    def from_config(cls, config: FeishuNotifierConfig, context: Context) -> FeishuNotifier:
        """Build from a `[[notifiers]]` entry."""
        return cls(
            config.name,
            config.url.get_secret_value(),
            context.http,
            secret=config.secret.get_secret_value() if config.secret else None,
            events=config.events,
            language=context.language_of(config),
            messages=context.messages_for(config),
            digest=digest_of(config),
        )

    async def send(self, event: Event) -> None:
        """Post the card or raise DeliveryError: 11232 (too fast) is temporary, other refusals permanent."""
        msg = self._message(event)
        timestamp = int(self._clock())
        await self._post(fit(msg, lambda m: body(m, secret=self._secret, timestamp=timestamp), MAX_BODY))

    async def send_digest(self, events: Sequence[Event]) -> None:
        """Post one card listing the events, or raise DeliveryError as `send` does."""
        digest = build_digest(events, language=self._language, messages=self._message)
        await self._post(digest_body(digest, secret=self._secret, timestamp=int(self._clock())))

    async def _post(self, content: bytes) -> None:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        response = await request(self._http, self._url, content, headers, shown_url=self._shown)
        check_answer(response, self._shown)


KIND = Kind(
    config=FeishuNotifierConfig,
    default_events=FOR_PEOPLE,
    build=FeishuNotifier.from_config,
    secrets=("url",),  # (`secret` is every kind's: config.SECRETS has it once)
)
