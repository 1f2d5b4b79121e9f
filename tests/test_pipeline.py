"""The delivery pipeline's pure stages: hold (quiet hours), expire, group; with an injected clock throughout."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from watcher.model import Event, EventType
from watcher.notify import EventFilter
from watcher.pipeline import MAX_DIGEST, Policy, age, group, hold, plan
from watcher.quiet import QuietHours
from watcher.store import Delivery

TOKYO_NIGHT = QuietHours.parse([{"days": "mon-fri", "from": "20:00", "to": "08:00"}, {"days": "sat-sun"}], "Asia/Tokyo")


def ts(text: str) -> float:
    """An instant written in Tokyo time ("2026-11-23 21:00" is a Monday evening)."""
    return datetime.fromisoformat(text + "+09:00").timestamp()


def row(
    seq: int, created: float, type_: EventType = EventType.FINISHED, attempts: int = 0, next_at: float = 0.0
) -> Delivery:
    event = Event(f"e{seq}", type_.value, datetime.fromtimestamp(created, UTC), str(seq), {})
    return Delivery(seq, "chat", event, created, attempts, next_at or created)


URGENT = EventFilter(["voicefox.task.failed", "voicefox.watcher.*"])


@pytest.mark.parametrize(
    ("now", "held", "released_at"),
    [
        ("2026-11-23 19:59", 0, None),  # Monday before the night
        ("2026-11-23 20:00", 2, "2026-11-24 08:00"),  # the night begins: held until Tuesday 08:00
        ("2026-11-27 23:00", 2, "2026-11-30 00:00"),  # Friday night runs into the weekend: until Monday 00:00
        ("2026-11-29 12:00", 2, "2026-11-30 00:00"),  # Sunday noon
        ("2026-11-30 00:00", 0, None),  # Monday 00:00: Sunday ended the week-end window, and no Sunday night window
    ],
)
def test_quiet_hours_hold_all_but_urgent_rows_until_they_end(now: str, held: int, released_at: str | None) -> None:
    rows = [
        row(1, ts("2026-11-23 19:00")),
        row(2, ts("2026-11-23 19:30"), EventType.FAILED),
        row(3, ts("2026-11-23 19:45")),
    ]
    policy = Policy(quiet=TOKYO_NIGHT, urgent=URGENT)
    passing, n, release = hold(rows, ts(now), policy)
    assert n == held
    assert release == (ts(released_at) if released_at else None)
    assert [r.seq for r in passing] == ([2] if held else [1, 2, 3])


def test_held_time_does_not_age_a_row_towards_max_age() -> None:
    created = ts("2026-11-23 19:00")  # an hour before Monday night's quiet hours
    policy = Policy(quiet=TOKYO_NIGHT, max_age=2 * 3600)
    # Tuesday 08:30: 13.5 h later, of which 12 h were quiet: it has waited 1.5 h.
    assert age(row(1, created), ts("2026-11-24 08:30"), policy) == pytest.approx(1.5 * 3600)
    assert plan([row(1, created)], ts("2026-11-24 08:30"), policy).send != ()
    # An urgent row is not held, so all of its time counts.
    urgent = Policy(quiet=TOKYO_NIGHT, max_age=2 * 3600, urgent=URGENT)
    assert plan([row(1, created, EventType.FAILED)], ts("2026-11-24 08:30"), urgent).expired != ()


def test_a_row_older_than_max_age_is_expired_not_sent() -> None:
    step = plan([row(1, 1000.0), row(2, 5000.0)], 5000.0, Policy(max_age=3600))
    assert [r.seq for r in step.expired] == [1]
    assert step.send == ()


@pytest.mark.parametrize(
    ("rows", "now", "policy", "sent", "wait_until"),
    [
        # no grouping: one row per message, in order
        ([row(1, 100.0), row(2, 101.0)], 110.0, Policy(), [1], None),
        # the head in backoff: everything waits behind it
        ([row(1, 100.0, attempts=1, next_at=200.0), row(2, 101.0)], 110.0, Policy(digest=True), [], 200.0),
        # a new head waits group_wait for company
        ([row(1, 100.0), row(2, 101.0)], 110.0, Policy(digest=True, group_wait=30.0), [], 130.0),
        # then goes out with every due row behind it, as one digest
        ([row(1, 100.0), row(2, 101.0), row(3, 129.0)], 130.0, Policy(digest=True, group_wait=30.0), [1, 2, 3], None),
        # a receiver without digests gets them one by one even after group_wait
        ([row(1, 100.0), row(2, 101.0)], 130.0, Policy(group_wait=30.0), [1], None),
        # a retried head does not wait group_wait again
        (
            [row(1, 100.0, attempts=2, next_at=105.0), row(2, 101.0)],
            110.0,
            Policy(digest=True, group_wait=30.0),
            [1, 2],
            None,
        ),
        # a row behind the head still in its own backoff ends the digest there (order kept)
        (
            [row(1, 100.0), row(2, 101.0, attempts=1, next_at=500.0), row(3, 102.0)],
            110.0,
            Policy(digest=True),
            [1],
            None,
        ),
    ],
)
def test_group(rows: list[Delivery], now: float, policy: Policy, sent: list[int], wait_until: float | None) -> None:
    batch, wait = group(rows, now, policy)
    assert [r.seq for r in batch] == sent
    assert wait == wait_until


def test_a_digest_holds_at_most_max_digest_rows() -> None:
    rows = [row(i, 100.0) for i in range(1, 2 * MAX_DIGEST + 2)]
    assert len(plan(rows, 200.0, Policy(digest=True)).send) == MAX_DIGEST


def test_rows_held_all_night_go_out_as_one_digest_when_the_night_ends() -> None:
    rows = [row(i, ts("2026-11-23 21:00") + i) for i in range(1, 31)]
    policy = Policy(quiet=TOKYO_NIGHT, digest=True, group_wait=30.0)
    night = plan(rows, ts("2026-11-24 03:00"), policy)
    assert night.send == () and night.held == 30 and night.wake_at == ts("2026-11-24 08:00")
    morning = plan(rows, ts("2026-11-24 08:00"), policy)
    assert [r.seq for r in morning.send] == list(range(1, 31))


def test_an_urgent_row_overtakes_held_ones_in_quiet_hours() -> None:
    rows = [row(1, ts("2026-11-23 21:00")), row(2, ts("2026-11-23 21:05"), EventType.FAILED)]
    step = plan(rows, ts("2026-11-23 21:06"), Policy(quiet=TOKYO_NIGHT, urgent=URGENT, digest=True))
    assert [r.seq for r in step.send] == [2]
    assert step.held == 1
