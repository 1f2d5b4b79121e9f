"""The VoiceFox API client: the only module that knows httpx exceptions exist.

httpx in, a `TaskSnapshot` or a `CallLog` or a `WatcherError` out; transient failures are retried per
`retry.API_RETRY`, the same for a task and for each page of the call log.
"""

from __future__ import annotations

import email.utils
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, tzinfo
from types import TracebackType
from typing import TypeVar

import anyio
import httpx
import tenacity

from . import __version__
from .calllog import CallLog, CallLogPage, CallRecord, api_time, parse_calllog_page, task_ids_param
from .errors import (
    ApiError,
    AuthenticationError,
    ConfigError,
    PermissionDenied,
    RateLimited,
    TaskNotFound,
    TransientApiError,
)
from .model import TaskSnapshot, parse_task_body
from .retry import API_RETRY, ApiRetry

MAX_BODY_BYTES = 1024 * 1024  # a task body is a few KiB, a call log page of 100 some 50 KiB; more is a broken server
CALLLOG_PAGE_SIZE = 100  # the documented maximum: the fewest requests for a look
# 200 pages are 20,000 calls: ten busy tasks' calls over more than an hour, far beyond one look of a few minutes.
CALLLOG_MAX_PAGES = 200
T = TypeVar("T")


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
        return await self._retrying(lambda: self._get_task_once(task_id))

    async def call_log(
        self,
        task_ids: Sequence[int],
        since: datetime,
        until: datetime,
        *,
        tz: tzinfo,
        page_size: int = CALLLOG_PAGE_SIZE,
        max_pages: int = CALLLOG_MAX_PAGES,
        pace: Callable[[], Awaitable[None]] | None = None,
    ) -> CallLog:
        """The calls of up to 10 tasks that started between `since` and `until`, every page read; raise an ApiError
        subclass when a page cannot be had (`PermissionDenied` for a token without the call log).

        `since` and `until` are aware; the API reads and writes naive local times of the workspace, so `tz` is the
        zone those are in: the campaigns' zone (`ZoneResolver.for_task(...).tz`). Where that zone is unknown, the
        times read back could be off by hours: the caller should then not judge liveness from them. `pace` is
        awaited before each page's request: the daemon's shared gate and rate limit, so the call log and the task
        polls take turns within one budget. Each page is retried as `get_task` is; a 429 is raised at once.
        """
        ids = task_ids_param(task_ids)
        wanted = [int(i) for i in ids.split(",")]
        if not 1 <= page_size <= CALLLOG_PAGE_SIZE:
            raise ValueError(f"page_size is 1 to {CALLLOG_PAGE_SIZE}")
        params = {"taskId": ids, "startTime": api_time(since, tz), "endTime": api_time(until, tz)}
        label = f"call log of tasks {ids}"
        records: list[CallRecord] = []
        read = skipped = pages = 0
        total: int | None = None
        while True:
            if pages >= max_pages:
                # A broken server that pages forever, or a range too busy for one look: what was read is kept,
                # and `complete` says the rest was not.
                return CallLog(tuple(records), total, pages, skipped, complete=False)
            if pace is not None:
                await pace()
            query = {**params, "pageIndex": str(pages + 1), "pageSize": str(page_size)}
            page = await self._retrying(functools.partial(self._call_log_page_once, query, label, tz, wanted))
            pages += 1
            records.extend(page.records)
            read += page.items
            skipped += page.skipped
            total = page.total if page.total is not None else total
            size = page.page_size if page.page_size is not None and page.page_size > 0 else page_size
            if page.items < size or (total is not None and read >= total):
                return CallLog(tuple(records), total, pages, skipped)

    async def _retrying(self, once: Callable[[], Awaitable[T]]) -> T:
        """`once()`, and again per the retry policy while it fails transiently; a 429 is raised at once."""
        started = time.monotonic()
        try:
            return await once()
        except RateLimited:
            raise  # not retried here: the daemon pauses every poll for Retry-After instead
        except TransientApiError as exc:
            first_failure: TransientApiError | None = exc
        # Nearly every request succeeds at once: the retry machine is built only for the few that do not. The first
        # failure is handed to it as its first attempt, and the time it took counts against the budget, so the policy
        # in retry.py holds as if tenacity had run it.
        policy = self._retry.tenacity_kwargs(spent=time.monotonic() - started)
        retrying = tenacity.AsyncRetrying(sleep=self._sleep, **policy)  # type: ignore[arg-type]
        async for attempt in retrying:
            with attempt:
                if first_failure is not None:
                    failure, first_failure = first_failure, None
                    raise failure
                return await once()
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _get_task_once(self, task_id: int) -> TaskSnapshot:
        label = f"task {task_id}"
        status, body, headers = await self._request(f"/openapi/tasks/{task_id}", None, label)
        if status == 200:
            return parse_task_body(body, task_id)
        if status in (401, 403):
            cause = (
                "the token is missing or invalid"
                if status == 401
                else "the token may not read this task (another workspace?)"
            )
            raise AuthenticationError(f"{label}: API answered {status}: {cause}", status)
        if status == 404:
            raise TaskNotFound(f"{label}: API answered 404 (no such task)")
        raise self._failure(status, headers, label)

    async def _call_log_page_once(
        self, query: dict[str, str], label: str, tz: tzinfo, task_ids: Sequence[int]
    ) -> CallLogPage:
        status, body, headers = await self._request("/openapi/calllog", query, label)
        if status == 200:
            return parse_calllog_page(body, label, tz, task_ids)
        if status == 401:
            raise AuthenticationError(f"{label}: API answered 401: the token is missing or invalid", status)
        if status == 403:
            # The token reads tasks (or the task polls would say otherwise) but not calls: the caller switches
            # the call log off rather than pausing anything.
            raise PermissionDenied(f"{label}: API answered 403: the token may not read the call log")
        if status == 404:
            raise ApiError(f"{label}: API answered 404 (no call log at this address)")
        raise self._failure(status, headers, label)

    def _failure(self, status: int, headers: httpx.Headers, label: str) -> ApiError:
        """The error for a status every endpoint treats alike: 429, 408 and 5xx, and the unexpected."""
        if status == 429:
            retry_after = parse_retry_after(headers.get("Retry-After"), self._wall_clock())
            return RateLimited(f"{label}: API answered 429 (rate limited)", retry_after)
        if status >= 500 or status == 408:
            return TransientApiError(f"{label}: API answered {status}")
        return ApiError(f"{label}: API answered unexpected status {status}")

    async def _request(self, path: str, params: dict[str, str] | None, label: str) -> tuple[int, bytes, httpx.Headers]:
        """One GET: its status, body (read only for a 200, capped) and headers; transport failures translated."""
        started = time.perf_counter()
        body = b""
        try:
            # httpx's timeout applies per read: a server dripping one byte at a time would never trip it. This is
            # the deadline for the whole request, body included.
            with anyio.fail_after(self._timeout):
                async with self._http.stream("GET", path, params=params) as response:
                    status = response.status_code
                    if status == 200:
                        body = await self._read_capped(response, label)
                    else:
                        await response.aclose()
        except (httpx.TimeoutException, TimeoutError) as exc:
            origin = exc.__cause__
            if isinstance(exc, httpx.ConnectTimeout) and origin is not None and not isinstance(origin, TimeoutError):
                # httpx-aiohttp reports a refused connection as ConnectTimeout: say what really happened.
                self._observe("error", time.perf_counter() - started)
                raise TransientApiError(f"{label}: cannot reach the API ({describe_transport_error(origin)})") from None
            self._observe("timeout", time.perf_counter() - started)
            raise TransientApiError(f"{label}: no answer within {self._timeout:g}s") from None
        except (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL, OSError, ValueError, OverflowError) as exc:
            # The message of a transport error can name the URL; say what kind of failure it was, no more.
            self._observe("error", time.perf_counter() - started)
            raise TransientApiError(f"{label}: cannot reach the API ({describe_transport_error(exc)})") from None
        self._observe(str(status), time.perf_counter() - started)
        return status, body, response.headers

    @staticmethod
    async def _read_capped(response: httpx.Response, label: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise TransientApiError(f"{label}: response body exceeds {MAX_BODY_BYTES // 1024} KiB")
            chunks.append(chunk)
        return b"".join(chunks)
