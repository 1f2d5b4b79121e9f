"""The dispatcher: per-receiver order, isolation, retry with backoff, dead letters, graceful shutdown."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Sequence
from datetime import UTC, datetime

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from watcher.detect import Rules, detect
from watcher.dispatch import Dispatcher
from watcher.errors import DeliveryError
from watcher.model import Event, TaskSnapshot
from watcher.retry import auth_pause, delivery_delay, poll_failure_delay, rate_limit_pause
from watcher.store import Store
from watcher.stores import ThreadedStore

from .conftest import Receiver

pytestmark = pytest.mark.anyio
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class FakeNotifier:
    """Records what it is sent; fails according to a script of outcomes."""

    digest = False

    def __init__(self, name: str, outcomes: list[DeliveryError | None] | None = None) -> None:
        self.name = name
        self.outcomes = list(outcomes or [])
        self.sent: list[str] = []
        self.attempts = 0
        self.release: anyio.Event | None = None  # when set, `send` waits for it
        self.entered = anyio.Event()

    def wants(self, event_type: str) -> bool:
        return True

    async def send(self, event: Event) -> None:
        self.attempts += 1
        self.entered.set()
        if self.release is not None:
            await self.release.wait()
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        self.sent.append(event.subject)

    async def send_digest(self, events: Sequence[Event]) -> None:
        for event in events:
            await self.send(event)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await anyio.lowlevel.checkpoint()


def _queue(store: Store, dispatcher: Dispatcher, task_ids: list[int], now: float) -> None:
    for task_id in task_ids:
        state, events = detect(None, TaskSnapshot(id=task_id, status="running"), T0, Rules())
        store.record(state, [(e, dispatcher.receivers_for(e.type)) for e in events], now)


async def test_drain_delivers_each_receivers_rows_in_order() -> None:
    store, clock = Store.open(":memory:"), Clock()
    a, b = FakeNotifier("a"), FakeNotifier("b")
    dispatcher = Dispatcher(ThreadedStore(store), {"a": a, "b": b}, clock=clock, sleep=clock.sleep)
    _queue(store, dispatcher, [1, 2, 3], clock.now)
    await dispatcher.drain()
    assert a.sent == b.sent == ["1", "2", "3"]
    assert {(c.receiver, c.state, c.count) for c in store.outbox_counts()} == {
        ("a", "delivered", 3),
        ("b", "delivered", 3),
    }


async def test_a_failing_receiver_keeps_its_order_and_delays_no_other() -> None:
    store, clock = Store.open(":memory:"), Clock()
    down = FakeNotifier("down", [DeliveryError("503")] * 5)
    up = FakeNotifier("up")
    dispatcher = Dispatcher(ThreadedStore(store), {"down": down, "up": up}, clock=clock, sleep=clock.sleep)
    _queue(store, dispatcher, [1, 2], clock.now)
    with capture_logs() as logs:
        await dispatcher.drain()
    assert up.sent == ["1", "2"]
    assert down.sent == []
    assert down.attempts == 1  # it stopped at its head; the row behind it was not sent out of order
    head = store.head("down")
    assert head is not None and head.event.subject == "1" and head.attempts == 1
    assert head.next_attempt_at > clock.now
    assert any(log["event"] == "delivery.failed" and log["receiver"] == "down" for log in logs)


async def test_retry_after_from_the_receiver_is_honoured() -> None:
    store, clock = Store.open(":memory:"), Clock()
    slow = FakeNotifier("slow", [DeliveryError("429", retry_after=120.0)])
    dispatcher = Dispatcher(ThreadedStore(store), {"slow": slow}, clock=clock, sleep=clock.sleep)
    _queue(store, dispatcher, [1], clock.now)
    await dispatcher.drain()
    head = store.head("slow")
    assert head is not None and head.next_attempt_at >= clock.now + 120.0


async def test_backoff_grows_and_is_capped() -> None:
    store, clock = Store.open(":memory:"), Clock()
    flaky = FakeNotifier("flaky", [DeliveryError("500")] * 20)
    dispatcher = Dispatcher(ThreadedStore(store), {"flaky": flaky}, clock=clock, sleep=clock.sleep, backoff_max=30.0)
    _queue(store, dispatcher, [1], clock.now)
    waits = []
    for _ in range(10):
        await dispatcher.drain()
        head = store.head("flaky")
        assert head is not None
        waits.append(head.next_attempt_at - clock.now)
        clock.now = head.next_attempt_at
    assert waits[0] < waits[3]
    assert max(waits) <= 30.0


async def test_a_permanent_error_dead_letters_the_row_and_moves_on() -> None:
    store, clock = Store.open(":memory:"), Clock()
    picky = FakeNotifier("picky", [DeliveryError("400 invalid_payload", permanent=True)])
    dispatcher = Dispatcher(ThreadedStore(store), {"picky": picky}, clock=clock, sleep=clock.sleep)
    _queue(store, dispatcher, [1, 2], clock.now)
    with capture_logs() as logs:
        await dispatcher.drain()
    assert picky.sent == ["2"]
    assert {(c.state, c.count) for c in store.outbox_counts()} == {("dead", 1), ("delivered", 1)}
    assert any(log["event"] == "delivery.dead_lettered" and log["log_level"] == "error" for log in logs)


async def test_rows_older_than_max_age_are_dead_lettered_not_sent() -> None:
    store, clock = Store.open(":memory:"), Clock()
    late = FakeNotifier("late")
    dispatcher = Dispatcher(ThreadedStore(store), {"late": late}, clock=clock, sleep=clock.sleep, max_age=60.0)
    _queue(store, dispatcher, [1], clock.now)
    clock.now += 61.0
    await dispatcher.drain()
    assert late.attempts == 0
    assert [(c.state, c.count) for c in store.outbox_counts()] == [("dead", 1)]


async def test_workers_deliver_what_is_queued_after_they_start() -> None:
    store = Store.open(":memory:")
    hook = FakeNotifier("hook")
    dispatcher = Dispatcher(ThreadedStore(store), {"hook": hook})
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.run)
        _queue(store, dispatcher, [7], time.time())
        hook.entered = anyio.Event()
        dispatcher.wake()
        with anyio.fail_after(5):
            await hook.entered.wait()
            while store.head("hook") is not None:
                await anyio.lowlevel.checkpoint()
        tg.cancel_scope.cancel()
    assert hook.sent == ["7"]


async def test_shutdown_lets_a_delivery_in_flight_finish() -> None:
    store = Store.open(":memory:")
    hook = FakeNotifier("hook")
    hook.release = anyio.Event()
    dispatcher = Dispatcher(ThreadedStore(store), {"hook": hook}, shutdown_grace=5.0)
    _queue(store, dispatcher, [1], time.time())
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.run)
        with anyio.fail_after(5):
            await hook.entered.wait()
        dispatcher.shutdown()
        tg.cancel_scope.cancel()
        hook.release.set()
    assert hook.sent == ["1"]
    assert [(c.state, c.count) for c in store.outbox_counts()] == [("delivered", 1)]


async def test_shutdown_leaves_a_delivery_that_outlives_the_grace_in_the_outbox() -> None:
    store = Store.open(":memory:")
    hook = FakeNotifier("hook")
    hook.release = anyio.Event()  # never set: the receiver hangs
    dispatcher = Dispatcher(ThreadedStore(store), {"hook": hook}, shutdown_grace=0.0)
    _queue(store, dispatcher, [1], time.time())
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.run)
        with anyio.fail_after(5):
            await hook.entered.wait()
        dispatcher.shutdown()
        tg.cancel_scope.cancel()
    assert hook.sent == []
    head = store.head("hook")
    assert head is not None and head.event.subject == "1"


async def test_shutdown_sends_nothing_after_the_delivery_in_flight() -> None:
    store = Store.open(":memory:")
    hook = FakeNotifier("hook")
    hook.release = anyio.Event()
    dispatcher = Dispatcher(ThreadedStore(store), {"hook": hook}, shutdown_grace=5.0)
    _queue(store, dispatcher, [1, 2, 3, 4, 5], time.time())
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.run)
        with anyio.fail_after(5):
            await hook.entered.wait()
        dispatcher.shutdown()
        tg.cancel_scope.cancel()
        hook.release.set()
    assert hook.sent == ["1"]
    assert sum(c.count for c in store.outbox_counts() if c.state == "pending") == 4


async def test_removing_a_notifier_mid_send_then_adding_it_back_keeps_one_worker_per_queue() -> None:
    store = Store.open(":memory:")
    hook = FakeNotifier("hook")
    hook.release = anyio.Event()
    dispatcher = Dispatcher(ThreadedStore(store), {"hook": hook})
    _queue(store, dispatcher, [1, 2, 3], time.time())
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.run)
        with anyio.fail_after(5):
            await hook.entered.wait()
        dispatcher.reload({})  # removed while row 1 is in flight
        again = FakeNotifier("hook")
        dispatcher.reload({"hook": again})  # and back before that send finished
        again.entered = anyio.Event()
        hook.release.set()
        with anyio.fail_after(5):
            while len(again.sent) < 2:
                await again.entered.wait()
                again.entered = anyio.Event()
        tg.cancel_scope.cancel()
    assert hook.sent == ["1"]
    assert again.sent == ["2", "3"]  # in order, none twice


async def test_a_notifier_that_crashes_costs_one_retry_of_one_row() -> None:
    class Broken(FakeNotifier):
        async def send(self, event: Event) -> None:
            raise RuntimeError("bug in a notifier")

    store, clock = Store.open(":memory:"), Clock()
    ok = FakeNotifier("ok")
    dispatcher = Dispatcher(
        ThreadedStore(store), {"broken": Broken("broken"), "ok": ok}, clock=clock, sleep=clock.sleep
    )
    _queue(store, dispatcher, [1], clock.now)
    with capture_logs() as logs:
        await dispatcher.drain()
    assert ok.sent == ["1"]
    head = store.head("broken")
    assert head is not None and head.attempts == 1
    assert any(log["event"] == "delivery.crashed" for log in logs)


async def test_a_huge_retry_after_waits_no_longer_than_the_row_may_live() -> None:
    store, clock = Store.open(":memory:"), Clock()
    slow = FakeNotifier("slow", [DeliveryError("429", retry_after=1e9)])
    dispatcher = Dispatcher(ThreadedStore(store), {"slow": slow}, clock=clock, sleep=clock.sleep, max_age=3600.0)
    _queue(store, dispatcher, [1], clock.now)
    await dispatcher.drain()
    head = store.head("slow")
    assert head is not None and head.next_attempt_at <= clock.now + 3601.0


def test_backoff_never_overflows_however_long_a_failure_lasts() -> None:
    assert delivery_delay(100_000, cap=30.0) <= 30.0
    assert poll_failure_delay(30.0, 100_000) == 30.0 * 8
    assert auth_pause(100_000) == 300.0
    assert rate_limit_pause(None, 100_000) == 300.0


class Switch(FakeNotifier):
    """A receiver that is down (every send fails) until switched on."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.down = True

    async def send(self, event: Event) -> None:
        self.attempts += 1
        if self.down:
            raise DeliveryError("503 service unavailable")
        self.sent.append(event.subject)


async def test_a_receiver_down_for_hours_keeps_every_event_in_order_in_flat_memory() -> None:
    store, clock = Store.open(":memory:"), Clock()
    switch = Switch("switch")
    dispatcher = Dispatcher(ThreadedStore(store), {"switch": switch}, clock=clock, sleep=clock.sleep, backoff_max=300.0)
    task_ids = list(range(1, 3001))
    _queue(store, dispatcher, task_ids, clock.now)
    peaks = []
    tracemalloc.start()
    try:
        for _ in range(23 * 12):  # 23 hours of attempts, one every 5 minutes at the backoff cap
            tracemalloc.reset_peak()
            await dispatcher.drain()
            peaks.append(tracemalloc.get_traced_memory()[1])
            clock.now += 300.0
    finally:
        tracemalloc.stop()
    peak = max(peaks)
    assert switch.sent == []
    assert sum(c.count for c in store.outbox_counts() if c.state == "pending") == 3000
    assert peak < 512 * 1024  # one attempt holds one row, however long the queue behind it
    switch.down = False
    await dispatcher.drain()
    assert switch.sent == [str(t) for t in task_ids]


async def test_a_slow_receiver_times_out_and_delays_no_other(receiver: Receiver) -> None:
    from watcher.notify.webhook import WebhookNotifier

    store = Store.open(":memory:")
    receiver.hold = anyio.Event()  # never answers
    fast = FakeNotifier("fast")
    async with httpx.AsyncClient() as http:
        slow = WebhookNotifier("slow", receiver.url, http)
        dispatcher = Dispatcher(ThreadedStore(store), {"slow": slow, "fast": fast}, timeout=0.3)
        _queue(store, dispatcher, [1, 2], time.time())
        with capture_logs() as logs:
            await dispatcher.drain()
    receiver.hold.set()
    assert fast.sent == ["1", "2"]
    head = store.head("slow")
    assert head is not None and head.event.subject == "1" and head.attempts == 1
    assert any(log["event"] == "delivery.failed" and "no answer in time" in log["error"] for log in logs)
