"""The server behind ports users expose: a `Handler` as an ASGI app on hypercorn, with deadlines and size limits.

What guards what (hypercorn 0.18, read in its source):

- the request head: hypercorn's `keep_alive_timeout` runs from the moment a connection opens, and again from the end
  of each response, until a complete request head has been parsed; bytes arriving do not restart it, so a client
  trickling one byte a second is cut off as surely as one that sends nothing. The same timer closes an idle
  keep-alive connection: one number, `Limits.head_timeout`.
- the head's size: h11's `max_incomplete_event_size` (hypercorn's `h11_max_incomplete_size`; `h2_max_header_list_size`
  for HTTP/2), answered 431 and closed.
- the body: hypercorn has no body deadline (its `read_timeout` is per read, which a trickle defeats) and no body limit
  for ASGI apps, so the app below reads the body under one deadline (408) and a size cap (413, by Content-Length
  before reading when the client declares it); hypercorn closes a connection whose request was not read to its end.

The simulator and the test receivers, loopback only, stay on `httpserver.py`.
"""

from __future__ import annotations

import dataclasses
import json
import socket

import anyio
import anyio.abc
import hypercorn.asyncio
import hypercorn.config
import structlog
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

from .httpserver import Handler, Request, Response

_log = structlog.get_logger("watcher.http")

# A client gets this long from connecting (or from the end of the previous response) to the end of its request head.
# Real clients send a head in one packet within milliseconds; 10 s forgives a slow network, and bounds what a client
# that sends nothing, or a byte at a time, can hold. It is also how long an idle keep-alive connection stays open,
# enough for Prometheus or a probe to reuse it between two scrapes close together.
HEAD_TIMEOUT = 10.0
# From the end of the head to the end of the body. The one body we read is VoiceFox's push: small JSON, one packet.
BODY_TIMEOUT = 10.0
# The request line and headers together. Ours are a few hundred bytes; 64 KiB leaves room for proxies' additions.
MAX_HEAD = 64 * 1024
# The push body is a few KiB of JSON; 1 MiB is the most any request may carry.
MAX_BODY = 1024 * 1024
# On shutdown, bodies still arriving are answered 503 at once; a request still being handled or answered gets this
# long before its connection is cut. Our handlers answer in microseconds, so this only bounds a client not reading.
SHUTDOWN_GRACE = 2.0
SHUTDOWN_MARGIN = 1.0  # past the grace, hypercorn's shutdown itself is cut off (a client not reading holds it)


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Deadlines (seconds) and sizes (bytes) for one server; the defaults are the operator endpoint's."""

    head_timeout: float = HEAD_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    max_head: int = MAX_HEAD
    max_body: int = MAX_BODY
    shutdown_grace: float = SHUTDOWN_GRACE


DEFAULT_LIMITS = Limits()


async def serve(
    handler: Handler,
    host: str,
    port: int,
    *,
    limits: Limits = DEFAULT_LIMITS,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; `await tg.start(serve, handler, host, port)` returns the bound port."""
    # Bound here rather than by hypercorn so that an OSError reaches the caller before `started`, and port 0 has an
    # answer; hypercorn takes the socket over by its file descriptor (its documented `fd://` bind).
    addresses = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = addresses[0]  # one socket, on the first: "localhost" is 127.0.0.1, not also ::1
    listener = socket.create_server(address, family=family)
    bound: int = listener.getsockname()[1]
    config = hypercorn.config.Config()
    config.bind = [f"fd://{listener.detach()}"]
    config.keep_alive_timeout = limits.head_timeout
    config.h11_max_incomplete_size = limits.max_head
    config.h2_max_header_list_size = limits.max_head
    config.graceful_timeout = limits.shutdown_grace
    config.errorlog = None  # the app logs its own failures through structlog; hypercorn's stderr lines would not
    config.accesslog = None
    config.include_server_header = False
    app = _App(handler, limits)
    stop = anyio.Event()
    # Shielded: hypercorn's own shutdown (close the listener, give requests in flight `graceful_timeout`, close the
    # rest) has to run, so a cancellation is turned into its shutdown trigger instead. But not for ever: a client that
    # never reads a large answer would hold hypercorn's shutdown (and so the daemon's) indefinitely, so once stopping,
    # the shield gets a deadline a little past the grace.
    shield = anyio.CancelScope(shield=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_hypercorn, app, config, stop, shield)
        task_status.started(bound)
        try:
            await anyio.sleep_forever()
        finally:
            stop.set()
            app.stop()
            shield.deadline = anyio.current_time() + limits.shutdown_grace + SHUTDOWN_MARGIN


async def _hypercorn(app: _App, config: hypercorn.config.Config, stop: anyio.Event, shield: anyio.CancelScope) -> None:
    with shield:
        try:
            await hypercorn.asyncio.serve(app, config, shutdown_trigger=stop.wait, mode="asgi")
        except Exception as exc:
            # Cut short past its deadline, hypercorn 0.18's shutdown trips over its own cancelled tasks
            # (InvalidStateError): that is the cut we asked for, not a failure to report as one.
            if not shield.cancel_called:
                raise
            _log.warning("http.shutdown_cut_short", error=exc.__class__.__name__, hint="a client was not reading")


class _App:
    """ASGI to `Handler`: read the body within the limits, answer what the handler says."""

    def __init__(self, handler: Handler, limits: Limits) -> None:
        self._handler = handler
        self._limits = limits
        self._stopping = False
        self._reading: set[anyio.CancelScope] = set()

    def stop(self) -> None:
        """Stop waiting for bodies still on their way, so that shutdown need not wait for slow clients."""
        # Hypercorn would cancel them after `graceful_timeout`; answering first closes them cleanly (and spares
        # Python 3.11's asyncio an "Exception in callback" for each connection task it sees cancelled).
        self._stopping = True
        for scope in self._reading:
            scope.cancel()

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "websocket":  # none offered: refuse the handshake (403), not fail it (500)
            await send({"type": "websocket.close", "code": 1000, "reason": None})
        if scope["type"] != "http":  # lifespan: nothing to start or stop
            return
        response = await self._respond(scope, receive)
        if response is None:
            return
        headers = [(k.encode(), v.encode()) for k, v in response.headers]
        headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body, "more_body": False})

    async def _respond(self, scope: HTTPScope, receive: ASGIReceiveCallable) -> Response | None:
        """The response to send, or None if the client went away."""
        headers = {k.decode("latin-1"): v.decode(errors="replace") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._limits.max_body:
            return _refuse(413, f"the body is larger than {self._limits.max_body} bytes")
        body: bytes | Response | None = None
        with anyio.move_on_after(self._limits.body_timeout) as reading:
            self._reading.add(reading)
            try:
                body = await self._body(receive)
            finally:
                self._reading.discard(reading)
        if reading.cancelled_caught:
            if self._stopping:
                return _refuse(503, "shutting down")
            return _refuse(408, f"the body took longer than {self._limits.body_timeout:g}s")
        if not isinstance(body, bytes):
            return body
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        request = Request(method=scope["method"], target=target, headers=headers, body=body)
        try:
            return await self._handler(request)
        except Exception:  # noqa: BLE001 - a handler bug must answer 500 and be logged, not drop the connection
            _log.exception("http.handler_failed", method=request.method, path=request.path)
            return Response(500, b'{"message":"internal error"}')

    async def _body(self, receive: ASGIReceiveCallable) -> bytes | Response | None:
        """The whole body, a 413 once it outgrows the limit, or None if the client went away."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            if message["type"] == "http.request":
                body += message["body"]
                if len(body) > self._limits.max_body:
                    return _refuse(413, f"the body is larger than {self._limits.max_body} bytes")
                if not message["more_body"]:
                    return bytes(body)


def _refuse(status: int, reason: str) -> Response:
    # hypercorn closes the connection after this answer, since the request was not read to its end.
    return Response(status, json.dumps({"status": "error", "reason": reason}).encode())
