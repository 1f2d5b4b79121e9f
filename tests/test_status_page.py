"""The status page (`[http] ui`) through real sockets: who may see it, what it shows, in which language, and that no
secret or phone number ever reaches it. The page in a real browser is tests/test_status_browser.py."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr

from watcher import config as config_mod
from watcher.cli_run import Components, open_components
from watcher.errors import ConfigError
from watcher.httpserver import Response
from watcher.model import TaskSnapshot, TaskState
from watcher.ops import OpsServer
from watcher.simulator import TOKYO, Simulator, task_body
from watcher.store import DeliveryReport, OutboxCount
from watcher.ui import StatusPage
from watcher.ui.board import ApiHealth, Board, Facts, Paces, Scrubber, board
from watcher.zone import Source, Zone

from .callhealth import collapsed, steady
from .conftest import Receiver
from .test_daemon import FAST_RETRY, make_config

pytestmark = pytest.mark.anyio

TOKEN = "ops-token-0123456789abcdef"
HOOK_SECRET = "whsec_" + base64.b64encode(b"hook-signing-secret-0123").decode()
HOOK_QUERY_SECRET = "hook-query-secret-987654"
SAFETY = 10  # seconds; only so that a regression fails instead of hanging


@dataclasses.dataclass
class Site:
    """A watcher's operator endpoint with the status page, and the simulator behind it."""

    url: str
    parts: Components
    sim: Simulator

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        async with httpx.AsyncClient() as http:
            return await http.get(self.url + path, **kw)

    async def poll_once(self) -> None:
        for task_id in self.parts.daemon.config.watch.ids:
            await self.parts.daemon.poll(task_id)


@asynccontextmanager
async def site(
    simulator: tuple[Simulator, str],
    hook_url: str,
    tmp_path: Path,
    *,
    tasks: list[int],
    token: str | None = None,
    language: str = "en",
    listen: str = "127.0.0.1:0",
) -> AsyncIterator[Site]:
    """The real wiring (store, daemon, dispatcher) with the page on the operator endpoint; nothing polls on its own:
    tests call `poll_once` (and deliver) when they want news."""
    sim, url = simulator
    config = make_config(url, sim.token, hook_url, tmp_path / "s.db", tasks)
    http: dict[str, Any] = {"listen": listen, "ui": True}
    if token is not None:
        http["token"] = token
    config = config.model_copy(
        update={
            "http": config.http.model_validate(http),
            "messages": config.messages.model_validate({"language": language}),
            "notifiers": [
                config.notifiers[0].model_copy(
                    update={"url": f"{hook_url}?token={HOOK_QUERY_SECRET}", "secret": _secret(HOOK_SECRET)}
                )
            ],
        }
    )
    async with open_components(config, api_retry=FAST_RETRY) as parts, anyio.create_task_group() as tg:
        page = StatusPage(parts.daemon, parts.store)
        server = OpsServer(parts.daemon, parts.store, parts.metrics, page=page)
        port = await tg.start(server.serve, "127.0.0.1", 0)
        yield Site(f"http://127.0.0.1:{port}", parts, sim)
        tg.cancel_scope.cancel()


async def shown(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path, path: str = "/", **kw: Any
) -> str:
    """What `path` shows once every task was polled."""
    async with site(simulator, receiver.url, tmp_path, **kw) as s:
        await s.poll_once()
        return (await s.get(path)).text


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


async def test_the_page_shows_every_task_with_its_progress_and_the_outbox(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, _ = simulator
    sim.add_task(1, "Renewals", status="running", progress=40, collectionRate=33)
    sim.add_task(2, "Winter sale", status="done", progress=100)
    async with site(simulator, receiver.url, tmp_path, tasks=[1, 2, 3]) as s:
        await s.poll_once()
        answer = await s.get("/")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
        html = answer.text
        assert 'id="task-1"' in html and "Renewals" in html and 'value="40"' in html and "33%" in html
        assert "Winter sale" in html and "done" in html
        assert "waiting for its first answer" in html  # task 3: the simulator has none
        assert "Campaign “Renewals” (task 1) is being watched" in html  # a recent event
        assert ">hook <" in html  # the notifier, with its pending deliveries
        assert "Answering: last answer" in html


async def test_the_live_part_follows_the_simulator_without_the_page(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, _ = simulator
    sim.add_task(1, "Renewals", status="running", progress=10)
    async with site(simulator, receiver.url, tmp_path, tasks=[1]) as s:
        await s.poll_once()
        before = (await s.get("/ui/live")).text
        sim.set(1, progress=70)
        await s.poll_once()
        after = (await s.get("/ui/live")).text
        assert 'data-progress="10"' in before and 'data-progress="70"' in after
        assert after.lstrip().startswith("<main") and "<html" not in after  # a fragment, swapped in place
        assert "Campaign “Renewals” (task 1) reached 70%" in after and "reached 70%" not in before


async def test_the_json_view_holds_the_same_facts(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, _ = simulator
    sim.add_task(1, "Renewals", status="running", progress=40)
    doc = json.loads(await shown(simulator, receiver, tmp_path, "/ui/status.json", tasks=[1]))
    assert doc["tasks"][0]["id"] == 1 and doc["tasks"][0]["progress"] == 40
    assert doc["receivers"][0]["name"] == "hook" and doc["api"]["tone"] == "good"
    assert doc["events"][0]["type"] == "voicefox.task.observed"


async def test_in_japanese_the_page_reads_japanese(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, _ = simulator
    sim.add_task(1, "更新キャンペーン", status="running", progress=40)
    html = await shown(simulator, receiver, tmp_path, tasks=[1], language="ja")
    assert '<html lang="ja">' in html
    for words in ("実行中", "進捗", "最近のイベント", "通知の配信", "更新キャンペーン"):
        assert words in html, words
    assert "Recent events" not in html and "Campaigns" not in html


@pytest.mark.parametrize("path", ["/", "/ui/live", "/ui/status.json", "/ui/static/htmx.min.js"])
async def test_with_a_token_nothing_is_shown_without_it(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path, path: str
) -> None:
    async with site(simulator, receiver.url, tmp_path, tasks=[1], token=TOKEN) as s:
        refused = await s.get(path)
        wrong = await s.get(path, headers={"Authorization": "Bearer not-the-token"})
        basic_wrong = await s.get(path, auth=("ops", "not-the-token"))
    for answer in (refused, wrong, basic_wrong):
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Basic ")  # a browser asks for it
        assert "Renewals" not in answer.text and "htmx" not in answer.text


async def test_the_token_opens_it_as_a_bearer_token_or_as_the_password_of_basic(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    async with site(simulator, receiver.url, tmp_path, tasks=[1], token=TOKEN) as s:
        bearer = await s.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        basic = await s.get("/", auth=("anyone", TOKEN))  # what a browser sends after its login prompt
    assert bearer.status_code == basic.status_code == 200
    assert "<html" in bearer.text


async def test_beyond_loopback_without_a_token_the_page_is_refused(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    """The config refuses it (below); should a config get past that, the endpoint still shows nothing."""
    async with site(simulator, receiver.url, tmp_path, tasks=[1]) as s:
        http = s.parts.daemon.config.http
        beyond = http.model_copy(update={"listen": "0.0.0.0:9310"})
        s.parts.daemon.config = s.parts.daemon.config.model_copy(update={"http": beyond})
        answer = await s.get("/")
    assert answer.status_code == 403 and "token" in answer.json()["reason"]


def test_the_config_wants_a_token_for_the_page_beyond_loopback() -> None:
    with pytest.raises(ConfigError, match="token: needed when ui = true"):
        config_mod.validate(_raw({"listen": "0.0.0.0:9310", "ui": True}), source="t")
    config_mod.validate(_raw({"listen": "0.0.0.0:9310", "ui": True, "token": TOKEN}), source="t")


def test_without_jinja2_the_config_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jinja2", None)  # as if not installed: importing it fails
    with pytest.raises(ConfigError) as caught:
        config_mod.validate(_raw({"listen": "127.0.0.1:9310", "ui": True}), source="t")
    assert caught.value.problems == [
        "http.ui: the status page needs the [ui] extra: pip install 'voicefox-watcher[ui]'"
    ]


def _raw(http: dict[str, Any]) -> dict[str, Any]:
    return {"api": {"token": "x" * 20}, "watch": {"tasks": [1]}, "http": http}


async def test_the_page_is_read_only(simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path) -> None:
    async with site(simulator, receiver.url, tmp_path, tasks=[1]) as s, httpx.AsyncClient() as http:
        answer = await http.post(s.url + "/", content=b"{}")
    assert answer.status_code == 405


async def test_it_loads_nothing_from_elsewhere_and_serves_its_own_htmx(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    async with site(simulator, receiver.url, tmp_path, tasks=[1]) as s:
        answer = await s.get("/")
        html = answer.text
        sources = re.findall(r'(?:src|href)="([^"]+)"', html)
        assets = {src: await s.get(src) for src in sources}
    assert sources and all(src.startswith("/ui/static/") for src in sources)
    assert all(a.status_code == 200 for a in assets.values())
    assert any(b"htmx" in a.content[:100] for a in assets.values())
    # No inline script or style can run, even one that slipped into a name from the API.
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert "<style" not in html and " style=" not in html and "<script>" not in html


async def test_a_campaign_name_is_shown_as_written_never_as_markup(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, _ = simulator
    sim.add_task(1, '<script>alert("x")</script><b>VIP</b>', status="running", progress=5)
    html = await shown(simulator, receiver, tmp_path, tasks=[1])
    assert "<script>alert" not in html and "<b>VIP" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b&gt;VIP&lt;/b&gt;" in html


async def test_no_secret_and_no_phone_number_is_ever_shown(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    """The API token, the notifier's URL secret and signing secret, the operator token, and the simulator's phone
    numbers, assistant credentials and creator e-mail: on no path, also while a delivery fails with its error shown."""
    sim, _ = simulator
    sim.add_task(1, "Renewals", status="running", progress=40)
    receiver.default = Response(500, b'{"error":"down"}')
    async with site(simulator, receiver.url, tmp_path, tasks=[1], token=TOKEN) as s:
        await s.poll_once()
        await s.parts.dispatcher.drain()  # one attempt: it fails, and its error is kept
        assert receiver.requests
        auth = {"Authorization": f"Bearer {TOKEN}"}
        served = {path: (await s.get(path, headers=auth)).text for path in ("/", "/ui/live", "/ui/status.json")}
    assert "HTTP 500" in served["/"] or "500" in served["/"]  # the error is there, to diagnose with
    body = task_body(1, "Renewals")
    forbidden = [
        sim.token,
        TOKEN,
        HOOK_SECRET,
        HOOK_QUERY_SECRET,
        receiver.url,
        body["assistant"]["websocketToken"],
        body["assistant"]["websocketUrl"],
        body["assistant"]["creator"]["email"],
        *(str(n) for n in body["option"]["numbers"]),
    ]
    for path, text in served.items():
        for secret in forbidden:
            assert secret not in text, (path, secret)


def test_the_scrubber_hides_secrets_and_anything_shaped_like_a_phone_number() -> None:
    config = config_mod.validate(
        {
            "api": {"token": "api-token-0123456789"},
            "watch": {"tasks": [1]},
            "notifiers": [
                {
                    "kind": "dingtalk",
                    "name": "d",
                    "url": "https://oapi.dingtalk.com/robot/send?access_token=abc",
                    "at_mobiles": ["13800001111"],
                }
            ],
        },
        source="t",
    )
    scrub = Scrubber(config)
    assert scrub("401 for api-token-0123456789") == "401 for [REDACTED]"
    assert scrub("cannot reach 13800001111") == "cannot reach [REDACTED]"
    for number in (
        "+81 90 1234 5678",
        "819012345678",
        "090-1234-5678",
        "+86 138-0000-1111",
        "+1 (415) 555-0100",
        "(090) 1234-5678",
    ):
        assert scrub(f"refused {number}: blocked") == "refused […]: blocked", number
    for fine in ("HTTP 503 after 12.5 s", "errcode 310000", "2026-11-23 18:00:00", "retry in 3600 s"):
        assert scrub(fine) == fine
    # A reload replaced the token: an error stored before it may still quote the old one, and is hidden all the same.
    rotated = config.model_copy(update={"api": config.api.model_copy(update={"token": SecretStr("new-token-98765")})})
    after = Scrubber(rotated, also=scrub.hidden)
    assert after("401 for api-token-0123456789; 401 for new-token-98765") == "401 for [REDACTED]; 401 for [REDACTED]"


T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def running(progress: int, since: datetime, status: str = "running") -> TaskState:
    return TaskState(TaskSnapshot(id=1, status=status, progress=progress), progress_since=since)


def test_the_eta_is_at_the_pace_kept_since_the_page_first_saw_the_task_progress() -> None:
    paces = Paces()
    assert paces.eta(running(20, T0)) is None  # one observation: no pace yet
    assert paces.eta(running(20, T0)) is None
    assert paces.eta(running(40, T0 + timedelta(minutes=10))) == 30 * 60  # 20 % per 10 min: 60 % in 30 min
    assert paces.eta(running(50, T0 + timedelta(minutes=30))) == 50 * 60  # 30 % in 30 min
    assert paces.eta(running(50, T0 + timedelta(minutes=30), status="stop.operate")) is None
    assert paces.eta(running(60, T0 + timedelta(hours=2))) is None  # resumed: its pace starts again


def test_a_progress_that_goes_back_starts_a_new_pace() -> None:
    paces = Paces()
    paces.eta(running(80, T0))
    assert paces.eta(running(10, T0 + timedelta(hours=1))) is None
    assert paces.eta(running(20, T0 + timedelta(hours=2))) == 8 * 3600


def facts(**changes: Any) -> Facts:
    """The facts of a quiet moment: one notifier, no task known, the API answering."""
    config = config_mod.validate(
        {"api": {"token": "x" * 20}, "watch": {"tasks": [1]}, "notifiers": [{"kind": "log", "name": "ops-log"}]},
        source="t",
    )
    base = Facts(
        config=config,
        now=T0,
        states={},
        zones={},
        zone=Zone(TOKYO, Source.CONFIG),
        events=(),
        counts=(),
        report=(),
        api=ApiHealth(outage=None, silent_for=3.0, silent_limit=90.0),
    )
    return dataclasses.replace(base, **changes)


def shown_board(f: Facts, language: str = "en") -> Board:
    return board(f, Paces(), Scrubber(f.config), language)


@pytest.mark.parametrize(
    ("health", "tone", "text"),
    [
        (ApiHealth(None, 3.0, 90.0), "good", "Answering: last answer 3 sec ago"),
        (ApiHealth(None, 200.0, 90.0), "warning", "No answer for 3 min"),
        (ApiHealth(None, 3.0, None), "muted", "No task is being polled now."),
        (ApiHealth((T0, "unreachable or failing"), 600.0, 90.0), "danger", "Unreachable since Nov 23, 2026, 6:00:00"),
        (ApiHealth((T0, "authentication"), 600.0, 90.0), "danger", "The API has refused the token since"),
    ],
)
def test_the_api_line_says_whether_it_answers(health: ApiHealth, tone: str, text: str) -> None:
    line = shown_board(facts(api=health)).api
    assert line.tone == tone and line.text.startswith(text), line


def test_a_notifier_is_failing_while_its_newest_error_is_newer_than_its_newest_delivery() -> None:
    t = T0.timestamp()
    f = facts(
        counts=(OutboxCount("ops-log", "pending", 3, t - 120), OutboxCount("gone", "dead", 2, t - 999)),
        report=(DeliveryReport("ops-log", "HTTP 503 from +81 90-1234-5678", t - 10, t - 60),),
    )
    failing, gone = shown_board(f).receivers
    assert (failing.state, failing.tone, failing.pending, failing.oldest) == ("failing", "danger", 3, "2 min")
    assert failing.last_error == "HTTP 503 from […]"
    # A receiver no longer configured still shows while its rows were given up on.
    assert (gone.name, gone.kind, gone.dead, gone.state, gone.tone) == ("gone", "–", 2, "nothing sent yet", "warning")
    recovered = facts(report=(DeliveryReport("ops-log", "HTTP 503", t - 60, t - 10),))
    assert shown_board(recovered).receivers[0].state == "delivering"


def test_stalled_and_missing_tasks_say_so() -> None:
    stalled = TaskState(TaskSnapshot(id=1, status="running", name="A", progress=5), progress_since=T0, stalled=True)
    missing = dataclasses.replace(stalled, stalled=False, missing=True)
    for state, flag, tone in ((stalled, "stalled", "warning"), (missing, "missing", "danger")):
        card = shown_board(facts(states={1: state})).tasks[0]
        assert (card.flag, card.tone) == (flag, tone)
    ja = shown_board(facts(states={1: stalled}), "ja").tasks[0]
    assert (ja.status, ja.flag, ja.changed) == ("実行中", "停滞中", "2026/11/23 18:00:00 (UTC+09:00)")


def test_a_task_whose_call_log_was_read_shows_its_calls_and_a_collapsed_answer_rate() -> None:
    task = TaskState(TaskSnapshot(id=1, status="running", name="A", progress=5), progress_since=T0)
    unread = shown_board(facts(states={1: task})).tasks[0]
    assert (unread.calls, unread.answer_rate, unread.answer_drop, unread.flag) == ("", "", "", "")
    steady_card = shown_board(facts(states={1: dataclasses.replace(task, health=steady(T0))})).tasks[0]
    assert (steady_card.calls, steady_card.answer_rate, steady_card.answer_drop) == ("120 (48 answered)", "40%", "")
    assert (steady_card.flag, steady_card.tone) == ("", "info")
    dropped = dataclasses.replace(task, health=collapsed(T0))
    card = shown_board(facts(states={1: dropped})).tasks[0]
    assert (card.calls, card.answer_rate, card.flag, card.tone) == (
        "312 (41 answered)",
        "3%",
        "answer rate dropped",
        "warning",
    )
    assert card.answer_drop == "40% → 4% since Nov 23, 2026, 5:50:00\u202fPM (UTC+09:00)"
    failed = dataclasses.replace(dropped, snapshot=TaskSnapshot(id=1, status="stop.abnormal", name="A", progress=5))
    assert shown_board(facts(states={1: failed})).tasks[0].tone == "danger"  # a failure's colour is not softened
    stalled = shown_board(facts(states={1: dataclasses.replace(dropped, stalled=True)})).tasks[0]
    assert stalled.flag == "stalled" and stalled.answer_drop  # the stall says more; the collapse is still shown
    ja = shown_board(facts(states={1: dropped}), "ja").tasks[0]
    assert (ja.calls, ja.flag) == ("312（応答 41）", "応答率が低下")
    assert ja.answer_drop == "2026/11/23 17:50:00 (UTC+09:00) から 40% → 4%"


async def test_the_page_shows_the_calls_the_store_keeps(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, _ = simulator
    sim.add_task(1, "Renewals", status="running", progress=40)
    sim.add_task(2, "Surveys", status="running", progress=10)
    async with site(simulator, receiver.url, tmp_path, tasks=[1, 2]) as s:
        await s.poll_once()
        now = datetime.now(UTC)
        state = s.parts.daemon.states[1]
        await s.parts.store.record(dataclasses.replace(state, health=collapsed(now)), [], now=now.timestamp())
        html = (await s.get("/ui/live")).text
        card = html[html.index('id="task-1"') : html.index('id="task-2"')]
        assert "Calls in the last hour" in card and "312 (41 answered)" in card and "3%" in card
        assert "answer rate dropped" in card and "40% → 4% since" in card
        assert "Calls in the last hour" not in html[html.index('id="task-2"') :]  # its call log not read yet
        doc = json.loads((await s.get("/ui/status.json")).text)
        assert [(t["calls"], t["answer_rate"]) for t in doc["tasks"]] == [("312 (41 answered)", "3%"), ("", "")]
