"""The operator endpoint: /healthz, /readyz, /metrics and the push path on `[http] listen`, served by `asgi.py`."""

from __future__ import annotations

import base64
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping

import anyio
import anyio.abc
import structlog

from . import asgi
from .config import task_id as checked_task_id
from .daemon import Daemon
from .errors import StoreError
from .httpserver import Request, Response
from .matchers import check_labels
from .metrics import CONTENT_TYPE, Metrics
from .replicas import Coordinator
from .stores import StateStore

_log = structlog.get_logger("watcher.ops")

HEARTBEAT_STALE = 10.0  # /healthz fails if the main loop has not ticked for this long
READY_INTERVALS = 3  # /readyz fails if no poll got an answer for this many times the pace expected (+ API timeout)


class OpsServer:
    """Serves health, readiness, metrics and push hints; seams: `clock` (monotonic), `limits` (the server's)."""

    def __init__(
        self,
        daemon: Daemon,
        store: StateStore,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        limits: asgi.Limits = asgi.DEFAULT_LIMITS,
        replicas: Coordinator | None = None,
        page: Callable[[Request], Awaitable[Response]] | None = None,
    ) -> None:
        self._replicas = replicas
        self._page = page  # the status page (`[http] ui`), answering `/` and `/ui/...`
        self._daemon = daemon
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._limits = limits

    def health(self) -> tuple[bool, str]:
        """Whether the main loop is alive and ticking."""
        stale = self._clock() - self._daemon.heartbeat
        return (stale < HEARTBEAT_STALE, "ok" if stale < HEARTBEAT_STALE else f"main loop silent for {stale:.0f}s")

    async def readiness(self) -> tuple[bool, str]:
        """Whether the store is writable and a poll got an answer recently."""
        try:
            await self._store.check_writable()
        except StoreError as exc:
            return False, f"store not writable: {exc}"
        if self._replicas is not None and not self._replicas.holds_leases():
            age = self._replicas.lease_age()
            since = "yet" if age is None else f"for {age:.0f}s"
            return False, f"this replica's leases were not renewed {since}: it polls and delivers nothing"
        config = self._daemon.config
        # What the watcher expects to have heard: every task outside its windows or stopped is rightly polled every
        # slow_interval, and that is no reason to be taken out of service every night.
        expected = self._daemon.answer_expected_within()
        if expected is None:
            return True, "ok (no task is being polled)"
        limit = READY_INTERVALS * expected + config.api.timeout
        silent = self._clock() - self._daemon.last_answer
        if silent > limit:
            return False, f"no poll got an answer for {silent:.0f}s (limit {limit:.0f}s)"
        return True, "ok"

    def authorized(self, request: Request) -> bool:
        """Whether a request may see the status page or change the tasks: it carries `[http] token` (as a bearer
        token, or as the password of HTTP Basic for a browser); without a token, only a loopback listener serves."""
        http = self._daemon.config.http
        if http.token is None:
            return http.loopback
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                return False
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), http.token.get_secret_value().encode())

    def _refused(self, request: Request, *, browser: bool) -> Response:
        http = self._daemon.config.http
        if http.token is None:
            reason = "set [http] token: without one, only a listener on 127.0.0.1 serves this"
            return _json(403, {"status": "error", "reason": reason})
        _log.warning("ops.unauthorized", path=request.path)
        headers = (("WWW-Authenticate", 'Basic realm="voicefox-watcher", charset="UTF-8"'),) if browser else ()
        return Response(
            401, json.dumps({"status": "error", "reason": "unauthorized: give [http] token"}).encode(), headers
        )

    async def handle(self, request: Request) -> Response:
        """Answer one request."""
        push = self._daemon.config.push
        if push.path and request.path == push.path:
            return await self._push(request)
        if request.path == "/tasks" or request.path.startswith("/tasks/"):
            if not self.authorized(request):
                return self._refused(request, browser=False)
            return await self._tasks(request)
        if self._page is not None and (request.path == "/" or request.path.startswith("/ui/")):
            if not self.authorized(request):
                return self._refused(request, browser=True)
            return await self._page(request)
        if request.method not in ("GET", "HEAD"):
            return _json(405, {"status": "error", "reason": "use GET"})
        if request.path == "/metrics":
            try:
                await self._metrics.refresh()
            except StoreError as exc:  # the gauges of the store say what they said last; the rest is fresh
                _log.warning("metrics.store_unreadable", error=str(exc))
            return Response(200, self._metrics.render(), (("Content-Type", CONTENT_TYPE),))
        if request.path in ("/healthz", "/readyz"):
            ok, reason = self.health() if request.path == "/healthz" else await self.readiness()
            doc: dict[str, object] = {"status": "ok" if ok else "unavailable", "reason": reason}
            if request.path == "/readyz" and self._replicas is not None:
                doc["replica"] = self._replica()
            return _json(200 if ok else 503, doc)
        return _json(404, {"status": "error", "reason": "not found; try /healthz, /readyz or /metrics"})

    def _replica(self) -> dict[str, object]:
        """This replica's share, as /readyz shows it."""
        from .replicas import RECEIVER

        c = self._replicas
        assert c is not None
        view = c.view
        age = c.lease_age()
        return {
            "id": c.me,
            "replicas_alive": len(view.alive()) if view else 0,
            "tasks": sorted(self._daemon.owned()),
            "receivers": sorted(view.held(RECEIVER)) if view and c.holds_leases() else [],
            "lease_seconds": c.ttl,
            "lease_age_seconds": None if age is None else round(age, 1),
        }

    async def _tasks(self, request: Request) -> Response:
        """`watcher tasks`: GET /tasks lists every watched task; POST /tasks {"id", "labels"} adds one; DELETE
        /tasks/ID removes one added so (the config's tasks are read-only here)."""
        daemon = self._daemon
        try:
            if request.path == "/tasks" and request.method in ("GET", "HEAD"):
                return _json(200, {"tasks": daemon.task_list()})
            if request.path == "/tasks" and request.method == "POST":
                try:
                    body = json.loads(request.body or b"{}")
                    if isinstance(body["id"], str):  # (JSON gives a number; a string of digits is a client's slip)
                        raise ValueError("id must be a positive integer, not a string")
                    task_id = checked_task_id(body["id"])
                    labels = check_labels(body.get("labels") or {})
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    reason = f'expected {{"id": TASK_ID, "labels": {{"name": "value"}}}}: {exc}'
                    return _json(400, {"status": "error", "reason": reason})
                added = await daemon.add_task(task_id, labels)
                return _json(201 if added else 200, {"status": "added" if added else "updated", "id": task_id})
            if request.path.startswith("/tasks/") and request.method == "DELETE":
                try:
                    task_id = checked_task_id(request.path.removeprefix("/tasks/"))
                except ValueError:
                    return _json(400, {"status": "error", "reason": "DELETE /tasks/TASK_ID"})
                outcome = await daemon.remove_task(task_id)
                return _json(
                    200 if outcome == "removed" else 409 if outcome == "configured" else 404,
                    {"status": outcome, "id": task_id},
                )
        except StoreError as exc:
            return _json(503, {"status": "error", "reason": f"store: {exc}"})
        return _json(405, {"status": "error", "reason": "GET or POST /tasks, DELETE /tasks/TASK_ID"})

    async def _push(self, request: Request) -> Response:
        """VoiceFox's task.end webhook: a hint to poll that task now. Never trusted as the truth."""
        push = self._daemon.config.push
        if request.method != "POST":
            return _json(405, {"status": "error", "reason": "use POST"})
        assert push.secret is not None  # config guarantees it when push.path is set
        given = request.headers.get(push.header.lower()) or request.headers.get("authorization", "").removeprefix(
            "Bearer "
        )
        if not hmac.compare_digest(given.encode(), push.secret.get_secret_value().encode()):
            _log.warning("push.refused", reason="wrong or missing secret", header=push.header)
            return _json(401, {"status": "error", "reason": "unauthorized"})
        try:
            body = json.loads(request.body)
            data = body.get("event_data") or {}
            task_id = checked_task_id(data["task_id"])
            name = str(body.get("event_name", ""))
        except (ValueError, TypeError, KeyError, AttributeError):
            return _json(400, {"status": "error", "reason": "expected {event_name, event_data: {task_id, ...}}"})
        if name != "task.end":
            return _json(202, {"status": "ignored", "reason": f"event {name[:40]!r} is not task.end"})
        # Only the aggregate figures travel on: call counts and the answers overview, no phone numbers.
        detail = {
            k: v
            for k, v in (("taskProgress", data.get("task_progress")), ("taskOverview", data.get("task_overview")))
            if isinstance(v, dict | list)
        }
        if push.adopt and task_id not in self._daemon.config.watch.ids:
            # `[push] adopt`: a campaign the watcher was not told of is watched from now on (and after a restart).
            try:
                await self._daemon.add_task(task_id, {}, adopted=True)
            except StoreError as exc:
                _log.error("push.adopt_failed", task_id=task_id, error=str(exc))
                return _json(503, {"status": "error", "reason": "store unavailable; send again"})
        polled = self._daemon.hint(task_id, {"event": name, **detail})
        _log.info("push.received", event_name=name, task_id=task_id, watched=polled)
        # The same answer whether the task is watched or not: a push learns nothing about the configuration.
        return _json(202, {"status": "accepted"})

    async def serve(
        self, host: str, port: int, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; `await tg.start(ops.serve, host, port)` returns the bound port."""
        await asgi.serve(self.handle, host, port, limits=self._limits, task_status=task_status)


def _json(status: int, doc: Mapping[str, object]) -> Response:
    return Response(status, json.dumps(doc).encode())
