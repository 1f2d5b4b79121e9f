"""The benchmark: the watcher beside two bare-client floors, in one run, against one cheap local stand-in API.

    .venv/bin/python bench/run.py            # the full run (about 15 minutes on 2 cores)
    .venv/bin/python bench/run.py --quick    # a smoke run (about 2 minutes)
    .venv/bin/python bench/run.py --configs 1000@2 --contenders watcher-aiohttp --profile   # where the CPU goes

For each configuration (tasks @ interval) and each contender, one after the other against the same stand-in
(`bench/standin.py`, its own process): start the contender as a process, let it warm up, then measure over a window:
its CPU time (user + system, from /proc via psutil) ÷ the task GETs the stand-in served in that window; polls/s
sustained against the N/interval wanted; schedule lag p50/p99; peak RSS (VmHWM); and detection latency p50/p99:
K tasks flip from running to done at the stand-in at recorded times, and the latency is flip → the event at the local
webhook receiver (the watcher) or flip → the floor's poll that first sees the new status. Everything is on
127.0.0.1; every process started is stopped at the end, on Ctrl-C and on errors too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import psutil
from standin import DEFAULT_TOKEN, FIRST_ID, HttpProtocol, response

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
WEBHOOK_SECRET = "whsec_" + "YmVuY2gtc2VjcmV0LTAxMjM0NTY3ODk="  # base64 of a public 22-byte bench secret
CONTENDERS = {
    "floor-A": "floor A: httpx",
    "floor-B": "floor B: httpx + aiohttp",
    "watcher-httpx": "watcher, httpx",
    "watcher-aiohttp": "watcher, aiohttp",
}
DEFAULT_CONFIGS = "100@2,1000@2,5000@2,5000@10,10000@10"
QUICK_CONFIGS = "100@2,1000@2"
PROC_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
LAG_METRIC = re.compile(r'^voicefox_watcher_schedule_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.MULTILINE)
OBSERVED_METRIC = re.compile(r'^voicefox_watcher_events_total\{type="voicefox\.task\.observed"\} (\S+)$', re.MULTILINE)
POLLS_METRIC = re.compile(r'^voicefox_watcher_polls_total\{outcome="([^"]+)"\} (\S+)$', re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Setup:
    """One configuration: how many tasks, polled how often."""

    tasks: int
    interval: float

    @property
    def label(self) -> str:
        """E.g. "1,000 @ 2 s"."""
        return f"{self.tasks:,} @ {self.interval:g} s"

    @property
    def wanted(self) -> float:
        """Polls per second the schedule asks for."""
        return self.tasks / self.interval


@dataclasses.dataclass(frozen=True)
class Quantile:
    """A quantile; `over` when it lies past the largest finite bound or sample (shown as "> value")."""

    value: float
    over: bool = False


@dataclasses.dataclass
class Result:
    """What one contender did in one configuration."""

    setup: Setup
    contender: str
    window: float = 0.0
    polls: int = 0
    cpu: float = 0.0  # contender CPU seconds in the window
    lag_p50: Quantile | None = None
    lag_p99: Quantile | None = None
    lag_from_histogram: bool = False
    rss_peak: int = 0  # bytes (VmHWM)
    rss_end: int = 0  # bytes (VmRSS at the end of the window)
    detections: list[float | None] = dataclasses.field(default_factory=list)  # None: not seen within the grace
    poll_part: list[float] = dataclasses.field(default_factory=list)  # flip -> stand-in served the new body
    pipeline_part: list[float] = dataclasses.field(default_factory=list)  # served -> detected (watcher: webhook)
    grace: float = 0.0
    errors: int = 0
    write_syscalls: int = 0  # write(2)-family syscalls in the window (/proc/PID/io syscw): the store, logs
    cpu_system: float = 0.0  # of which in the kernel (socket sends and receives, epoll, SQLite I/O)
    machine_busy: float = 0.0  # CPU seconds every process on the machine used in the window
    standin_cpu: float = 0.0
    standin_requests: int = 0
    bench_cpu: float = 0.0
    failure: str = ""
    repeats: list[float] = dataclasses.field(default_factory=list)  # CPU per poll of every repeat (--repeat)
    window_at: tuple[float, float] = (0.0, 0.0)  # monotonic start and end of the window
    flips: dict[int, float] = dataclasses.field(default_factory=dict)  # task id -> flipped at (stand-in clock)
    served: dict[int, float | None] = dataclasses.field(default_factory=dict)  # task id -> new body first served

    @property
    def cpu_per_poll(self) -> float:
        """Seconds of CPU per poll."""
        return self.cpu / self.polls if self.polls else math.nan

    @property
    def polls_per_s(self) -> float:
        """Polls per second sustained in the window."""
        return self.polls / self.window if self.window else 0.0


# -- small helpers -----------------------------------------------------------------------------------------------


def free_port() -> int:
    """A port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def quantile(samples: Sequence[float | None], q: float) -> Quantile | None:
    """The q-quantile by linear interpolation; None samples (never seen) count as larger than any other."""
    if not samples:
        return None
    seen = sorted(s for s in samples if s is not None)
    missing = len(samples) - len(seen)
    ordered: list[float] = seen + [math.inf] * missing
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if math.isinf(ordered[hi]):
        return Quantile(seen[-1] if seen else 0.0, over=True)
    return Quantile(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> Quantile | None:
    """Prometheus's histogram_quantile: linear interpolation inside the bucket holding the q-th observation."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return Quantile(prev_le, over=True)
            if count == prev_count:
                return Quantile(le)
            return Quantile(prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count))
        prev_le, prev_count = le, count
    return None


def parse_metrics(text: str) -> tuple[list[tuple[float, float]], dict[str, float]]:
    """The schedule-lag histogram's cumulative buckets and the polls counter by outcome, from /metrics."""
    buckets = sorted((float(le), float(v)) for le, v in LAG_METRIC.findall(text))
    polls = {outcome: float(v) for outcome, v in POLLS_METRIC.findall(text)}
    return buckets, polls


def io_syscw(pid: int) -> int:
    """write(2)-family syscalls so far (sockets' send(2) is not among them)."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("syscw:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_status(pid: int, key: str) -> int:
    """A size from /proc/PID/status in bytes: "VmHWM" (peak resident set size), "VmRSS" (now)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU time of a process."""
    t = proc.cpu_times()
    return float(t.user + t.system)


def machine_busy() -> float:
    """CPU seconds used by everything on the machine so far (all CPUs, idle and iowait excluded)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0))


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM when the benchmark dies, even by SIGKILL; nothing outlives a run.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def child_env() -> dict[str, str]:
    """The environment for children: no proxy, so that 127.0.0.1 is asked directly."""
    env = {k: v for k, v in os.environ.items() if k not in PROC_PROXY_VARS}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def machine_facts() -> dict[str, str]:
    """What the numbers were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = []
    for dist in ("voicefox-watcher", "httpx", "httpcore", "aiohttp", "httpx-aiohttp", "anyio", "pydantic"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{dist} {metadata.version(dist)}")
    git = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git_exe = shutil.which("git") or "git"
        head = subprocess.run(  # noqa: S603 - git, fixed arguments
            [git_exe, "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603 - git, fixed arguments
            [git_exe, "-C", str(REPO), "status", "--porcelain", "--", "watcher"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        git = head + (" + uncommitted changes in watcher/" if dirty else "")
    load = os.getloadavg()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "packages": ", ".join(versions),
        "git": git,
        "loadavg": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min, at start)",
    }


# -- the processes -----------------------------------------------------------------------------------------------


class Processes:
    """Every process the benchmark started, so that all of them are stopped whatever happens."""

    def __init__(self) -> None:
        self._live: dict[int, asyncio.subprocess.Process] = {}

    async def start(self, *argv: str, stdout: Any = asyncio.subprocess.PIPE, stderr: Any = None) -> Any:
        """Start a child that dies with us; its standard input is a pipe we hold (closing it stops ours)."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=stdout,
            stderr=stderr,
            env=child_env(),
            cwd=str(REPO),
            preexec_fn=_die_with_parent,  # only a prctl, before exec
        )
        self._live[proc.pid] = proc
        return proc

    async def stop(self, proc: asyncio.subprocess.Process, grace: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; return the exit code."""
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        self._live.pop(proc.pid, None)
        return proc.returncode

    async def stop_all(self) -> None:
        """Stop every process still running."""
        for proc in list(self._live.values()):
            await self.stop(proc, grace=10.0)

    def kill_all_now(self) -> None:
        """Last resort, synchronous: SIGKILL whatever is left (by pid, only our own children)."""
        for pid, proc in list(self._live.items()):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._live.clear()


class Receiver:
    """The local webhook receiver: records when each task's first non-`observed` event arrives."""

    def __init__(self) -> None:
        self.received: dict[int, float] = {}
        self.types: dict[str, int] = defaultdict(int)
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: HttpProtocol(self.handle), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()

    def reset(self) -> None:
        """Forget what was received."""
        self.received.clear()
        self.types.clear()

    def handle(self, method: bytes, target: bytes, head: bytes, body: bytes) -> bytes:
        """A 2xx for every POST to /hook, after noting the time."""
        now = time.monotonic()
        if method != b"POST" or not target.startswith(b"/hook"):
            return response(404, b"{}")
        try:
            event = json.loads(body)
            kind = str(event.get("type", "?"))
            self.types[kind] += 1
            if kind.startswith("voicefox.task.") and kind != "voicefox.task.observed":
                self.received.setdefault(int(event["subject"]), now)
        except (ValueError, KeyError, TypeError, AttributeError):
            self.types["unreadable"] += 1
        return response(200, b"{}")


# -- the benchmark -----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    """How long each phase of one contender's run lasts."""

    warmup: float
    window: float
    flip_span: float  # flips happen at random times over this long, right after the window
    grace: float  # after the last flip, how long to wait for every flip to be seen
    flips: int


class Bench:
    """One stand-in, one receiver, the contenders one after the other."""

    def __init__(self, args: argparse.Namespace, setups: list[Setup]) -> None:
        self.args = args
        self.setups = setups
        self.procs = Processes()
        self.receiver = Receiver()
        self.tmp = Path(tempfile.mkdtemp(prefix="voicefox-bench-"))
        self.standin: asyncio.subprocess.Process | None = None
        self.standin_ps: psutil.Process | None = None
        self.base_url = ""
        self.http = httpx.AsyncClient(timeout=30.0, trust_env=False)
        self.results: list[Result] = []
        self.profiles: list[tuple[Setup, str, Path, Result]] = []
        self._runs = 0

    def timing(self, setup: Setup) -> Timing:
        """Warm-up, window and grace for a configuration (flags override)."""
        a = self.args
        if a.quick:
            warmup, window = setup.interval + 1.0, max(6.0, 3 * setup.interval)
        else:
            warmup, window = max(4.0, 1.2 * setup.interval + 2.0), min(20.0, max(16.0, 8 * setup.interval))
        warmup = a.warmup if a.warmup is not None else warmup
        window = a.window if a.window is not None else window
        grace = min(30.0, 1.5 * setup.interval + 5.0)
        flips = a.flips if a.flips is not None else max(10, min(100, setup.tasks // 10))
        return Timing(warmup, window, min(setup.interval, 4.0), grace, min(flips, setup.tasks))

    async def run(self) -> None:
        """Every configuration, every contender."""
        await self.receiver.start()
        await self._start_standin(max(s.tasks for s in self.setups))
        for setup in self.setups:
            runs: dict[str, list[Result]] = defaultdict(list)
            for _ in range(self.args.repeat):  # rounds alternate the contenders, so drifts in load hit them alike
                for contender in self.args.contenders:
                    result = await self._one(setup, contender)
                    runs[contender].append(result)
                    print(summary_line(result), flush=True)
            for contender in self.args.contenders:
                # The run with the median CPU per poll stands for the contender (failed runs only if all failed).
                ok = sorted((r for r in runs[contender] if r.polls), key=lambda r: r.cpu_per_poll)
                chosen = ok[(len(ok) - 1) // 2] if ok else runs[contender][0]
                chosen.repeats = [r.cpu_per_poll for r in ok]
                self.results.append(chosen)

    async def close(self) -> None:
        """Stop everything started."""
        try:
            await self.procs.stop_all()
        finally:
            self.procs.kill_all_now()
            self.receiver.close()
            await self.http.aclose()
            if not self.args.keep_tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)

    async def _start_standin(self, tasks: int) -> None:
        err = (self.tmp / "standin.err").open("wb")
        self.standin = await self.procs.start(
            PYTHON,
            str(BENCH / "standin.py"),
            "--tasks",
            str(tasks),
            "--first-id",
            str(FIRST_ID),
            "--max-seconds",
            "3600",
            stderr=err,
        )
        assert self.standin.stdout is not None
        line = await asyncio.wait_for(self.standin.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"the stand-in did not start: {(self.tmp / 'standin.err').read_text()[-2000:]}")
        port = json.loads(line)["port"]
        self.base_url = f"http://127.0.0.1:{port}"
        self.standin_ps = psutil.Process(self.standin.pid)

    async def _stats(self) -> dict[str, Any]:
        r = await self.http.get(f"{self.base_url}/_bench/stats")
        r.raise_for_status()
        stats: dict[str, Any] = r.json()
        return stats

    async def _one(self, setup: Setup, contender: str) -> Result:
        t = self.timing(setup)
        result = Result(setup, contender, grace=t.grace)
        await self.http.post(f"{self.base_url}/_bench/reset")
        self.receiver.reset()
        self._runs += 1
        workdir = self.tmp / f"{self._runs:02d}-{setup.tasks}-{setup.interval:g}-{contender}"
        workdir.mkdir()
        is_watcher = contender.startswith("watcher")
        ops_port = free_port()
        log = (workdir / "output.log").open("wb")
        try:
            if is_watcher:
                config = self._watcher_config(setup, contender.removeprefix("watcher-"), workdir, ops_port)
                proc = await self.procs.start(
                    self.args.watcher, "run", "-c", str(config), "--log-level", "warning", stdout=log, stderr=log
                )
            else:
                proc = await self.procs.start(
                    PYTHON,
                    str(BENCH / "floor.py"),
                    *("--base-url", self.base_url, "--token", DEFAULT_TOKEN),
                    *("--tasks", str(setup.tasks), "--first-id", str(FIRST_ID)),
                    *("--interval", str(setup.interval), "--concurrency", str(self.args.concurrency)),
                    *("--transport", "aiohttp" if contender == "floor-B" else "httpx"),
                    *("--max-seconds", str(t.warmup + t.window + t.grace + 300)),
                    *("--out", str(workdir / "floor.json")),
                    stderr=log,
                )
            try:
                await self._measure(setup, contender, proc, ops_port, t, result, workdir)
            finally:
                code = await self.procs.stop(proc)
                if is_watcher and code not in (0, None) and not result.failure:
                    result.failure = f"exit code {code}"
            if not is_watcher:
                self._read_floor(workdir / "floor.json", result)
        except (OSError, RuntimeError, httpx.HTTPError, TimeoutError, ValueError) as exc:
            result.failure = f"{exc.__class__.__name__}: {exc}"
        finally:
            log.close()
        if result.failure:
            tail = (workdir / "output.log").read_text(errors="replace")[-1500:]
            print(f"!! {setup.label} {contender}: {result.failure}\n{tail}", file=sys.stderr, flush=True)
        return result

    def _watcher_config(self, setup: Setup, transport: str, workdir: Path, ops_port: int) -> Path:
        tasks = ", ".join(str(i) for i in range(FIRST_ID, FIRST_ID + setup.tasks))
        sections: dict[str, list[str]] = {
            "api": [f'base_url = "{self.base_url}"', f'token = "{DEFAULT_TOKEN}"', f'transport = "{transport}"'],
            "watch": [
                f"tasks = [{tasks}]",
                f'interval = "{setup.interval:g}s"',
                'stall_after = "1d"',
                f"concurrency = {self.args.concurrency}",
            ],
            "store": [f'path = "{workdir / "state.db"}"'],
            "delivery": ['shutdown_grace = "2s"'],
            "http": [f'listen = "127.0.0.1:{ops_port}"'],
            "log": ['level = "warning"', 'format = "json"'],
        }
        for option in self.args.watcher_option:
            section, _, line = option.partition(".")
            sections.setdefault(section, []).append(line)
        text = "".join(
            f"[{name}]\n" + "".join(f"{line}\n" for line in lines) + "\n" for name, lines in sections.items()
        )
        text += f"""\
[[notifiers]]
kind = "webhook"
name = "bench"
url = "http://127.0.0.1:{self.receiver.port}/hook"
secret = "{WEBHOOK_SECRET}"
events = ["*", "!voicefox.task.observed", "!voicefox.task.progressed"]
"""
        path = workdir / "watcher.toml"
        path.write_text(text, encoding="utf-8")
        path.chmod(0o600)
        return path

    async def _ready(self, proc: Any, is_watcher: bool, ops_port: int) -> None:
        deadline = time.monotonic() + 90
        if not is_watcher:
            line = await asyncio.wait_for(proc.stdout.readline(), 90)
            if not line:
                raise RuntimeError("the floor did not start")
            return
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"the watcher exited with {proc.returncode} before it was healthy")
            with contextlib.suppress(httpx.HTTPError):
                r = await self.http.get(f"http://127.0.0.1:{ops_port}/healthz", timeout=2)
                if r.status_code == 200:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError("the watcher was not healthy within 90 s")

    async def _scrape(self, ops_port: int) -> tuple[list[tuple[float, float]], dict[str, float]]:
        r = await self.http.get(f"http://127.0.0.1:{ops_port}/metrics", timeout=10)
        r.raise_for_status()
        return parse_metrics(r.text)

    async def _measure(
        self, setup: Setup, contender: str, proc: Any, ops_port: int, t: Timing, result: Result, workdir: Path
    ) -> None:
        is_watcher = contender.startswith("watcher")
        before = await self._stats()
        await self._ready(proc, is_watcher, ops_port)
        ps = psutil.Process(proc.pid)
        # Warm-up: at least `warmup` seconds, and every task polled once (the first round writes every task's first
        # snapshot), within a bound.
        started = time.monotonic()
        bound = started + t.warmup + 2 * setup.interval + 60
        while time.monotonic() < bound:
            await asyncio.sleep(0.25)
            if proc.returncode is not None:
                raise RuntimeError(f"exited with {proc.returncode} during warm-up")
            if time.monotonic() - started >= t.warmup:
                if is_watcher:
                    # Every task's first sight (an `observed` event and a snapshot written) is behind us.
                    r = await self.http.get(f"http://127.0.0.1:{ops_port}/metrics", timeout=10)
                    found = OBSERVED_METRIC.search(r.text)
                    if found is None or float(found.group(1)) >= setup.tasks:
                        break
                else:
                    stats = await self._stats()
                    if stats["task_requests"] - before["task_requests"] >= setup.tasks:
                        break

        # The window: steady polling, nothing changes at the stand-in.
        hist0, polls0 = await self._scrape(ops_port) if is_watcher else ([], {})
        s0 = await self._stats()
        me = psutil.Process()
        cpu0, sin0, me0, w0 = cpu_seconds(ps), cpu_seconds(self.standin_ps), cpu_seconds(me), io_syscw(proc.pid)
        sys0, busy0 = ps.cpu_times().system, machine_busy()
        t0 = time.monotonic()
        profiler = await self._start_profiler(proc.pid, t.window, workdir) if self.args.profile else None
        await asyncio.sleep(max(0.0, t0 + t.window - time.monotonic()))
        cpu1, sin1, me1, w1 = cpu_seconds(ps), cpu_seconds(self.standin_ps), cpu_seconds(me), io_syscw(proc.pid)
        sys1, busy1 = ps.cpu_times().system, machine_busy()
        t1 = time.monotonic()
        result.rss_end = proc_status(proc.pid, "VmRSS")
        s1 = await self._stats()
        hist1, polls1 = await self._scrape(ops_port) if is_watcher else ([], {})
        if proc.returncode is not None:
            raise RuntimeError(f"exited with {proc.returncode} during the window")
        result.window_at = (t0, t1)
        result.window = t1 - t0
        result.polls = s1["task_requests"] - s0["task_requests"]
        result.cpu = cpu1 - cpu0
        result.cpu_system = sys1 - sys0
        result.machine_busy = busy1 - busy0
        result.standin_cpu = sin1 - sin0
        result.standin_requests = result.polls + s1["other_requests"] - s0["other_requests"]
        result.bench_cpu = me1 - me0
        result.write_syscalls = w1 - w0
        if is_watcher:
            buckets = [(le, c1 - c0) for (le, c1), (_, c0) in zip(hist1, hist0, strict=False)] if hist0 else hist1
            result.lag_p50 = histogram_quantile(0.5, buckets)
            result.lag_p99 = histogram_quantile(0.99, buckets)
            result.lag_from_histogram = True
            result.errors = int(
                sum(v for k, v in polls1.items() if k != "ok") - sum(v for k, v in polls0.items() if k != "ok")
            )
        if profiler is not None:
            await self._finish_profiler(profiler)
            self.profiles.append((setup, contender, workdir / "profile.txt", result))

        # Detection: right after the window, K tasks go from running to done at random times over a span, and each
        # is timed until it is seen (watcher: its event at the receiver; floor: the stand-in served the new body and
        # the floor's own record is read from its report), or the grace after the last flip runs out.
        rng = random.Random(f"{self.args.seed}-{setup.tasks}-{setup.interval}")
        flip_ids = rng.sample(range(FIRST_ID, FIRST_ID + setup.tasks), t.flips)
        flip_offsets = sorted(rng.uniform(0.0, t.flip_span) for _ in flip_ids)
        flips: dict[int, float] = {}
        await self._flip(time.monotonic(), flip_offsets, flip_ids, flips)
        deadline = time.monotonic() + t.grace
        while time.monotonic() < deadline:
            if is_watcher:
                if all(i in self.receiver.received for i in flips):
                    break
            else:
                served = (await self._stats())["flips"]
                if all(served.get(str(i), [0, None])[1] is not None for i in flips):
                    await asyncio.sleep(0.3)
                    break
            await asyncio.sleep(0.2)
        final = await self._stats()
        result.rss_peak = proc_status(proc.pid, "VmHWM")
        result.flips = flips
        result.served = {int(k): v[1] for k, v in final["flips"].items()}
        if is_watcher:
            self._detections(result, self.receiver.received)

    def _detections(self, result: Result, detected: dict[int, float]) -> None:
        for task_id, flipped in result.flips.items():
            seen = detected.get(task_id)
            result.detections.append(None if seen is None else seen - flipped)
            s = result.served.get(task_id)
            if s is not None:
                result.poll_part.append(s - flipped)
                if seen is not None:
                    result.pipeline_part.append(seen - s)

    def _read_floor(self, path: Path, result: Result) -> None:
        report = json.loads(path.read_text(encoding="utf-8"))
        t0, t1 = result.window_at
        lags = [lag for at, lag in zip(report["lag_at"], report["lag"], strict=True) if t0 <= at < t1]
        result.lag_p50 = quantile(lags, 0.5)
        result.lag_p99 = quantile(lags, 0.99)
        result.errors = int(report["errors"])
        self._detections(result, {int(k): v[0] for k, v in report["seen"].items()})

    async def _flip(self, t0: float, offsets: list[float], ids: list[int], flips: dict[int, float]) -> None:
        for offset, task_id in zip(offsets, ids, strict=True):
            await asyncio.sleep(max(0.0, t0 + offset - time.monotonic()))
            r = await self.http.post(f"{self.base_url}/_bench/flip/{task_id}?status=done")
            flips[task_id] = float(r.json()["t"])

    async def _start_profiler(self, pid: int, seconds: float, workdir: Path) -> Any:
        spy = shutil.which("py-spy", path=str(Path(PYTHON).parent)) or shutil.which("py-spy")
        if spy is None:
            raise RuntimeError("--profile needs py-spy: .venv/bin/pip install -r bench/requirements.txt")
        return await self.procs.start(
            spy,
            "record",
            *("--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(self.args.profile_rate)),
            *("--format", "raw", "--function", "--output", str(workdir / "profile.txt")),
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "py-spy.log").open("wb"),
        )

    async def _finish_profiler(self, profiler: Any) -> None:
        try:
            await asyncio.wait_for(profiler.wait(), 30)
        finally:
            await self.procs.stop(profiler)


# -- reporting ---------------------------------------------------------------------------------------------------


def ms(q: Quantile | None, digits: int = 0) -> str:
    """A quantile in milliseconds."""
    if q is None:
        return "n/a"
    return f"{'> ' if q.over else ''}{q.value * 1000:,.{digits}f} ms"


def secs(q: Quantile | None) -> str:
    """A quantile in seconds."""
    if q is None:
        return "n/a"
    return f"{'> ' if q.over else ''}{q.value:.2f} s"


def lag_text(q: Quantile | None, histogram: bool) -> str:
    """Schedule lag: ms below a second, else seconds; "≈" when read from histogram buckets."""
    if q is None:
        return "n/a"
    text = ms(q, 1) if q.value < 1 else secs(q)
    return ("≈" if histogram and not q.over else "") + text


def floor_b(results: list[Result], setup: Setup) -> Result | None:
    """Floor B's result for a configuration."""
    return next((r for r in results if r.setup == setup and r.contender == "floor-B" and r.polls), None)


def summary_line(r: Result) -> str:
    """One progress line."""
    if r.failure and not r.polls:
        return f"{r.setup.label:>14}  {r.contender:<16} FAILED: {r.failure}"
    det = quantile(r.detections, 0.99)
    return (
        f"{r.setup.label:>14}  {r.contender:<16} {r.cpu_per_poll * 1000:6.2f} ms/poll  "
        f"{r.polls_per_s:7.1f}/{r.setup.wanted:.0f} polls/s  lag p99 {lag_text(r.lag_p99, r.lag_from_histogram)}  "
        f"rss {r.rss_peak / 2**20:.0f} MB  detect p99 {secs(det)}"
    )


def results_table(results: list[Result]) -> str:
    """The main Markdown table."""
    head = (
        "| tasks @ interval | contender | CPU / poll | × floor B | CPU (% of 1 core) | polls/s (wanted) "
        "| lag p50 | lag p99 | peak RSS | detection p50 | detection p99 | flips |\n"
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    rows = []
    for r in results:
        if r.failure and not r.polls:
            rows.append(f"| {r.setup.label} | {CONTENDERS[r.contender]} | failed: {r.failure} |||||||||||")
            continue
        b = floor_b(results, r.setup)
        ratio = f"{r.cpu_per_poll / b.cpu_per_poll:.2f}" if b is not None else "n/a"
        missed = sum(d is None for d in r.detections)
        rows.append(
            f"| {r.setup.label} | {CONTENDERS[r.contender]} | {r.cpu_per_poll * 1000:.2f} ms | {ratio} "
            f"| {r.cpu / r.window * 100:.0f} % | {r.polls_per_s:,.0f} ({r.setup.wanted:,.0f}) "
            f"| {lag_text(r.lag_p50, r.lag_from_histogram)} | {lag_text(r.lag_p99, r.lag_from_histogram)} "
            f"| {r.rss_peak / 2**20:.0f} MB | {secs(quantile(r.detections, 0.5))} "
            f"| {secs(quantile(r.detections, 0.99))} | {len(r.detections)}{f' ({missed} missed)' if missed else ''} |"
        )
    return head + "\n".join(rows) + "\n"


def details_table(results: list[Result]) -> str:
    """Where detection time goes, what the stand-in and the bench cost, store writes, errors."""
    head = (
        "| tasks @ interval | contender | flip → served p50 / p99 | served → detected p50 / p99 "
        "| RSS at window end | kernel share of CPU | write syscalls / poll | poll errors | stand-in CPU / request "
        "| stand-in + bench CPU | anything else on the machine |\n"
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    rows = []
    for r in results:
        if not r.polls:
            continue
        rows.append(
            f"| {r.setup.label} | {CONTENDERS[r.contender]} "
            f"| {secs(quantile(r.poll_part, 0.5))} / {secs(quantile(r.poll_part, 0.99))} "
            f"| {ms(quantile(r.pipeline_part, 0.5))} / {ms(quantile(r.pipeline_part, 0.99))} "
            f"| {r.rss_end / 2**20:.0f} MB | {r.cpu_system / r.cpu * 100 if r.cpu else 0:.0f} % "
            f"| {r.write_syscalls / r.polls:.2f} | {r.errors} "
            f"| {r.standin_cpu / max(1, r.standin_requests) * 1e6:.0f} µs "
            f"| {(r.standin_cpu + r.bench_cpu) / r.window * 100:.0f} % of 1 core "
            f"| {max(0.0, r.machine_busy - r.cpu - r.standin_cpu - r.bench_cpu) / r.window * 100:.0f} % of 1 core |"
        )
    return head + "\n".join(rows) + "\n"


def repeats_note(results: list[Result]) -> str:
    """With --repeat: every run's CPU per poll, the median's row being the one shown."""
    rows = [r for r in results if len(r.repeats) > 1]
    if not rows:
        return ""
    lines = ["Repeats (CPU / poll of each run, ms; the median run is the one in the tables):", ""]
    lines += [
        f"- {r.setup.label}, {CONTENDERS[r.contender]}: " + ", ".join(f"{c * 1000:.2f}" for c in r.repeats)
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def targets(results: list[Result]) -> str:
    """Issue 5 §2, checked against this run."""
    lines = []
    for r in results:
        if not r.contender.startswith("watcher") or not r.polls:
            continue
        b = floor_b(results, r.setup)
        name = f"{r.setup.label}, {CONTENDERS[r.contender]}"
        if b is not None:
            ratio = r.cpu_per_poll / b.cpu_per_poll
            verdict = "met" if ratio <= 1.25 else "MISSED"
            lines.append(f"- CPU / poll ≤ 1.25 × floor B — {name}: {ratio:.2f} × — {verdict}")
        det = quantile(r.detections, 0.99)
        if det is not None:
            limit = r.setup.interval + 0.5
            verdict = "met" if not det.over and det.value <= limit else "MISSED"
            lines.append(f"- detection p99 ≤ interval + 0.5 s ({limit:g} s) — {name}: {secs(det)} — {verdict}")
        if r.setup.tasks >= 5000 and r.setup.interval >= 10:
            sustained = r.polls_per_s >= 0.95 * r.setup.wanted
            lag_ok = r.lag_p99 is not None and not r.lag_p99.over and r.lag_p99.value < 1.0
            verdict = "met" if sustained and lag_ok else "MISSED"
            lines.append(
                f"- sustained with lag p99 < 1 s — {name}: {r.polls_per_s:,.0f} of {r.setup.wanted:,.0f} polls/s, "
                f"lag p99 {lag_text(r.lag_p99, True)} — {verdict}"
            )
        if r.setup.tasks >= 10_000:
            verdict = "met" if r.rss_peak <= 120 * 2**20 else "MISSED"
            lines.append(f"- peak RSS ≤ 120 MB — {name}: {r.rss_peak / 2**20:.0f} MB — {verdict}")
    return "\n".join(lines) + "\n"


def report(bench: Bench, facts: dict[str, str], command: str) -> str:
    """The whole Markdown report."""
    a = bench.args
    timings = "; ".join(
        f"{s.label}: warm-up {t.warmup:g} s, window {t.window:g} s, then {t.flips} flips over {t.flip_span:g} s "
        f"(each seen within {t.grace:g} s or missed)"
        for s in bench.setups
        for t in [bench.timing(s)]
    )
    out = [
        f"## Results: {facts['date']}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {facts['nproc']} CPUs ({facts['cpu']}), {facts['memory']}, {facts['os']}, {facts['python']}; "
        f"load average {facts['loadavg']}.",
        f"Software: {facts['packages']}; watcher at git {facts['git']}.",
        f"Settings: concurrency {a.concurrency} (floors: semaphore and pool; watcher: `watch.concurrency`); {timings}.",
        "",
        results_table(bench.results),
        "CPU / poll: the contender's user + system CPU in the window ÷ the task GETs the stand-in served in it. "
        "Lag: the floors measure it in their loop (exact quantiles); the watcher's (≈) are interpolated from the "
        "buckets of its `voicefox_watcher_schedule_lag_seconds` histogram (window delta, Prometheus "
        '`histogram_quantile` rule), so below 1 ms they only say "in the first bucket". Detection: flip at the '
        "stand-in → the watcher's event at the local webhook receiver, or → the floor's poll that first saw it; "
        '"missed" = not seen within the grace. Peak RSS: VmHWM (whole life, start-up included).',
        "",
        "Details:",
        "",
        details_table(bench.results),
        "Flip → served: the stand-in's clock, from the flip to the first GET that got the new body (the polling "
        "part of detection). Served → detected: from there to the event at the receiver (watcher: parse, detect, "
        "store, dispatch, POST) or to the floor's parse. Write syscalls: `syscw` of /proc/PID/io (SQLite and log "
        "writes; socket sends are not counted). Kernel share: system ÷ (user + system) CPU of the contender. "
        "Stand-in + bench, anything else: what else ran on the 2 cores during the window (the last from "
        "/proc/stat; other users of the machine make the numbers noisier).",
        "",
        repeats_note(bench.results),
        "Targets (issue 5 §2), from this run:",
        "",
        targets(bench.results),
    ]
    return "\n".join(out)


# -- profiles ----------------------------------------------------------------------------------------------------

AREAS = (
    ("watcher/", "watcher (own code)"),
    ("httpx_aiohttp/", "httpx-aiohttp"),
    ("aiohttp/", "aiohttp"),
    ("httpx/", "httpx"),
    ("httpcore/", "httpcore"),
    ("h11/", "h11"),
    ("anyio/", "anyio"),
    ("tenacity/", "tenacity"),
    ("pydantic", "pydantic"),
    ("prometheus_client/", "prometheus_client"),
    ("structlog/", "structlog"),
    ("sqlite3/", "sqlite3"),
    ("asyncio/", "asyncio"),
    ("selectors.py", "asyncio"),
    ("importlib", "importlib (imports at run time)"),
    ("json/", "json"),
    ("yarl/", "yarl"),
    ("multidict/", "multidict"),
)


def area_of(frame: str) -> str:
    """The package a py-spy frame belongs to."""
    where = frame[frame.rfind("(") + 1 :]
    for needle, name in AREAS:
        if needle in where:
            return name
    return "other (stdlib: ssl, selectors, importlib, ...)"


def is_own(frame: str) -> bool:
    """Whether a frame is the watcher's (or a floor's) own code."""
    where = frame[frame.rfind("(") + 1 :]
    return where.startswith(("watcher/", "floor.py"))


@dataclasses.dataclass
class Profile:
    """Sample counts from py-spy's raw (collapsed stacks) output."""

    total: int = 0
    self_n: dict[str, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    incl_n: dict[str, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    area_n: dict[str, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    calls_out: dict[tuple[str, str], int] = dataclasses.field(default_factory=lambda: defaultdict(int))

    @classmethod
    def read(cls, path: Path) -> Profile:
        """Parse a raw py-spy file."""
        prof = cls()
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
            if not frames or frames[-1].startswith("_worker (concurrent/futures/thread.py"):
                continue  # an idle executor thread waiting for work (its CPU time is 0)
            prof.total += count
            prof.self_n[frames[-1]] += count
            prof.area_n[area_of(frames[-1])] += count
            for frame in set(frames):
                prof.incl_n[frame] += count
            # Where own code calls into a library: each (caller, callee) once per stack, the innermost crossing
            # counted for the callee's whole subtree.
            crossings = set()
            for i in range(len(frames) - 1):
                if is_own(frames[i]) and not is_own(frames[i + 1]):
                    j = i + 1  # contextlib's wrappers are glue: name what they wrap
                    while j < len(frames) - 1 and "contextlib.py" in frames[j]:
                        j += 1
                    if not is_own(frames[j]):
                        crossings.add((frames[i], frames[j]))
            for crossing in crossings:
                prof.calls_out[crossing] += count
        return prof


def analyse_profile(path: Path, cpu_per_poll: float, top: int = 25) -> str:
    """Where one contender's CPU goes, per package, per own function and per call into a library."""
    prof = Profile.read(path)
    total = prof.total
    if not total:
        return "(no samples)\n"

    def share(n: int) -> str:
        return f"{n / total * 100:.1f} % | {n / total * cpu_per_poll * 1e6:,.0f} µs"

    def by_count(d: dict[Any, int]) -> list[tuple[Any, int]]:
        return sorted(d.items(), key=lambda kv: -kv[1])

    own_incl = {f: n for f, n in prof.incl_n.items() if is_own(f)}
    own_self = {f: n for f, n in prof.self_n.items() if is_own(f)}
    out = [f"{total:,} samples. Self time by package (where the CPU is, adds up to 100 %):", ""]
    out += ["| package | self | per poll |", "|---|--:|--:|"]
    out += [f"| {a} | {share(n)} |" for a, n in by_count(prof.area_n)]
    out += ["", f"Own code, top {top} functions by inclusive time (the function and all it calls):", ""]
    out += ["| function | inclusive | per poll | self per poll |", "|---|--:|--:|--:|"]
    out += [
        f"| `{f}` | {share(n)} | {own_self.get(f, 0) / total * cpu_per_poll * 1e6:,.0f} µs |"
        for f, n in by_count(own_incl)[:top]
    ]
    out += ["", f"Own code calling into libraries, top {top} calls by inclusive time of the callee:", ""]
    out += ["| caller | callee | inclusive | per poll |", "|---|---|--:|--:|"]
    out += [f"| `{caller}` | `{callee}` | {share(n)} |" for (caller, callee), n in by_count(prof.calls_out)[:top]]
    out += ["", f"Top {top} functions by self time:", ""]
    out += ["| function | self | per poll |", "|---|--:|--:|"]
    out += [f"| `{f}` | {share(n)} |" for f, n in by_count(prof.self_n)[:top]]
    return "\n".join(out) + "\n"


def compare_profiles(bench: Bench) -> str:
    """Self time per package and contender, in µs per poll, side by side (one table per configuration)."""
    out: list[str] = []
    for setup in bench.setups:
        runs = [(c, Profile.read(p), r) for s, c, p, r in bench.profiles if s == setup and p.exists()]
        runs = [(c, prof, r) for c, prof, r in runs if prof.total]
        if len(runs) < 2:
            continue
        areas = sorted(
            {a for _, prof, _ in runs for a in prof.area_n},
            key=lambda a: -max(prof.area_n.get(a, 0) / prof.total * r.cpu_per_poll for _, prof, r in runs),
        )
        out += [f"### {setup.label}: self time by package, µs per poll", ""]
        out += ["| package | " + " | ".join(CONTENDERS[c] for c, _, _ in runs) + " |"]
        out += ["|---|" + "--:|" * len(runs)]
        for a in areas:
            cells = [f"{prof.area_n.get(a, 0) / prof.total * r.cpu_per_poll * 1e6:,.0f}" for _, prof, r in runs]
            out.append(f"| {a} | " + " | ".join(cells) + " |")
        out.append(
            "| **total (CPU / poll)** | " + " | ".join(f"**{r.cpu_per_poll * 1e6:,.0f}**" for *_, r in runs) + " |"
        )
        out.append(
            "| of which kernel (system time) | "
            + " | ".join(f"{r.cpu_system / max(1, r.polls) * 1e6:,.0f}" for *_, r in runs)
            + " |"
        )
        out.append("")
    return "\n".join(out)


def profile_report(bench: Bench, facts: dict[str, str], command: str) -> str:
    """The Markdown of every profile taken."""
    parts = [f"# Profile: {facts['date']}", "", f"Command: `{command}`", ""]
    parts += [f"Machine: {facts['nproc']} CPUs ({facts['cpu']}), {facts['python']}; watcher at git {facts['git']}.", ""]
    parts += [
        "py-spy samples (raw collapsed stacks, `--function`; the process is paused for each sample; samples of an idle thread-pool worker, which py-spy sometimes counts as active, are dropped) over the measurement window; a sample's "
        "share × the CPU per poll measured in the same window gives µs per poll. Idle time (blocked in epoll) is not "
        "sampled; a socket send's kernel time shows as the self time of `_SelectorSocketTransport.write`. Profiled "
        "runs are perturbed a little: use bench/results.md for the CPU figures.",
        "",
        compare_profiles(bench),
    ]
    for setup, contender, path, result in bench.profiles:
        parts += [f"## {setup.label}, {CONTENDERS[contender]}", ""]
        parts += [
            f"CPU / poll in this profiled run: {result.cpu_per_poll * 1e6:,.0f} µs "
            f"({result.cpu_system / max(1, result.polls) * 1e6:,.0f} µs of it kernel); "
            f"{result.polls_per_s:,.0f} polls/s.",
            "",
        ]
        parts.append(analyse_profile(path, result.cpu_per_poll) if path.exists() else "(no profile written)\n")
    return "\n".join(parts)


# -- main --------------------------------------------------------------------------------------------------------


def parse_setups(text: str) -> list[Setup]:
    """ "100@2,1000@2" -> setups."""
    setups = []
    for part in text.split(","):
        tasks, _, interval = part.strip().partition("@")
        setups.append(Setup(int(tasks.replace("_", "")), float(interval or 2)))
    return setups


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--configs", help=f"TASKS@SECONDS,... (default {DEFAULT_CONFIGS}; --quick: {QUICK_CONFIGS})")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated, from: " + ", ".join(CONTENDERS))
    p.add_argument("--quick", action="store_true", help="a smoke run: small configurations, short windows")
    p.add_argument("--warmup", type=float, help="seconds of warm-up before the window (default: by interval)")
    p.add_argument("--window", type=float, help="seconds of measurement (default: 8 intervals, within 16-20 s)")
    p.add_argument("--flips", type=int, help="tasks flipped per run (default: tasks/10, 5-100)")
    p.add_argument("--repeat", type=int, default=1, help="runs per contender, in alternating rounds; the median stands")
    p.add_argument("--concurrency", type=int, default=200, help="requests in flight, for every contender")
    p.add_argument("--seed", default="5", help="which tasks flip, and when")
    p.add_argument(
        "--watcher-option",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a TOML line added to the watcher's config section, e.g. 'watch.adaptive = false' (repeatable)",
    )
    p.add_argument("--watcher", default=str(Path(PYTHON).parent / "watcher"), help="the watcher command")
    p.add_argument("--out", type=Path, default=BENCH / "results.md", help="the Markdown report ('-': print only)")
    p.add_argument("--profile", action="store_true", help="py-spy the contenders in the window (perturbs CPU)")
    p.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--profile-out", type=Path, default=BENCH / "profile.md", help="where --profile writes")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs, stores, profiles)")
    args = p.parse_args(argv)
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in args.contenders if c not in CONTENDERS]
    if unknown:
        p.error(f"unknown contender(s) {', '.join(unknown)}; use {', '.join(CONTENDERS)}")
    if args.profile and args.out == BENCH / "results.md":
        args.out = Path("-")  # profiled CPU numbers are perturbed: they must not overwrite the results
    return args


async def amain(args: argparse.Namespace, command: str) -> int:
    """Run the benchmark and write the report."""
    setups = parse_setups(args.configs or (QUICK_CONFIGS if args.quick else DEFAULT_CONFIGS))
    facts = machine_facts()
    bench = Bench(args, setups)
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    est = args.repeat * sum(
        len(args.contenders) * (t.warmup + t.window + t.flip_span + 1.2 * s.interval + 8)
        for s in setups
        for t in [bench.timing(s)]
    )
    print(f"benchmark: {len(setups)} configuration(s) × {len(args.contenders)} contender(s), about {est / 60:.0f} min")
    print(f"temp dir: {bench.tmp}", flush=True)
    profile_text = ""
    try:
        await bench.run()
        if bench.profiles:
            profile_text = profile_report(bench, facts, command)
    finally:
        await bench.close()
    text = report(bench, facts, command)
    print()
    print(text)
    if str(args.out) != "-":
        args.out.write_text(text, encoding="utf-8")
        print(f"written to {args.out}")
    if profile_text:
        args.profile_out.write_text(profile_text, encoding="utf-8")
        print(f"profile written to {args.profile_out}")
    return 0 if all(not r.failure for r in bench.results) else 1


def main() -> int:
    """Entry point."""
    args = parse_args()
    command = " ".join([".venv/bin/python", "bench/run.py", *sys.argv[1:]])
    try:
        return asyncio.run(amain(args, command))
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
