"""POST to a receiver over HTTP and translate every outcome into success or a DeliveryError."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from ..client import describe_transport_error, parse_retry_after
from ..errors import DeliveryError

# 408 and 429 mean "later", like 5xx; every other 4xx means this request will never be accepted as it is.
_RETRYABLE_4XX = frozenset({408, 425, 429})


async def post(http: httpx.AsyncClient, url: str, content: bytes, headers: dict[str, str], *, shown_url: str) -> None:
    """POST `content`; return on 2xx, raise DeliveryError otherwise. `shown_url` is what messages may name."""
    await request(http, url, content, headers, shown_url=shown_url)


def hide_url_parts(text: str, url: str) -> str:
    """`text` with every part of `url` that may be a credential replaced by "***": the query's values, userinfo, and
    the longer path segments (webhook URLs carry their token in either)."""
    parts = urlsplit(url)
    candidates = [value for values in parse_qs(parts.query).values() for value in values]
    candidates += [parts.username or "", parts.password or ""]
    candidates += [unquote(segment) for segment in parts.path.split("/") if len(segment) >= 12]
    for secret in sorted({c for c in candidates if len(c) >= 6}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


async def request(
    http: httpx.AsyncClient, url: str, content: bytes, headers: dict[str, str], *, shown_url: str
) -> httpx.Response:
    """POST `content` and return the 2xx response (for a platform that answers 200 with an error code in its body
    to be read), or raise DeliveryError for anything else. `shown_url` is what messages may name."""
    try:
        # Never follow a redirect, whatever client we were given: the signed body goes only where configured.
        response = await http.post(url, content=content, headers=headers, follow_redirects=False)
    except httpx.TimeoutException:
        raise DeliveryError(f"{shown_url}: no answer in time") from None
    except (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL, OSError, ValueError, OverflowError) as exc:
        # httpx messages may carry the URL (a Slack URL is a secret): say what kind of failure it was, no more.
        raise DeliveryError(f"{shown_url}: cannot connect ({describe_transport_error(exc)})") from None
    status = response.status_code
    if 200 <= status < 300:
        return response
    reason = response.text[:200].strip().replace("\n", " ") if response.content else ""
    reason = hide_url_parts(reason, url)  # a receiver (or a proxy) may echo the URL, whose token is a credential
    message = f"{shown_url}: receiver answered {status}" + (f" {reason!r}" if reason else "")
    if 300 <= status < 400:
        raise DeliveryError(message + " (a redirect: configure the final URL)", permanent=True)
    if status in _RETRYABLE_4XX or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
        raise DeliveryError(message, retry_after=retry_after)
    raise DeliveryError(message, permanent=True)
