"""The crash test of replicas: three `watcher run` processes (the installed CLI) on one PostgreSQL, a scripted campaign
of 60 tasks over the simulator; one replica is killed with kill -9 at random moments (20 trials or more) and restarted,
another is cut from the database by a proxy on 127.0.0.1 for three lease times, then let back.

It must show: no event lost, no transition announced twice under different ids, and every takeover within two
intervals. The figures are printed; `UPDATE_RELIABILITY=1` writes them to docs/reliability.md. `CRASH_TRIALS` and
`CRASH_SEED` change the number of kills and the random moments.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
import psycopg
import pytest

from watcher import config as config_mod
from watcher.cli_run import open_components
from watcher.simulator import Simulator

from .conftest import Receiver
from .test_cli import WATCHER, env
from .test_postgres import on_postgres, transitions, until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TASKS = 60
INTERVAL = 1.5  # watch.interval, and the lease time
STEP = 6.0  # seconds each state of a task lasts: longer than a takeover and a poll, so that every state is seen
TRIALS = int(os.environ.get("CRASH_TRIALS", "20"))
SEED = int(os.environ.get("CRASH_SEED", "11"))
RELIABILITY = Path(__file__).parent.parent / "docs" / "reliability.md"


class CutProxy:
    """A TCP proxy on 127.0.0.1 to the database that can be cut: while cut, open connections are dropped and new ones
    hang unanswered (a network partition, not a polite refusal); restored, it forwards again."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._scopes: set[anyio.CancelScope] = set()
        self._restored = anyio.Event()
        self._restored.set()

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
            await listener.serve(self._handle)

    def cut(self) -> None:
        self._restored = anyio.Event()
        for scope in list(self._scopes):
            scope.cancel()

    def restore(self) -> None:
        self._restored.set()

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            await self._restored.wait()  # while cut, a new connection waits here, unanswered
            with anyio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    async with await anyio.connect_tcp(*self._upstream) as upstream, anyio.create_task_group() as tg:
                        tg.start_soon(_pump, client, upstream)
                        tg.start_soon(_pump, upstream, client)
                finally:
                    self._scopes.discard(scope)


async def _pump(source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    await sink.send_eof()


class Replicas:
    """The replica processes: start, kill -9, stop; each known by its pid (part of its replica id)."""

    def __init__(self, logs: Path, token: str) -> None:
        self._logs = logs
        self._env = env(token)
        self.procs: dict[str, anyio.abc.Process] = {}
        self._files: list[IO[bytes]] = []
        self._configs: dict[str, Path] = {}
        self._runs = 0

    async def start(self, name: str, config: Path | None = None) -> None:
        self._configs[name] = config or self._configs[name]
        self._runs += 1
        log = (self._logs / f"{name}-{self._runs}.log").open("wb")
        self._files.append(log)
        self.procs[name] = await anyio.open_process(
            [WATCHER, "run", "-c", str(self._configs[name]), "--log-format", "json"],
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    async def kill(self, name: str) -> None:
        self.procs[name].kill()
        await self.procs[name].wait()

    async def stop_all(self) -> list[int]:
        codes = []
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            for proc in self.procs.values():
                codes.append(await proc.wait())
        for f in self._files:
            f.close()
        return codes


async def leases(url: str) -> list[tuple[str, str, str]]:
    """(kind, key, owner) of every valid lease."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("SELECT to_regclass('voicefox_watcher.leases')")
        if (await cursor.fetchone()) == (None,):
            return []
        cursor = await conn.execute(
            "SELECT l.kind, l.key, l.owner FROM voicefox_watcher.leases l JOIN voicefox_watcher.replicas r"
            " ON r.id = l.owner WHERE r.expires_at > now() ORDER BY l.kind, l.key"
        )
        return [(k, key, o) for k, key, o in await cursor.fetchall()]


def pid_of(owner: str) -> int:
    return int(owner.split("/")[-2])


def campaign(sim: Simulator, *, script: bool) -> dict[tuple[str, str], str]:
    """The campaign's tasks, pending; with `script`, their timelines from now on. Return the transitions it must
    announce: (task, event type) -> the status after it."""
    expected: dict[tuple[str, str], str] = {}
    for i in range(TASKS):
        task_id = 1001 + i
        start = 1.0 + i * 1.0  # one task a second: kills land all through the campaign
        end = "done" if i % 2 == 0 else "stop.abnormal"
        if script:
            now = sim.elapsed()
            sim.timeline(
                task_id,
                [
                    (now + start, {"status": "running"}),
                    (now + start + STEP, {"status": "stop.operate"}),
                    (now + start + 2 * STEP, {"status": "running"}),
                    (now + start + 3 * STEP, {"status": end, "progress": 100 if end == "done" else 0}),
                ],
            )
        else:
            sim.add_task(task_id, status="pending", progress=0)
        subject = str(task_id)
        expected[(subject, "voicefox.task.observed")] = "pending"
        expected[(subject, "voicefox.task.started")] = "running"
        expected[(subject, "voicefox.task.stopped")] = "stop.operate"
        expected[(subject, "voicefox.task.resumed")] = "running"
        expected[(subject, "voicefox.task.finished" if end == "done" else "voicefox.task.failed")] = end
    return expected


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[tuple[CutProxy, int]]:
    from urllib.parse import urlsplit

    parts = urlsplit(postgres_url)
    cut = CutProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    async with anyio.create_task_group() as tg:
        port = await tg.start(cut.serve)
        yield cut, port
        cut.restore()
        tg.cancel_scope.cancel()


async def test_three_replicas_lose_nothing_and_announce_nothing_twice_through_kills_and_a_cut(
    simulator: tuple[Simulator, str],
    receiver: Receiver,
    tmp_path: Path,
    pg: str,
    proxy: tuple[CutProxy, int],
) -> None:
    sim, api = simulator
    expected = campaign(sim, script=False)
    tasks = sorted({int(subject) for subject, _ in expected})
    cut, proxy_port = proxy
    direct = pg
    port = direct.rsplit(":", 1)[1].split("/", 1)[0]
    through_proxy = direct.replace(f":{port}/", f":{proxy_port}/")
    configs = {}
    for name, url in (("a", direct), ("b", direct), ("c", through_proxy)):
        cfg = on_postgres(tmp_path / f"{name}.toml", api, sim.token, receiver.url, tasks, url, lease=f"{INTERVAL}s")
        text = cfg.read_text().replace('interval = "200ms"', f'interval = "{INTERVAL}s"\nadaptive = false')
        cfg.write_text(text.replace('[[notifiers]]\nkind = "log"\nname = "log"\n', ""))
        configs[name] = cfg
    rng = random.Random(SEED)
    replicas = Replicas(tmp_path, sim.token)
    everything = {("task", str(t)) for t in tasks} | {("receiver", "hook"), ("watcher", "api")}

    def covered_without(pid: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            held = await leases(direct)
            return {(k, key) for k, key, o in held if pid_of(o) != pid} == everything and not any(
                pid_of(o) == pid for _, _, o in held
            )

        return check

    def sharing(pid: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            held = await leases(direct)
            return {(k, key) for k, key, _ in held} == everything and any(pid_of(o) == pid for _, _, o in held)

        return check

    takeovers: list[float] = []
    rejoins: list[float] = []
    started = time.monotonic()
    try:
        for name in ("a", "b", "c"):
            await replicas.start(name, configs[name])
        for name in ("a", "b", "c"):
            await until(sharing(replicas.pid(name)), within=30)

        async def observed() -> bool:
            return {subject for subject, kind in transitions(receiver) if kind == "voicefox.task.observed"} == {
                str(t) for t in tasks
            }

        await until(observed, within=30)
        campaign(sim, script=True)  # every task seen pending: now the campaign plays
        for trial in range(TRIALS):
            if trial == TRIALS // 2:
                cut_takeover, cut_rejoin = await cut_one(cut, replicas, covered_without, sharing)
            victim = rng.choice(["a", "b"])
            await anyio.sleep(rng.uniform(0.0, INTERVAL))  # a random moment: mid-poll, mid-delivery, mid-round
            pid = replicas.pid(victim)
            await replicas.kill(victim)
            killed = time.monotonic()
            await until(covered_without(pid), within=30)
            takeovers.append(time.monotonic() - killed)
            await replicas.start(victim)
            restarted = time.monotonic()
            await until(sharing(replicas.pid(victim)), within=30)
            rejoins.append(time.monotonic() - restarted)

        async def all_delivered() -> bool:
            return {key for key in transitions(receiver)} >= set(expected) and sim.finished()

        with anyio.move_on_after(120):  # then what is missing is reported below
            await until(all_delivered, within=math.inf)
    finally:
        codes = await replicas.stop_all()
    elapsed = time.monotonic() - started
    seen = transitions(receiver)
    lost = sorted(set(expected) - set(seen))
    twice = {key: ids for key, ids in seen.items() if len(ids) > 1}
    unexpected = sorted(set(seen) - set(expected))
    wrong = {key: seen_status for key, seen_status in statuses(receiver).items() if expected.get(key) != seen_status}
    redelivered = len(receiver.requests) - len({json.loads(r.body)["id"] for r in receiver.requests})
    pending = await pending_rows(direct)
    figures = {
        "replicas": 3,
        "tasks": TASKS,
        "trials": len(takeovers),
        "seed": SEED,
        "interval_s": INTERVAL,
        "lease_s": INTERVAL,
        "events_expected": len(expected),
        "events_lost": len(lost),
        "announced_twice_under_different_ids": len(twice),
        "sent_again_under_the_same_id": redelivered,
        "pending_after_stop": pending,
        "takeover_after_kill_s": summary(takeovers),
        "takeover_after_kill_intervals_max": round(max(takeovers) / INTERVAL, 2),
        "takeover_after_cut_s": round(cut_takeover, 2),
        "rejoin_after_restart_s": summary(rejoins),
        "rejoin_after_cut_restored_s": round(cut_rejoin, 2),
        "duration_s": round(elapsed, 1),
    }
    print("\nreplica crash test:", json.dumps(figures, indent=2))
    if os.environ.get("UPDATE_RELIABILITY"):
        write_reliability(figures)
    assert codes == [0, 0, 0]
    assert not lost, lost
    assert not twice, twice
    assert not unexpected, unexpected
    assert not wrong, wrong
    assert pending == 0
    assert max(takeovers) <= 2 * INTERVAL, takeovers
    assert cut_takeover <= 2 * INTERVAL


async def cut_one(
    cut: CutProxy,
    replicas: Replicas,
    covered_without: Callable[[int], Callable[[], Awaitable[bool]]],
    sharing: Callable[[int], Callable[[], Awaitable[bool]]],
) -> tuple[float, float]:
    """Cut replica c from the database for three lease times; return how long until its work was taken over, and
    how long after the cut ended until it had a share again."""
    pid = replicas.pid("c")
    cut.cut()
    cut_at = time.monotonic()
    await until(covered_without(pid), within=30)
    takeover = time.monotonic() - cut_at
    await anyio.sleep(max(0.0, cut_at + 3 * INTERVAL - time.monotonic()))  # the cut lasts this long, by design
    cut.restore()
    restored = time.monotonic()
    await until(sharing(pid), within=60)
    return takeover, time.monotonic() - restored


def statuses(receiver: Receiver) -> dict[tuple[str, str], str]:
    return {
        (body["subject"], body["type"]): body["data"]["task"]["status"]
        for body in (json.loads(r.body) for r in receiver.requests)
    }


async def pending_rows(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("SELECT count(*) FROM voicefox_watcher.outbox WHERE state = 'pending'")
        row = await cursor.fetchone()
        return int(row[0]) if row else 0


def summary(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 2),
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


def write_reliability(figures: dict[str, Any]) -> None:
    """Rewrite the figures' section of docs/reliability.md, between its markers."""
    text = RELIABILITY.read_text(encoding="utf-8")
    begin, end = "<!-- crash-test:begin -->", "<!-- crash-test:end -->"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    k, c, r = figures["takeover_after_kill_s"], figures["takeover_after_cut_s"], figures["rejoin_after_restart_s"]
    table = "\n".join(
        [
            f"Measured {when} on this project's CI machine (2 cores), seed {figures['seed']}, "
            f"{figures['duration_s']} s in all:",
            "",
            "| | |",
            "|---|---|",
            f"| replicas, tasks | {figures['replicas']}, {figures['tasks']} |",
            f"| `watch.interval`, `store.lease` | {figures['interval_s']} s, {figures['lease_s']} s |",
            f"| kill -9 trials | {figures['trials']} |",
            f"| transitions expected | {figures['events_expected']} |",
            f"| **lost** | **{figures['events_lost']}** |",
            f"| **announced twice under different ids** | **{figures['announced_twice_under_different_ids']}** |",
            f"| sent again under the same id (at-least-once) | {figures['sent_again_under_the_same_id']} |",
            f"| pending in the outbox after the stop | {figures['pending_after_stop']} |",
            f"| takeover after kill -9: min / median / max | {k['min']} / {k['median']} / {k['max']} s "
            f"(max {figures['takeover_after_kill_intervals_max']} intervals) |",
            f"| takeover after the cut from the database | {c} s |",
            f"| a restarted replica has its share again after | {r['min']} / {r['median']} / {r['max']} s |",
            f"| the cut replica has its share again after the cut ends | {figures['rejoin_after_cut_restored_s']} s |",
        ]
    )
    RELIABILITY.write_text(f"{head}{begin}\n{table}\n{end}{tail}", encoding="utf-8")


async def test_a_replica_cut_from_the_database_stops_working_before_its_leases_run_out_and_comes_back(
    simulator: tuple[Simulator, str],
    receiver: Receiver,
    tmp_path: Path,
    pg: str,
    proxy: tuple[CutProxy, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim, api = simulator
    for task_id in (1, 2, 3):
        sim.add_task(task_id, status="running")
    cut, proxy_port = proxy
    port = pg.rsplit(":", 1)[1].split("/", 1)[0]
    cfg = on_postgres(
        tmp_path / "w.toml", api, sim.token, receiver.url, [1, 2, 3], pg.replace(f":{port}/", f":{proxy_port}/"), "3s"
    )
    monkeypatch.setenv("TEST_VOICEFOX_TOKEN", sim.token)
    async with open_components(config_mod.load(cfg), shared=True) as parts, anyio.create_task_group() as tg:
        coordinator = parts.coordinator
        assert coordinator is not None
        await tg.start(parts.daemon.run)
        await tg.start(coordinator.run)
        assert parts.daemon.owned() == {1, 2, 3}

        async def stepped_back() -> bool:
            return not parts.daemon.owned()

        async def back() -> bool:
            return parts.daemon.owned() == {1, 2, 3} and coordinator.holds_leases()

        cut.cut()
        await until(stepped_back, within=10)
        async with await psycopg.AsyncConnection.connect(pg) as conn:  # directly, not through the proxy
            row = await (
                await conn.execute(
                    "SELECT count(*), bool_and(r.expires_at > now()) FROM voicefox_watcher.leases l"
                    " JOIN voicefox_watcher.replicas r ON r.id = l.owner WHERE l.owner = %s",
                    (coordinator.me,),
                )
            ).fetchone()
        assert row == (6, True)  # 3 tasks, 2 receivers, the API's outages: all still its own when it stopped
        assert not coordinator.holds_leases()
        cut.restore()
        await until(back, within=20)
        parts.dispatcher.shutdown()
        tg.cancel_scope.cancel()
