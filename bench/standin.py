"""A cheap VoiceFox stand-in for the benchmark: canned, pre-serialised task bodies over raw asyncio HTTP/1.1.

It must cost far less CPU per request than any client it serves, so that on a 2-core machine it does not distort what
is measured: no HTTP library, no routing, no JSON on the hot path. A GET is answered from a dict keyed by the raw
request target, whose values are the complete response bytes (status line, headers and body).

    GET  /openapi/tasks/{id}          the task's body (401 without the bench token, 404 for an id it does not serve)
    POST /_bench/flip/{id}?status=S   the task takes status S (and progress 100 for "done") now; answers the
                                      monotonic time of the flip, and the first GET served after it is recorded
    POST /_bench/reset                every task back to its initial body; flip records cleared
    GET  /_bench/stats                request counters, requests per second, flips (flipped and first-served times)

Times are `time.monotonic()` (CLOCK_MONOTONIC: one clock for every process on the machine), so the benchmark can
compare them with its own. Run it as `python bench/standin.py --tasks 10000`: it prints one JSON line with its port,
then serves until SIGTERM/SIGINT, until its standard input closes (the benchmark died), or `--max-seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any, cast

from lifeline import Lifeline

from watcher.simulator import task_body

DEFAULT_TOKEN = "bench-token-0123456789"  # noqa: S105 - a public token for a loopback stand-in
FIRST_ID = 100_001
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
TASK_PREFIX = b"/openapi/tasks/"


def response(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    """A complete HTTP/1.1 keep-alive response."""
    reason = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found", 405: b"Method Not Allowed"}
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
        % (status, reason.get(status, b"Other"), content_type, len(body))
        + body
    )


def json_response(status: int, doc: Any) -> bytes:
    """A JSON response."""
    return response(status, json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode())


# A handler gets (method, target, header block, body) and returns the complete response bytes.
Handler = Callable[[bytes, bytes, bytes, bytes], bytes]


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; a request is answered by `fast` (GETs by target) or `handler`."""

    __slots__ = ("_buf", "_fast", "_handler", "_transport")

    def __init__(self, handler: Handler, fast: Callable[[bytes, bytes], bytes | None] | None = None) -> None:
        self._handler = handler
        self._fast = fast
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        transport = self._transport
        assert transport is not None
        out: list[bytes] = []
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    transport.close()
                    return
                break
            line_end = buf.find(b"\r\n")
            method, _, rest = buf[:line_end].partition(b" ")
            target = rest.rpartition(b" ")[0]
            head = buf[line_end:end]
            if method == b"GET" and self._fast is not None:
                answer = self._fast(target, head)
                if answer is not None:
                    out.append(answer)
                    buf = buf[end + 4 :]
                    continue
            length = 0
            lowered = head.lower()
            at = lowered.find(b"\r\ncontent-length:")
            if at >= 0:
                value_end = lowered.find(b"\r\n", at + 2)
                try:
                    length = int(lowered[at + 17 : value_end if value_end >= 0 else len(lowered)])
                except ValueError:
                    length = MAX_BODY + 1
            if length > MAX_BODY:
                transport.write(b"".join(out) + response(400, b"{}"))
                transport.close()
                return
            if len(buf) < end + 4 + length:
                break
            body = buf[end + 4 : end + 4 + length]
            buf = buf[end + 4 + length :]
            out.append(self._handler(method, target, head, body))
        self._buf = buf
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))


class StandIn:
    """The task bodies, the counters and the flips."""

    def __init__(self, tasks: int, first_id: int = FIRST_ID, token: str = DEFAULT_TOKEN) -> None:
        self.first_id = first_id
        self.tasks = tasks
        self._auth = b"Bearer " + token.encode()
        self._unauthorized = json_response(401, {"code": 401, "message": "invalid token"})
        self._not_found = json_response(404, {"code": 404, "message": "task not found"})
        self._initial: dict[bytes, bytes] = {}
        for task_id in range(first_id, first_id + tasks):
            self._initial[TASK_PREFIX + str(task_id).encode()] = json_response(200, body_for(task_id))
        self._served: dict[bytes, bytes] = dict(self._initial)
        self._awaiting: dict[bytes, int] = {}  # target -> task id, flipped and not yet served since
        self.flips: dict[int, list[float | None]] = {}  # task id -> [flipped at, first served at]
        self.task_requests = 0
        self.other_requests = 0
        self.unauthorized = 0
        self._second = int(time.monotonic())
        self._this_second = 0
        self.per_second: dict[int, int] = {}

    def fast(self, target: bytes, head: bytes) -> bytes | None:
        """Answer a task GET (the hot path), or None to leave the request to `handle`."""
        answer = self._served.get(target)
        if answer is None:
            return None
        if self._auth not in head:
            self.unauthorized += 1
            return self._unauthorized
        self.task_requests += 1
        now = time.monotonic()
        second = int(now)
        if second != self._second:
            self._roll(second)
        self._this_second += 1
        if self._awaiting:
            task_id = self._awaiting.pop(target, None)
            if task_id is not None:
                self.flips[task_id][1] = now
        return answer

    def _roll(self, second: int) -> None:
        self.per_second[self._second] = self._this_second
        self._second, self._this_second = second, 0
        if len(self.per_second) > 3600:
            for old in sorted(self.per_second)[:600]:
                del self.per_second[old]

    def handle(self, method: bytes, target: bytes, head: bytes, body: bytes) -> bytes:
        """Everything but a task GET: the control channel, and 404s."""
        self.other_requests += 1
        path, _, query = target.partition(b"?")
        if path.startswith(TASK_PREFIX):
            return self._not_found if method == b"GET" else json_response(405, {"message": "use GET"})
        if path.startswith(b"/_bench/flip/") and method == b"POST":
            params = dict(p.split(b"=", 1) for p in query.split(b"&") if b"=" in p)
            try:
                task_id = int(path.rsplit(b"/", 1)[1])
            except ValueError:
                return json_response(400, {"message": "bad task id"})
            status = params.get(b"status", b"done").decode()
            return json_response(200, self.flip(task_id, status))
        if path == b"/_bench/reset" and method == b"POST":
            self.reset()
            return json_response(200, {"ok": True})
        if path == b"/_bench/stats":
            return json_response(200, self.stats())
        return json_response(404, {"message": "unknown path"})

    def flip(self, task_id: int, status: str) -> dict[str, Any]:
        """The task takes `status` now; the first GET that serves it is recorded."""
        target = TASK_PREFIX + str(task_id).encode()
        if target not in self._served:
            return {"id": task_id, "error": "not served here"}
        fields: dict[str, Any] = {"status": status}
        if status == "done":
            fields.update(progress=100, summary="Bench: finished.", suggestion="None.", updatedAt="2026-11-23 12:00:00")
        self._served[target] = json_response(200, body_for(task_id, **fields))
        now = time.monotonic()
        self.flips[task_id] = [now, None]
        self._awaiting[target] = task_id
        return {"id": task_id, "t": now}

    def reset(self) -> None:
        """Every task back to its initial body."""
        self._served = dict(self._initial)
        self._awaiting.clear()
        self.flips.clear()

    def stats(self) -> dict[str, Any]:
        """Counters for the benchmark."""
        times = os.times()
        recent = {str(s): n for s, n in self.per_second.items() if s >= self._second - 60}
        return {
            "now": time.monotonic(),
            "tasks": self.tasks,
            "first_id": self.first_id,
            "task_requests": self.task_requests,
            "other_requests": self.other_requests,
            "unauthorized": self.unauthorized,
            "per_second": recent,
            "flips": {str(k): v for k, v in self.flips.items()},
            "cpu_seconds": times.user + times.system,
        }


def body_for(task_id: int, **fields: Any) -> dict[str, Any]:
    """The simulator's realistic body: a running task, inside its calling window all day, every day."""
    body = task_body(task_id, f"Bench campaign {task_id}", status="running", progress=50, collectionRate=35)
    # Calling all day ("00:00"-"00:00": the whole day) from a date long past: an adaptive poller has no reason to slow
    # down for calling windows or start dates, so every task is polled every interval, as by the floors.
    body["option"] = {**body["option"], "startDate": "2020-01-01", "startTime": [["00:00", "00:00"]]}
    body.update(fields)
    return body


async def serve(args: argparse.Namespace) -> None:
    """Serve until a signal, the end of standard input, or --max-seconds."""
    standin = StandIn(args.tasks, args.first_id, args.token)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HttpProtocol(standin.handle, standin.fast), args.host, args.port, backlog=1024, reuse_address=True
    )
    port = server.sockets[0].getsockname()[1]
    lifeline = Lifeline()
    await lifeline.start(watch_stdin=not args.keep_stdin)
    print(json.dumps({"port": port, "pid": os.getpid(), "tasks": args.tasks, "first_id": args.first_id}), flush=True)
    try:
        await lifeline.wait(args.max_seconds)
    finally:
        server.close()


def main() -> None:
    """Parse arguments and serve."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--tasks", type=int, default=1000, help="how many task ids to serve")
    p.add_argument("--first-id", type=int, default=FIRST_ID, help="the first task id (then consecutive)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    p.add_argument("--token", default=DEFAULT_TOKEN)
    p.add_argument("--max-seconds", type=float, default=3600.0, help="stop after this long whatever happens")
    p.add_argument("--keep-stdin", action="store_true", help="do not stop when standard input closes")
    p.add_argument("--no-uvloop", action="store_true", help="asyncio's own loop even when uvloop is installed")
    args = p.parse_args()
    try:
        import uvloop  # the stand-in only, never a contender: about a quarter less CPU per request
    except ImportError:
        uvloop = None
    if uvloop is not None and not args.no_uvloop:
        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
