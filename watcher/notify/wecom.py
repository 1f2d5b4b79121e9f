"""WeCom channel: a group robot's (群机器人) markdown message, within WeCom's 4,096 UTF-8 bytes.

The robot's webhook URL carries its `key` (a credential; there is no signing). The severity is the colour of the
heading (`<font color="info|comment|warning">`, the three WeCom has). Mentions: `mentioned_mobile_list` belongs to
`text` messages only, but markdown takes `<@userid>` in its content, so `mention_userids` are written so for events
of severity danger (WeCom has no @all in markdown). WeCom answers HTTP 200 with `errcode` 0 on success.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

import httpx
import pydantic
from pydantic import SecretStr

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
)
from .size import most_that_fit

MAX_BYTES = 4096  # markdown.content, in UTF-8 bytes (WeCom answers 40058 beyond)
_MAX_HEADLINE = 1024  # bytes of markdown for the headline, and for each fact's value
_MAX_FACT = 512
TOO_FAST_PAUSE = 60.0  # 45009: about 20 messages a minute per robot
# WeCom's own rule for a member's UserID: 1-64 of letters, digits and _-@. starting with a letter or digit.
_USERID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
COLOURS = {
    Severity.DANGER: "warning",  # WeCom's orange-red
    Severity.WARNING: "warning",
    Severity.GOOD: "info",  # green
    Severity.INFO: "comment",  # grey
}


def _check_url(value: SecretStr) -> SecretStr:
    if not parse_qs(urlsplit(value.get_secret_value()).query).get("key", [""])[0]:
        raise ValueError(
            "must be the robot's webhook URL with its key "
            "(https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...), as the robot's details show it"
        )
    return value


def _check_userids(value: tuple[str, ...]) -> tuple[str, ...]:
    for i, userid in enumerate(value):
        if not _USERID.match(userid):
            raise ValueError(
                f"item {i + 1}: {userid!r} is not a WeCom UserID (letters, digits and _-@. starting with a letter "
                "or digit; a phone number or @all cannot be mentioned in a markdown message)"
            )
    return value


class WeComNotifierConfig(NotifierBase):
    """A `[[notifiers]]` entry of kind "wecom": a group robot's webhook URL (its key is a secret)."""

    kind: Literal["wecom"]
    url: Annotated[SecretHttpUrl, pydantic.AfterValidator(_check_url)]
    # Members to @mention (by UserID, as the WeCom admin console shows it) for events of severity danger.
    mention_userids: Annotated[tuple[str, ...], pydantic.AfterValidator(_check_userids)] = ()


def _head(severity: Severity, symbol: str, headline: str, mention_userids: Sequence[str]) -> list[str]:
    colour = COLOURS[severity]
    head = [f'### <font color="{colour}">{symbol} {fit(headline, _MAX_HEADLINE, join=" ")}</font>']
    if severity is Severity.DANGER and mention_userids:
        head.append(" ".join(f"<@{userid}>" for userid in mention_userids))
    return head


def render(msg: Message, *, mention_userids: Sequence[str] = ()) -> dict[str, Any]:
    """The WeCom markdown message of a message; mentions only for events of severity danger."""
    head = _head(msg.severity, message_symbol(msg), msg.headline, mention_userids)
    if msg.facts:
        head.append("\n".join(f"> **{escape(f.label)}**: {fit(f.value, _MAX_FACT, join=' ')}" for f in msg.facts))
    tail = [f"[{escape(msg.link_text)}]({link_target(msg.link)})"] if msg.link else []
    tail.append(f'<font color="comment">{fit(msg.footer, _MAX_FACT, join=" ")}</font>')
    content = assemble(
        head,
        msg.details,
        tail,
        limit=MAX_BYTES,
        detail=lambda label, value: f"**{label}**\n{value}" if label else value,  # (a template body: none)
        value_join="\n",
    )
    return {"msgtype": "markdown", "markdown": {"content": content}}


def render_digest(digest: Digest, *, mention_userids: Sequence[str] = ()) -> dict[str, Any]:
    """One WeCom markdown message listing a digest's events, a line each, within WeCom's 4,096 bytes (the items that
    do not fit become "… and N more"); mentions when any item is of severity danger, as for one such event."""
    head = _head(digest.severity, digest_symbol(digest), digest.headline, mention_userids)
    footer = f'<font color="comment">{fit(digest.footer, _MAX_FACT, join=" ")}</font>'

    def content(kept: int) -> str:
        return "\n\n".join([*head, "\n".join(digest_lines(digest, kept, bullet="")), footer])

    kept = most_that_fit(len(digest.items), lambda k: size(content(k)) <= MAX_BYTES)
    return {"msgtype": "markdown", "markdown": {"content": content(kept)}}


def message(
    event: Event, *, language: str = DEFAULT_LANGUAGE, task_url: str = "", mention_userids: Sequence[str] = ()
) -> dict[str, Any]:
    """The WeCom payload for an event."""
    return render(build(event, language=language, task_url=task_url), mention_userids=mention_userids)


class WeComNotifier:
    """Posts each event to a WeCom group robot."""

    def __init__(
        self,
        name: str,
        url: str,
        http: httpx.AsyncClient,
        *,
        mention_userids: Sequence[str] = (),
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
        self._mention_userids = tuple(mention_userids)
        self._message = messages or (lambda event: build(event, language=language, task_url=task_url))
        self.wants = EventFilter(events if events is not None else FOR_PEOPLE)
        # The URL's key is a credential: messages name the notifier only.
        self._shown = f"{name} (wecom)"
        self._hidden = [parse_qs(urlsplit(url).query).get("key", [""])[0]]

    @classmethod
    def from_config(cls, config: WeComNotifierConfig, context: Context) -> WeComNotifier:
        """Build from a `[[notifiers]]` entry."""
        return cls(
            config.name,
            config.url.get_secret_value(),
            context.http,
            mention_userids=config.mention_userids,
            events=config.events,
            language=context.language_of(config),
            messages=context.messages_for(config),
            digest=digest_of(config),
        )

    async def send(self, event: Event) -> None:
        """Post the message or raise DeliveryError: sending too fast is temporary, a refused one permanent."""
        await self._post(render(self._message(event), mention_userids=self._mention_userids))

    async def send_digest(self, events: Sequence[Event]) -> None:
        """Post one message listing the events, or raise DeliveryError as `send` does."""
        digest = build_digest(events, language=self._language, messages=self._message)
        await self._post(render_digest(digest, mention_userids=self._mention_userids))

    async def _post(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"}
        response = await request(self._http, self._url, body, headers, shown_url=self._shown)
        code, errmsg = errcode(response, self._shown, "WeCom")
        if code == 0:
            return
        said = f"{code} {shown_errmsg(errmsg, self._hidden)!r}"
        if code == 45009:
            raise DeliveryError(
                f"{self._shown}: WeCom says the robot sends too fast ({said}): about 20 messages a minute",
                retry_after=TOO_FAST_PAUSE,
            )
        if code == -1:
            raise DeliveryError(f"{self._shown}: WeCom is busy ({said})")
        if code == 93000:
            raise DeliveryError(
                f"{self._shown}: WeCom does not know the robot ({said}): check the key in url (a removed robot's "
                "key stops working)",
                permanent=True,
            )
        raise DeliveryError(f"{self._shown}: WeCom refused the message ({said})", permanent=True)


KIND = Kind(config=WeComNotifierConfig, default_events=FOR_PEOPLE, build=WeComNotifier.from_config, secrets=("url",))
