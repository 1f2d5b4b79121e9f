"""The VoiceFox API client: the only module that knows httpx exceptions exist.

httpx in, `TaskSnapshot` or a `WatcherError` out; transient failures are retried per `retry.API_RETRY`.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

import anyio
import httpx
import tenacity

from . import __version__
from .errors import (
    ApiError,
    AuthenticationError,
    ConfigError,
    RateLimited,
    TaskNotFound,
    TransientApiError,
)
from .model import TaskSnapshot, parse_task_body
from .retry import API_RETRY, ApiRetry

MAX_BODY_BYTES = 1024 * 1024  # a task body is a few KiB; more is a broken or hostile server


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit alone takes "²"
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def describe_transport_error(exc: BaseException) -> str:
    """A short, URL-free account of a connection failure: TLS problems named as such, others by their class."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "TLS certificate not trusted"
    if "SSL" in text or "TLS" in text:
        return "TLS handshake failed"
    return exc.__class__.__name__


def resolve_transport(kind: str) -> str:
    """ "auto" -> "aiohttp" when httpx-aiohttp is installed, else "httpx"; others as they are."""
    if kind != "auto":
        return kind
    try:
        import httpx_aiohttp  # noqa: F401
    except ImportError:
        return "httpx"
    return "aiohttp"


def aiohttp_transport(*, verify: bool, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """httpx's API on aiohttp's connection handling: the same requests for a fraction of the CPU (see bench/)."""
    try:
        from httpx_aiohttp import AiohttpTransport
    except ImportError:
        raise ConfigError(
            ["api.transport: 'aiohttp' needs the extra: pip install 'voicefox-watcher[fast]'"], "config"
        ) from None
    transport: httpx.AsyncBaseTransport = AiohttpTransport(verify=verify, limits=limits)
    return transport


class VoiceFoxClient:
    """Asks VoiceFox for task details; seams: `transport`, `sleep`, `wall_clock`."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: ApiRetry = API_RETRY,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        wall_clock: Callable[[], float] = time.time,
        verify: bool = True,
        max_connections: int = 100,
        observe: Callable[[str, float], None] | None = None,
        transport_kind: str = "httpx",
    ) -> None:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        if transport is None and transport_kind == "aiohttp":
            transport = aiohttp_transport(verify=verify, limits=limits)
        self._http = httpx.AsyncClient(
            verify=verify,
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": f"voicefox-watcher/{__version__}",
            },
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            # As many connections as polls may be in flight ([watch] concurrency): no poll waits on the pool.
            limits=limits,
        )
        self._timeout = timeout
        self._retry = retry
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._observe = observe or (lambda code, seconds: None)

    async def __aenter__(self) -> VoiceFoxClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def get_task(self, task_id: int) -> TaskSnapshot:
        """Fetch one task, retrying transient failures; raise an ApiError subclass when it cannot."""
        started = time.monotonic()
        try:
            return await self._get_task_once(task_id)
        except RateLimited:
            raise  # not retried here: the daemon pauses every poll for Retry-After instead
        except TransientApiError as exc:
            first_failure: TransientApiError | None = exc
        # Nearly every poll succeeds at once: the retry machine is built only for the few that do not. The first
        # failure is handed to it as its first attempt, and the time it took counts against the budget, so the policy
        # in retry.py holds as if tenacity had run it.
        policy = self._retry.tenacity_kwargs(spent=time.monotonic() - started)
        retrying = tenacity.AsyncRetrying(sleep=self._sleep, **policy)  # type: ignore[arg-type]
        async for attempt in retrying:
            with attempt:
                if first_failure is not None:
                    failure, first_failure = first_failure, None
                    raise failure
                return await self._get_task_once(task_id)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _get_task_once(self, task_id: int) -> TaskSnapshot:
        started = time.perf_counter()
        try:
            # httpx's timeout applies per read: a server dripping one byte at a time would never trip it. This is
            # the deadline for the whole request, body included.
            with anyio.fail_after(self._timeout):
                async with self._http.stream("GET", f"/openapi/tasks/{task_id}") as response:
                    status = response.status_code
                    if status == 200:
                        body = await self._read_capped(response, task_id)
                    else:
                        await response.aclose()
        except (httpx.TimeoutException, TimeoutError) as exc:
            origin = exc.__cause__
            if isinstance(exc, httpx.ConnectTimeout) and origin is not None and not isinstance(origin, TimeoutError):
                # httpx-aiohttp reports a refused connection as ConnectTimeout: say what really happened.
                self._observe("error", time.perf_counter() - started)
                raise TransientApiError(
                    f"task {task_id}: cannot reach the API ({describe_transport_error(origin)})"
                ) from None
            self._observe("timeout", time.perf_counter() - started)
            raise TransientApiError(f"task {task_id}: no answer within {self._timeout:g}s") from None
        except (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL, OSError, ValueError, OverflowError) as exc:
            # The message of a transport error can name the URL; say what kind of failure it was, no more.
            self._observe("error", time.perf_counter() - started)
            raise TransientApiError(f"task {task_id}: cannot reach the API ({describe_transport_error(exc)})") from None

        self._observe(str(status), time.perf_counter() - started)
        if status == 200:
            return parse_task_body(body, task_id)
        if status in (401, 403):
            cause = (
                "the token is missing or invalid"
                if status == 401
                else "the token may not read this task (another workspace?)"
            )
            raise AuthenticationError(f"task {task_id}: API answered {status}: {cause}", status)
        if status == 404:
            raise TaskNotFound(f"task {task_id}: API answered 404 (no such task)")
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self._wall_clock())
            raise RateLimited(f"task {task_id}: API answered 429 (rate limited)", retry_after)
        if status >= 500 or status == 408:
            raise TransientApiError(f"task {task_id}: API answered {status}")
        raise ApiError(f"task {task_id}: API answered unexpected status {status}")

    @staticmethod
    async def _read_capped(response: httpx.Response, task_id: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise TransientApiError(f"task {task_id}: response body exceeds {MAX_BODY_BYTES // 1024} KiB")
            chunks.append(chunk)
        return b"".join(chunks)
