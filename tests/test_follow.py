"""`watcher follow`: the installed command against the simulator on 127.0.0.1, as a plain subprocess and in tmux."""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.text import TextReceiveStream

from watcher.simulator import Simulator

from .test_cli import WATCHER, env

pytestmark = pytest.mark.anyio


def config(tmp_path: Path, api_url: str, tasks: list[int] | None = None, extra: str = "") -> Path:
    """A config without notifiers (test_cli's has a webhook): follow needs the API and the store, no more."""
    path = tmp_path / "watcher.toml"
    path.write_text(
        f"""
[api]
base_url = "{api_url}"
token = "${{TEST_VOICEFOX_TOKEN}}"
timeout = "1s"

[watch]
tasks = {tasks or [1]}
interval = "200ms"

[store]
path = "{tmp_path / "state.db"}"
{extra}
"""
    )
    return path


class Follow:
    """A running `watcher follow`: its output read line by line, waited on for what it should say."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        assert process.stdout is not None
        self._text = TextReceiveStream(process.stdout)
        self._pending = ""
        self.lines: list[str] = []
        self._checked = 0

    async def until(self, needle: str, within: float = 20.0) -> str:
        """The next line (not read by an earlier call) that holds `needle`."""
        with anyio.fail_after(within):
            while True:
                while self._checked < len(self.lines):
                    line = self.lines[self._checked]
                    self._checked += 1
                    if needle in line:
                        return line
                chunk = await self._text.receive()
                self._pending += chunk
                *complete, self._pending = self._pending.split("\n")
                self.lines += complete

    async def finish(self, within: float = 20.0) -> tuple[int, str, str]:
        """Its exit status, the rest of stdout, and stderr."""
        rest = []
        with anyio.fail_after(within):
            async for chunk in self._text:
                rest.append(chunk)
            assert self.process.stderr is not None
            err = b"".join([c async for c in self.process.stderr]).decode()
            code = await self.process.wait()
        self.lines += (self._pending + "".join(rest)).splitlines()
        return code, "\n".join(self.lines), err


@asynccontextmanager
async def following(cfg: Path, *args: str, token: str = "sim-token-0123456789") -> AsyncIterator[Follow]:
    process = await anyio.open_process([WATCHER, "follow", "-c", str(cfg), "--every", "0.2", *args], env=env(token))
    async with process:
        try:
            yield Follow(process)
        finally:
            if process.returncode is None:
                process.kill()


async def test_exit_0_when_every_task_is_done_with_one_plain_line_per_change_off_a_terminal(
    simulator: tuple[Simulator, str], tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(701, "Spring reminders", status="running", progress=10, collectionRate=5)
    sim.add_task(702, status="pending", progress=0)
    async with following(config(tmp_path, url), "701", "702") as f:
        line = await f.until("Task 701 “Spring reminders”: running · 10%")
        assert "collection rate 5%" in line
        await f.until("Task 702 “Campaign 702”: pending · 0%")
        sim.set(701, progress=50)
        assert "reached 50%" in await f.until("Campaign “Spring reminders” (task 701)")
        line = await f.until("Task 701 “Spring reminders”: running · 50%")
        assert re.search(r"about \d+ (sec|min)", line), line  # the pace seen from 10 % to 50 %
        sim.set(702, status="running", progress=5)
        await f.until("Campaign “Campaign 702” (task 702) started calling")
        sim.set(701, status="done", progress=100)
        await f.until("Campaign “Spring reminders” (task 701) finished")
        sim.set(702, status="done", progress=100)
        code, out, err = await f.finish()
    assert code == 0, (out, err)
    assert out.splitlines()[-1] == "All 2 tasks finished."
    assert "\x1b[" not in out and err == ""  # no terminal: no escape sequences, no bar
    assert len([line for line in out.splitlines() if "Task 701 “Spring reminders”: running · 10%" in line]) == 1


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        ("stop.abnormal", "stopped abnormally"),
        ("stop.operate", "stopped by an operator"),
        ("stop.timeout", "timed out"),
    ],
)
async def test_exit_1_when_a_task_ends_otherwise_than_done(
    simulator: tuple[Simulator, str], tmp_path: Path, status: str, shown: str
) -> None:
    sim, url = simulator
    sim.add_task(703, status="running", progress=40)
    sim.add_task(704, status="running", progress=90)
    async with following(config(tmp_path, url), "703", "704") as f:
        await f.until("Task 703")
        sim.set(704, status="done", progress=100)
        await f.until("(task 704) finished")
        sim.set(703, status=status)
        code, out, err = await f.finish()
    assert code == 1, (out, err)
    assert out.splitlines()[-1] == f"1 task did not finish: 703 ({shown})"


async def test_exit_1_for_a_task_the_api_does_not_know_or_no_longer_knows(
    simulator: tuple[Simulator, str], tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(705, status="running", progress=10)
    async with following(config(tmp_path, url), "705", "706") as f:
        await f.until("Task 705 “Campaign 705”: running")
        await f.until("Task 706 does not exist: the API answers 404 (check the id)")
        sim.remove(705)
        await f.until("(task 705) is missing: the API no longer knows it")
        code, out, err = await f.finish()
    assert code == 1, (out, err)
    assert out.splitlines()[-1] == "2 tasks did not finish: 705 (missing), 706 (missing)"


@pytest.mark.parametrize(("fault", "times"), [("503", 3), ("429", 1)])
async def test_an_api_outage_or_a_429_is_shown_and_never_ends_a_task(
    simulator: tuple[Simulator, str], tmp_path: Path, fault: str, times: int
) -> None:
    """The client's retries spent (or a 429): the problem is said once, the task read again until it really ends."""
    sim, url = simulator
    sim.add_task(707, status="running", progress=10)
    async with following(config(tmp_path, url), "707") as f:
        await f.until("Task 707")
        sim.inject(fault, times=times, task_id=707, retry_after="1" if fault == "429" else None)
        line = await f.until("Task 707 cannot be read now")
        assert f"API answered {fault}" in line and "still following it" in line
        await f.until("Task 707 can be read again after")
        sim.set(707, status="done", progress=100)
        code, out, err = await f.finish()
    assert code == 0, (out, err)


async def test_a_token_the_api_refuses_is_a_usage_error(simulator: tuple[Simulator, str], tmp_path: Path) -> None:
    sim, url = simulator
    sim.add_task(708, status="running")
    async with following(config(tmp_path, url), "708", token="not-the-token") as f:
        code, out, err = await f.finish()
    assert code == 2, (out, err)
    assert "check api.token" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [[], ["abc"], ["0"], ["--every", "0", "1"], ["--from", "daemon", "1"], ["--language", "fr", "1"]],
    ids=["no ids", "a word", "zero", "every 0", "unknown source", "unknown language"],
)
async def test_usage_errors_exit_2_without_a_traceback(tmp_path: Path, args: list[str]) -> None:
    cfg = config(tmp_path, "http://127.0.0.1:9")
    result = await anyio.run_process([WATCHER, "follow", "-c", str(cfg), *args], env=env("x"), check=False)
    assert result.returncode == 2, result
    assert b"Traceback" not in result.stderr and b"usage: watcher follow" in result.stderr


async def test_an_unknown_config_exits_2(tmp_path: Path) -> None:
    result = await anyio.run_process(
        [WATCHER, "follow", "-c", str(tmp_path / "nope.toml"), "1"], env=env("x"), check=False
    )
    assert result.returncode == 2 and b"nope.toml" in result.stderr and b"Traceback" not in result.stderr


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_ctrl_c_and_sigterm_stop_it_without_saying_the_tasks_finished(
    simulator: tuple[Simulator, str], tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    sim, url = simulator
    sim.add_task(709, status="running", progress=10)
    async with following(config(tmp_path, url), "709") as f:
        await f.until("Task 709")
        f.process.send_signal(signum)
        got, out, err = await f.finish()
    assert got == code, (out, err)
    assert "Traceback" not in err and "finished" not in out


async def test_it_speaks_the_configured_language(simulator: tuple[Simulator, str], tmp_path: Path) -> None:
    sim, url = simulator
    sim.add_task(710, "春のリマインド", status="running", progress=30)
    cfg = config(tmp_path, url, extra='[messages]\nlanguage = "ja"\n')
    async with following(cfg, "710") as f:
        await f.until("タスク 710「春のリマインド」: 実行中 · 30%")
        sim.set(710, status="done", progress=100)
        await f.until("アウトバウンドタスク「春のリマインド」（ID 710） が完了しました")
        code, out, _ = await f.finish()
    assert code == 0 and out.splitlines()[-1] == "1 件のタスクがすべて完了しました"


async def test_from_a_running_watchers_store(simulator: tuple[Simulator, str], tmp_path: Path) -> None:
    """--from store reads what the daemon stores (no API call of its own) and ends as the daemon saw the task end."""
    sim, url = simulator
    sim.add_task(711, status="running", progress=20)
    cfg = config(tmp_path, url, tasks=[711])
    async with await anyio.open_process([WATCHER, "run", "-c", str(cfg)], env=env(sim.token)) as daemon:
        try:
            await Follow(daemon).until('"watcher.started"')  # its store is laid out
            async with following(cfg, "711", "--from", "store") as f:
                await f.until("Task 711 “Campaign 711”: running · 20%")
                asked = sim.requests
                sim.set(711, progress=60)
                await f.until("Task 711 “Campaign 711”: running · 60%")
                sim.set(711, status="done", progress=100)
                code, out, err = await f.finish()
        finally:
            daemon.terminate()
            await daemon.wait()
    assert code == 0, (out, err)
    assert sim.requests_by_task == {711: sim.requests_by_task[711]}  # only the daemon asked, and only for 711
    assert sim.requests > asked


async def test_from_a_store_that_is_not_there_is_a_usage_error(tmp_path: Path) -> None:
    cfg = config(tmp_path, "http://127.0.0.1:9")
    result = await anyio.run_process(
        [WATCHER, "follow", "-c", str(cfg), "--from", "store", "1"], env=env("x"), check=False
    )
    assert result.returncode == 2 and b"no store there" in result.stderr and b"Traceback" not in result.stderr


# -- on a terminal -------------------------------------------------------------------------------------------------


def _tmux() -> str:
    tmux = shutil.which("tmux")
    if tmux is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is not installed: .ci/run installs it, and in CI this test must run")
        pytest.skip("tmux is not installed (apt-get install tmux); CI runs this test")
    return tmux


class Screen:
    """A tmux server of our own (its own socket) running one command in a 120x30 terminal."""

    def __init__(self, tmux: str, socket: str) -> None:
        self.tmux, self.socket = tmux, socket

    async def run(self, *args: str) -> str:
        # The environment given explicitly, as Python knows it: something in the test process sets COLUMNS=80 in the
        # C environment, which children would inherit and rich would take over the 120 columns of the window.
        environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        result = await anyio.run_process([self.tmux, "-L", self.socket, *args], check=True, env=environment)
        return result.stdout.decode()

    async def until(self, pattern: str, within: float = 20.0) -> str:
        """The screen once `pattern` (a regex) is on it; tmux has no event for that, so it is looked at often."""
        screen = ""
        try:
            with anyio.fail_after(within):
                # tmux tells no one when the screen changes: it is looked at every 0.1 s until the deadline.
                while not re.search(pattern, screen := await self.run("capture-pane", "-p", "-t", "follow")):  # noqa: ASYNC110
                    await anyio.sleep(0.1)
        except TimeoutError:
            pytest.fail(f"{pattern!r} never showed; the screen:\n{screen}")
        return screen


def _bar_end(screen: str, task_id: int) -> int:
    """Where the bar of a task's row is filled to: the cell of its half-block (╺ or ╸), 0 when none is drawn."""
    row = next(line for line in screen.splitlines() if f"Task {task_id} " in line)
    bar = re.search(r"[━╺╸]{10,}", row)
    assert bar is not None, screen
    ends = [i for i, c in enumerate(bar.group()) if c in "╺╸"]
    return ends[0] if ends else 0


@pytest.mark.parametrize(
    ("status", "code", "closing"),
    [("done", 0, "All 2 tasks finished."), ("stop.abnormal", 1, "1 task did not finish: 802 (stopped abnormally)")],
)
async def test_on_a_terminal_a_bar_moves_as_the_task_progresses_then_the_exit_status_says_how_it_ended(
    simulator: tuple[Simulator, str], tmp_path: Path, status: str, code: int, closing: str
) -> None:
    tmux = _tmux()
    sim, url = simulator
    sim.add_task(801, "Spring reminders", status="running", progress=10)
    sim.add_task(802, status="running", progress=50)
    cfg = config(tmp_path, url)
    rc = tmp_path / "rc"
    screen = Screen(tmux, f"watcher-follow-{os.getpid()}-{code}")
    command = (
        f"TEST_VOICEFOX_TOKEN={sim.token} {WATCHER} follow -c {cfg} --every 0.2 801 802; echo $? > {rc}; "
        f"{tmux} -L {screen.socket} wait-for -S ended"
    )
    # Typed into a plain sh (no rc file to vary from host to host), as a person would type it.
    await screen.run("new-session", "-d", "-s", "follow", "-x", "120", "-y", "30", "/bin/sh")
    await screen.run("send-keys", "-t", "follow", command, "Enter")
    try:
        before = await screen.until(r"Task 801 “Spring reminders” .* 10% +running")
        sim.set(801, progress=60, collectionRate=12)
        after = await screen.until(r"Task 801 “Spring reminders” .* 60% +running")
        assert _bar_end(after, 801) > _bar_end(before, 801) > 0, (before, after)
        assert "reached 60%" in after and "collection rate 12%" in after  # the event above the bars, the rate
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(screen.run, "wait-for", "ended")  # returns once the command has written its status
                sim.set(801, status="done", progress=100)
                sim.set(802, status=status, progress=100 if status == "done" else 50)
        final = await screen.until(re.escape(closing))
        assert re.search(r"Task 801 “Spring reminders” ━+ 100% +done", final), final
        assert int(rc.read_text()) == code
    finally:
        await anyio.run_process([tmux, "-L", screen.socket, "kill-server"], check=False)


# -- calls, from a store -------------------------------------------------------------------------------------------


async def test_from_a_store_each_task_shows_its_calls_in_the_last_hour_and_a_collapsed_answer_rate(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    from watcher.detect import Rules
    from watcher.follow import SqliteReader, StoreSource, Tracked, calls_cell, line, status_cell
    from watcher.i18n import translator
    from watcher.model import TaskSnapshot, TaskState
    from watcher.notify.message import Severity
    from watcher.store import Store
    from watcher.zone import ZoneResolver

    from .callhealth import collapsed, steady

    now = datetime.now(UTC)
    store = Store.open(tmp_path / "state.db")
    store.record(TaskState(TaskSnapshot(id=1, status="running", progress=40), now, health=collapsed(now)), [], 0.0)
    store.record(TaskState(TaskSnapshot(id=2, status="running", progress=10), now, health=steady(now)), [], 0.0)
    store.record(TaskState(TaskSnapshot(id=3, status="running", progress=5), now), [], 0.0)
    store.close()
    reader = SqliteReader(tmp_path / "state.db")
    try:
        readings = await StoreSource(reader).read_all([1, 2, 3])
    finally:
        reader.close()
    en, ja = translator("en"), translator("ja")
    tasks = [Tracked(task_id) for task_id in (1, 2, 3)]
    for task in tasks:
        task.take(readings[task.id], now, Rules(), ZoneResolver(), en)
    dropped, calling, unread = tasks
    assert line(dropped, en) == (
        "Task 1: running · answer rate dropped · 40% · 312 calls in the last hour, 41 answered · answer rate 3% (was 40%)"
    )
    assert status_cell(dropped, en)[1] is Severity.WARNING
    assert line(calling, en) == "Task 2: running · 10% · 120 calls in the last hour, 48 answered · answer rate 40%"
    assert line(unread, en) == "Task 3: running · 5%"  # its call log not read yet: nothing said of calls
    assert calls_cell(dropped, ja) == "直近1時間の発信 312 件、応答 41 件 · 応答率 3%（低下前 40%）"
    assert status_cell(dropped, ja)[0] == "実行中 · 応答率が低下"


async def test_from_a_store_a_campaign_that_keeps_calling_with_a_flat_percentage_is_not_called_stalled() -> None:
    # The watcher's call health, as the store has it at each reading (fresh looks, a call 30 s ago each time): judged
    # on the copy of the first reading only, it went stale and the progress rule said "stalled" at minute 15.
    from datetime import UTC, datetime, timedelta

    from watcher.detect import Rules
    from watcher.follow import Reading, Tracked
    from watcher.i18n import translator
    from watcher.model import Event, EventType, TaskSnapshot, TaskState
    from watcher.zone import ZoneResolver

    from .callhealth import steady

    t0 = datetime.now(UTC)
    snapshot = TaskSnapshot(id=2, status="running", progress=10)
    task, zones, told = Tracked(2), ZoneResolver(), []
    for minutes in range(0, 40, 2):
        now = t0 + timedelta(minutes=minutes)
        stored = TaskState(snapshot, t0, health=steady(now))
        told += task.take(Reading(snapshot=snapshot, stored=stored), now, Rules(), zones, translator("en"))
    assert [n.type for n in told if isinstance(n, Event)] == [EventType.OBSERVED.value]
