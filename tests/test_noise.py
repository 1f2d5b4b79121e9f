"""Routing and noise in the dispatcher: digests, quiet hours, reminders, a failing receiver; injected clock, real
SQLite store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from watcher.detect import Rules, detect
from watcher.dispatch import Dispatcher
from watcher.errors import DeliveryError
from watcher.matchers import parse_matchers
from watcher.model import Event, EventType, TaskSnapshot, TaskState
from watcher.notify import EventFilter
from watcher.pipeline import Policy
from watcher.quiet import QuietHours
from watcher.routing import Route, Router
from watcher.store import Store
from watcher.stores import ThreadedStore

from .test_dispatch import Clock, FakeNotifier

pytestmark = pytest.mark.anyio
HOUR = 3600.0


class Chat(FakeNotifier):
    """A chat receiver: takes digests, records each message as the list of its events' subjects."""

    digest = True

    def __init__(self, name: str, outcomes: list[DeliveryError | None] | None = None) -> None:
        super().__init__(name, outcomes)
        self.messages: list[list[str]] = []

    async def send(self, event: Event) -> None:
        await super().send(event)
        self.messages.append([event.subject])

    async def send_digest(self, events: Sequence[Event]) -> None:
        self.attempts += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        self.messages.append([e.subject for e in events])


def record(
    store: Store, dispatcher: Dispatcher, previous: TaskState | None, snap: TaskSnapshot, now: float
) -> TaskState:
    state, events = detect(previous, snap, datetime.fromtimestamp(now, UTC), Rules(progress_step=0))
    store.record(state, [(e, dispatcher.receivers_for(e.type)) for e in events], now)
    return state


def counts(store: Store, receiver: str) -> dict[str, int]:
    return {c.state: c.count for c in store.outbox_counts() if c.receiver == receiver}


async def test_events_due_together_go_out_as_one_digest_and_are_acknowledged_together() -> None:
    store, clock = Store.open(":memory:"), Clock()
    chat = Chat("chat", [DeliveryError("503")])
    dispatcher = Dispatcher(
        ThreadedStore(store), {"chat": chat}, clock=clock, sleep=clock.sleep, policies={"chat": Policy(digest=True)}
    )
    for task_id in (1, 2, 3):
        record(store, dispatcher, None, TaskSnapshot(id=task_id, status="stop.abnormal"), clock.now)
    await dispatcher.drain()  # the digest fails: every row of it is retried, together
    rows = store.pending("chat", 10)
    assert [r.attempts for r in rows] == [1] * 6 and len({r.next_attempt_at for r in rows}) == 1
    clock.now = rows[0].next_attempt_at
    await dispatcher.drain()
    assert chat.messages == [["1", "1", "2", "2", "3", "3"]]  # observed + failed of each task, in order
    assert counts(store, "chat") == {"delivered": 6}


async def test_quiet_hours_hold_rows_untouched_then_send_them_as_one_digest() -> None:
    quiet = QuietHours.parse([{"from": "20:00", "to": "08:00"}], "Asia/Tokyo")
    night = datetime.fromisoformat("2026-11-23T21:00:00+09:00").timestamp()
    store, clock = Store.open(":memory:"), Clock(night)
    chat = Chat("chat")
    policy = Policy(digest=True, quiet=quiet, urgent=EventFilter(["voicefox.task.failed"]), max_age=HOUR)
    dispatcher = Dispatcher(
        ThreadedStore(store), {"chat": chat}, clock=clock, sleep=clock.sleep, policies={"chat": policy}
    )
    for task_id in (1, 2):
        record(store, dispatcher, None, TaskSnapshot(id=task_id, status="done"), clock.now)
    record(store, dispatcher, None, TaskSnapshot(id=3, status="stop.abnormal"), clock.now)
    await dispatcher.drain()
    assert chat.messages == [["3"]]  # the failure is urgent: it is not held
    clock.now += 9 * HOUR  # 06:00, still quiet; nine hours held, yet max_age (1 h) has not run out
    await dispatcher.drain()
    assert len(chat.messages) == 1
    assert [r.attempts for r in store.pending("chat", 10)] == [0, 0, 0]  # held rows are not attempts
    clock.now = datetime.fromisoformat("2026-11-24T08:00:00+09:00").timestamp()
    await dispatcher.drain()
    assert chat.messages == [["3"], ["1", "2", "3"]]  # observed x2 + the observed of 3, at 08:00 in one message
    assert counts(store, "chat") == {"delivered": 4}


async def test_a_lasting_failure_is_reminded_then_resolved_and_a_restart_neither_forgets_nor_doubles() -> None:
    store, clock = Store.open(":memory:"), Clock()
    chat = Chat("chat")

    def dispatcher() -> Dispatcher:
        policy = Policy(repeat_every=HOUR, repeat_max=3)
        return Dispatcher(
            ThreadedStore(store), {"chat": chat}, clock=clock, sleep=clock.sleep, policies={"chat": policy}
        )

    first = dispatcher()
    running = record(store, first, None, TaskSnapshot(id=7, status="running"), clock.now)
    clock.now += 60
    failed = record(store, first, running, TaskSnapshot(id=7, status="stop.abnormal"), clock.now)
    await first.drain()
    assert len(chat.messages) == 2  # observed, failed
    clock.now += HOUR
    await first.drain()
    assert len(chat.messages) == 3
    reminder = store.events(7)[0]
    assert reminder.type == EventType.FAILED.value and reminder.data["reminder"]["count"] == 1
    await first.drain()  # nothing more is due
    assert len(chat.messages) == 3
    # A restart (a new dispatcher, the same store): the second reminder comes an hour after the first, once.
    second = dispatcher()
    await second.drain()
    assert len(chat.messages) == 3
    clock.now += HOUR
    await second.drain()
    await dispatcher().drain()
    assert len(chat.messages) == 4
    assert store.events(7)[0].data["reminder"]["count"] == 2
    # The task resumes: no reminder any more, and the resolved notice goes out.
    record(store, second, failed, TaskSnapshot(id=7, status="running"), clock.now)
    clock.now += 5 * HOUR
    await second.drain()
    assert [e.type for e in store.events(7)[:1]] == [EventType.RESUMED.value]
    assert len(chat.messages) == 5


async def test_a_failing_receiver_is_announced_to_the_others_once_and_its_recovery_too() -> None:
    store, clock = Store.open(":memory:"), Clock()
    down, ops = Chat("down", [DeliveryError("503 unavailable")] * 50), Chat("ops")
    router = Router([Route("down", EventFilter(["voicefox.task.*"])), Route("ops", EventFilter(["*"]))])
    dispatcher = Dispatcher(
        ThreadedStore(store),
        {"down": down, "ops": ops},
        clock=clock,
        sleep=clock.sleep,
        router=router,
        failing_after=600,
    )
    record(store, dispatcher, None, TaskSnapshot(id=1, status="done"), clock.now)
    with capture_logs() as logs:
        for _ in range(12):  # minutes of failures, with backoff
            await dispatcher.drain()
            clock.now = store.head("down").next_attempt_at  # type: ignore[union-attr]
    failing = [e for e in store.events(0) if e.type == EventType.RECEIVER_FAILING.value]
    assert len(failing) == 1
    assert failing[0].data["receiver"] == "down" and failing[0].subject == "notifier:down"
    assert failing[0].data["failingForSeconds"] >= 600 and failing[0].data["pending"] == 1
    assert sum(1 for log in logs if log["event"] == "receiver.failing") == 1
    assert counts(store, "ops")["delivered"] == 2  # the task's event, and the news that `down` is failing
    # A restart does not announce it again; the receiver's recovery is announced once.
    again = Dispatcher(
        ThreadedStore(store),
        {"down": down, "ops": ops},
        clock=clock,
        sleep=clock.sleep,
        router=router,
        failing_after=600,
    )
    await again.drain()
    assert len([e for e in store.events(0) if e.type == EventType.RECEIVER_FAILING.value]) == 1
    down.outcomes.clear()
    clock.now = store.head("down").next_attempt_at  # type: ignore[union-attr]
    await again.drain()
    recovered = [e for e in store.events(0) if e.type == EventType.RECEIVER_RECOVERED.value]
    assert len(recovered) == 1 and recovered[0].data["failedForSeconds"] >= 600
    assert counts(store, "down") == {"delivered": 1}
    await again.drain()  # (the news was recorded while ops's queue was being drained: a running worker is woken)
    assert counts(store, "ops") == {"delivered": 3}


@pytest.mark.parametrize(
    ("event_type", "labels", "expected"),
    [
        (EventType.FAILED, {"team": "sales"}, ["sales", "all"]),
        (EventType.FAILED, {"team": "support"}, ["support", "all"]),
        (EventType.FAILED, {}, ["all"]),
        (EventType.RESUMED, {"team": "sales"}, ["sales"]),  # `all` does not send_resolved
        (EventType.UNSTALLED, {"team": "support"}, ["support"]),  # support wants stalls, so it hears they end
        (EventType.UNSTALLED, {"team": "sales"}, []),  # sales does not want stalls
        (EventType.API_UNREACHABLE, {}, ["sales", "support", "all"]),  # watcher events go by type alone
    ],
)
def test_routing_by_type_labels_and_send_resolved(
    event_type: EventType, labels: dict[str, str], expected: list[str]
) -> None:
    router = Router(
        [
            Route(
                "sales", EventFilter(["voicefox.task.failed", "voicefox.watcher.*"]), parse_matchers(['team="sales"'])
            ),
            Route("support", EventFilter(["*"]), parse_matchers(["team=~support|care"])),
            Route("all", EventFilter(["*"]), send_resolved=False),
        ]
    )
    assert router.receivers(event_type.value, labels) == expected
