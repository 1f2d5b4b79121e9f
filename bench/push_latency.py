"""Push hint -> `finished` at the webhook receiver: how long after VoiceFox's task.end push the watcher announces it.

The real daemon (in this process, its real wiring) polls every 60 s, so only the push can make it notice sooner;
the simulator and a receiver run on 127.0.0.1. Each trial finishes one task at the simulator, POSTs the signed
push, and times the finished event's arrival.

    .venv/bin/python bench/push_latency.py [--tasks 50]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import anyio
import httpx

from watcher import config as config_mod
from watcher.cli_run import open_components
from watcher.httpserver import Request, Response, serve
from watcher.logs import configure
from watcher.ops import OpsServer
from watcher.simulator import Simulator

SECRET = "bench-push-secret-0123456789"  # noqa: S105 - a local benchmark's throwaway secret


async def main(tasks: int) -> None:
    configure(level="error", fmt="json")
    sim = Simulator()
    ids = list(range(1, tasks + 1))
    for task_id in ids:
        sim.add_task(task_id, status="running", progress=90)
    arrived: dict[str, float] = {}
    finished = anyio.Event()

    async def receiver(request: Request) -> Response:
        nonlocal finished
        body = httpx.Response(200, content=request.body).json()
        if body["type"] == "voicefox.task.finished":
            arrived[body["subject"]] = time.perf_counter()
            finished.set()
        return Response(204)

    with tempfile.TemporaryDirectory() as tmp:
        async with anyio.create_task_group() as tg:
            api_port = await tg.start(sim.serve)
            hook_port = await tg.start(serve, receiver)
            config = config_mod.validate(
                {
                    "api": {"base_url": f"http://127.0.0.1:{api_port}", "token": sim.token},
                    "watch": {"tasks": ids, "interval": "60s"},
                    "store": {"path": str(Path(tmp) / "state.db")},
                    "http": {"listen": "127.0.0.1:0"},
                    "push": {"path": "/push", "secret": SECRET},
                    "notifiers": [{"kind": "webhook", "name": "hook", "url": f"http://127.0.0.1:{hook_port}/"}],
                },
                source="bench",
            )
            async with open_components(config) as parts, anyio.create_task_group() as inner:
                port = await inner.start(OpsServer(parts.daemon, parts.store, parts.metrics).serve, "127.0.0.1", 0)
                await inner.start(parts.daemon.run)
                await anyio.sleep(61)  # every task observed once; the next scheduled polls are a minute away
                latencies = []
                async with httpx.AsyncClient() as http:
                    for task_id in ids:
                        finished = anyio.Event()
                        sim.set(task_id, status="done", progress=100)
                        sent = time.perf_counter()
                        await http.post(
                            f"http://127.0.0.1:{port}/push",
                            json={"event_name": "task.end", "event_data": {"task_id": task_id}},
                            headers={"X-Webhook-Secret": SECRET},
                        )
                        with anyio.fail_after(10):
                            await finished.wait()
                        latencies.append(arrived[str(task_id)] - sent)
                inner.cancel_scope.cancel()
            tg.cancel_scope.cancel()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    print(
        f"push -> finished at the receiver, {tasks} trials: p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms,"
        f" max {max(latencies) * 1000:.1f} ms (the scheduled poll was up to 60 s away)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50)
    anyio.run(main, parser.parse_args().tasks)
