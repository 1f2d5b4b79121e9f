"""Webhook channel: a CloudEvents 1.0 event in structured mode, signed per the Standard Webhooks spec."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..config import WebhookNotifierConfig
from ..model import Event
from . import DEFAULT_EVENTS, EventFilter
from .http import post

CLOUDEVENTS_SOURCE = "voicefox-watcher"
CONTENT_TYPE = "application/cloudevents+json"


def cloudevent(event: Event) -> dict[str, Any]:
    """The event as a CloudEvents 1.0 structured-mode JSON object."""
    return {
        "specversion": "1.0",
        "id": event.id,
        "source": CLOUDEVENTS_SOURCE,
        "type": event.type,
        "subject": event.subject,
        "time": event.time.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": event.data,
    }


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks `webhook-signature` value: v1,<base64 HMAC-SHA256 of "id.timestamp.body">."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


class WebhookNotifier:
    """POSTs each event to a URL; `webhook-id` is the event id, the same on every retry."""

    def __init__(
        self,
        name: str,
        url: str,
        http: httpx.AsyncClient,
        *,
        secret: str | None = None,
        events: list[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._url = url
        self._http = http
        self._secret = secret
        self._clock = clock
        self.wants = EventFilter(events if events is not None else DEFAULT_EVENTS["webhook"])
        parts = urlsplit(url)
        # Messages name the host only: a path, a query string or user:password@ may carry a credential.
        port = f":{parts.port}" if parts.port else ""
        self._shown = f"{name} ({parts.scheme}://{parts.hostname}{port})"

    @classmethod
    def from_config(cls, config: WebhookNotifierConfig, http: httpx.AsyncClient) -> WebhookNotifier:
        """Build from a `[[notifiers]]` entry."""
        secret = config.secret.get_secret_value() if config.secret else None
        return cls(config.name, config.url, http, secret=secret, events=config.events)

    async def send(self, event: Event) -> None:
        """POST the event or raise DeliveryError."""
        body = json.dumps(cloudevent(event), separators=(",", ":"), ensure_ascii=False).encode()
        timestamp = int(self._clock())
        headers = {
            "Content-Type": CONTENT_TYPE,
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
        }
        if self._secret:
            headers["webhook-signature"] = sign(self._secret, event.id, timestamp, body)
        await post(self._http, self._url, body, headers, shown_url=self._shown)
