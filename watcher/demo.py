"""`watcher demo`: the simulator, the real daemon and a signed-webhook receiver, all in one process on 127.0.0.1."""

from __future__ import annotations

import base64
import hmac
import json
import tempfile
import unicodedata
from pathlib import Path
from typing import TextIO

import anyio

from . import config as config_mod
from . import logs
from .cli_run import open_components
from .httpserver import Request, Response, serve
from .i18n import translator
from .model import Event, EventType
from .notify.message import build, status_text
from .notify.webhook import sign
from .simulator import Simulator, demo_scenario
from .zone import HOW

_SYMBOL = {"good": "✔", "danger": "✖", "warning": "▲", "info": "•"}
_FINAL = {EventType.FINISHED.value, EventType.FAILED.value}


def _pad(text: str, width: int) -> str:
    """`text` padded to `width` columns as a terminal shows them (a kanji takes two)."""
    columns = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return text + " " * max(0, width - columns)


DEMO_SECRET = "whsec_" + base64.b64encode(b"voicefox-watcher-demo-secret-32b").decode()


async def run_demo(out: TextIO, scale: float = 1.0, language: str = "en") -> int:
    """Play the demo scenario; print each webhook as it arrives; exit 0 when every campaign has ended."""
    # The simulator writes its timestamps as in Tokyo (+09:00) and its campaigns call in Tokyo hours; the watcher is
    # told no zone, as on a server in UTC, and finds it from the API.
    t = translator(language)
    sim = Simulator(timestamps="offset")
    task_ids = demo_scenario(sim, scale)
    finals: set[str] = set()
    all_final = anyio.Event()
    received: list[Event] = []
    bad_signatures = 0
    t0 = anyio.current_time()

    async def receiver(request: Request) -> Response:
        nonlocal bad_signatures
        msg_id, ts = request.headers.get("webhook-id", ""), request.headers.get("webhook-timestamp", "0")
        expected = sign(DEMO_SECRET, msg_id, int(ts), request.body)
        if not hmac.compare_digest(expected, request.headers.get("webhook-signature", "")):
            bad_signatures += 1
            return Response(401)
        doc = json.loads(request.body)
        event = Event.from_dict({k: doc[k] for k in ("id", "type", "time", "subject", "data")})
        received.append(event)
        msg = build(event, language=language)
        task = event.data.get("task") or {}
        state = f"[{status_text(str(task.get('status')), t)}, {t.percent(task.get('progress'))}]"
        print(
            f"{anyio.current_time() - t0:5.1f}s  {_SYMBOL[msg.severity.value]} {_pad(msg.headline, 72)} {state}",
            file=out,
            flush=True,
        )
        if event.type in _FINAL:
            finals.add(event.subject)
        finished = {e.subject for e in received if e.type == EventType.FINISHED.value}
        recovered = any(e.type == EventType.ANSWER_RATE_RECOVERED.value for e in received)
        if len(finals) >= 2 and finished >= {"1001", "1003"} and recovered:
            all_final.set()
        return Response(204)

    logs.configure(level="warning", fmt="console", stream=out)
    with tempfile.TemporaryDirectory(prefix="voicefox-watcher-demo-") as tmp:
        async with anyio.create_task_group() as tg:
            api_port = await tg.start(sim.serve)
            hook_port = await tg.start(serve, receiver)
            config = config_mod.validate(
                {
                    "api": {"base_url": f"http://127.0.0.1:{api_port}", "token": sim.token, "timeout": "2s"},
                    "watch": {
                        "tasks": task_ids,
                        "interval": max(0.2, scale),
                        "progress_step": 25,
                        "stall_after": 5 * scale,
                        # A demo day is short: the slow pace (stopped tasks, windows closed) is four intervals.
                        "slow_interval": 4 * max(0.2, scale),
                    },
                    # The call log is read every second: campaign 1005's answered share collapses, and recovers.
                    "health": {"every": 1.0},
                    "store": {"path": str(Path(tmp) / "state.db")},
                    "notifiers": [
                        {
                            "kind": "webhook",
                            "name": "demo-hook",
                            "url": f"http://127.0.0.1:{hook_port}/hook",
                            "secret": DEMO_SECRET,
                        }
                    ],
                },
                source="demo",
            )
            opening = t.say(
                "voicefox-watcher demo: simulator on 127.0.0.1:{api_port}, signed webhooks to 127.0.0.1:{hook_port}, "
                "{campaigns} campaigns, polling every {interval}",
                api_port=api_port,
                hook_port=hook_port,
                campaigns=len(task_ids),
                interval=t.duration(config.watch.interval),
            )
            print(
                opening + "\n",
                file=out,
                flush=True,
            )
            # The daemon's task group lives inside the components, so the store closes only after it stopped.
            async with open_components(config) as parts, anyio.create_task_group() as watcher_tg:
                await watcher_tg.start(parts.daemon.run)
                with anyio.move_on_after(60 * max(scale, 1.0)) as timer:
                    await all_final.wait()
                parts.dispatcher.shutdown()
                watcher_tg.cancel_scope.cancel()
                zone = parts.daemon.zones.zone()
            tg.cancel_scope.cancel()
    polls = sim.requests_by_task
    how = t.gettext(HOW[zone.source])
    print("\n" + t.say("The campaigns' time zone: {zone} ({how})", zone=zone.name, how=how), file=out)
    print(
        t.say(
            "Task 1004 calls later today in Tokyo: polled {later} times, against {now} for task 1001 calling now",
            later=polls.get(1004, 0),
            now=polls.get(1001, 0),
        ),
        file=out,
    )
    duplicates = len(received) - len({e.id for e in received})
    ok = not timer.cancelled_caught and bad_signatures == 0 and duplicates == 0
    summary = t.say(
        "{events} events delivered, {duplicates} duplicates, {bad} bad signatures",
        events=len(received),
        duplicates=duplicates,
        bad=bad_signatures,
    )
    if timer.cancelled_caught:
        summary += t.gettext("; the campaigns did not all end in time")
    print(summary, file=out)
    return 0 if ok else 1
