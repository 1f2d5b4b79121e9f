"""Crash safety end to end: the installed `watcher` under `kill -9`, SIGTERM mid-delivery and a race for the store.

Everything runs on 127.0.0.1: the simulator and the receivers in this process, the daemon as a subprocess.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
import pytest

from watcher.httpserver import Request, Response, serve
from watcher.model import EventType
from watcher.simulator import Simulator

from .conftest import Receiver
from .test_cli import SECRET, WATCHER, env, read_all

pytestmark = pytest.mark.anyio

OK = Response(204, b"")
UNAVAILABLE = Response(503, b"")
SEED = int(os.environ.get("WATCHER_CRASH_SEED", "20261123"))  # fixed; overridable to explore other schedules
TRIALS = 32

OBSERVED, STARTED, PROGRESSED, FINISHED = (
    EventType.OBSERVED,
    EventType.STARTED,
    EventType.PROGRESSED,
    EventType.FINISHED,
)
STOPPED, TIMED_OUT, FAILED = EventType.STOPPED, EventType.TIMED_OUT, EventType.FAILED
RESUMED, CHANGED = EventType.RESUMED, EventType.CHANGED


def write_config(
    path: Path,
    api_url: str,
    token: str,
    hook_url: str,
    tasks: list[int],
    *,
    interval: str = "100ms",
    delivery: str = "",
) -> Path:
    """A config with one signed webhook and the given `[delivery]` lines; the store is `state.db` beside it."""
    path.touch(mode=0o600)  # it names a webhook secret
    path.write_text(
        f"""
[api]
base_url = "{api_url}"
token = "${{TEST_VOICEFOX_TOKEN}}"
timeout = "1s"

[watch]
tasks = {tasks}
interval = "{interval}"
stall_after = "1h"
# Stopped tasks resume in these scripts: poll them at the same pace as the others.
slow_interval = "{interval}"

[store]
path = "state.db"

[delivery]
{delivery}

[[notifiers]]
kind = "webhook"
name = "hook"
url = "{hook_url}"
secret = "{SECRET}"
"""
    )
    return path


@dataclasses.dataclass(frozen=True)
class StoreView:
    """What a store holds, read with plain sqlite3 (the daemon may be running, dead, or not have created it yet)."""

    snapshots: dict[int, dict[str, Any]]
    outbox: dict[str, int]  # state -> rows, for every receiver
    events: list[tuple[str, int, str, dict[str, Any]]]  # (id, task_id, type, body) in insertion order


def read_store(path: Path) -> StoreView:
    if not path.exists():  # connecting would create it: leave that to the daemon
        return StoreView({}, {}, [])
    try:
        with closing(sqlite3.connect(path, timeout=10)) as db:
            snapshots = {tid: json.loads(snap) for tid, snap in db.execute("SELECT task_id, snapshot FROM tasks")}
            outbox = dict(db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())
            events = [
                (eid, tid, type_, json.loads(body))
                for eid, tid, type_, body in db.execute("SELECT id, task_id, type, body FROM events ORDER BY rowid")
            ]
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):  # killed (or caught) before its schema existed
            raise
        return StoreView({}, {}, [])
    return StoreView(snapshots, outbox, events)


# -- the scripted campaign ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Step:
    """Set these fields; the watcher must then announce exactly `expect` (type, milestone) for this transition."""

    fields: dict[str, Any]
    expect: tuple[tuple[str, int | None], ...]


def s(expect: tuple[tuple[str, int | None], ...] = (), **fields: Any) -> Step:
    return Step(fields, expect)


def p(milestone: int) -> tuple[str, int | None]:
    return (PROGRESSED, milestone)


def t(type_: str) -> tuple[str, int | None]:
    return (type_, None)


# Each task's first step is its state when first seen. No (previous, current) pair repeats within a task, so a
# transition seen under two different event ids can only be a duplicate.
TEMPLATES: list[list[Step]] = [
    [
        s((t(OBSERVED),), status="pending", progress=0),
        s((t(STARTED),), status="running"),
        s(progress=4),  # a change below the progress step: recorded, announced to nobody
        s((p(10),), progress=12),
        s(progress=18),
        s((p(30),), progress=31),
        s((t(STOPPED),), status="stop.operate"),
        s((t(RESUMED),), status="running"),
        s((p(40),), progress=47, collectionRate=20),
        s(collectionRate=25),
        s((t(TIMED_OUT),), status="stop.timeout"),
        s((t(RESUMED), p(50)), status="running", progress=53),
        s((p(60),), progress=68),
        s((t(CHANGED),), status="suspended"),  # a status the watcher does not know
        s((t(CHANGED),), status="running"),
        s((p(70),), progress=79),
        s((p(90),), progress=91),
        s((t(FINISHED),), status="done", progress=100),
    ],
    [
        s((t(OBSERVED),), status="running", progress=40),
        s(progress=45),
        s((p(50),), progress=50),
        s((t(FAILED),), status="stop.abnormal"),
        s((t(RESUMED),), status="running", progress=52),
        s((p(60),), progress=61),
        s((t(STOPPED),), status="stop.operate"),
        s((t(RESUMED), p(70)), status="running", progress=75),
        s((p(80),), progress=83),
        s((t(TIMED_OUT),), status="stop.timeout"),
        s((t(RESUMED),), status="running", progress=88),
        s((p(90),), progress=99),
        s((t(FAILED),), status="stop.abnormal"),
    ],
    [
        s((t(OBSERVED),), status="pending", progress=0),
        s((t(STARTED),), status="running"),
        *[s((p(10 * i),), progress=10 * i) for i in range(1, 9)],
        s((t(STOPPED),), status="stop.operate"),
        s((t(CHANGED),), status="queued"),
        s((t(CHANGED),), status="running", progress=85),
        s((p(90),), progress=95),
        s((t(FINISHED),), status="done", progress=100),
    ],
]
# Three waves of the three templates (tasks 101-103, 201-203, 301-303): a wave's tasks change only once the
# previous wave has played out, so the campaign lasts through every trial.
CAMPAIGN: dict[int, list[Step]] = {100 * wave + i: steps for wave in (1, 2, 3) for i, steps in enumerate(TEMPLATES, 1)}


class Campaign:
    """Plays CAMPAIGN on the simulator, one step at a time per task, each held until the store has recorded it."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self.cursor = dict.fromkeys(CAMPAIGN, 0)
        self.target: dict[int, dict[str, Any]] = {}
        for task_id, steps in CAMPAIGN.items():
            sim.add_task(task_id, f"Campaign {task_id}", **steps[0].fields)
            self.target[task_id] = dict(steps[0].fields)

    def _recorded(self, task_id: int, view: StoreView) -> bool:
        snap = view.snapshots.get(task_id)
        return snap is not None and all(snap.get(k) == v for k, v in self.target[task_id].items())

    def _done(self, task_id: int, view: StoreView) -> bool:
        return self.cursor[task_id] + 1 == len(CAMPAIGN[task_id]) and self._recorded(task_id, view)

    def advance(self, view: StoreView) -> None:
        """Move every task of the current wave whose state the store has recorded to its next step."""
        for task_id, steps in CAMPAIGN.items():
            if any(not self._done(other, view) for other in CAMPAIGN if other // 100 < task_id // 100):
                continue
            if self.cursor[task_id] + 1 < len(steps) and self._recorded(task_id, view):
                self.cursor[task_id] += 1
                fields = steps[self.cursor[task_id]].fields
                self._sim.set(task_id, **fields)
                self.target[task_id].update(fields)

    def complete(self, view: StoreView) -> bool:
        """Every task is at its last step and the store has recorded it."""
        return all(self._done(task_id, view) for task_id in CAMPAIGN)

    def played(self) -> int:
        """How many steps have been set so far."""
        return sum(self.cursor.values())

    @staticmethod
    def expected() -> dict[int, list[tuple[str, str, int | None, int | None]]]:
        """Per task, in order: (type, status, progress, milestone) of every event the campaign must produce."""
        out: dict[int, list[tuple[str, str, int | None, int | None]]] = {}
        for task_id, steps in CAMPAIGN.items():
            state: dict[str, Any] = {}
            out[task_id] = []
            for step in steps:
                state.update(step.fields)
                out[task_id] += [(type_, state["status"], state["progress"], m) for type_, m in step.expect]
        return out


def event_summary(body: dict[str, Any]) -> tuple[str, str, int | None, int | None]:
    """(type, status, progress, milestone) of a stored event or a CloudEvents body."""
    data = body["data"]
    return (body["type"], data["task"]["status"], data["task"]["progress"], data.get("milestone"))


def transition_key(body: dict[str, Any]) -> str:
    """What makes a transition itself, whatever its id: the task, the type, and the states before and after."""
    data = body["data"]
    return json.dumps([body["subject"], body["type"], data["previous"], data["task"], data.get("milestone")])


def replies_script(rng: random.Random, n: int) -> list[Response]:
    """The receiver's answers in order: runs of 204 ("up") and 503 ("down") of random length."""
    out: list[Response] = []
    while len(out) < n:
        out += [OK if rng.random() < 0.6 else UNAVAILABLE] * rng.randint(1, 6)
    return out[:n]


@asynccontextmanager
async def watcher_run(
    cfg: Path, token: str, stdout: int | IO[bytes] = subprocess.PIPE, stderr: int | IO[bytes] = subprocess.PIPE
) -> AsyncIterator[anyio.abc.Process]:
    """`watcher run -c cfg` as a subprocess, killed on the way out if a failed test left it running."""
    async with await anyio.open_process(
        [WATCHER, "run", "-c", str(cfg)], env=env(token), stdout=stdout, stderr=stderr
    ) as proc:
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()


async def copy_log(stream: anyio.abc.ByteReceiveStream | None, log: IO[bytes], started: anyio.Event) -> None:
    """Copy the daemon's output to `log` until it ends; set `started` once it logged `watcher.started`."""
    assert stream is not None
    tail = b""
    async for chunk in stream:
        log.write(chunk)
        tail = tail[-100:] + chunk
        if b'"watcher.started"' in tail:
            started.set()


@pytest.mark.slow
async def test_kill_9_at_random_moments_loses_nothing_and_duplicates_only_under_the_same_id(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    rng = random.Random(SEED)
    cfg = write_config(
        tmp_path / "w.toml",
        url,
        sim.token,
        receiver.url,
        sorted(CAMPAIGN),
        delivery='timeout = "2s"\nbackoff_max = "300ms"',
    )
    db = tmp_path / "state.db"
    campaign = Campaign(sim)
    script = replies_script(rng, 5000)
    receiver.replies = list(script)
    kills_with_pending = 0
    info = f"seed {SEED} (set WATCHER_CRASH_SEED to replay another); daemon output in {tmp_path / 'watcher.log'}"

    with (tmp_path / "watcher.log").open("ab") as log:
        for _ in range(TRIALS):
            async with watcher_run(cfg, sim.token, log, subprocess.STDOUT) as proc:
                await anyio.sleep(rng.uniform(0.05, 0.9))  # a random moment: the randomness is the point
                campaign.advance(read_store(db))  # some changes land while the daemon runs ...
                await anyio.sleep(rng.uniform(0.0, 0.5))
                proc.kill()
                await proc.wait()
            view = read_store(db)
            kills_with_pending += view.outbox.get("pending", 0) > 0
            campaign.advance(view)  # ... and some while it is dead

        played_in_trials, requests_in_trials = campaign.played(), len(receiver.requests)
        # The receiver is up from now on; play what is left of the campaign and let everything drain.
        receiver.replies.clear()
        answered = [script[i] if i < len(script) else receiver.default for i in range(len(receiver.requests))]
        async with (
            watcher_run(cfg, sim.token) as proc,
            anyio.create_task_group() as tg,
        ):
            started = anyio.Event()
            tg.start_soon(copy_log, proc.stdout, log, started)
            with anyio.fail_after(30):
                await started.wait()  # SIGTERM before its handler is installed would kill it, not stop it
                while not (campaign.complete(view := read_store(db)) and view.outbox.get("pending", 0) == 0):
                    campaign.advance(view)
                    await anyio.sleep(0.05)  # bounded poll of another process's database
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                code = await proc.wait()
    assert code == 0, info
    answered += [receiver.default] * (len(receiver.requests) - len(answered))  # the final run: all accepted

    output = (tmp_path / "watcher.log").read_bytes()
    crash = output.find(b"Traceback")
    assert crash < 0, f"{info}:\n{output[max(0, crash - 1500) : crash + 3000].decode(errors='replace')}"
    starts = output.count(b'"watcher.started"')
    stats = (
        f"{info}; {TRIALS} kills: {TRIALS + 1 - starts} before the daemon had started, {kills_with_pending} with"
        f" deliveries pending; {played_in_trials}/{campaign.played()} steps and {requests_in_trials} requests"
        f" ({answered.count(UNAVAILABLE)} refused) before the final run"
    )
    assert kills_with_pending > 0, f"no kill left a delivery pending: the trials missed their point; {stats}"
    view = read_store(db)
    # Zero lost, nothing invented: the store holds exactly the campaign's transitions, each once, in order.
    for task_id, expected in Campaign.expected().items():
        recorded = [event_summary(body) for _, tid, _, body in view.events if tid == task_id]
        assert recorded == expected, f"task {task_id}; {stats}"
    assert len(view.events) == sum(len(e) for e in Campaign.expected().values()), stats
    assert view.outbox == {"delivered": len(view.events)}, stats

    # Every stored event was accepted (answered 2xx) by the receiver at least once, under its own id.
    stored = {eid: body for eid, _, _, body in view.events}
    accepted = {r.headers["webhook-id"] for r, reply in zip(receiver.requests, answered, strict=True) if reply == OK}
    never = sorted(set(stored) - accepted)
    assert not never, f"{len(never)} events never accepted, e.g. {[stored[i] for i in never[:3]]}; {stats}"

    # Redeliveries are the same event: every id received is a stored one with the same body, and no transition
    # arrived under two different ids.
    ids_by_transition: dict[str, set[str]] = {}
    for r in receiver.requests:
        body = json.loads(r.body)
        assert r.headers["webhook-id"] == body["id"], stats
        assert body["id"] in stored, f"an event the store never recorded: {body}; {stats}"
        assert event_summary(body) == event_summary(stored[body["id"]]), stats
        ids_by_transition.setdefault(transition_key(body), set()).add(body["id"])
    doubled = {k: v for k, v in ids_by_transition.items() if len(v) > 1}
    assert not doubled, f"the same transition under several ids: {doubled}; {stats}"
    assert len(ids_by_transition) == len(stored), stats
    accepted_total = sum(1 for reply in answered if reply == OK)
    # The figures docs/reliability.md quotes (pytest -s shows them).
    print(
        f"\nkill -9: {stats}; {len(stored)} events, 0 lost, {accepted_total} accepted deliveries (redeliveries"
        f" {accepted_total - len(stored)}, all under the first id)"
    )


# -- SIGTERM while a delivery is in flight ------------------------------------------------------------------------


class HoldingReceiver:
    """A webhook receiver that, while `hold` is set, keeps each request open until `release` is set."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.arrived = anyio.Event()
        self.release = anyio.Event()
        self.hold = True
        self.url = ""

    async def handle(self, request: Request) -> Response:
        self.requests.append(request)
        self.arrived.set()
        if self.hold:
            await self.release.wait()
        return OK


async def wait_for_log_line(
    stream: anyio.abc.ByteReceiveStream | None, predicate: Callable[[dict[str, Any]], bool], seen: bytearray
) -> None:
    """Read the daemon's JSON log lines into `seen` until one satisfies `predicate`."""
    assert stream is not None
    while True:
        for line in bytes(seen).splitlines():
            if line.startswith(b"{") and predicate(json.loads(line)):
                return
        seen += await stream.receive()


async def sigterm_during_delivery(
    simulator: tuple[Simulator, str], tmp_path: Path, grace: str, answer_after_sigterm: bool
) -> tuple[HoldingReceiver, int, bytes, StoreView]:
    """Start `watcher run`, SIGTERM it while its first delivery is held open, and return how it ended."""
    sim, url = simulator
    sim.add_task(7, status="running", progress=20)
    rcv = HoldingReceiver()
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, rcv.handle)
        rcv.url = f"http://127.0.0.1:{port}/hook"
        cfg = write_config(
            tmp_path / "w.toml",
            url,
            sim.token,
            rcv.url,
            [7],
            interval="200ms",
            delivery=f'timeout = "60s"\nbackoff_max = "1s"\nshutdown_grace = "{grace}"',
        )
        out = bytearray()
        async with watcher_run(cfg, sim.token) as proc:
            with anyio.fail_after(15):
                await rcv.arrived.wait()
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):  # a hang guard only: an un-shortened attempt would wait 60 s
                await wait_for_log_line(proc.stdout, lambda line: line["event"] == "watcher.stopping", out)
                if answer_after_sigterm:
                    rcv.release.set()  # answered after shutdown began, within the grace
                code = await proc.wait()
            out += await read_all(proc.stdout)
        view = read_store(tmp_path / "state.db")
        if not answer_after_sigterm:
            # Restart against a receiver that answers at once: the pending row goes out again.
            rcv.hold = False
            async with watcher_run(cfg, sim.token) as proc:
                with anyio.fail_after(15):
                    await wait_for_log_line(proc.stdout, lambda line: line["event"] == "delivery.sent", bytearray())
                proc.send_signal(signal.SIGTERM)
                with anyio.fail_after(15):
                    assert await proc.wait() == 0
        rcv.release.set()
        tg.cancel_scope.cancel()
    return rcv, code, bytes(out), view


async def test_sigterm_mid_delivery_answered_within_the_grace_exits_0_with_it_delivered(
    simulator: tuple[Simulator, str], tmp_path: Path
) -> None:
    rcv, code, out, view = await sigterm_during_delivery(simulator, tmp_path, "10s", answer_after_sigterm=True)
    assert code == 0, out.decode()
    assert b"Traceback" not in out
    assert len(rcv.requests) == 1
    assert view.outbox == {"delivered": 1}
    assert [eid for eid, *_ in view.events] == [rcv.requests[0].headers["webhook-id"]]


async def test_sigterm_mid_delivery_not_answered_within_the_grace_exits_0_and_restart_resends_the_same_id(
    simulator: tuple[Simulator, str], tmp_path: Path
) -> None:
    rcv, code, out, view = await sigterm_during_delivery(simulator, tmp_path, "500ms", answer_after_sigterm=False)
    assert code == 0, out.decode()
    assert b"Traceback" not in out
    assert view.outbox == {"pending": 1}  # left for the next start, not marked delivered nor dropped
    first, again = (r.headers["webhook-id"] for r in rcv.requests)
    assert first == again == view.events[0][0]
    assert read_store(tmp_path / "state.db").outbox == {"delivered": 1}


# -- two daemons racing for one store -----------------------------------------------------------------------------


async def wait_and_note(proc: anyio.abc.Process, exited: list[anyio.abc.Process], first_exit: anyio.Event) -> None:
    await proc.wait()
    exited.append(proc)
    first_exit.set()


async def test_two_daemons_started_at_once_on_one_store_exactly_one_runs(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running", progress=10)
    for attempt in range(3):
        here = tmp_path / str(attempt)
        here.mkdir()
        cfg = write_config(here / "w.toml", url, sim.token, receiver.url, [1])
        seen = len(receiver.requests)
        async with watcher_run(cfg, sim.token) as a, watcher_run(cfg, sim.token) as b:
            first_exit = anyio.Event()
            exited: list[anyio.abc.Process] = []
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait_and_note, a, exited, first_exit)
                    tg.start_soon(wait_and_note, b, exited, first_exit)
                    await first_exit.wait()
                    loser = exited[0]
                    winner = b if loser is a else a
                    winner_ran_on = winner.returncode is None
                    await receiver.wait_for(seen + 1)  # the other one polls and delivers
                    winner.send_signal(signal.SIGTERM)
                # both have exited here
            stderr = await read_all(loser.stderr)
        assert loser.returncode == 1, stderr.decode()
        assert b"already in use" in stderr
        assert b"Traceback" not in stderr
        assert winner_ran_on
        assert winner.returncode == 0
        bodies = [json.loads(r.body) for r in receiver.requests[seen:]]
        assert [b["type"] for b in bodies] == [OBSERVED]  # one daemon polled this store, once
