"""Webhook channel: a CloudEvents 1.0 event in structured mode, signed per the Standard Webhooks spec."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
import pydantic
from pydantic import SecretStr

from ..fields import HttpUrl, NotifierBase, check_whsec
from ..model import Event
from .base import EVERYTHING, Context, EventFilter, Kind, digest_of
from .http import post
from .message import Message, build, digest_id


class WebhookNotifierConfig(NotifierBase):
    """A `[[notifiers]]` entry of kind "webhook": CloudEvents over Standard Webhooks."""

    kind: Literal["webhook"]
    url: HttpUrl
    secret: Annotated[SecretStr | None, pydantic.AfterValidator(check_whsec)] = None


CLOUDEVENTS_SOURCE = "voicefox-watcher"
CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"  # CloudEvents' JSON batch format: an array of events


def cloudevent(
    event: Event, *, language: str = "en", task_url: str = "", message: Message | None = None
) -> dict[str, Any]:
    """The event as a CloudEvents 1.0 structured-mode JSON object; the `data` stays the machine's, and the extension
    attributes `headline`, `severity` and `language` carry what people would read (for a receiver that forwards it)."""
    message = message or build(event, language=language, task_url=task_url)
    return {
        "specversion": "1.0",
        "id": event.id,
        "source": CLOUDEVENTS_SOURCE,
        "type": event.type,
        "subject": event.subject,
        "time": event.time.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "headline": message.headline,
        "severity": message.severity.value,
        "language": message.language,
        "data": event.data,
    }


def body_of(document: Any) -> bytes:
    """The JSON a webhook posts, as UTF-8. Event data is the machine's and is sent as it is: a lone surrogate in it
    (which no UTF-8 can hold) is written as its JSON escape (`\\ud800`), so that no value can make an alert
    unsendable (retried until dead-lettered)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks `webhook-signature` value: v1,<base64 HMAC-SHA256 of "id.timestamp.body">."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


class WebhookNotifier:
    """POSTs each event to a URL; `webhook-id` is the event id, the same on every retry. With `digest`, several
    events due at once go as one CloudEvents batch whose `webhook-id` is the digest id (as stable)."""

    def __init__(
        self,
        name: str,
        url: str,
        http: httpx.AsyncClient,
        *,
        secret: str | None = None,
        events: list[str] | None = None,
        clock: Callable[[], float] = time.time,
        language: str = "en",
        task_url: str = "",
        messages: Callable[[Event], Message] | None = None,
        digest: bool = False,
    ) -> None:
        self.name = name
        self.digest = digest
        self._url = url
        self._http = http
        self._secret = secret
        self._clock = clock
        self._message = messages or (lambda event: build(event, language=language, task_url=task_url))
        self.wants = EventFilter(events if events is not None else EVERYTHING)
        parts = urlsplit(url)
        # Messages name the host only: a path, a query string or user:password@ may carry a credential.
        port = f":{parts.port}" if parts.port else ""
        self._shown = f"{name} ({parts.scheme}://{parts.hostname}{port})"

    @classmethod
    def from_config(cls, config: WebhookNotifierConfig, context: Context) -> WebhookNotifier:
        """Build from a `[[notifiers]]` entry."""
        secret = config.secret.get_secret_value() if config.secret else None
        return cls(
            config.name,
            config.url,
            context.http,
            secret=secret,
            events=config.events,
            messages=context.messages_for(config),
            # A machine's receiver expects one event per request unless it opted in to batches.
            digest=digest_of(config, default=False),
        )

    async def send(self, event: Event) -> None:
        """POST the event or raise DeliveryError."""
        await self._post(cloudevent(event, message=self._message(event)), event.id, CONTENT_TYPE)

    async def send_digest(self, events: Sequence[Event]) -> None:
        """POST the events as one CloudEvents batch (each as `send` posts it), signed as one, or raise DeliveryError."""
        batch = [cloudevent(event, message=self._message(event)) for event in events]
        await self._post(batch, digest_id(event.id for event in events), BATCH_CONTENT_TYPE)

    async def _post(self, document: Any, msg_id: str, content_type: str) -> None:
        body = body_of(document)
        timestamp = int(self._clock())
        headers = {
            "Content-Type": content_type,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
        }
        if self._secret:
            headers["webhook-signature"] = sign(self._secret, msg_id, timestamp, body)
        await post(self._http, self._url, body, headers, shown_url=self._shown)


KIND = Kind(config=WebhookNotifierConfig, default_events=EVERYTHING, build=WebhookNotifier.from_config)
