"""End to end: the installed `watcher` command as a subprocess against the simulator and a receiver on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.abc
import pytest

from watcher.httpserver import Response
from watcher.model import Event
from watcher.simulator import Simulator
from watcher.store import Store

from .conftest import Mailbox, Receiver, use_postgres
from .platforms import FEISHU_SECRET, FeishuBot, TeamsWorkflow, feishu_url, serving, teams_url

pytestmark = pytest.mark.anyio
WATCHER = str(Path(sys.executable).parent / "watcher")
SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"  # base64 of 24 bytes


def write_config(path: Path, api_url: str, token: str, hook_url: str, tasks: list[int], extra: str = "") -> Path:
    path.write_text(
        f"""
[api]
base_url = "{api_url}"
token = "${{TEST_VOICEFOX_TOKEN}}"
timeout = "1s"

[watch]
tasks = {tasks}
interval = "200ms"

[store]
path = "state.db"

[delivery]
timeout = "2s"

[[notifiers]]
kind = "webhook"
name = "hook"
url = "{hook_url}"
secret = "{SECRET}"

[[notifiers]]
kind = "log"
name = "log"
{extra}
"""
    )
    return path


def env(token: str) -> dict[str, str]:
    return {**os.environ, "TEST_VOICEFOX_TOKEN": token}


async def run(args: list[str], token: str = "x") -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process([WATCHER, *args], env=env(token), check=False)


async def read_all(stream: anyio.abc.ByteReceiveStream | None) -> bytes:
    assert stream is not None
    chunks = []
    try:
        while True:
            chunks.append(await stream.receive())
    except anyio.EndOfStream:
        return b"".join(chunks)


def accepted_ids(receiver: Receiver, since: int) -> list[str]:
    return [r.headers["webhook-id"] for r in receiver.requests[since:]]


async def test_check_accepts_the_example_config(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "config.example.toml"
    result = await anyio.run_process(
        [WATCHER, "check", "-c", str(example)],
        env={
            **os.environ,
            "VOICEFOX_TOKEN": "t" * 20,
            "WEBHOOK_SECRET": SECRET,
            "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X",
            "DINGTALK_WEBHOOK_URL": "https://oapi.dingtalk.com/robot/send?access_token=t",
            "DINGTALK_SECRET": "SECs",
            "WECOM_WEBHOOK_URL": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k",
            "FEISHU_WEBHOOK_URL": "https://open.feishu.cn/open-apis/bot/v2/hook/token",
            "FEISHU_BOT_SECRET": "feishu-secret",
            "TEAMS_WEBHOOK_URL": "https://prod-07.japaneast.logic.azure.com/workflows/x/triggers/manual/paths/invoke?sig=s",
            "SMTP_PASSWORD": "smtp-pass",
            "APPRISE_URL": "ntfys://ntfy.example.com/voicefox",
        },
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"OK" in result.stdout
    assert b"call log: read every 120s" in result.stdout and b"stall_after is" not in result.stdout


async def test_check_says_the_call_log_is_off_or_warns_of_a_stall_after_shorter_than_a_call(tmp_path: Path) -> None:
    cfg = tmp_path / "w.toml"
    base = '[api]\ntoken = "t"\n[watch]\ntasks = [1]\n'
    cfg.write_text(base + 'stall_after = "1m"\n')
    result = await run(["check", "-c", str(cfg)])
    assert result.returncode == 0 and b"warning: watch.stall_after is 60s" in result.stdout
    cfg.write_text(base + 'stall_after = "1m"\n[health]\ncalllog = false\n')
    result = await run(["check", "-c", str(cfg)])
    assert b"call log: off" in result.stdout and b"stall_after is" not in result.stdout


async def test_check_reports_every_problem_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[api]\ntoken = "${NOT_SET_ANYWHERE}"\n[watch]\ntasks = []\ninterval = "often"\nsurprise = 1\n')
    result = await run(["check", "-c", str(bad)])
    err = result.stderr.decode()
    assert result.returncode == 2
    assert "Traceback" not in err
    for needle in ("NOT_SET_ANYWHERE", "watch.tasks", "watch.interval", '"often"', "watch.surprise"):
        assert needle.strip('"') in err, needle


async def test_config_path_defaults_to_the_environment_variable(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/h", [1])
    result = await anyio.run_process(
        [WATCHER, "check"], env={**env("token-value"), "WATCHER_CONFIG": str(cfg)}, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr.decode()


async def test_once_polls_delivers_and_status_shows_it_without_leaking(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(11, "Renewals", status="running", progress=20)
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [11])
    result = await run(["once", "-c", str(cfg)], token=sim.token)
    assert result.returncode == 0, result.stderr.decode()
    assert [b["type"] for b in receiver.bodies()] == ["voicefox.task.observed"]
    status = await run(["status", "-c", str(cfg)])
    assert b"Renewals" in status.stdout and b"running" in status.stdout
    as_json = await run(["status", "-c", str(cfg), "--json"])
    doc = json.loads(as_json.stdout)
    assert doc["tasks"][0]["id"] == 11
    everything = (
        result.stdout + result.stderr + status.stdout + as_json.stdout + b"".join(r.body for r in receiver.requests)
    )
    everything += (tmp_path / "state.db").read_bytes()
    for secret in (sim.token, "ws-token-secret", "wsurl-secret", "819012345678", "campaign.owner@example.com", SECRET):
        assert secret.encode() not in everything, secret


async def test_sigterm_stops_the_daemon_cleanly(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [1])
    async with await anyio.open_process([WATCHER, "run", "-c", str(cfg)], env=env(sim.token)) as proc:
        await receiver.wait_for(1)
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            code = await proc.wait()
        out = await read_all(proc.stdout)
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines() if line.startswith(b"{")]
    assert any(line["event"] == "watcher.started" for line in lines)


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_kill_9_while_the_receiver_is_down_then_restart_delivers_once_with_the_same_id(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running", progress=0)
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [1])
    if engine == "postgres":
        use_postgres(cfg, request.getfixturevalue("pg"))
    receiver.default = Response(503, b"")
    async with await anyio.open_process([WATCHER, "run", "-c", str(cfg)], env=env(sim.token)) as proc:
        await receiver.wait_for(1)
        proc.kill()  # SIGKILL: no chance to clean up
        await proc.wait()
    failed_id = receiver.requests[0].headers["webhook-id"]
    sim.set(1, status="done", progress=100)  # changes while the watcher is dead
    receiver.default = Response(204, b"")
    seen = len(receiver.requests)
    async with await anyio.open_process([WATCHER, "run", "-c", str(cfg)], env=env(sim.token)) as proc:
        await receiver.wait_for(seen + 2)
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            assert await proc.wait() == 0
    ids = accepted_ids(receiver, seen)
    types = [json.loads(r.body)["type"] for r in receiver.requests[seen:]]
    assert ids[0] == failed_id
    assert types == ["voicefox.task.observed", "voicefox.task.finished"]
    assert len(set(ids)) == len(ids)


async def test_a_second_daemon_on_the_same_sqlite_store_refuses(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [1])
    async with await anyio.open_process([WATCHER, "run", "-c", str(cfg)], env=env(sim.token)) as first:
        await receiver.wait_for(1)
        second = await run(["run", "-c", str(cfg)], token=sim.token)
        first.send_signal(signal.SIGTERM)
        await first.wait()
    assert second.returncode == 1
    assert b"already in use by watcher pid" in second.stderr
    assert b"Traceback" not in second.stderr


async def test_notify_test_reports_each_notifier(receiver: Receiver, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", receiver.url, [1])
    ok = await run(["notify-test", "-c", str(cfg)], token="token-value")
    assert ok.returncode == 0, ok.stderr.decode()
    assert b"hook: sent" in ok.stdout
    assert receiver.bodies()[0]["type"] == "voicefox.watcher.test"
    receiver.default = Response(410, b"gone")
    gone = await run(["notify-test", "-c", str(cfg), "--notifier", "hook"], token="token-value")
    assert gone.returncode == 1
    assert b"permanent" in gone.stdout
    unknown = await run(["notify-test", "-c", str(cfg), "--notifier", "nope"], token="token-value")
    assert unknown.returncode == 2
    assert b"nope" in unknown.stderr


async def test_notify_test_reaches_feishu_and_teams_and_reports_a_wrong_feishu_secret(
    receiver: Receiver, tmp_path: Path
) -> None:
    """One line per notifier: the stand-ins check the signature and the sig= as the platforms do."""
    bot, workflow = FeishuBot(), TeamsWorkflow()
    async with serving(bot) as feishu_base, serving(workflow) as teams_base:
        chat = f"""
[messages]
language = "ja"

[[notifiers]]
kind = "feishu"
name = "cn-oncall"
url = "{feishu_url(feishu_base)}"
secret = "${{TEST_FEISHU_SECRET}}"

[[notifiers]]
kind = "teams"
name = "jp-ops"
url = "{teams_url(teams_base)}"
"""
        cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", receiver.url, [1], extra=chat)
        environment = env("t") | {"TEST_FEISHU_SECRET": FEISHU_SECRET}
        ok = await anyio.run_process([WATCHER, "notify-test", "-c", str(cfg)], env=environment, check=False)
        assert ok.returncode == 0, ok.stdout.decode() + ok.stderr.decode()
        lines = ok.stdout.decode().splitlines()
        assert "cn-oncall: 送信しました" in lines, lines  # [messages] language = "ja"
        assert "jp-ops: 送信しました" in lines, lines
        (card,) = bot.accepted
        assert card["card"]["header"]["title"]["content"] == "voicefox-watcher からのテスト通知"
        (message,) = workflow.accepted
        assert message["attachments"][0]["content"]["type"] == "AdaptiveCard"

        environment["TEST_FEISHU_SECRET"] = "not-the-bots-secret"
        wrong = await anyio.run_process(
            [WATCHER, "notify-test", "-c", str(cfg), "--notifier", "cn-oncall"], env=environment, check=False
        )
    assert wrong.returncode == 1
    (line,) = [line for line in wrong.stdout.decode().splitlines() if not line.startswith("{")]  # not log lines
    assert line.startswith("cn-oncall: 失敗（再送しません）: cn-oncall (feishu): Feishu answered code 19021")
    assert "19021" in line and "`secret`" in line
    assert "not-the-bots-secret" not in line and FEISHU_SECRET not in line
    assert len(bot.accepted) == 1


async def test_a_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    result = await run(["run", "-c", str(tmp_path / "absent.toml")])
    assert result.returncode == 2
    assert b"no such file" in result.stderr
    assert b"Traceback" not in result.stderr


async def test_the_demo_plays_a_campaign_day_and_exits_0() -> None:
    result = await anyio.run_process([WATCHER, "demo", "--scale", "0.25"], check=False)
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    needles = ("finished", "stopped abnormally", "stalled", "resumed", "0 duplicates", "0 bad signatures")
    for needle in (*needles, "answer rate fell from", "answer rate is back to"):
        assert needle in out, needle


@pytest.mark.parametrize(
    ("language", "needles"),
    [
        (
            "ja",
            (
                "が完了しました",
                "が異常停止しました",
                "が停滞しています",
                "応答率が低下しました",
                "タスクのタイムゾーン: +09:00",
                "重複 0 件",
            ),
        ),
        ("zh-Hans", ("已完成", "异常停止", "停滞", "接通率骤降", "任务时区：+09:00", "重复 0 个")),
    ],
)
async def test_the_demo_speaks_the_language_asked_for(language: str, needles: tuple[str, ...]) -> None:
    result = await anyio.run_process([WATCHER, "demo", "--scale", "0.25", "--language", language], check=False)
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    for needle in needles:
        assert needle in out, needle
    assert "finished" not in out and "campaigns" not in out  # no English of ours left


async def test_sighup_reloads_tasks_and_refuses_an_invalid_config(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    sim.add_task(2, status="pending")
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [1])
    async with await anyio.open_process([WATCHER, "run", "-c", str(cfg)], env=env(sim.token)) as proc:
        await receiver.wait_for(1)
        write_config(cfg, url, sim.token, receiver.url, [1, 2])
        proc.send_signal(signal.SIGHUP)
        await receiver.wait_for(2)
        cfg.write_text(cfg.read_text().replace('interval = "200ms"', 'interval = "often"'))
        proc.send_signal(signal.SIGHUP)
        sim.set(2, status="running")  # the old config keeps running: this is still seen
        await receiver.wait_for(3)
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            assert await proc.wait() == 0
        out = await read_all(proc.stdout)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith(b"{")]
    assert [(b["subject"], b["type"]) for b in receiver.bodies()] == [
        ("1", "voicefox.task.observed"),
        ("2", "voicefox.task.observed"),
        ("2", "voicefox.task.started"),
    ]
    reloaded = [line for line in lines if line["event"] == "config.reloaded"]
    assert reloaded[0]["tasks_added"] == [2]
    failed = [line for line in lines if line["event"] == "config.reload_failed"]
    assert "watch.interval" in failed[0]["problems"][0]


async def test_dead_letters_are_listed_retried_and_dropped_from_the_cli(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    sim.add_task(2, status="running")
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [1, 2])
    receiver.default = Response(410, b"gone")
    first = await run(["once", "-c", str(cfg)], token=sim.token)
    assert first.returncode == 0, first.stderr.decode()  # dead letters are not pending: nothing left to retry
    listing = await run(["outbox", "-c", str(cfg)])
    assert listing.stdout.count(b" dead ") == 2
    assert b"receiver answered 410" in listing.stdout
    rows = json.loads((await run(["outbox", "-c", str(cfg), "--json", "--state", "dead"])).stdout)
    assert {r["task_id"] for r in rows} == {1, 2}
    refused = await run(["outbox", "-c", str(cfg), "drop"])
    assert refused.returncode == 2
    assert b"--seq N, --receiver NAME or --all" in refused.stderr
    dropped = await run(["outbox", "-c", str(cfg), "drop", "--seq", str(rows[0]["seq"])])
    assert b"1 dead deliveries dropped" in dropped.stdout
    retried = await run(["outbox", "-c", str(cfg), "retry", "--receiver", "hook"])
    assert b"1 dead-lettered deliveries queued again" in retried.stdout
    receiver.default = Response(204, b"")
    seen = len(receiver.requests)
    again = await run(["once", "-c", str(cfg)], token=sim.token)
    assert again.returncode == 0, again.stderr.decode()
    assert [json.loads(r.body)["subject"] for r in receiver.requests[seen:]] == [str(rows[1]["task_id"])]
    assert b"no pending or dead deliveries" in (await run(["outbox", "-c", str(cfg)])).stdout


async def test_simulate_on_a_busy_port_says_so_without_a_traceback(simulator: tuple[Simulator, str]) -> None:
    _sim, url = simulator
    port = url.rsplit(":", 1)[1]
    result = await run(["simulate", "--port", port])
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}".encode() in result.stderr
    assert b"Traceback" not in result.stderr


async def test_check_warns_when_others_can_read_literal_secrets(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/h", [1])
    cfg.chmod(0o644)
    warned = await run(["check", "-c", str(cfg)], token="token-value")
    assert b"others can read the secrets in notifiers[0].secret" in warned.stdout
    cfg.chmod(0o600)
    quiet = await run(["check", "-c", str(cfg)], token="token-value")
    assert b"others can read" not in quiet.stdout


async def test_status_says_when_a_finished_task_is_no_longer_polled(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from watcher.model import TaskSnapshot, TaskState
    from watcher.store import Store

    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/h", [1, 2])
    store = Store.open(tmp_path / "state.db")
    long_ago = datetime.now(UTC) - timedelta(hours=5)
    store.record(TaskState(TaskSnapshot(id=1, status="done", progress=100), long_ago), [], 0.0)
    store.record(TaskState(TaskSnapshot(id=2, status="done", progress=100), datetime.now(UTC)), [], 0.0)
    store.close()
    result = await run(["status", "-c", str(cfg)])
    lines = result.stdout.decode().splitlines()
    assert "[finished; no longer polled]" in next(line for line in lines if line.strip().startswith("1 "))
    assert "no longer polled" not in next(line for line in lines if line.strip().startswith("2 "))
    doc = json.loads((await run(["status", "-c", str(cfg), "--json"])).stdout)
    assert [t["polled"] for t in doc["tasks"]] == [False, True]


async def test_status_shows_the_campaigns_zone_times_with_their_offset_and_a_task_the_api_does_not_know(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    from watcher.model import TaskSnapshot, TaskState
    from watcher.store import Store

    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/h", [1, 2, 3])
    store = Store.open(tmp_path / "state.db")
    changed = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # 18:00 in Tokyo
    snapshot = TaskSnapshot(
        id=1, status="running", progress=40, name="東京キャンペーン", updated_at="2026-11-23T18:00:00+09:00"
    )
    store.record(TaskState(snapshot, changed), [], 0.0)
    store.note_unseen(2, "not found: the API answers 404 (check watch.tasks)", 0.0)
    store.close()
    text = (await run(["status", "-c", str(cfg)])).stdout.decode()
    assert "campaigns' time zone: +09:00 (the UTC offset in the API's own timestamps)" in text
    row = {line.split()[0]: line for line in text.splitlines() if line.strip()[:1].isdigit()}
    assert "2026-11-23 18:00:00 +09:00" in row["1"]
    assert "東京キャンペーン" in row["1"]
    assert "not found: the API answers 404" in row["2"]  # not "(not polled)"
    assert "not polled yet" in row["3"]
    doc = json.loads((await run(["status", "-c", str(cfg), "--json"])).stdout)
    assert doc["zone"]["name"] == "+09:00"
    assert doc["zone"]["source"] == "api"
    assert doc["tasks"][0]["zone"] == {"name": "+09:00", "source": "api"}
    assert doc["notSeen"] == [
        {"id": 2, "reason": "not found: the API answers 404 (check watch.tasks)", "since": "1970-01-01T00:00:00+00:00"}
    ]


async def test_status_with_the_zone_unknown_says_so_and_shows_utc(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from watcher.model import TaskSnapshot, TaskState
    from watcher.store import Store

    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/h", [1])
    store = Store.open(tmp_path / "state.db")
    snapshot = TaskSnapshot(
        id=1, status="running", progress=40, updated_at="2026-11-23 18:00:00", windows=(("09:00", "18:00"),)
    )
    store.record(TaskState(snapshot, datetime(2026, 11, 23, 9, 0, tzinfo=UTC)), [], 0.0)
    store.close()
    text = (await run(["status", "-c", str(cfg)])).stdout.decode()
    assert (
        "campaigns' time zone: unknown: calling windows neither slow polling nor silence stalls (set watch.timezone)"
        in text
    )
    assert "2026-11-23 09:00:00 +00:00" in text


async def test_status_shows_each_tasks_calls_in_the_last_hour_and_a_collapsed_answer_rate(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from watcher.model import TaskSnapshot, TaskState
    from watcher.store import Store

    from .callhealth import collapsed, steady

    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/h", [1, 2, 3])
    store = Store.open(tmp_path / "state.db")
    now = datetime.now(UTC)
    store.record(TaskState(TaskSnapshot(id=1, status="running", progress=40), now, health=collapsed(now)), [], 0.0)
    store.record(TaskState(TaskSnapshot(id=2, status="running", progress=10), now, health=steady(now)), [], 0.0)
    store.record(TaskState(TaskSnapshot(id=3, status="running", progress=5), now), [], 0.0)  # call log not read
    store.close()
    lines = (await run(["status", "-c", str(cfg)])).stdout.decode().splitlines()
    below = {line.split()[0]: lines[i + 1] for i, line in enumerate(lines[:-1]) if line.strip()[:1].isdigit()}
    assert "[answer rate dropped]" in next(line for line in lines if line.strip().startswith("1 "))
    assert below["1"].strip() == (
        "calls in the last hour: 312, 41 answered · answer rate 3% (latest 100 calls)"
        f" · answer rate dropped: 40% → 4% since {now - timedelta(minutes=10):%Y-%m-%d %H:%M:%S} +00:00"
    )
    assert below["2"].strip() == "calls in the last hour: 120, 48 answered · answer rate 40% (latest 100 calls)"
    assert sum(line.strip().startswith("calls") for line in lines) == 2  # nothing of task 3's calls: never read
    doc = json.loads((await run(["status", "-c", str(cfg), "--json"])).stdout)
    calls = {t["id"]: t["calls"] for t in doc["tasks"]}
    assert calls[1] == {
        "lastHour": {"calls": 312, "answered": 41},
        "answerRate": 0.03,
        "answerRateCalls": 100,
        "total": 500,
        "answered": 163,
        "lastCallAt": (now - timedelta(seconds=30)).isoformat(),
        "lastLookAt": now.isoformat(),
        "answerRateDropped": {"before": 0.4, "after": 0.04, "since": (now - timedelta(minutes=10)).isoformat()},
    }
    assert calls[2]["answerRateDropped"] is None and calls[2]["answerRate"] == 0.4
    assert calls[3] is None


def outbox_rows_in(db: Path, states: list[str], receiver: str = "hook") -> list[int]:
    """Add one delivery to `receiver` in each of these states (pending, dead, delivered) to a store; return its seqs."""
    store = Store.open(db)
    try:
        seqs: list[int] = []
        for state in states:
            event = Event(f"e{len(seqs)}-{receiver}", "voicefox.task.finished", datetime.now(UTC), str(len(seqs)), {})
            store.record_event(event, [receiver], now=time.time())
            row = store.admin().outbox_rows(states=["pending"], receiver=receiver, limit=None)[-1]  # the one just added
            if state == "dead":
                store.mark_dead([row.seq], "receiver answered 410", now=time.time())
            elif state == "delivered":
                store.mark_delivered([row.seq], now=time.time())
            seqs.append(row.seq)
        return seqs
    finally:
        store.close()


async def test_outbox_list_limit_0_lists_every_row_and_a_cut_list_says_so(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/h", [1])
    outbox_rows_in(tmp_path / "state.db", ["dead"] * 5)
    cut = await run(["outbox", "-c", str(cfg), "--limit", "2"])
    assert cut.stdout.count(b" dead ") == 2
    assert b"showing 2 of 5; --limit 0 for all" in cut.stdout
    every = await run(["outbox", "-c", str(cfg), "--limit", "0"])
    assert every.returncode == 0, every.stderr.decode()
    assert every.stdout.count(b" dead ") == 5
    assert b"showing" not in every.stdout
    exact = await run(["outbox", "-c", str(cfg), "--limit", "5"])
    assert b"showing" not in exact.stdout
    as_json = await run(["outbox", "-c", str(cfg), "--json", "--limit", "2"])
    assert len(json.loads(as_json.stdout)) == 2  # stdout stays one JSON list...
    assert b"showing 2 of 5; --limit 0 for all" in as_json.stderr  # ...and the cut is said beside it


async def test_outbox_list_refuses_a_negative_limit_with_exit_2(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/h", [1])
    outbox_rows_in(tmp_path / "state.db", ["dead"])
    result = await run(["outbox", "-c", str(cfg), "--limit", "-1"])
    assert result.returncode == 2
    assert b"--limit: '-1' is not a number of rows (0 or more; 0 lists every row)" in result.stderr
    assert b"Traceback" not in result.stderr


async def test_outbox_retry_or_drop_of_a_seq_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/h", [1])
    outbox_rows_in(tmp_path / "state.db", ["dead"])
    for action in ("retry", "drop"):
        result = await run(["outbox", "-c", str(cfg), action, "--seq", "999", "--seq", "1"])
        assert result.returncode == 2, action
        assert b"--seq 999: no such row in the outbox" in result.stderr
        assert result.stdout == b""  # nothing was done, not even to seq 1
    assert b" dead " in (await run(["outbox", "-c", str(cfg)])).stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["retry", "--seq", "1"], "seq 1 is pending, not dead: it is still queued, so there is nothing to retry"),
        (["retry", "--seq", "2"], "seq 2 is delivered, not dead: the receiver accepted it"),
        (["drop", "--seq", "1"], "seq 1 is pending, not dead: add --pending to drop a pending delivery"),
        (["drop", "--pending", "--seq", "3"], "seq 3 is dead, not pending: drop a dead letter without --pending"),
        (["drop", "--seq", "2"], "seq 2 is delivered, not dead: the receiver accepted it"),
        (["retry", "--seq", "3", "--receiver", "log"], "seq 3 is a delivery to 'hook', not to 'log'"),
    ],
    ids=["retry-pending", "retry-delivered", "drop-pending", "drop-pending-dead", "drop-delivered", "other-receiver"],
)
async def test_outbox_retry_or_drop_of_a_row_in_another_state_names_its_state_and_exits_1(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/h", [1])
    assert outbox_rows_in(tmp_path / "state.db", ["pending", "delivered", "dead"]) == [1, 2, 3]
    result = await run(["outbox", "-c", str(cfg), *args])
    assert result.returncode == 1
    assert f"error: {expected}".encode() in result.stderr
    assert result.stdout == b""  # no "0 ... queued again": nothing was selected
    rows = json.loads((await run(["outbox", "-c", str(cfg), "--json"])).stdout)
    assert [(r["seq"], r["state"]) for r in rows] == [(1, "pending"), (3, "dead")]  # and nothing changed


async def test_outbox_retry_acts_on_the_rows_it_can_and_names_the_others(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/h", [1])
    outbox_rows_in(tmp_path / "state.db", ["pending", "dead"])
    result = await run(["outbox", "-c", str(cfg), "retry", "--seq", "2", "--seq", "1"])
    assert result.returncode == 1
    assert b"1 dead-lettered deliveries queued again" in result.stdout
    assert b"error: seq 1 is pending, not dead" in result.stderr


async def test_outbox_retry_or_drop_for_an_unknown_receiver_names_the_configured_ones(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/h", [1])
    outbox_rows_in(tmp_path / "state.db", ["dead"], receiver="old-hook")  # no longer configured, still in the outbox
    for action in ("retry", "drop"):
        result = await run(["outbox", "-c", str(cfg), action, "--receiver", "nosuch"])
        assert result.returncode == 2, action
        assert b"--receiver: no notifier named 'nosuch' in the config or the outbox (configured: hook, log)" in (
            result.stderr
        )
    dropped = await run(["outbox", "-c", str(cfg), "drop", "--receiver", "old-hook"])
    assert dropped.returncode == 0, dropped.stderr.decode()
    assert b"1 dead deliveries dropped" in dropped.stdout


async def test_outbox_retry_all_with_no_dead_letters_says_0_and_exits_0(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/h", [1])
    outbox_rows_in(tmp_path / "state.db", ["pending", "delivered"])
    result = await run(["outbox", "-c", str(cfg), "retry", "--all"])
    assert result.returncode == 0, result.stderr.decode()
    assert b"0 dead-lettered deliveries queued again" in result.stdout


@pytest.mark.parametrize(
    "utf8_mode",
    [{}, {"PYTHONUTF8": "0"}],
    ids=["c-locale", "c-locale-ascii-stdout"],  # without UTF-8 mode, Python's stdout under LC_ALL=C is ASCII
)
async def test_json_logs_show_a_japanese_campaign_name_verbatim_under_a_c_locale_and_still_redact(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path, utf8_mode: dict[str, str]
) -> None:
    sim, url = simulator
    sim.add_task(11, f"東京キャンペーン {sim.token}", status="running")  # an operator pasted the token in the name
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [11])
    environ = {k: v for k, v in env(sim.token).items() if k not in ("PYTHONIOENCODING", "PYTHONUTF8", "LANGUAGE")}
    environ |= {"LANG": "C", "LC_ALL": "C", **utf8_mode}
    result = await anyio.run_process([WATCHER, "once", "-c", str(cfg)], env=environ, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert "東京キャンペーン [REDACTED]".encode() in result.stdout  # raw UTF-8 in the file: `grep 東京` finds it
    assert sim.token.encode() not in result.stdout
    lines = [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()]
    (notified,) = [line for line in lines if line["event"] == "task.notified"]
    assert "東京キャンペーン [REDACTED]" in notified["message"]


async def test_the_readme_command_table_lists_every_command_of_watcher_help() -> None:
    result = await anyio.run_process([WATCHER, "--help"], check=False)
    commands = re.findall(r"^ {4}([a-z][a-z-]*)", result.stdout.decode(), flags=re.MULTILINE)
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| `watcher ([a-z-]+)", readme, flags=re.MULTILINE)
    assert "run" in commands and "health" in commands  # the help was parsed
    assert [c for c in commands if c not in listed] == []


async def test_notify_test_reaches_email_and_apprise_receivers(
    mailbox: Mailbox, receiver: Receiver, tmp_path: Path
) -> None:
    """One line per notifier: a mail through a real SMTP server (with AUTH), an Apprise json:// URL to a receiver."""
    (tmp_path / "smtp-password").write_text("relay-pass\n")
    mailbox.logins = {"watcher": "relay-pass"}
    apprise_url = receiver.url.replace("http://", "json://")
    notifiers = f"""
[messages]
language = "ja"

[[notifiers]]
kind = "email"
name = "ops-mail"
host = "127.0.0.1"
port = {mailbox.port}
tls = "none"
username = "watcher"
password_file = "smtp-password"
from = "watcher@example.com"
to = ["ops@example.com"]

[[notifiers]]
kind = "apprise"
name = "pager"
url = "{apprise_url}"
"""
    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/hook", [1], extra=notifiers)
    sent = {}
    for name in ("ops-mail", "pager"):
        result = await run(["notify-test", "-c", str(cfg), "--notifier", name], token="token-value")
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
        sent[name] = [line for line in result.stdout.decode().splitlines() if not line.startswith("{")]
    assert sent == {"ops-mail": ["ops-mail: 送信しました"], "pager": ["pager: 送信しました"]}
    assert mailbox.authenticated == ["watcher"]
    assert mailbox.mails[0]["Subject"] == "【通知】voicefox-watcher からのテスト通知"
    assert receiver.bodies()[0]["title"] == "voicefox-watcher からのテスト通知"

    mailbox.data_reply = "554 5.7.1 Rejected"
    receiver.default = Response(500, b"down")
    failed = await run(["notify-test", "-c", str(cfg)], token="token-value")
    assert failed.returncode == 1
    lines = [line for line in failed.stdout.decode().splitlines() if not line.startswith("{")]
    assert [line.split(":")[0] for line in lines] == ["hook", "log", "ops-mail", "pager"]
    assert "ops-mail: 失敗（再送しません）" in lines[2] and "554 5.7.1 Rejected" in lines[2]
    assert lines[3].startswith("pager: 失敗（再送します）: pager (Apprise: JSON): not delivered")
