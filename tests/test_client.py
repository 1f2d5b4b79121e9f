"""VoiceFoxClient: httpx in, a TaskSnapshot or one WatcherError out; units on MockTransport, then the simulator."""

from __future__ import annotations

import email.utils
import json
import socket
import time
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from watcher import __version__
from watcher.client import MAX_BODY_BYTES, VoiceFoxClient
from watcher.errors import ApiError, AuthenticationError, RateLimited, TaskNotFound, TransientApiError
from watcher.model import TaskSnapshot
from watcher.retry import API_RETRY, ApiRetry
from watcher.simulator import Simulator, task_body

pytestmark = pytest.mark.anyio

TOKEN = "vf-live-TOKEN-9f8e7d6c5b4a3210"  # distinctive, so any leak is unmistakable
BASE_URL = "https://openapi.voicefox.test"
TASK = 4242
# Jitter off, so the recorded backoff waits are exact: 0.5 s, 1 s, 2 s ... capped at `maximum`.
NO_JITTER = ApiRetry(attempts=3, initial=0.5, maximum=5.0, jitter=0.0)

Reply = Callable[[httpx.Request], httpx.Response]


class Sleeps:
    """The `sleep` seam: records each backoff wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def no_sleep(seconds: float) -> None:
    """A `sleep` seam that does not wait."""


class ScriptedApi:
    """A MockTransport handler: records every request and answers with the scripted replies, the last one repeating."""

    def __init__(self, *replies: Reply) -> None:
        self.requests: list[httpx.Request] = []
        self._replies = list(replies)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]
        return reply(request)


def answer(
    status: int, doc: Any = None, *, content: bytes | None = None, headers: dict[str, str] | None = None
) -> Reply:
    """A reply with a JSON document (or raw `content`)."""

    def reply(request: httpx.Request) -> httpx.Response:
        if content is not None:
            return httpx.Response(status, content=content, headers=headers)
        return httpx.Response(status, json=doc, headers=headers)

    return reply


def ok(**fields: Any) -> Reply:
    """A 200 with a realistic task body (secrets included, as the real API sends them)."""
    return answer(200, task_body(TASK, "Spring renewal reminders", **fields))


def fail(exc_type: type[httpx.RequestError]) -> Reply:
    """The transport raises `exc_type` with a message naming the URL and the token, as a careless library might."""

    def reply(request: httpx.Request) -> httpx.Response:
        raise exc_type(f"failed {request.url} with {request.headers['Authorization']}", request=request)

    return reply


class _DropsMidBody(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"id": 4242, "status": "run'
        raise httpx.ReadError("connection reset mid-body")


def drops_mid_body(request: httpx.Request) -> httpx.Response:
    """A 200 whose body stream breaks halfway."""
    return httpx.Response(200, stream=_DropsMidBody())


def make_client(
    api: ScriptedApi,
    *,
    sleep: Callable[[float], Any] | None = None,
    retry: ApiRetry = NO_JITTER,
    wall_clock: Callable[[], float] = lambda: 1_800_000_000.0,
) -> VoiceFoxClient:
    return VoiceFoxClient(
        BASE_URL,
        TOKEN,
        transport=httpx.MockTransport(api),
        retry=retry,
        sleep=sleep or no_sleep,
        wall_clock=wall_clock,
    )


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rendered(exc: BaseException) -> str:
    """Everything a log line or traceback would show of an exception."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


# -- unit: MockTransport -----------------------------------------------------------------------------------------


async def test_request_carries_bearer_token_and_user_agent() -> None:
    api = ScriptedApi(ok())
    async with make_client(api) as client:
        await client.get_task(TASK)
    (request,) = api.requests
    assert request.method == "GET"
    assert request.url == f"{BASE_URL}/openapi/tasks/{TASK}"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["User-Agent"] == f"voicefox-watcher/{__version__}"


async def test_200_body_is_parsed_into_a_snapshot() -> None:
    api = ScriptedApi(ok(status="running", progress=40, total=1200, collectionRate=33, updatedAt="2026-11-23 10:00:00"))
    async with make_client(api) as client:
        snapshot = await client.get_task(TASK)
    assert snapshot == TaskSnapshot(
        id=TASK,
        status="running",
        name="Spring renewal reminders",
        progress=40,
        total=1200,
        collection_rate=33,
        updated_at="2026-11-23 10:00:00",
        created_at="2026-11-23 09:00:00",
        start_date="2026-11-01",
        windows=(("00:00", "00:00"),),
    )


async def test_enveloped_body_is_accepted() -> None:
    body = task_body(TASK, "Wrapped", status="done", progress=100)
    api = ScriptedApi(answer(200, {"code": 0, "message": "ok", "data": body}))
    async with make_client(api) as client:
        snapshot = await client.get_task(TASK)
    assert (snapshot.name, snapshot.status, snapshot.progress) == ("Wrapped", "done", 100)


@pytest.mark.parametrize("status", [401, 403])
async def test_401_and_403_raise_authentication_error_with_the_status_and_no_retry(status: int) -> None:
    api = ScriptedApi(answer(status, {"code": status, "message": "invalid token"}))
    sleeps = Sleeps()
    async with make_client(api, sleep=sleeps) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.get_task(TASK)
    assert caught.value.status_code == status
    assert not isinstance(caught.value, TransientApiError)
    assert len(api.requests) == 1
    assert sleeps.waits == []


async def test_404_raises_task_not_found_without_retry() -> None:
    api = ScriptedApi(answer(404, {"code": 404, "message": "task not found"}))
    async with make_client(api) as client:
        with pytest.raises(TaskNotFound):
            await client.get_task(TASK)
    assert len(api.requests) == 1


async def test_429_retry_after_in_seconds_is_read() -> None:
    api = ScriptedApi(answer(429, {}, headers={"Retry-After": "17"}))
    async with make_client(api) as client:
        with pytest.raises(RateLimited) as caught:
            await client.get_task(TASK)
    assert caught.value.retry_after == 17.0


@pytest.mark.parametrize(("offset", "expected"), [(90, 90.0), (-60, 0.0)])
async def test_429_retry_after_as_http_date_is_seconds_from_the_wall_clock(offset: int, expected: float) -> None:
    """A future HTTP date is the gap to the injected wall clock; a past one means "now"."""
    now = 1_800_000_000.0
    api = ScriptedApi(answer(429, {}, headers={"Retry-After": email.utils.formatdate(now + offset, usegmt=True)}))
    async with make_client(api, wall_clock=lambda: now) as client:
        with pytest.raises(RateLimited) as caught:
            await client.get_task(TASK)
    assert caught.value.retry_after == expected


@pytest.mark.parametrize("header", [None, "", "soon", "-5", "1.5", "Wed, 99 Foo 2026 25:61:00 GMT"])
async def test_429_without_a_usable_retry_after_has_none(header: str | None) -> None:
    api = ScriptedApi(answer(429, {}, headers={"Retry-After": header} if header is not None else None))
    async with make_client(api) as client:
        with pytest.raises(RateLimited) as caught:
            await client.get_task(TASK)
    assert caught.value.retry_after is None


async def test_429_is_not_retried_inside_the_client() -> None:
    """The daemon pauses every poller on a 429; the client gives it back at once."""
    api = ScriptedApi(answer(429, {}, headers={"Retry-After": "1"}), ok())
    sleeps = Sleeps()
    async with make_client(api, sleep=sleeps) as client:
        with pytest.raises(RateLimited):
            await client.get_task(TASK)
    assert len(api.requests) == 1
    assert sleeps.waits == []


TRANSIENT_REPLIES: dict[str, Reply] = {
    "500": answer(500, {"code": 500}),
    "502": answer(502, content=b"<html>bad gateway</html>"),
    "503": answer(503, content=b""),
    "504": answer(504, content=b""),
    "408": answer(408, content=b""),
    "read-timeout": fail(httpx.ReadTimeout),
    "connect-timeout": fail(httpx.ConnectTimeout),
    "connect-error": fail(httpx.ConnectError),
    "dropped-mid-body": drops_mid_body,
    "malformed-json": answer(200, content=b'{"id": 4242, "status": "runn'),
    "empty-body": answer(200, content=b""),
    "json-array": answer(200, [1, 2, 3]),
    "no-status": answer(200, {"id": TASK, "name": "x"}),
    "other-task": answer(200, task_body(TASK + 1, "Someone else's", status="running")),
    "envelope-error-code": answer(200, {"code": 500, "message": "internal error", "data": None}),
}


@pytest.mark.parametrize("reply", TRANSIENT_REPLIES.values(), ids=TRANSIENT_REPLIES.keys())
async def test_transient_failure_is_retried_exactly_attempts_times_with_backoff(reply: Reply) -> None:
    api = ScriptedApi(reply)
    sleeps = Sleeps()
    async with make_client(api, sleep=sleeps) as client:
        with pytest.raises(TransientApiError) as caught:
            await client.get_task(TASK)
    assert not isinstance(caught.value, RateLimited)
    assert len(api.requests) == 3
    assert sleeps.waits == [0.5, 1.0]


async def test_backoff_doubles_up_to_the_policy_maximum() -> None:
    api = ScriptedApi(answer(500, {}))
    sleeps = Sleeps()
    policy = ApiRetry(attempts=6, initial=0.5, maximum=3.0, jitter=0.0)
    async with make_client(api, sleep=sleeps, retry=policy) as client:
        with pytest.raises(TransientApiError):
            await client.get_task(TASK)
    assert len(api.requests) == 6
    assert sleeps.waits == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_default_policy_makes_three_attempts_with_jittered_waits_in_bounds() -> None:
    api = ScriptedApi(answer(503, {}))
    sleeps = Sleeps()
    async with make_client(api, sleep=sleeps, retry=API_RETRY) as client:
        with pytest.raises(TransientApiError):
            await client.get_task(TASK)
    assert len(api.requests) == API_RETRY.attempts == 3
    first, second = sleeps.waits
    assert 0.5 <= first <= 0.5 + API_RETRY.jitter
    assert 1.0 <= second <= 1.0 + API_RETRY.jitter


async def test_the_first_attempt_counts_against_the_retry_budget() -> None:
    """Tenacity is only built after a first failure; that attempt's time is still spent from the budget."""

    requests = 0

    def slow_503(request: httpx.Request) -> httpx.Response:
        nonlocal requests
        requests += 1
        time.sleep(0.05)  # a slow server (not synchronisation): longer than the whole budget below
        return httpx.Response(503)

    policy = ApiRetry(attempts=3, initial=0.5, maximum=5.0, jitter=0.0, budget=0.04)
    async with VoiceFoxClient(
        BASE_URL, TOKEN, transport=httpx.MockTransport(slow_503), retry=policy, sleep=no_sleep
    ) as client:
        with pytest.raises(TransientApiError):
            await client.get_task(TASK)
    assert requests == 1  # no second attempt once the budget is spent


async def test_success_after_two_transient_failures_returns_the_snapshot() -> None:
    api = ScriptedApi(answer(502, {}), fail(httpx.ReadTimeout), ok(status="running", progress=70))
    sleeps = Sleeps()
    async with make_client(api, sleep=sleeps) as client:
        snapshot = await client.get_task(TASK)
    assert (snapshot.status, snapshot.progress) == ("running", 70)
    assert len(api.requests) == 3
    assert sleeps.waits == [0.5, 1.0]


async def test_body_over_1_mib_is_a_transient_error() -> None:
    padded = json.dumps({"id": TASK, "status": "running", "pad": "x" * MAX_BODY_BYTES}).encode()
    api = ScriptedApi(answer(200, content=padded))
    async with make_client(api) as client:
        with pytest.raises(TransientApiError, match="exceeds"):
            await client.get_task(TASK)


async def test_body_of_exactly_1_mib_is_accepted() -> None:
    head = json.dumps({"id": TASK, "status": "running", "pad": ""}).encode()
    body = head[:-2] + b"x" * (MAX_BODY_BYTES - len(head)) + head[-2:]
    assert len(body) == MAX_BODY_BYTES
    api = ScriptedApi(answer(200, content=body))
    async with make_client(api) as client:
        snapshot = await client.get_task(TASK)
    assert snapshot.status == "running"


async def test_unexpected_status_is_a_plain_api_error_not_retried() -> None:
    api = ScriptedApi(answer(418, {}))
    async with make_client(api) as client:
        with pytest.raises(ApiError) as caught:
            await client.get_task(TASK)
    assert not isinstance(caught.value, TransientApiError)
    assert len(api.requests) == 1


async def test_redirect_is_not_followed() -> None:
    """A redirect could carry the Bearer token elsewhere; it is an error, asked once."""
    api = ScriptedApi(answer(302, content=b"", headers={"Location": "https://elsewhere.test/steal"}))
    async with make_client(api) as client:
        with pytest.raises(ApiError):
            await client.get_task(TASK)
    assert [r.url.host for r in api.requests] == ["openapi.voicefox.test"]


def _raising(factory: Callable[[httpx.Request], Exception]) -> Reply:
    def reply(request: httpx.Request) -> httpx.Response:
        raise factory(request)

    return reply


def _request_error(cls: type[httpx.RequestError]) -> Callable[[httpx.Request], Exception]:
    # The message names the URL and the token, as a lower layer's message might.
    return lambda request: cls(f"{cls.__name__} at {request.url} {TOKEN}", request=request)


HTTPX_EXCEPTIONS: dict[str, Callable[[httpx.Request], Exception]] = {
    cls.__name__: _request_error(cls)
    for cls in (
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.ReadError,
        httpx.ReadTimeout,
        httpx.WriteError,
        httpx.WriteTimeout,
        httpx.PoolTimeout,
        httpx.CloseError,
        httpx.ProxyError,
        httpx.UnsupportedProtocol,
        httpx.RemoteProtocolError,
        httpx.LocalProtocolError,
        httpx.DecodingError,
        httpx.TooManyRedirects,
        httpx.TimeoutException,
        httpx.NetworkError,
        httpx.TransportError,
        httpx.RequestError,
    )
} | {
    "HTTPStatusError": lambda request: httpx.HTTPStatusError(
        f"500 at {request.url}", request=request, response=httpx.Response(500, request=request)
    ),
    "StreamConsumed": lambda request: httpx.StreamConsumed(),
    "StreamClosed": lambda request: httpx.StreamClosed(),
    "ResponseNotRead": lambda request: httpx.ResponseNotRead(),
    "RequestNotRead": lambda request: httpx.RequestNotRead(),
}


@pytest.mark.parametrize("factory", HTTPX_EXCEPTIONS.values(), ids=HTTPX_EXCEPTIONS.keys())
async def test_no_httpx_exception_escapes(factory: Callable[[httpx.Request], Exception]) -> None:
    """Whatever httpx raises becomes a TransientApiError that names neither the URL nor the token."""
    api = ScriptedApi(_raising(factory))
    async with make_client(api) as client:
        with pytest.raises(TransientApiError) as caught:
            await client.get_task(TASK)
    assert not isinstance(caught.value, httpx.HTTPError | httpx.StreamError)
    assert TOKEN not in rendered(caught.value)
    assert "openapi.voicefox.test" not in str(caught.value)


FAILING_REPLIES: dict[str, Reply] = {
    **TRANSIENT_REPLIES,
    "401": answer(401, {"code": 401, "message": "invalid token"}),
    "403": answer(403, {}),
    "404": answer(404, {}),
    "418": answer(418, {}),
    "429": answer(429, {}, headers={"Retry-After": "3"}),
    "huge": answer(200, content=b'{"pad":"' + b"x" * (MAX_BODY_BYTES + 1) + b'"}'),
}


@pytest.mark.parametrize("reply", FAILING_REPLIES.values(), ids=FAILING_REPLIES.keys())
async def test_error_messages_never_contain_the_token(reply: Reply) -> None:
    api = ScriptedApi(reply)
    async with make_client(api) as client:
        with pytest.raises(ApiError) as caught:
            await client.get_task(TASK)
    assert TOKEN not in rendered(caught.value)
    assert str(TASK) in str(caught.value)  # the message still says which task


# -- through real sockets: the simulator on 127.0.0.1 ------------------------------------------------------------


def sim_client(
    url: str, token: str, *, sleep: Callable[[float], Any] | None = None, timeout: float = 10.0
) -> VoiceFoxClient:
    return VoiceFoxClient(url, token, retry=NO_JITTER, sleep=sleep or no_sleep, timeout=timeout)


async def test_sim_task_is_fetched_over_a_socket(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    sim.add_task(TASK, "Clinic confirmations", status="running", progress=40, total=300, collectionRate=55)
    async with sim_client(url, sim.token) as client:
        snapshot = await client.get_task(TASK)
    assert snapshot == TaskSnapshot(
        id=TASK,
        status="running",
        name="Clinic confirmations",
        progress=40,
        total=300,
        collection_rate=55,
        updated_at="2026-11-23 09:00:00",
        created_at="2026-11-23 09:00:00",
        start_date="2026-11-01",
        windows=(("00:00", "00:00"),),
    )


async def test_sim_envelope_is_accepted(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    sim.add_task(TASK, "Wrapped", status="done", progress=100)
    sim.inject("envelope")
    async with sim_client(url, sim.token) as client:
        snapshot = await client.get_task(TASK)
    assert (snapshot.name, snapshot.status) == ("Wrapped", "done")


async def test_sim_wrong_token_raises_authentication_error_401(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    sim.add_task(TASK)
    async with sim_client(url, TOKEN) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.get_task(TASK)
    assert caught.value.status_code == 401
    assert TOKEN not in rendered(caught.value)
    assert sim.requests_by_task[TASK] == 1


@pytest.mark.parametrize("status", [401, 403])
async def test_sim_auth_fault_raises_authentication_error_with_status(
    simulator: tuple[Simulator, str], status: int
) -> None:
    sim, url = simulator
    sim.add_task(TASK)
    sim.inject(str(status))
    async with sim_client(url, sim.token) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.get_task(TASK)
    assert caught.value.status_code == status
    assert sim.requests_by_task[TASK] == 1


async def test_sim_404_fault_raises_task_not_found(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    sim.add_task(TASK)
    sim.inject("404")
    async with sim_client(url, sim.token) as client:
        with pytest.raises(TaskNotFound):
            await client.get_task(TASK)


async def test_sim_unknown_task_raises_task_not_found(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    async with sim_client(url, sim.token) as client:
        with pytest.raises(TaskNotFound):
            await client.get_task(TASK)


@pytest.mark.parametrize("kind", ["500", "502", "503", "malformed", "empty", "wrong_type", "huge"])
async def test_sim_transient_fault_is_retried_attempts_times_then_the_client_recovers(
    simulator: tuple[Simulator, str], kind: str
) -> None:
    """Three faults exhaust three attempts; the connection pool is fine for the next poll."""
    sim, url = simulator
    sim.add_task(TASK, status="running", progress=10)
    sim.inject(kind, times=3)
    sleeps = Sleeps()
    async with sim_client(url, sim.token, sleep=sleeps) as client:
        with pytest.raises(TransientApiError) as caught:
            await client.get_task(TASK)
        assert sim.requests_by_task[TASK] == 3
        assert sleeps.waits == [0.5, 1.0]
        assert sim.token not in rendered(caught.value)
        snapshot = await client.get_task(TASK)
    assert snapshot.status == "running"


async def test_sim_success_after_two_faults_returns_the_snapshot(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    sim.add_task(TASK, status="running", progress=60)
    sim.inject("503", times=2)
    async with sim_client(url, sim.token) as client:
        snapshot = await client.get_task(TASK)
    assert snapshot.progress == 60
    assert sim.requests_by_task[TASK] == 3


@pytest.mark.parametrize(("header", "expected"), [("7", 7.0), (None, None)])
async def test_sim_429_is_rate_limited_with_its_retry_after_and_not_retried(
    simulator: tuple[Simulator, str], header: str | None, expected: float | None
) -> None:
    sim, url = simulator
    sim.add_task(TASK)
    sim.inject("429", retry_after=header)
    async with sim_client(url, sim.token) as client:
        with pytest.raises(RateLimited) as caught:
            await client.get_task(TASK)
    assert caught.value.retry_after == expected
    assert sim.requests_by_task[TASK] == 1


async def test_sim_timeout_is_transient_after_attempts_tries(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    sim.add_task(TASK)
    sim.timeout_seconds = 2.0
    sim.inject("timeout", times=3)
    sleeps = Sleeps()
    async with sim_client(url, sim.token, sleep=sleeps, timeout=0.2) as client:
        with pytest.raises(TransientApiError, match=r"no answer within 0\.2s"):
            await client.get_task(TASK)
    assert sleeps.waits == [0.5, 1.0]  # three attempts, each timed out


async def test_connection_refused_is_transient_and_names_no_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with sim_client(url, TOKEN) as client:
        with pytest.raises(TransientApiError) as caught:
            await client.get_task(TASK)
    assert "ConnectError" in str(caught.value)
    assert "127.0.0.1" not in str(caught.value)
    assert TOKEN not in rendered(caught.value)


@pytest.mark.parametrize("fault", ["500", "malformed", "huge", "404", "401", "429"])
async def test_the_aiohttp_transport_maps_every_fault_the_same_way(
    simulator: tuple[Simulator, str], fault: str
) -> None:
    """api.transport = "aiohttp" (the [fast] extra) gives the same errors as httpx's own transport."""
    sim, url = simulator
    sim.add_task(TASK, status="running")
    expected: dict[str, type[Exception]] = {
        "500": TransientApiError,
        "malformed": TransientApiError,
        "huge": TransientApiError,
        "404": TaskNotFound,
        "401": AuthenticationError,
        "429": RateLimited,
    }
    sim.inject(fault, times=3)
    async with VoiceFoxClient(url, sim.token, transport_kind="aiohttp", sleep=no_sleep) as client:
        with pytest.raises(expected[fault]):
            await client.get_task(TASK)
        sim.clear_faults()
        assert (await client.get_task(TASK)).status == "running"


async def test_the_aiohttp_transport_times_out_and_refuses_like_httpx(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    sim.add_task(TASK, status="running")
    sim.timeout_seconds = 2.0
    sim.inject("timeout", times=3)  # every try of the poll
    async with VoiceFoxClient(url, sim.token, timeout=0.2, transport_kind="aiohttp", sleep=no_sleep) as client:
        with pytest.raises(TransientApiError, match="no answer"):
            await client.get_task(TASK)
    async with VoiceFoxClient("http://127.0.0.1:9", sim.token, transport_kind="aiohttp", sleep=no_sleep) as client:
        with pytest.raises(TransientApiError, match="cannot reach"):
            await client.get_task(TASK)
