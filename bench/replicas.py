"""Replicas on PostgreSQL against SQLite: the same polling load on 1, 2 and 3 `watcher run` sharing one database, and
on one watcher with its SQLite file.

    .venv/bin/python bench/replicas.py                      # 1000 tasks every 2 s; about 4 minutes on 2 cores
    .venv/bin/python bench/replicas.py --tasks 200 --window 8 --configs sqlite:1,postgres:2   # a smoke run

Against the stand-in API (`bench/standin.py`, every task running and calling all day, nothing changing) and a
PostgreSQL server of its own on 127.0.0.1 (`tools/pgserver.py`, fsync on, as a real one), for each configuration:
start the replicas, wait until every task is stored (and, on PostgreSQL, every task's lease held, each replica holding
a share), warm up, then measure over a window in which nothing changes at the API:

- polls/s: task GETs the stand-in served ÷ the window (wanted: tasks ÷ interval);
- watcher CPU / poll: the replicas' user + system CPU together ÷ those GETs;
- database CPU / poll: the PostgreSQL server's processes (postmaster and backends) likewise;
- state rows written / poll: writes of task state and outbox in the window (counted from the data: task versions,
  events, outbox rows and attempts) ÷ polls: a poll that changes nothing must write nothing, so this must be 0;
- lease and replica rows written / s, commits / s (from the server's statistics, which backends report up to 10 s
  late: the warm-up lasts that long, so that the window counts the steady state), WAL bytes / s: what keeping the
  replicas together costs the database at rest;
- SQLite: write syscalls / poll of the watcher (`/proc/PID/io`), and the growth of its WAL file.

Results go to stdout and, with `--out`, to a Markdown file (bench/results-replicas.md is the last full run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import psycopg
from run import PYTHON, Processes, cpu_seconds, free_port, io_syscw, machine_facts
from standin import DEFAULT_TOKEN, FIRST_ID

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from tools.pgserver import server_binaries, temporary_postgres  # noqa: E402 - after the repository is on the path

SCHEMA = "voicefox_watcher"
LEASE_TABLES = ("leases", "replicas")
STATS_LAG = 11.0  # seconds until every backend has reported its statistics


@dataclasses.dataclass
class Result:
    """One configuration's window."""

    engine: str
    replicas: int
    window: float = 0.0
    polls: int = 0
    watcher_cpu: float = 0.0
    db_cpu: float | None = None
    state_rows: int | None = None
    lease_rows: int | None = None
    commits: int | None = None
    wal_bytes: int | None = None
    syscw: int | None = None
    wal_growth: int | None = None
    by_table: dict[str, int] = dataclasses.field(default_factory=dict)  # rows written in the window, per table

    def row(self, wanted: float) -> str:
        per_poll = 1e6 / self.polls if self.polls else 0.0
        polls_s = self.polls / self.window if self.window else 0.0
        db = f"{self.db_cpu * per_poll:.0f} µs" if self.db_cpu is not None else "–"
        state = f"{self.state_rows / self.polls:.3f}" if self.state_rows is not None and self.polls else "–"
        rest = (
            f"{self.lease_rows / self.window:.1f} | {self.commits / self.window:.1f} | "
            f"{self.wal_bytes / self.window / 1024:.1f} KiB"
            if self.lease_rows is not None and self.commits is not None and self.wal_bytes is not None
            else f"– | – | {(self.wal_growth or 0) / self.window / 1024:.1f} KiB (WAL file)"
        )
        sqlite_writes = f"{self.syscw / self.polls:.3f}" if self.syscw is not None and self.polls else "–"
        return (
            f"| {self.engine} | {self.replicas} | {polls_s:.0f} ({wanted:.0f}) | {self.watcher_cpu * per_poll:.0f} µs"
            f" | {db} | {state} | {rest} | {sqlite_writes} |"
        )


HEADER = (
    "| store | replicas | polls/s (wanted) | watcher CPU / poll | database CPU / poll | state rows written / poll "
    "| lease + replica rows / s | commits / s | WAL / s | write syscalls / poll |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


class Bench:
    """The stand-in, the database, and the replicas of one configuration after another."""

    def __init__(self, args: argparse.Namespace, url: str) -> None:
        self.args = args
        self.url = url
        self.procs = Processes()
        self.http = httpx.AsyncClient(timeout=30.0, trust_env=False)
        self.tmp = Path(tempfile.mkdtemp(prefix="voicefox-bench-replicas-"))
        self.base_url = ""
        self._runs = 0

    async def start_standin(self) -> None:
        standin = await self.procs.start(
            PYTHON, str(BENCH / "standin.py"), "--tasks", str(self.args.tasks), "--first-id", str(FIRST_ID)
        )
        assert standin.stdout is not None
        port = json.loads(await asyncio.wait_for(standin.stdout.readline(), 60))["port"]
        self.base_url = f"http://127.0.0.1:{port}"

    async def task_requests(self) -> int:
        r = await self.http.get(f"{self.base_url}/_bench/stats")
        return int(r.json()["task_requests"])

    def config(self, workdir: Path, engine: str, ops_port: int) -> Path:
        tasks = ", ".join(str(i) for i in range(FIRST_ID, FIRST_ID + self.args.tasks))
        store = f'url = "{self.url}"' if engine == "postgres" else f'path = "{workdir / "state.db"}"'
        path = workdir / f"watcher-{ops_port}.toml"
        path.write_text(
            f'[api]\nbase_url = "{self.base_url}"\ntoken = "{DEFAULT_TOKEN}"\n\n'
            f'[watch]\ntasks = [{tasks}]\ninterval = "{self.args.interval:g}s"\nstall_after = "1d"\nconcurrency = 200\n\n'
            f"[store]\n{store}\n\n"
            f'[http]\nlisten = "127.0.0.1:{ops_port}"\n\n[log]\nlevel = "error"\nformat = "json"\n',
            encoding="utf-8",
        )
        path.chmod(0o600)
        return path

    async def one(self, engine: str, replicas: int) -> Result:
        self._runs += 1
        workdir = self.tmp / f"{self._runs:02d}-{engine}-{replicas}"
        workdir.mkdir()
        if engine == "postgres":
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")  # every configuration from scratch
        result = Result(engine, replicas)
        procs = []
        log = (workdir / "output.log").open("wb")
        try:
            for _ in range(replicas):
                ops_port = free_port()
                config = self.config(workdir, engine, ops_port)
                proc = await self.procs.start(self.args.watcher, "run", "-c", str(config), stdout=log, stderr=log)
                procs.append((proc, ops_port))
            for proc, ops_port in procs:
                await self.healthy(proc, ops_port)
            await self.settled(engine, workdir, [p.pid for p, _ in procs])
            # PostgreSQL's backends report their statistics up to 10 s late (PGSTAT_IDLE_INTERVAL): the first sights'
            # writes must be counted before the window, not in it.
            await asyncio.sleep(max(1.2 * self.args.interval + 2.0, STATS_LAG if engine == "postgres" else 0.0))
            await self.measure(result, engine, workdir, [psutil.Process(p.pid) for p, _ in procs])
        finally:
            for proc, _ in procs:
                await self.procs.stop(proc)
            log.close()
        if engine == "postgres" and self.args.debug_events:
            async with await psycopg.AsyncConnection.connect(self.url) as conn:
                rows = await (
                    await conn.execute("SELECT type, count(*) FROM voicefox_watcher.events GROUP BY type")
                ).fetchall()
                print("events:", rows)
        return result

    async def healthy(self, proc: asyncio.subprocess.Process, ops_port: int) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"a watcher exited with {proc.returncode}; see {self.tmp}")
            with contextlib.suppress(httpx.HTTPError):
                if (await self.http.get(f"http://127.0.0.1:{ops_port}/healthz", timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError("a watcher was not healthy within 90 s")

    async def settled(self, engine: str, workdir: Path, pids: list[int]) -> None:
        """Every task stored (its first sight written), and on PostgreSQL every task's lease held, each replica with a
        share: from then on nothing changes, and a poll should write nothing."""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if engine == "postgres":
                async with await psycopg.AsyncConnection.connect(self.url) as conn:
                    stored = await self.count(conn, "SELECT count(*) FROM voicefox_watcher.tasks")
                    leased = await self.count(
                        conn,
                        "SELECT count(*) FROM voicefox_watcher.leases l JOIN voicefox_watcher.replicas r ON r.id = l.owner"
                        " WHERE l.kind = 'task' AND r.expires_at > now()",
                    )
                    owners = await (
                        await conn.execute(
                            "SELECT DISTINCT l.owner FROM voicefox_watcher.leases l JOIN voicefox_watcher.replicas r"
                            " ON r.id = l.owner WHERE l.kind = 'task' AND r.expires_at > now()"
                        )
                    ).fetchall()
                if stored == leased == self.args.tasks and {int(o.split("/")[-2]) for (o,) in owners} == set(pids):
                    return
            else:
                with contextlib.suppress(sqlite3.Error), sqlite3.connect(workdir / "state.db") as db:
                    if db.execute("SELECT count(*) FROM tasks").fetchone()[0] == self.args.tasks:
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the tasks were not all stored and shared within 180 s; see {self.tmp}")

    @staticmethod
    async def count(conn: psycopg.AsyncConnection[tuple[int]], sql: str) -> int:
        try:
            row = await (await conn.execute(sql)).fetchone()
        except psycopg.errors.UndefinedTable:
            await conn.rollback()
            return -1
        return int(row[0]) if row else 0

    async def db_counters(self) -> tuple[dict[str, int], int, str, int]:
        """Rows written to each table (the server's statistics, which backends report up to a few seconds late),
        commits (likewise), the WAL position, and the writes of task state and outbox exactly, from the data itself:
        every write of a task bumps its version, events and outbox rows are only added, every attempt counted."""
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            exact = await (
                await conn.execute(
                    "SELECT (SELECT coalesce(sum(version), 0) FROM voicefox_watcher.tasks)"
                    " + (SELECT count(*) FROM voicefox_watcher.events)"
                    " + (SELECT count(*) + coalesce(sum(attempts), 0) FROM voicefox_watcher.outbox)"
                    " + (SELECT count(*) FROM voicefox_watcher.unseen)"
                )
            ).fetchone()
            rows = await (
                await conn.execute(
                    "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE schemaname = %s",
                    (SCHEMA,),
                )
            ).fetchall()
            commits = await (
                await conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            ).fetchone()
            lsn = await (await conn.execute("SELECT pg_current_wal_lsn()::text")).fetchone()
        assert commits is not None and lsn is not None and exact is not None
        return {str(name): int(n) for name, n in rows}, int(commits[0]), str(lsn[0]), int(exact[0])

    async def wal_bytes_since(self, lsn: str) -> int:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            row = await (await conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,))).fetchone()
        return int(row[0]) if row else 0

    def postgres_processes(self) -> list[psutil.Process]:
        """The server's processes: every process of the `postgres` user (this bench's server is the only one)."""
        found = []
        for proc in psutil.process_iter(["username", "name"]):
            if proc.info["username"] == "postgres" and proc.info["name"] == "postgres":
                found.append(proc)
        return found

    async def measure(self, result: Result, engine: str, workdir: Path, watchers: list[psutil.Process]) -> None:
        db_procs = self.postgres_processes() if engine == "postgres" else []

        def db_cpu() -> float:
            total = 0.0
            for proc in db_procs:
                with contextlib.suppress(psutil.Error):
                    total += cpu_seconds(proc)
            return total

        wal_file = workdir / "state.db-wal"
        before = await self.db_counters() if engine == "postgres" else None
        requests0, cpu0, dbcpu0 = await self.task_requests(), sum(cpu_seconds(p) for p in watchers), db_cpu()
        syscw0 = sum(io_syscw(p.pid) for p in watchers)
        wal0 = wal_file.stat().st_size if wal_file.exists() else 0
        started = time.monotonic()
        await asyncio.sleep(self.args.window)
        result.window = time.monotonic() - started
        result.polls = await self.task_requests() - requests0
        result.watcher_cpu = sum(cpu_seconds(p) for p in watchers) - cpu0
        if before is not None:
            after = await self.db_counters()
            result.db_cpu = db_cpu() - dbcpu0
            result.by_table = {t: n - before[0].get(t, 0) for t, n in after[0].items() if n != before[0].get(t, 0)}
            result.state_rows = after[3] - before[3]
            result.lease_rows = sum(result.by_table.get(t, 0) for t in LEASE_TABLES)
            result.commits = after[1] - before[1] - 1  # less this bench's own read of the counters
            result.wal_bytes = await self.wal_bytes_since(before[2])
        else:
            result.syscw = sum(io_syscw(p.pid) for p in watchers) - syscw0
            result.wal_growth = (wal_file.stat().st_size if wal_file.exists() else 0) - wal0

    async def close(self) -> None:
        await self.procs.stop_all()
        self.procs.kill_all_now()
        await self.http.aclose()


def report(results: list[Result], args: argparse.Namespace, facts: dict[str, str]) -> str:
    wanted = args.tasks / args.interval
    lines = [
        "# Replicas on PostgreSQL beside SQLite (bench/replicas.py)",
        "",
        f"{args.tasks} tasks every {args.interval:g} s (adaptive polling on; every task running and calling all day,"
        f" nothing changing), a {args.window:g} s window per configuration; lease = the default"
        f" ({max(args.interval, 5.0):g} s).",
        f"Machine: {facts['nproc']} cores, {facts['cpu']}, {facts['memory']}; {facts['python']}; {facts['date']};"
        f" git {facts['git']}; load {facts['loadavg']}.",
        f"Command: `{' '.join(sys.argv)}`",
        "",
        HEADER,
        *(r.row(wanted) for r in results),
        "",
        "Rows written in each window, by table (PostgreSQL): "
        + "; ".join(
            f"{r.replicas} replica(s): " + (", ".join(f"{t} {n}" for t, n in sorted(r.by_table.items())) or "none")
            for r in results
            if r.engine == "postgres"
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


async def amain(args: argparse.Namespace, bin_dir: Path) -> str:
    facts = machine_facts()
    with temporary_postgres(bin_dir, fsync=True) as url:
        bench = Bench(args, url)
        results = []
        try:
            await bench.start_standin()
            for item in args.configs.split(","):
                engine, _, count = item.partition(":")
                result = await bench.one(engine, int(count or 1))
                print(result.row(args.tasks / args.interval), flush=True)
                results.append(result)
        finally:
            await bench.close()
    return report(results, args, facts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--configs", default="sqlite:1,postgres:1,postgres:2,postgres:3")
    parser.add_argument("--watcher", default=str(Path(sys.executable).parent / "watcher"))
    parser.add_argument("--out", help="write the Markdown report here too")
    parser.add_argument("--debug-events", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    bin_dir = server_binaries()
    if bin_dir is None:
        print("no PostgreSQL server binaries: apt-get install postgresql", file=sys.stderr)
        return 2
    text = asyncio.run(amain(args, bin_dir))
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
