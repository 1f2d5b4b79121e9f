"""The operator endpoint's server through raw sockets: slow, half-open and oversized requests are cut off, /healthz answers.

Deadlines are injected short (`FAST`); `anyio.fail_after` bounds are only a safety net, never the assertion.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest
from structlog.testing import capture_logs

from watcher import asgi
from watcher.asgi import Limits
from watcher.cli_run import Components, open_components
from watcher.httpserver import Request, Response
from watcher.ops import OpsServer
from watcher.simulator import Simulator

from .conftest import Receiver
from .test_daemon import FAST_RETRY, make_config

pytestmark = pytest.mark.anyio

PUSH = "/voicefox/push"
SECRET = "push-secret-0123456789"
# A small head limit keeps the oversized head in one loopback write, so the server reads all of it before refusing
# (bytes left unread would turn its close into a reset that can overtake the 431).
FAST = Limits(head_timeout=0.5, body_timeout=0.5, max_head=8 * 1024, shutdown_grace=0.5)
SAFETY = 10  # seconds; only so that a regression fails instead of hanging


@dataclasses.dataclass
class Endpoint:
    port: int
    parts: Components
    clock: Callable[[], float]


@pytest.fixture
async def endpoint(simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path) -> AsyncIterator[Endpoint]:
    """The operator endpoint with the push path, on a free port, with `FAST` limits and a clock that stands still."""
    sim, url = simulator
    sim.add_task(1, status="running")
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1])
    config = config.model_copy(
        update={
            "push": config.push.model_validate({"path": PUSH, "secret": SECRET}),
            "http": config.http.model_validate({"listen": "127.0.0.1:0"}),
        }
    )
    now = anyio.current_time()
    async with (
        open_components(config, api_retry=FAST_RETRY, monotonic=lambda: now) as parts,
        anyio.create_task_group() as tg,
    ):
        server = OpsServer(parts.daemon, parts.store, parts.metrics, clock=lambda: now, limits=FAST)
        port = await tg.start(server.serve, "127.0.0.1", 0)
        yield Endpoint(port, parts, lambda: now)
        tg.cancel_scope.cancel()


async def healthz(port: int) -> int:
    """GET /healthz as a well-behaved client would, on a fresh connection."""
    async with httpx.AsyncClient() as http:
        return (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code


async def until_closed(stream: anyio.abc.ByteStream) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    received = b""
    with anyio.fail_after(SAFETY):
        while True:
            try:
                received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return received


async def trickle(stream: anyio.abc.ByteStream, data: bytes, every: float) -> None:
    """Send `data` a byte at a time, each well within any per-read timeout, until the server hangs up."""
    for byte in data:
        try:
            await stream.send(bytes([byte]))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return
        await anyio.sleep(every)  # the pace of the attack, not a wait for something to happen


def push_head(length: int, *, chunked: bool = False) -> bytes:
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % length
    return (
        b"POST " + PUSH.encode() + b" HTTP/1.1\r\nHost: watcher\r\nContent-Type: application/json\r\n"
        b"X-Webhook-Secret: " + SECRET.encode() + b"\r\n" + framing + b"\r\n\r\n"
    )


SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: watcher\r\nX-Slow: " + b"a" * 10_000


async def test_a_client_that_sends_half_a_head_and_goes_silent_is_disconnected(endpoint: Endpoint) -> None:
    async with await anyio.connect_tcp("127.0.0.1", endpoint.port) as stream:
        await stream.send(b"GET /healthz HTTP/1.1\r\nHost: wat")
        assert await until_closed(stream) == b""


async def test_a_client_that_connects_and_sends_nothing_is_disconnected(endpoint: Endpoint) -> None:
    async with await anyio.connect_tcp("127.0.0.1", endpoint.port) as stream:
        assert await until_closed(stream) == b""


async def test_a_client_trickling_its_head_is_disconnected_though_no_single_read_waits_long(endpoint: Endpoint) -> None:
    """The head deadline is a total from connect, not a per-read timeout that each byte would reset."""
    async with await anyio.connect_tcp("127.0.0.1", endpoint.port) as stream, anyio.create_task_group() as tg:
        tg.start_soon(trickle, stream, SLOW_HEAD, FAST.head_timeout / 10)
        assert await until_closed(stream) == b""
        tg.cancel_scope.cancel()


async def test_a_client_that_declares_a_body_and_sends_half_gets_408_and_is_disconnected(endpoint: Endpoint) -> None:
    async with await anyio.connect_tcp("127.0.0.1", endpoint.port) as stream:
        await stream.send(push_head(100) + b'{"event_name": "task.end", ')
        assert (await until_closed(stream)).startswith(b"HTTP/1.1 408 ")


async def test_a_client_trickling_its_body_is_cut_off_by_the_body_deadline(endpoint: Endpoint) -> None:
    body = b'{"event_name": "task.end", "event_data": {"task_id": 1}}' + b" " * 1000
    async with await anyio.connect_tcp("127.0.0.1", endpoint.port) as stream, anyio.create_task_group() as tg:
        await stream.send(push_head(len(body)))
        tg.start_soon(trickle, stream, body, FAST.body_timeout / 10)
        assert (await until_closed(stream)).startswith(b"HTTP/1.1 408 ")
        tg.cancel_scope.cancel()


async def test_a_body_declared_too_large_gets_413_before_a_byte_of_it_is_sent(endpoint: Endpoint) -> None:
    async with await anyio.connect_tcp("127.0.0.1", endpoint.port) as stream:
        await stream.send(push_head(FAST.max_body + 1))
        reply = await until_closed(stream)
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"larger than 1048576 bytes" in reply


async def test_a_chunked_body_that_grows_too_large_gets_413(endpoint: Endpoint) -> None:
    chunk = b"a" * 64 * 1024
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(FAST.max_body // len(chunk) + 1))
    async with await anyio.connect_tcp("127.0.0.1", endpoint.port) as stream:
        await stream.send(push_head(0, chunked=True) + chunks)
        assert (await until_closed(stream)).startswith(b"HTTP/1.1 413 ")


async def test_a_head_larger_than_the_limit_gets_431_and_is_disconnected(endpoint: Endpoint) -> None:
    async with await anyio.connect_tcp("127.0.0.1", endpoint.port) as stream:
        await stream.send(b"GET /healthz HTTP/1.1\r\nHost: watcher\r\nX-Big: " + b"a" * FAST.max_head)
        assert (await until_closed(stream)).startswith(b"HTTP/1.1 431 ")


async def test_an_idle_keep_alive_connection_is_closed_after_its_answer(endpoint: Endpoint) -> None:
    async with await anyio.connect_tcp("127.0.0.1", endpoint.port) as stream:
        await stream.send(b"GET /healthz HTTP/1.1\r\nHost: watcher\r\n\r\n")
        reply = await until_closed(stream)
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert reply.endswith(b'{"status": "ok", "reason": "ok"}')  # one answer, then the server hung up


async def test_healthz_answers_while_slow_and_half_open_clients_hold_connections(endpoint: Endpoint) -> None:
    port = endpoint.port
    probes: list[int] = []
    cut: list[bytes] = []

    async def half_head() -> None:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET /healthz HTTP/1.1\r\nHost: wat")
            cut.append(await until_closed(stream))

    async def slow_head() -> None:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream, anyio.create_task_group() as tg:
            tg.start_soon(trickle, stream, SLOW_HEAD, FAST.head_timeout / 10)
            cut.append(await until_closed(stream))
            tg.cancel_scope.cancel()

    async def half_body() -> None:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(push_head(100) + b"{")
            cut.append(await until_closed(stream))

    bad = [half_head, slow_head, half_body] * 10
    async with anyio.create_task_group() as tg:
        for client in bad:
            tg.start_soon(client)
        # Probe until every bad client has been cut off: /healthz answers all along, not only once they are gone.
        with anyio.fail_after(SAFETY):
            while len(cut) < len(bad):
                probes.append(await healthz(port))
                await anyio.sleep(FAST.head_timeout / 10)  # the probing pace
    assert probes
    assert set(probes) == {200}
    assert all(reply == b"" or reply.startswith(b"HTTP/1.1 408 ") for reply in cut)
    assert await healthz(port) == 200


async def test_head_answers_like_get_without_a_body(endpoint: Endpoint) -> None:
    async with httpx.AsyncClient() as http:
        head = await http.head(f"http://127.0.0.1:{endpoint.port}/healthz")
        get = await http.get(f"http://127.0.0.1:{endpoint.port}/healthz")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(get.content))


async def test_a_push_still_arrives_through_the_new_server(endpoint: Endpoint) -> None:
    async with httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{endpoint.port}{PUSH}"
        accepted = await http.post(
            url, json={"event_name": "task.end", "event_data": {"task_id": 1}}, headers={"X-Webhook-Secret": SECRET}
        )
        refused = await http.post(url, json={}, headers={"X-Webhook-Secret": "wrong"})
        malformed = await http.post(url, content=b"{", headers={"X-Webhook-Secret": SECRET})
    assert (accepted.status_code, accepted.json()) == (202, {"status": "accepted"})
    assert refused.status_code == 401
    assert malformed.status_code == 400


def another(endpoint: Endpoint, limits: Limits = FAST) -> OpsServer:
    """A second operator endpoint on the same components, to start and stop in a test."""
    parts = endpoint.parts
    return OpsServer(parts.daemon, parts.store, parts.metrics, clock=endpoint.clock, limits=limits)


async def test_cancelling_the_server_ends_it_promptly_and_answers_requests_in_flight(endpoint: Endpoint) -> None:
    # Deadlines and grace beyond the safety net: only the shutdown itself can end this request in time.
    patient = Limits(body_timeout=3 * SAFETY, shutdown_grace=3 * SAFETY)
    with anyio.fail_after(SAFETY):
        async with anyio.create_task_group() as tg:
            port = await tg.start(another(endpoint, patient).serve, "127.0.0.1", 0)
            stream = await anyio.connect_tcp("127.0.0.1", port)
            await stream.send(push_head(100) + b"{")  # in the middle of a body
            assert await healthz(port) == 200
            tg.cancel_scope.cancel()
    async with stream:
        assert (await until_closed(stream)).startswith(b"HTTP/1.1 503 ")
    with pytest.raises(OSError, match="connection attempts failed"):
        await anyio.connect_tcp("127.0.0.1", port)


async def test_a_client_that_never_reads_a_large_answer_cannot_hold_the_shutdown() -> None:
    """hypercorn's own shutdown would wait for it for ever: past the grace it is cut short, and says so."""
    import socket

    async def large(request: Request) -> Response:
        # More than the kernel's socket buffers hold, for /metrics.
        return Response(200, b"x" * 8_000_000 if request.path == "/metrics" else b"ok")

    serve = functools.partial(asgi.serve, large, "127.0.0.1", 0, limits=FAST)
    with capture_logs() as logs, anyio.fail_after(SAFETY):
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve)
            client = socket.create_connection(("127.0.0.1", port))
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads the answer
            stream = await anyio.connect_tcp("127.0.0.1", port)  # a well-behaved request gets through meanwhile
            async with stream:
                await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert (await until_closed(stream)).startswith(b"HTTP/1.1 200 ")
            tg.cancel_scope.cancel()
    client.close()
    assert "http.shutdown_cut_short" in [e["event"] for e in logs]


async def test_a_port_in_use_is_an_oserror_before_the_server_starts(endpoint: Endpoint) -> None:
    async with anyio.create_task_group() as tg:
        with pytest.raises(OSError, match="in use"):
            await tg.start(another(endpoint).serve, "127.0.0.1", endpoint.port)


async def test_a_handler_bug_answers_500_and_is_logged() -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("bug")

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            port = await tg.start(asgi.serve, broken, "127.0.0.1", 0)
            async with httpx.AsyncClient() as http:
                response = await http.get(f"http://127.0.0.1:{port}/x?y=1")
            tg.cancel_scope.cancel()
    assert response.status_code == 500
    assert [(e["event"], e["path"]) for e in logs if e["log_level"] == "error"] == [("http.handler_failed", "/x")]


async def test_an_ipv6_address_is_served() -> None:
    async def ok(request: Request) -> Response:
        return Response(200, request.target.encode())

    async with anyio.create_task_group() as tg:
        try:
            port = await tg.start(asgi.serve, ok, "::1", 0)
        except OSError as exc:  # a host without IPv6
            pytest.skip(f"no IPv6 loopback: {exc}")
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://[::1]:{port}/healthz?a=b")
        tg.cancel_scope.cancel()
    assert response.content == b"/healthz?a=b"
