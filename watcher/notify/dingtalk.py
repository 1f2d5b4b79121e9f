"""DingTalk channel: a custom robot's (自定义机器人) markdown message, signed ("加签") when the robot has a secret.

The robot's webhook URL carries its `access_token` (a credential). With a secret (`SEC…`), every request adds
`timestamp` (milliseconds) and `sign` = base64(HMAC-SHA256 keyed with the secret over "timestamp\\nsecret") to the
query; DingTalk refuses a timestamp more than an hour off. Markdown rather than an ActionCard: the custom robot takes
`at` (mentions) with text and markdown messages only, and the link to the task is a markdown link as tappable as a
button. DingTalk answers HTTP 200 with `errcode` 0 on success.
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
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pydantic
from pydantic import Field, SecretStr

from ..errors import DeliveryError
from ..fields import NotifierBase, SecretHttpUrl
from ..i18n import DEFAULT_LANGUAGE
from ..model import Event
from .base import FOR_PEOPLE, Context, EventFilter, Kind, digest_of
from .http import request
from .message import Digest, Message, Severity, build, build_digest
from .robot import (
    assemble,
    digest_lines,
    digest_symbol,
    errcode,
    escape,
    fit,
    link_target,
    message_symbol,
    shown_errmsg,
    size,
    unsafe,
)
from .size import most_that_fit

MAX_BYTES = 4096  # DingTalk documents no limit for markdown; WeCom's, so that a runaway summary is cut, not refused
_MAX_HEADLINE = 1024  # bytes of markdown for the headline, and for each fact's value
_MAX_FACT = 512
_MAX_TITLE = 128  # characters of the title (the conversation list and the notification show one line of it)
# 130101 / 410100: more than about 20 messages a minute, and DingTalk then throttles the robot for ten minutes: an
# earlier retry would only be refused again.
TOO_FAST_PAUSE = 600.0
_MOBILE = re.compile(r"^\+?[0-9][0-9-]{2,19}$")


def _check_url(value: SecretStr) -> SecretStr:
    if not parse_qs(urlsplit(value.get_secret_value()).query).get("access_token", [""])[0]:
        raise ValueError(
            "must be the robot's webhook URL with its access_token "
            "(https://oapi.dingtalk.com/robot/send?access_token=...), as the robot's settings show it"
        )
    return value


def _check_secret(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        secret = value.get_secret_value()
        if not secret.startswith("SEC") or not secret.isascii() or not secret.isprintable() or " " in secret:
            raise ValueError("must be the robot's signing secret: the string starting with SEC shown under 加签")
    return value


def _check_keyword(value: str) -> str:
    if value != value.strip() or not value.isprintable():
        raise ValueError("must be one line without leading or trailing spaces")
    if bad := unsafe(value):
        # It must reach DingTalk exactly as the robot's setting has it, so nothing in it may need escaping.
        raise ValueError(f"must not contain {' '.join(bad)} (markdown would change them)")
    return value


def _check_mobiles(value: tuple[str, ...]) -> tuple[str, ...]:
    for i, mobile in enumerate(value):
        if not _MOBILE.match(mobile):
            # The numbers are people's: never repeat one in a message (this one reaches logs and terminals).
            raise ValueError(f"item {i + 1} is not a phone number (digits, an optional leading + and dashes)")
    return value


class DingTalkNotifierConfig(NotifierBase):
    """A `[[notifiers]]` entry of kind "dingtalk": a custom robot's webhook URL, and its signing secret if it has one."""

    kind: Literal["dingtalk"]
    url: Annotated[SecretHttpUrl, pydantic.AfterValidator(_check_url)]
    secret: Annotated[SecretStr | None, pydantic.AfterValidator(_check_secret)] = None
    # The robot's "custom keyword" (自定义关键词), if it has that security setting: it starts every title and heading.
    keyword: Annotated[str, pydantic.AfterValidator(_check_keyword)] = ""
    # People to @mention for events of severity danger; the numbers are kept out of repr (and so of logs).
    at_mobiles: Annotated[tuple[str, ...], pydantic.AfterValidator(_check_mobiles), Field(repr=False)] = ()
    at_all: bool = False


def sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's `sign`: base64 of HMAC-SHA256 keyed with the secret over "timestamp\\nsecret" (not URL-encoded)."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def signed_url(url: str, secret: str, timestamp_ms: int) -> str:
    """The webhook URL with `timestamp` and `sign` added to its query (`sign` URL-encoded, as DingTalk requires)."""
    query = urlencode({"timestamp": timestamp_ms, "sign": sign(secret, timestamp_ms)})
    return f"{url}{'&' if urlsplit(url).query else '?'}{query}"


def _head(symbol: str, prefix: str, headline: str, mobiles: list[str]) -> list[str]:
    head = [f"### {symbol} {prefix}{fit(headline, _MAX_HEADLINE, join=' ')}"]
    if mobiles:
        head.append(" ".join(f"@{mobile}" for mobile in mobiles))  # DingTalk mentions only numbers in the text too
    return head


def _payload(title: str, text: str, mobiles: list[str], at_all: bool) -> dict[str, Any]:
    # The title is what the conversation list and the notification show: plain text, not markdown.
    title = title if len(title) <= _MAX_TITLE else title[: _MAX_TITLE - 1] + "…"
    return {
        "msgtype": "markdown",
        "markdown": {"title": title, "text": text},
        "at": {"atMobiles": mobiles, "isAtAll": at_all},
    }


def render(msg: Message, *, keyword: str = "", at_mobiles: Sequence[str] = (), at_all: bool = False) -> dict[str, Any]:
    """The DingTalk markdown message of a message; mentions only for events of severity danger."""
    mention = msg.severity is Severity.DANGER
    mobiles = list(at_mobiles) if mention else []
    prefix = f"【{keyword}】" if keyword else ""
    head = _head(message_symbol(msg), prefix, msg.headline, mobiles)
    if msg.facts:
        head.append("\n".join(f"- **{escape(f.label)}**: {fit(f.value, _MAX_FACT, join=' ')}" for f in msg.facts))
    tail = [f"[{escape(msg.link_text)}]({link_target(msg.link)})"] if msg.link else []
    tail.append(f"###### {fit(msg.footer, _MAX_FACT, join=' ')}")
    text = assemble(
        head,
        msg.details,
        tail,
        limit=MAX_BYTES,
        detail=lambda label, value: f"**{label}**\n\n{value}" if label else value,  # (a template body: none)
        value_join="\n\n",  # DingTalk joins single lines into one paragraph
    )
    return _payload(f"{prefix}{msg.headline}", text, mobiles, at_all and mention)


def render_digest(
    digest: Digest, *, keyword: str = "", at_mobiles: Sequence[str] = (), at_all: bool = False
) -> dict[str, Any]:
    """One DingTalk markdown message listing a digest's events, a list item each, within MAX_BYTES (the items that
    do not fit become "… and N more"); mentions when any item is of severity danger, as for one such event."""
    mention = digest.severity is Severity.DANGER
    mobiles = list(at_mobiles) if mention else []
    prefix = f"【{keyword}】" if keyword else ""
    head = _head(digest_symbol(digest), prefix, digest.headline, mobiles)
    # The footer names voicefox-watcher: a robot whose keyword is "voicefox" takes the digest too.
    footer = f"###### {fit(digest.footer, _MAX_FACT, join=' ')}"

    def text(kept: int) -> str:
        return "\n\n".join([*head, "\n".join(digest_lines(digest, kept, bullet="- ")), footer])

    kept = most_that_fit(len(digest.items), lambda k: size(text(k)) <= MAX_BYTES)
    return _payload(f"{prefix}{digest.headline}", text(kept), mobiles, at_all and mention)


def message(event: Event, *, language: str = DEFAULT_LANGUAGE, task_url: str = "", **options: Any) -> dict[str, Any]:
    """The DingTalk payload for an event (`options`: keyword, at_mobiles, at_all)."""
    return render(build(event, language=language, task_url=task_url), **options)


class DingTalkNotifier:
    """Posts each event to a DingTalk custom robot."""

    def __init__(
        self,
        name: str,
        url: str,
        http: httpx.AsyncClient,
        *,
        secret: str | None = None,
        keyword: str = "",
        at_mobiles: Sequence[str] = (),
        at_all: bool = False,
        events: list[str] | None = None,
        language: str = DEFAULT_LANGUAGE,
        task_url: str = "",
        messages: Callable[[Event], Message] | None = None,
        clock: Callable[[], float] = time.time,
        digest: bool = True,
    ) -> None:
        self.name = name
        self.digest = digest
        self._language = language
        self._url = url
        self._http = http
        self._secret = secret
        self._keyword = keyword
        self._at_mobiles = tuple(at_mobiles)
        self._at_all = at_all
        self._message = messages or (lambda event: build(event, language=language, task_url=task_url))
        self._clock = clock
        self.wants = EventFilter(events if events is not None else FOR_PEOPLE)
        # The URL's access_token is a credential, and the numbers are people's: messages name the notifier only.
        self._shown = f"{name} (dingtalk)"
        token = parse_qs(urlsplit(url).query).get("access_token", [""])[0]
        self._hidden = [token, secret or "", *self._at_mobiles]

    @classmethod
    def from_config(cls, config: DingTalkNotifierConfig, context: Context) -> DingTalkNotifier:
        """Build from a `[[notifiers]]` entry."""
        return cls(
            config.name,
            config.url.get_secret_value(),
            context.http,
            secret=config.secret.get_secret_value() if config.secret else None,
            keyword=config.keyword,
            at_mobiles=config.at_mobiles,
            at_all=config.at_all,
            events=config.events,
            language=context.language_of(config),
            messages=context.messages_for(config),
            digest=digest_of(config),
        )

    async def send(self, event: Event) -> None:
        """Post the message or raise DeliveryError: sending too fast is temporary, a refused one permanent."""
        msg = self._message(event)
        await self._post(render(msg, keyword=self._keyword, at_mobiles=self._at_mobiles, at_all=self._at_all))

    async def send_digest(self, events: Sequence[Event]) -> None:
        """Post one message listing the events, or raise DeliveryError as `send` does."""
        digest = build_digest(events, language=self._language, messages=self._message)
        await self._post(render_digest(digest, keyword=self._keyword, at_mobiles=self._at_mobiles, at_all=self._at_all))

    async def _post(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        url = signed_url(self._url, self._secret, int(self._clock() * 1000)) if self._secret else self._url
        headers = {"Content-Type": "application/json; charset=utf-8"}
        response = await request(self._http, url, body, headers, shown_url=self._shown)
        code, errmsg = errcode(response, self._shown, "DingTalk")
        if code == 0:
            return
        said = f"{code} {shown_errmsg(errmsg, self._hidden)!r}"
        if code in (130101, 410100):
            raise DeliveryError(
                f"{self._shown}: DingTalk says the robot sends too fast ({said}): about 20 messages a minute",
                retry_after=TOO_FAST_PAUSE,
            )
        if code == 90030:  # the robot's message quota is used up for now; it resets
            raise DeliveryError(f"{self._shown}: DingTalk says the robot is over its limit ({said})", retry_after=3600)
        if code == -1:
            raise DeliveryError(f"{self._shown}: DingTalk is busy ({said})")
        if code == 310000:
            raise DeliveryError(
                f"{self._shown}: DingTalk refused the message ({said}): check the notifier's secret (the robot's "
                "加签 secret), the robot's custom keyword (set keyword) and its IP allow-list, and this host's clock",
                permanent=True,
            )
        raise DeliveryError(f"{self._shown}: DingTalk refused the message ({said})", permanent=True)


# `secret` needs no entry: config.SECRETS holds a `secret` of every kind (redacted, warned about, secret_file).
KIND = Kind(
    config=DingTalkNotifierConfig, default_events=FOR_PEOPLE, build=DingTalkNotifier.from_config, secrets=("url",)
)
