"""A small HTTP/1.1 server on anyio + h11 for loopback peers, and the `Request`/`Response` every handler speaks.

It serves the simulator (`watcher simulate`, `watcher demo`, the tests), the demo's webhook receiver and the tests'
receivers, all on 127.0.0.1 by default. Nothing users expose runs on it: it has no header, body or idle deadline,
so `[http] listen` (the operator endpoint and push hints) is served by `asgi.py` on hypercorn instead.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
import h11
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSListener

MAX_REQUEST_BODY = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """A received request; header names are lower-case."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        """The target without its query string."""
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        """The parsed query string."""
        return parse_qs(urlsplit(self.target).query)


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    """A response to send."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)


Handler = Callable[[Request], Awaitable[Response]]


async def serve(
    handler: Handler,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled (HTTPS with `ssl_context`); `await tg.start(serve, ...)` returns the bound port."""
    tcp = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
    bound = tcp.extra(SocketAttribute.local_port)
    listener: anyio.abc.Listener[Any] = (
        TLSListener(tcp, ssl_context, standard_compatible=False) if ssl_context is not None else tcp
    )
    async with listener:
        task_status.started(bound)
        await listener.serve(lambda stream: _connection(stream, handler))


async def _connection(stream: anyio.abc.ByteStream, handler: Handler) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    async with stream:
        try:
            while True:
                request = await _read_request(conn, stream)
                if request is None:
                    return
                try:
                    response = await handler(request)
                except Exception:  # noqa: BLE001 - a handler bug must answer 500, not drop the connection silently
                    response = Response(500, b'{"message":"internal error"}')
                await _send(conn, stream, response)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, _TooLarge):
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _send(conn, stream, Response(400, b'{"message":"bad request"}'))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, h11.LocalProtocolError):
            return


class _TooLarge(Exception):
    pass


async def _read_request(conn: h11.Connection, stream: anyio.abc.ByteStream) -> Request | None:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                data = b""
            conn.receive_data(data)
            continue
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_REQUEST_BODY:
                raise _TooLarge
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return Request(
                method=head.method.decode(),
                target=head.target.decode(errors="replace"),
                headers={k.decode().lower(): v.decode(errors="replace") for k, v in head.headers},
                body=bytes(body),
            )


async def _send(conn: h11.Connection, stream: anyio.abc.ByteStream, response: Response) -> None:
    headers = [*response.headers, ("Content-Length", str(len(response.body)))]
    chunks = [conn.send(h11.Response(status_code=response.status, headers=headers))]
    if response.body:
        chunks.append(conn.send(h11.Data(data=response.body)))
    chunks.append(conn.send(h11.EndOfMessage()))
    await stream.send(b"".join(c for c in chunks if c))
