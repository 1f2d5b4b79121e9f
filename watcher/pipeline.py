"""The delivery pipeline's pure stages: what a receiver's pending rows mean now (held, expired, due, grouped).

Alertmanager's notify pipeline is the model (route -> wait -> dedup -> send -> retry), with one difference: the outbox
is the only state. Each stage here is a pure function of a receiver's pending rows, its `Policy` and the time, so
that a restart, a reload or another replica taking the receiver over plans exactly what this process would have:

- route: done when an event is recorded (`watcher/routing.py`): each receiver that wants it gets a row;
- `hold`: quiet hours keep non-urgent rows back until they end (held rows are not touched: no attempt is counted);
- `expire`: a row older than `max_age` is given up, not counting the time quiet hours held it;
- `group`: the head of the queue waits `group_wait` for company, then it and the due rows behind it go out as one
  message (a digest) if the receiver takes digests;
- send, retry and dead-letter are the dispatcher's (watcher/dispatch.py), recorded on the rows themselves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from .store import Delivery

MAX_DIGEST = 50  # events in one message at most: beyond that a chat message is a wall nobody reads
LOOKAHEAD = 500  # pending rows planned over at once (a backlog beyond it is planned as it drains)


class Quiet(Protocol):
    """Quiet hours as the pipeline asks of them (watcher/quiet.py)."""

    def ends_after(self, when: datetime) -> datetime | None:
        """None if `when` is not quiet; else the first instant after it that is not."""
        ...

    def quiet_between(self, start: datetime, end: datetime) -> timedelta:
        """Quiet time within [start, end)."""
        ...


def never_urgent(event_type: str) -> bool:
    """No event type is urgent: quiet hours hold them all."""
    return False


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """How one receiver is delivered to: from its `[[notifiers]]` entry and `[delivery]`."""

    max_age: float = 86400.0  # seconds a row may wait for delivery (held time not counted)
    group_wait: float = 0.0  # seconds the head of the queue waits for others to join it
    digest: bool = False  # whether several rows may go out as one message
    quiet: Quiet | None = None
    urgent: Callable[[str], bool] = never_urgent  # event types that quiet hours do not hold
    repeat_every: float = 0.0  # reminders of a problem that lasts; 0: none
    repeat_max: int = 0  # at most this many reminders per problem; 0: no limit
    kind: str = ""  # the notifier's kind, as a failing receiver's notice names it


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """What to do now for one receiver."""

    send: tuple[Delivery, ...] = ()  # one message: a single event, or a digest of several
    expired: tuple[Delivery, ...] = ()  # to dead-letter (max_age)
    held: int = 0  # rows quiet hours keep back now
    wake_at: float | None = None  # when to plan again if nothing else happens (None: when woken)


def lookahead(policy: Policy) -> int:
    """How many pending rows the plan needs to see: the head alone, unless rows may go out together (a digest) or
    out of order (an urgent row overtaking held ones)."""
    if policy.quiet is not None:
        return LOOKAHEAD
    return MAX_DIGEST if policy.digest else 1


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def hold(rows: Sequence[Delivery], now: float, policy: Policy) -> tuple[list[Delivery], int, float | None]:
    """Stage "hold": the rows quiet hours let through now, how many they keep back, and when they end."""
    if policy.quiet is None:
        return list(rows), 0, None
    ends = policy.quiet.ends_after(_at(now))
    if ends is None:
        return list(rows), 0, None
    passing = [row for row in rows if policy.urgent(row.event.type)]
    return passing, len(rows) - len(passing), ends.timestamp()


def age(row: Delivery, now: float, policy: Policy) -> float:
    """How long a row has waited for delivery, not counting the time quiet hours held it."""
    waited = now - row.created_at
    if policy.quiet is not None and not policy.urgent(row.event.type) and waited > 0:
        waited -= policy.quiet.quiet_between(_at(row.created_at), _at(now)).total_seconds()
    return waited


def expire(rows: Sequence[Delivery], now: float, policy: Policy) -> tuple[list[Delivery], list[Delivery]]:
    """Stage "expire": (rows still worth sending, rows older than `max_age`)."""
    alive: list[Delivery] = []
    expired: list[Delivery] = []
    for row in rows:
        (expired if age(row, now, policy) > policy.max_age else alive).append(row)
    return alive, expired


def group(rows: Sequence[Delivery], now: float, policy: Policy) -> tuple[tuple[Delivery, ...], float | None]:
    """Stage "group": the rows to send now as one message, or when to look again.

    Order is kept: the head waits out its backoff (and, when new, `group_wait`) and the rows behind it wait with it;
    then it goes out with the due rows that follow it, if the receiver takes digests."""
    if not rows:
        return (), None
    head = rows[0]
    if head.next_attempt_at > now:
        return (), head.next_attempt_at
    if head.attempts == 0 and policy.group_wait > 0 and now < head.created_at + policy.group_wait:
        return (), head.created_at + policy.group_wait
    if not policy.digest:
        return (head,), None
    batch = [head]
    for row in rows[1:]:
        if len(batch) == MAX_DIGEST or row.next_attempt_at > now:
            break
        batch.append(row)
    return tuple(batch), None


def plan(rows: Sequence[Delivery], now: float, policy: Policy) -> Step:
    """Every stage in turn over a receiver's pending rows (in queue order)."""
    passing, held, released_at = hold(rows, now, policy)
    alive, expired = expire(passing, now, policy)
    if expired:
        return Step(expired=tuple(expired), held=held)
    batch, wait_until = group(alive, now, policy)
    wakes = [t for t in (wait_until, released_at) if t is not None]
    return Step(send=batch, held=held, wake_at=min(wakes) if wakes else None)
