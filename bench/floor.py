"""A floor for the benchmark: a bare httpx.AsyncClient loop doing the watcher's GETs on its schedule, nothing else.

Each task is polled every `--interval` seconds, first polls spread evenly over one interval, at most `--concurrency`
requests in flight (an asyncio.Semaphore, and as many pooled connections). A poll's schedule lag is when it starts
(slot in hand) minus when it was planned; the next poll is planned one interval after this one's plan, or now if that
is already past (the watcher's rule before it kept each task on its own phase). Each body is parsed with `json.loads` to read `status`: the
first poll of a task that sees a status other than its first one records the time (monotonic) for detection latency.

On SIGTERM/SIGINT, when standard input closes, or after `--max-seconds` it stops and writes a JSON file (`--out`):
every lag sample with its time, detections, poll and error counts. `--transport aiohttp` puts httpx's API on
`httpx_aiohttp.AiohttpTransport` (floor B); the default is httpx's own transport (floor A).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from array import array
from pathlib import Path

import httpx
from lifeline import Lifeline


class Floor:
    """The loop and what it saw."""

    def __init__(self, client: httpx.AsyncClient, task_ids: list[int], interval: float, concurrency: int) -> None:
        self.client = client
        self.task_ids = task_ids
        self.interval = interval
        self.semaphore = asyncio.Semaphore(concurrency)
        self.lag_at = array("d")  # when each poll started (monotonic)
        self.lag = array("d")  # how late it started against its plan
        self.first_status: dict[int, str] = {}
        self.seen: dict[int, list[object]] = {}  # task id -> [monotonic time the new status arrived, status]
        self.polls = 0
        self.errors = 0

    async def poller(self, task_id: int, planned: float) -> None:
        """Poll one task forever on its schedule."""
        path = f"/openapi/tasks/{task_id}"
        interval = self.interval
        while True:
            delay = planned - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            async with self.semaphore:
                started = time.monotonic()
                self.lag_at.append(started)
                self.lag.append(max(0.0, started - planned))
                try:
                    response = await self.client.get(path)
                    status = json.loads(response.content)["status"] if response.status_code == 200 else None
                except (httpx.HTTPError, ValueError, KeyError, TypeError):
                    status = None
            now = time.monotonic()
            self.polls += 1
            if status is None:
                self.errors += 1
            elif task_id not in self.first_status:
                self.first_status[task_id] = status
            elif status != self.first_status[task_id] and task_id not in self.seen:
                self.seen[task_id] = [now, status]
            planned = planned + interval if planned + interval > now else now

    def report(self) -> dict[str, object]:
        """What the benchmark reads."""
        return {
            "polls": self.polls,
            "errors": self.errors,
            "lag_at": self.lag_at.tolist(),
            "lag": self.lag.tolist(),
            "seen": {str(k): v for k, v in self.seen.items()},
        }


async def run(args: argparse.Namespace) -> dict[str, object]:
    """Poll until told to stop; return the report."""
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    transport: httpx.AsyncBaseTransport | None = None
    if args.transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits)
    task_ids = list(range(args.first_id, args.first_id + args.tasks))
    lifeline = Lifeline()
    await lifeline.start()
    async with httpx.AsyncClient(
        base_url=args.base_url,
        headers={"Authorization": f"Bearer {args.token}", "Accept": "application/json"},
        timeout=10.0,
        limits=limits,
        transport=transport,
    ) as client:
        floor = Floor(client, task_ids, args.interval, args.concurrency)
        start = time.monotonic()
        pollers = [
            asyncio.create_task(floor.poller(task_id, start + args.interval * i / len(task_ids)))
            for i, task_id in enumerate(task_ids)
        ]
        print(json.dumps({"ready": True, "start": start}), flush=True)
        await lifeline.wait(args.max_seconds)
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
    return floor.report()


def main() -> None:
    """Parse arguments, poll, write the report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--first-id", type=int, required=True)
    p.add_argument("--interval", type=float, required=True)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--transport", choices=["httpx", "aiohttp"], default="httpx")
    p.add_argument("--max-seconds", type=float, default=600.0, help="stop after this long whatever happens")
    p.add_argument("--out", type=Path, required=True, help="where to write the JSON report")
    args = p.parse_args()
    report = asyncio.run(run(args))
    args.out.write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main()
