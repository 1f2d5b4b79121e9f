"""A VoiceFox-like task API with scriptable timelines and faults, for the demo, the tests and benchmarks.

Bodies look like the real thing, secrets and phone numbers included, so that tests can prove none of them leaks.
Besides `GET /openapi/tasks/{id}` it has a small control API (used by `watcher simulate` users and by tests that
drive a simulator in another process):

    POST /_sim/tasks/{id}   JSON object of fields to set (`{"status": "running", "progress": 40}`); creates the task
    DELETE /_sim/tasks/{id} the task answers 404 from now on
    POST /_sim/faults       `{"kind": "500", "times": 3, "task_id": 1001, "retry_after": "2"}`
    GET /_sim/stats         request counts

Timestamps: `timestamps="static"` (the default) keeps the fixed `2026-11-23 09:00:00` of `task_body`; "offset" writes
`createdAt`/`updatedAt` as VoiceFox might, in `zone` with its offset (`2026-11-23T10:00:00+09:00`), and "naive" in
`zone` without one (`2026-11-23 10:00:00`); either way `updatedAt` moves whenever a task changes, as the watcher's zone
learning expects of the real API.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import ssl
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, Literal

import anyio
import anyio.abc

from .httpserver import Request, Response, serve

DEFAULT_TOKEN = "sim-token-0123456789"  # noqa: S105 - the simulator's public demo token
FAULT_KINDS = (
    "500",
    "502",
    "503",
    "timeout",
    "429",
    "malformed",
    "empty",
    "wrong_type",
    "huge",
    "401",
    "403",
    "404",
    "envelope",
)
TOKYO = timezone(timedelta(hours=9), "+09:00")  # where most VoiceFox campaigns call (a fixed offset: no DST there)
Timestamps = Literal["static", "naive", "offset"]
_TASK_PATH = re.compile(r"^/openapi/tasks/(\d+)$")
_SIM_TASK_PATH = re.compile(r"^/_sim/tasks/(\d+)$")


@dataclasses.dataclass
class Fault:
    """The next `times` matching requests fail this way."""

    kind: str
    times: int = 1
    task_id: int | None = None
    retry_after: str | None = None


def task_body(task_id: int, name: str, **fields: Any) -> dict[str, Any]:
    """A realistic task-details body, with the secrets and personal data the real API sends."""
    body: dict[str, Any] = {
        "id": task_id,
        "createdAt": "2026-11-23 09:00:00",
        "updatedAt": "2026-11-23 09:00:00",
        "name": name,
        "status": "pending",
        "total": 1200,
        "progress": 0,
        "collectionRate": 0,
        "option": {
            "numberFileMeta": {"号码": 0, "备注": 1, "姓名": 2},
            "numbers": [819012345678, 819087654321, 818011112222],
            "startDate": "2026-11-01",
            # Around the clock, so demos and tests run at any hour; tests of calling windows set their own.
            "startTime": [["00:00", "00:00"]],
            "retryCount": 2,
            "retryInterval": 30,
        },
        "summary": "",
        "suggestion": "",
        "assistantVid": 77,
        "assistant": {
            "id": 12,
            "projectId": 3,
            "name": "Reminder assistant",
            "versionId": 77,
            "scene": "outbound",
            "speakerId": "ja-JP-1",
            "websocketUrl": f"wss://rt.voicefox.example/ws?token=wsurl-secret-{task_id}-abcdef",
            "websocketToken": f"ws-token-secret-{task_id}-abcdef",
            "listenerId": "l-1",
            "welcome": "Hello",
            "prompt": "Confirm the appointment.",
            "collect": [{"question": "Will you attend?", "answers": ["yes", "no"]}],
            "knowledge": "",
            "createdAt": "2026-11-01 10:00:00",
            "updatedAt": "2026-11-01 10:00:00",
            "creator": {"email": "campaign.owner@example.com"},
            "deletedAt": None,
            "idOldVersion": False,
            "usageCount": 5,
            "creatorId": 9,
        },
    }
    body.update(fields)
    return body


class Simulator:
    """The simulated API; `timeline` scripts changes at seconds after `start()`; `clock` is a seam."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        clock: Callable[[], float] = anyio.current_time,
        timestamps: Timestamps = "static",
        zone: tzinfo = TOKYO,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.token = token
        self._clock = clock
        self.timestamps = timestamps
        self.zone = zone
        self._wall = wall_clock
        self._tasks: dict[int, dict[str, Any]] = {}
        self._timelines: dict[int, list[tuple[float, dict[str, Any]]]] = {}
        self._removed: set[int] = set()
        self._faults: deque[Fault] = deque()
        self._t0: float | None = None
        self.requests = 0
        self.requests_by_task: dict[int, int] = {}
        self.timeout_seconds = 60.0  # how long a "timeout" fault keeps the client waiting

    # -- scripting ---------------------------------------------------------------------------------------------

    def add_task(self, task_id: int, name: str = "", **fields: Any) -> None:
        """Create (or replace) a task with these fields."""
        if self.timestamps != "static":
            now = self.stamp()
            fields = {"createdAt": now, "updatedAt": now, **fields}
        self._tasks[task_id] = task_body(task_id, name or f"Campaign {task_id}", **fields)
        self._removed.discard(task_id)

    def set(self, task_id: int, **fields: Any) -> None:
        """Change fields of a task now (creating it if needed)."""
        if task_id not in self._tasks:
            self.add_task(task_id)
        self._update(self._tasks[task_id], fields)
        self._removed.discard(task_id)

    def stamp(self, when: datetime | None = None) -> str:
        """A timestamp as this simulator writes them (now, unless `when`)."""
        local = (when or self._wall()).astimezone(self.zone)
        if self.timestamps == "offset":
            return local.isoformat(timespec="seconds")
        return local.strftime("%Y-%m-%d %H:%M:%S")

    def _update(self, body: dict[str, Any], fields: dict[str, Any]) -> None:
        changed = any(body.get(k) != v for k, v in fields.items())
        body.update(fields)
        if changed and self.timestamps != "static" and "updatedAt" not in fields:
            body["updatedAt"] = self.stamp()

    def remove(self, task_id: int) -> None:
        """The task answers 404 from now on."""
        self._removed.add(task_id)

    def timeline(self, task_id: int, steps: list[tuple[float, dict[str, Any]]]) -> None:
        """At each (seconds after start, fields), the task takes those fields."""
        self._timelines[task_id] = sorted(steps, key=lambda s: s[0])

    def inject(self, kind: str, times: int = 1, task_id: int | None = None, retry_after: str | None = None) -> None:
        """The next `times` requests (for `task_id`, or any) fail as `kind` (one of FAULT_KINDS)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; use one of {', '.join(FAULT_KINDS)}")
        self._faults.append(Fault(kind, times, task_id, retry_after))

    def clear_faults(self) -> None:
        """Forget every fault not yet served."""
        self._faults.clear()

    def start(self) -> None:
        """Start the timelines' clock (done by `serve` if not before)."""
        if self._t0 is None:
            self._t0 = self._clock()

    def current(self, task_id: int) -> dict[str, Any] | None:
        """The task's body as of now, or None if it does not exist."""
        if task_id in self._removed or task_id not in self._tasks:
            return None
        body = self._tasks[task_id]
        steps = self._timelines.get(task_id)
        if steps and self._t0 is not None:
            elapsed = self._clock() - self._t0
            while steps and steps[0][0] <= elapsed:
                self._update(body, steps.pop(0)[1])
        return body

    def elapsed(self) -> float:
        """Seconds since `start()`: where a timeline added now begins."""
        return 0.0 if self._t0 is None else self._clock() - self._t0

    def finished(self) -> bool:
        """Every timeline has played out."""
        return not any(self._timelines.values())

    # -- serving -----------------------------------------------------------------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled (HTTPS with `ssl_context`); `await tg.start(sim.serve)` returns the port."""
        self.start()
        await serve(self.handle, host, port, ssl_context=ssl_context, task_status=task_status)

    def _take_fault(self, task_id: int | None) -> Fault | None:
        for fault in self._faults:
            if fault.task_id is None or fault.task_id == task_id:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def handle(self, request: Request) -> Response:
        """Answer one request."""
        if request.path.startswith("/_sim/"):
            return self._control(request)
        match = _TASK_PATH.match(request.path)
        if request.method != "GET" or match is None:
            return _json(404, {"code": 404, "message": "not found"})
        task_id = int(match.group(1))
        self.requests += 1
        self.requests_by_task[task_id] = self.requests_by_task.get(task_id, 0) + 1
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _json(401, {"code": 401, "message": "invalid token"})
        fault = self._take_fault(task_id)
        if fault is not None:
            return await self._fault_response(fault, task_id)
        body = self.current(task_id)
        if body is None:
            return _json(404, {"code": 404, "message": "task not found"})
        return _json(200, body)

    async def _fault_response(self, fault: Fault, task_id: int) -> Response:
        kind = fault.kind
        if kind in ("500", "502", "503", "401", "403", "404"):
            return _json(int(kind), {"code": int(kind), "message": "simulated fault"})
        if kind == "429":
            headers = (("Content-Type", "application/json"),) + (
                (("Retry-After", fault.retry_after),) if fault.retry_after is not None else ()
            )
            return Response(429, b'{"code":429,"message":"lower QPS or request a higher quota"}', headers)
        if kind == "timeout":
            await anyio.sleep(self.timeout_seconds)
            return _json(504, {})
        if kind == "malformed":
            return Response(200, b'{"id": 1, "status": "runn')
        if kind == "empty":
            return Response(200, b"")
        if kind == "wrong_type":
            return _json(200, [1, 2, 3])
        if kind == "huge":
            return Response(
                200, b'{"id":' + str(task_id).encode() + b',"status":"running","pad":"' + b"x" * (2 << 20) + b'"}'
            )
        # "envelope": the same task wrapped as {code, message, data}
        body = self.current(task_id)
        return _json(
            200,
            {"code": 0, "message": "ok", "data": copy.deepcopy(body)}
            if body
            else {"code": 404, "message": "not found"},
        )

    def _control(self, request: Request) -> Response:
        try:
            payload = json.loads(request.body) if request.body else {}
        except ValueError:
            return _json(400, {"message": "body must be JSON"})
        if request.path == "/_sim/stats":
            return _json(200, {"requests": self.requests, "by_task": self.requests_by_task})
        if request.path == "/_sim/faults" and request.method == "POST" and isinstance(payload, dict):
            try:
                self.inject(
                    str(payload.get("kind")),
                    int(payload.get("times", 1)),
                    payload.get("task_id"),
                    payload.get("retry_after"),
                )
            except (ValueError, TypeError) as exc:
                return _json(400, {"message": str(exc)})
            return _json(200, {"ok": True})
        match = _SIM_TASK_PATH.match(request.path)
        if match:
            task_id = int(match.group(1))
            if request.method == "DELETE":
                self.remove(task_id)
                return _json(200, {"ok": True})
            if request.method == "POST" and isinstance(payload, dict):
                self.set(task_id, **payload)
                return _json(200, self._tasks[task_id])
        return _json(404, {"message": "unknown control endpoint"})


def _json(status: int, doc: Any) -> Response:
    return Response(status, json.dumps(doc, ensure_ascii=False).encode())


def calling_hours(zone: tzinfo, *, open_now: bool, now: datetime | None = None) -> list[list[str]]:
    """`option.startTime` for a window open now in `zone` (from two hours ago to two hours on), or one that is closed
    now (opening in three hours, for an hour): campaigns that call in Tokyo hours while the watcher runs in UTC."""
    local = (now or datetime.now(UTC)).astimezone(zone)
    start, length = (local - timedelta(hours=2), 4) if open_now else (local + timedelta(hours=3), 1)
    end = start + timedelta(hours=length)
    return [[f"{start:%H:%M}", f"{end:%H:%M}"]]  # may cross midnight: "22:30"-"02:30" is one window


def demo_scenario(sim: Simulator, scale: float = 1.0) -> list[int]:
    """Campaigns that, within ~30 s × scale, start, progress, stall, stop, resume, finish and fail, all calling in
    Tokyo hours open now; and one whose window in Tokyo is closed now, which the watcher polls slowly and never calls
    stalled (with `sim.timestamps` "offset" or "naive", the watcher finds that zone from the API alone)."""

    def at(t: float) -> float:
        return t * scale

    calling = {"startDate": "2026-11-01", "startTime": calling_hours(sim.zone, open_now=True)}

    def option(**extra: Any) -> dict[str, Any]:
        return {**task_body(0, "")["option"], **calling, **extra}

    sim.add_task(1001, "Spring renewal reminders", status="pending", total=1200, option=option())
    sim.timeline(
        1001,
        [(at(3), {"status": "running", "progress": 0})]
        + [(at(3 + 2 * i), {"progress": 10 * i, "collectionRate": 30 + i}) for i in range(1, 10)]
        + [
            (
                at(23),
                {
                    "status": "done",
                    "progress": 100,
                    "collectionRate": 41,
                    "summary": "1,200 numbers dialled; 812 answered; 41% confirmed their renewal.",
                    "suggestion": "Call the 388 unanswered numbers again on a weekday evening.",
                },
            )
        ],
    )
    sim.add_task(
        1002,
        "Clinic appointment confirmations",
        status="running",
        progress=40,
        total=300,
        collectionRate=55,
        option=option(),
    )
    sim.timeline(1002, [(at(5), {"progress": 50}), (at(9), {"progress": 60}), (at(14), {"status": "stop.abnormal"})])
    sim.add_task(
        1003,
        "Customer satisfaction survey",
        status="running",
        progress=20,
        total=800,
        collectionRate=18,
        option=option(),
    )
    sim.timeline(
        1003,
        [
            (at(16), {"status": "stop.operate"}),
            (at(19), {"status": "running"}),
            (at(22), {"progress": 70}),
            (at(27), {"status": "done", "progress": 100, "summary": "Survey complete.", "suggestion": "None."}),
        ],
    )
    sim.add_task(
        1004,
        "Evening follow-up calls",
        status="running",
        progress=35,
        total=500,
        collectionRate=22,
        option=option(startTime=calling_hours(sim.zone, open_now=False)),
    )
    return [1001, 1002, 1003, 1004]
