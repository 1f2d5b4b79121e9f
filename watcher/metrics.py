"""Prometheus metrics: counters updated where things happen, gauges read from the store and the daemon at scrape time."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from . import __version__
from .health import calls_last_hour

if TYPE_CHECKING:
    from .model import TaskState
    from .replicas import Coordinator
    from .store import OutboxCount
    from .stores import StateStore

PREFIX = "voicefox_watcher"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Every metric the watcher exports, in a registry of its own (no global state, one per daemon or test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.polls = Counter(f"{PREFIX}_polls", "Polls of a task, by outcome.", ["outcome"], registry=r)
        self.api_latency = Histogram(
            f"{PREFIX}_api_request_duration_seconds",
            "Duration of one request to the VoiceFox API, body included.",
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.api_responses = Counter(
            f"{PREFIX}_api_responses",
            "Answers of the VoiceFox API by HTTP status (or error kind).",
            ["code"],
            registry=r,
        )
        self.schedule_lag = Histogram(
            f"{PREFIX}_schedule_lag_seconds",
            "How late each poll started against its plan (waits for the concurrency limit and pauses included).",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        self.events = Counter(f"{PREFIX}_events", "Events detected, by type.", ["type"], registry=r)
        self.calllog_looks = Counter(
            f"{PREFIX}_calllog_looks",
            "Looks at the call log (of up to 10 tasks each; a look may read several pages), by outcome"
            " (ok, forbidden, rate_limited, failed).",
            ["outcome"],
            registry=r,
        )
        self.deliveries = Counter(
            f"{PREFIX}_deliveries", "Delivery attempts, by notifier and outcome.", ["notifier", "outcome"], registry=r
        )
        self.held = Gauge(
            f"{PREFIX}_outbox_held",
            "Pending deliveries quiet hours hold back now, by notifier.",
            ["notifier"],
            registry=r,
        )
        self.lease_renewals = Counter(
            f"{PREFIX}_lease_renewals",
            "Rounds of lease renewal of this replica (PostgreSQL replicas), by result (ok, failed).",
            ["result"],
            registry=r,
        )
        self.last_poll = Gauge(
            f"{PREFIX}_last_successful_poll_timestamp_seconds", "When a poll last got an answer.", registry=r
        )
        build = Gauge(
            f"{PREFIX}_build_info", "Version of voicefox-watcher and Python.", ["version", "python"], registry=r
        )
        build.labels(__version__, platform.python_version()).set(1)
        # The children every successful poll touches, bound once: a label lookup per poll is measurable (bench/).
        self.polls_ok = self.polls.labels("ok")
        self._responses_200 = self.api_responses.labels("200")
        self._store: StateStore | None = None
        self.outbox: list[OutboxCount] = []  # as of the last `refresh`

    def observe_api(self, code: str, seconds: float) -> None:
        """One API request ended with `code` (an HTTP status, or "timeout"/"error")."""
        (self._responses_200 if code == "200" else self.api_responses.labels(code)).inc()
        self.api_latency.observe(seconds)

    def watch_state(
        self,
        store: StateStore,
        task_statuses: Callable[[], Iterator[str]],
        clock: Callable[[], float] = time.time,
        *,
        zone: Callable[[], tuple[str, str, int]] | None = None,
        replicas: Coordinator | None = None,
        call_health: Callable[[], Iterator[TaskState]] | None = None,
    ) -> None:
        """Export outbox depth, age and dead letters (as of the last `refresh`), watched tasks by status, the
        campaigns' zone (name, source, tasks whose windows are in doubt), this replica's share and leases, and the
        calls of each task whose call log was read (`call_health`: those tasks' states)."""
        self._store = store
        self.registry.register(_StateCollector(self, task_statuses, clock, zone))
        if call_health is not None:
            self.registry.register(_CallCollector(call_health, clock))
        if replicas is not None:
            self.registry.register(_ReplicaCollector(replicas))

    async def refresh(self) -> None:
        """Read what the next render reports of the store: awaited before each scrape, so that no scrape reads the
        store on the event loop (a collector's `collect` cannot await)."""
        if self._store is not None:
            self.outbox = await self._store.outbox_counts()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(
        self,
        metrics: Metrics,
        task_statuses: Callable[[], Iterator[str]],
        clock: Callable[[], float],
        zone: Callable[[], tuple[str, str, int]] | None,
    ) -> None:
        self._metrics = metrics
        self._task_statuses = task_statuses
        self._clock = clock
        self._zone = zone

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pending = GaugeMetricFamily(f"{PREFIX}_outbox_pending", "Deliveries waiting, by notifier.", labels=["notifier"])
        age = GaugeMetricFamily(
            f"{PREFIX}_outbox_oldest_age_seconds",
            "Age of the oldest waiting delivery, by notifier.",
            labels=["notifier"],
        )
        dead = GaugeMetricFamily(f"{PREFIX}_outbox_dead", "Dead-lettered deliveries, by notifier.", labels=["notifier"])
        now = self._clock()
        for c in self._metrics.outbox:
            if c.state == "pending":
                pending.add_metric([c.receiver], c.count)
                age.add_metric([c.receiver], max(0.0, now - (c.oldest or now)))
            elif c.state == "dead":
                dead.add_metric([c.receiver], c.count)
        tasks = GaugeMetricFamily(f"{PREFIX}_tasks", "Watched tasks by last known status.", labels=["status"])
        counts: dict[str, int] = {}
        for status in self._task_statuses():
            counts[status] = counts.get(status, 0) + 1
        for status, n in sorted(counts.items()):
            tasks.add_metric([status], n)
        yield from (pending, age, dead, tasks)
        if self._zone is not None:
            name, source, doubted = self._zone()
            info = GaugeMetricFamily(
                f"{PREFIX}_timezone_info",
                "The campaigns' time zone the calling windows are read in, and how it was found"
                " (config, api, learned, unknown).",
                labels=["zone", "source"],
            )
            info.add_metric([name, source], 1)
            yield info
            yield GaugeMetricFamily(
                f"{PREFIX}_tasks_windows_doubted",
                "Tasks seen changing inside a calling window believed closed: polled as if their windows were open.",
                value=doubted,
            )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


class _CallCollector(Collector):
    """Each task's calls as its call log last showed them: counts and shares only."""

    def __init__(self, states: Callable[[], Iterator[TaskState]], clock: Callable[[], float]) -> None:
        self._states = states
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        calls = GaugeMetricFamily(
            f"{PREFIX}_task_calls_last_hour",
            "Calls the task started in the last hour (that ended).",
            labels=["task_id"],
        )
        answered = GaugeMetricFamily(
            f"{PREFIX}_task_answered_last_hour", "Of those, the calls answered.", labels=["task_id"]
        )
        rate = GaugeMetricFamily(
            f"{PREFIX}_task_answer_rate",
            "Answered share of the task's latest calls (the judged window; absent while it holds none).",
            labels=["task_id"],
        )
        dropped = GaugeMetricFamily(
            f"{PREFIX}_task_answer_rate_dropped",
            "1 while the task's answered share has collapsed against its own earlier share (not yet recovered).",
            labels=["task_id"],
        )
        now = datetime.fromtimestamp(self._clock(), UTC)
        for state in self._states():
            if (health := state.health) is None:
                continue
            task = [str(state.snapshot.id)]
            n, k = calls_last_hour(health, now)
            calls.add_metric(task, n)
            answered.add_metric(task, k)
            if (share := health.rate) is not None:
                rate.add_metric(task, share)
            dropped.add_metric(task, 0 if health.episode is None else 1)
        yield from (calls, answered, rate, dropped)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


class _ReplicaCollector(Collector):
    """The replicas as this one last heard of them from the database, its leases, and how fresh they are."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from .replicas import RECEIVER, TASK, WATCHER

        c = self._coordinator
        view = c.view
        info = GaugeMetricFamily(f"{PREFIX}_replica_info", "This replica's id.", labels=["replica"])
        info.add_metric([c.me], 1)
        yield info
        yield GaugeMetricFamily(
            f"{PREFIX}_replicas_alive",
            "Replicas alive on the store, as of this one's last round.",
            value=len(view.alive()) if view else 0,
        )
        held = GaugeMetricFamily(
            f"{PREFIX}_leases_held", "Leases this replica holds, by kind (task, receiver, watcher).", labels=["kind"]
        )
        for kind in (TASK, RECEIVER, WATCHER):
            held.add_metric([kind], len(view.held(kind)) if view and c.holds_leases() else 0)
        yield held
        age = c.lease_age()
        yield GaugeMetricFamily(
            f"{PREFIX}_lease_age_seconds",
            "Seconds since this replica last renewed its leases (they run out at the lease time).",
            value=age if age is not None else float("nan"),
        )
        yield GaugeMetricFamily(f"{PREFIX}_lease_seconds", "The lease time in force.", value=c.ttl)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
